#!/usr/bin/env python3
"""AM API v2 cycle with Python's xmlrpc.client and a TLS client certificate:
CreateSliver, SliverStatus until ready, ListResources with geni_slice_urn (manifest),
RenewSliver, DeleteSliver, then SliverStatus must fail. Prints one JSON object."""
import argparse, json, ssl, sys, time, datetime
import xmlrpc.client as xmlrpclib


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--slice-cred", required=True)
    p.add_argument("--slice", required=True)
    p.add_argument("--rspec", required=True)
    p.add_argument("--user-urn", default="")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--keep", action="store_true", help="stop after ready (no delete)")
    a = p.parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # like omni
    ctx.load_cert_chain(a.cert, a.key)
    am = xmlrpclib.ServerProxy(a.url, context=ctx)
    cred = [open(a.slice_cred).read()]
    out = {"ok": True}

    def fail(msg, **kw):
        print(json.dumps({"ok": False, "error": msg, **kw}, default=str))
        sys.exit(1)

    def check(r, what):
        if r["code"]["geni_code"] != 0:
            fail(what, reply=r)
        return r["value"]

    v = am.GetVersion()
    if v.get("geni_api") != 2 or check(v, "GetVersion")["geni_api"] != 2:
        fail("GetVersion v2", reply=v)
    users = [{"urn": a.user_urn, "keys": ["ssh-rsa AAAAB3NzaC1yc2E test@vnsnap"]}]
    manifest = check(am.CreateSliver(a.slice, cred, open(a.rspec).read(), users, {}), "CreateSliver")
    out["create_manifest_nodes"] = manifest.count("<node ")
    again = am.CreateSliver(a.slice, cred, open(a.rspec).read(), users, {})
    out["create_again_code"] = again["code"]["geni_code"]
    deadline = time.time() + a.timeout
    while True:
        st = check(am.SliverStatus(a.slice, cred, {}), "SliverStatus")
        if st["geni_status"] == "ready":
            break
        if st["geni_status"] == "failed" or time.time() > deadline:
            fail("not ready", status=st)
        time.sleep(1)
    out["status"] = st
    rv = {"type": "GENI", "version": "3"}
    m = check(am.ListResources(cred, {"geni_rspec_version": rv, "geni_slice_urn": a.slice}),
              "ListResources(slice)")
    if 'type="manifest"' not in m:
        fail("ListResources with geni_slice_urn did not return a manifest", got=m[:300])
    out["manifest"] = m
    t = (datetime.datetime.utcnow() + datetime.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out["renew"] = check(am.RenewSliver(a.slice, cred, t, {}), "RenewSliver")
    out["expires_after_renew"] = check(am.SliverStatus(a.slice, cred, {}), "SliverStatus").get("geni_expires")
    if not a.keep:
        out["delete"] = check(am.DeleteSliver(a.slice, cred, {}), "DeleteSliver")
        out["status_after_delete_code"] = am.SliverStatus(a.slice, cred, {})["code"]["geni_code"]
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
