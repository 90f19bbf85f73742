#!/usr/bin/env python3
"""AM API v3 cycle driven by geni-lib (PyPI) against a vnsnap-am, in phases.

geni-lib's minigcf modules send what geni-lib sends on the wire (credentials read in binary
mode, so geni_value goes out as <base64> on Python 3). minigcf has no Status, Describe or
Renew, and its amapi3.getversion is broken (xmlrpclib.dumps(dict)); those calls go through the
same geni-lib transport (minigcf.util._rpcpost) with xmlrpc.client.dumps.

  v3_cycle.py up   ARGS  GetVersion, ListResources (plain + compressed), Allocate, Provision,
                         Status until provisioned, POA geni_start, Status until geni_ready
  v3_cycle.py ops  ARGS  POA geni_stop -> geni_notready, geni_start -> ready,
                         geni_restart -> ready, Describe (compressed), Renew
  v3_cycle.py down ARGS  Delete; Status must then fail
Prints one JSON object on stdout.
"""
import argparse, base64, json, sys, time, zlib, datetime
import xmlrpc.client as xmlrpclib

from geni.minigcf import amapi2, amapi3
from geni.minigcf.util import _rpcpost


class Cred:
    def __init__(self, path):
        self.path, self.type, self.version = path, "geni_sfa", "3"


def fail(msg, **kw):
    print(json.dumps({"ok": False, "error": msg, **kw}, default=str))
    sys.exit(1)


def check(res, what):
    code = res.get("code", {}).get("geni_code")
    if code != 0:
        fail("%s failed" % what, reply=res)
    return res["value"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["up", "ops", "down"])
    p.add_argument("--url", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user-cred", required=True)
    p.add_argument("--slice-cred", required=True)
    p.add_argument("--slice", required=True)
    p.add_argument("--rspec")
    p.add_argument("--user-urn", default="")
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()
    tls = (a.cert, a.key)
    scred = [Cred(a.slice_cred)]
    scred_struct = [{"geni_type": "geni_sfa", "geni_version": "3",
                     "geni_value": open(a.slice_cred).read()}]
    rv = {"type": "GENI", "version": "3"}
    out = {"ok": True}

    def call(method, *params):
        return _rpcpost(a.url, xmlrpclib.dumps(tuple(params), methodname=method), tls, False)

    def status():
        return check(call("Status", [a.slice], scred_struct, {}), "Status")

    def wait_all(pred, what):
        deadline = time.time() + a.timeout
        while True:
            st = status()
            states = [s["geni_operational_status"] for s in st["geni_slivers"]]
            if all(pred(s) for s in st["geni_slivers"]):
                return st
            if time.time() > deadline:
                fail("timeout waiting for %s" % what, states=states)
            time.sleep(1)

    if a.phase == "up":
        v = amapi2.getversion(a.url, False, a.cert, a.key)
        if v.get("geni_api") != 3:
            fail("GetVersion lacks top-level geni_api 3", reply=v)
        ver = check(v, "GetVersion")
        out["geni_api_versions"] = ver["geni_api_versions"]
        ucred = [{"geni_type": "geni_sfa", "geni_version": "3",
                  "geni_value": open(a.user_cred, "rb").read()}]
        ad = check(amapi2.listresources(a.url, False, a.cert, a.key, ucred), "ListResources")
        if "<rspec" not in ad:
            fail("advertisement is not an RSpec", ad=ad[:200])
        adz = check(amapi2.listresources(a.url, False, a.cert, a.key, ucred,
                                         options={"geni_compressed": True}), "ListResources compressed")
        if zlib.decompress(base64.b64decode(adz)).decode() .count("<node") != ad.count("<node"):
            fail("compressed advertisement differs")
        out["ad_nodes"] = ad.count("<node ")
        rspec = open(a.rspec).read()
        alloc = check(amapi3.allocate(a.url, False, a.cert, a.key, scred, a.slice, rspec), "Allocate")
        out["allocated"] = [s["geni_sliver_urn"] for s in alloc["geni_slivers"]]
        if any(s["geni_allocation_status"] != "geni_allocated" for s in alloc["geni_slivers"]):
            fail("Allocate states", reply=alloc)
        users = [{"urn": a.user_urn, "keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIvnsnaptest test@vnsnap"]}]
        prov = check(amapi3.provision(a.url, False, a.cert, a.key, scred, [a.slice],
                                      {"geni_rspec_version": rv, "geni_users": users}), "Provision")
        out["manifest"] = prov["geni_rspec"]
        wait_all(lambda s: s["geni_allocation_status"] == "geni_provisioned"
                 and s["geni_operational_status"] != "geni_pending_allocation", "provisioned")
        poa = check(amapi3.poa(a.url, False, a.cert, a.key, scred, [a.slice], "geni_start"), "POA geni_start")
        out["poa_start"] = [s["geni_operational_status"] for s in poa]
        st = wait_all(lambda s: s["geni_operational_status"] == "geni_ready", "geni_ready")
        out["status"] = st
    elif a.phase == "ops":
        check(amapi3.poa(a.url, False, a.cert, a.key, scred, [a.slice], "geni_stop"), "POA geni_stop")
        wait_all(lambda s: s["geni_operational_status"] == "geni_notready", "geni_notready")
        check(amapi3.poa(a.url, False, a.cert, a.key, scred, [a.slice], "geni_start"), "POA geni_start")
        wait_all(lambda s: s["geni_operational_status"] == "geni_ready", "ready after start")
        r = check(amapi3.poa(a.url, False, a.cert, a.key, scred, [a.slice], "geni_restart"), "POA geni_restart")
        out["poa_restart"] = [s["geni_operational_status"] for s in r]
        wait_all(lambda s: s["geni_operational_status"] == "geni_ready", "ready after restart")
        d = check(call("Describe", [a.slice], scred_struct,
                       {"geni_rspec_version": rv, "geni_compressed": True}), "Describe")
        manifest = zlib.decompress(base64.b64decode(d["geni_rspec"])).decode()
        out["describe_manifest"] = manifest
        out["describe_slivers"] = len(d["geni_slivers"])
        for days in (2, 5):
            t = (datetime.datetime.utcnow() + datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
            r = check(call("Renew", [a.slice], scred_struct, t, {}), "Renew +%dd" % days)
            out["renewed_%d" % days] = r[0]["geni_expires"]
        out["status_after_renew"] = status()
    else:
        d = check(amapi3.delete(a.url, False, a.cert, a.key, scred, [a.slice]), "Delete")
        out["deleted"] = [s["geni_allocation_status"] for s in d]
        r = call("Status", [a.slice], scred_struct, {})
        out["status_after_delete_code"] = r["code"]["geni_code"]
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
