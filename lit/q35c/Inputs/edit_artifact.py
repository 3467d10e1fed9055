#!/usr/bin/env python3
"""Rewrites one stored proof obligation of a .q35 artifact and fixes the
payload's checksum, so that only `q35c verify` can notice the change.

usage: edit_obligation.py IN.q35 OUT.q35 ID-PREFIX PARAM VALUE
"""
import json
import struct
import sys

PAYLOAD = "proofs/obligations.json"


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    src, dst, prefix, param, value = sys.argv[1:6]
    blob = open(src, "rb").read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + hlen])
    data = blob[8 + hlen :]
    meta = header.pop("__metadata__")
    manifest = json.loads(meta["q35.manifest"])
    names = sorted(header, key=lambda n: header[n]["data_offsets"][0])
    payloads = {n: data[header[n]["data_offsets"][0] : header[n]["data_offsets"][1]] for n in names}
    obligations = json.loads(payloads[PAYLOAD])
    target = next(o for o in obligations["obligations"] if o["id"].startswith(prefix))
    target["params"][param] = json.loads(value)
    payloads[PAYLOAD] = (json.dumps(obligations, indent=2) + "\n").encode()
    manifest["checksums"][PAYLOAD] = "%016x" % fnv1a64(payloads[PAYLOAD])
    out_header = {"__metadata__": {"q35.manifest": json.dumps(manifest, separators=(",", ":"))}}
    offset = 0
    for n in names:
        size = len(payloads[n])
        out_header[n] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(payloads[n] for n in names))
    print(target["id"])


if __name__ == "__main__":
    main()
