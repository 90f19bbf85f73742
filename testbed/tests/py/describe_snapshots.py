#!/usr/bin/env python3
"""Describe a slice as omni does (AM API v3 over XML-RPC with the experimenter's certificate,
the server's not checked; Python standard library only) and print the snapshots its
manifest lists in the vnsnap extension element.

  describe_snapshots.py --url URL --cert CHAIN.pem --key KEY.pem --slice URN --slice-cred FILE

Prints one JSON object on stdout: {"ok": true, "snapshots": [{urn, name, state, created}],
"manifest": "<rspec ...>"}.
"""
import argparse, json, ssl, sys
import xml.etree.ElementTree as ET
import xmlrpc.client

GENI = "http://www.geni.net/resources/rspec/3"
VNSNAP = "urn:vnsnap:rspec:ext:snapshot:1"


def fail(msg, **kw):
    print(json.dumps({"ok": False, "error": msg, **kw}, default=str))
    sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--slice", required=True)
    p.add_argument("--slice-cred", required=True)
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(a.cert, a.key)
    am = xmlrpc.client.ServerProxy(a.url, context=ctx)
    creds = [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": open(a.slice_cred).read()}]
    r = am.Describe([a.slice], creds, {"geni_rspec_version": {"type": "GENI", "version": "3"}})
    if r.get("code", {}).get("geni_code") != 0:
        fail("Describe failed", reply=r)
    manifest = r["value"]["geni_rspec"]
    root = ET.fromstring(manifest)
    if root.tag != "{%s}rspec" % GENI or root.get("type") != "manifest":
        fail("not a manifest", manifest=manifest)
    lists = root.findall("{%s}snapshots" % VNSNAP)
    if len(lists) != 1:
        fail("expected one vnsnap:snapshots element, found %d" % len(lists), manifest=manifest)
    snaps = [
        {k: s.get(k) for k in ("urn", "name", "state", "created")}
        for s in lists[0].findall("{%s}snapshot" % VNSNAP)
    ]
    print(json.dumps({"ok": True, "snapshots": snaps, "manifest": manifest}))


if __name__ == "__main__":
    main()
