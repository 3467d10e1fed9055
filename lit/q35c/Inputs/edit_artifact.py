#!/usr/bin/env python3
"""Edits a .q35 artifact and fixes every checksum (payloads and manifest),
as someone who knows the format would: only the checks that compare the
artifact with itself, its code and the proofs can notice.

usage:
  edit_artifact.py IN.q35 OUT.q35 obligation ID-PREFIX PARAM VALUE
      rewrites one stored proof obligation's parameter (prints its id)
  edit_artifact.py IN.q35 OUT.q35 manifest STATEMENT
      runs a Python statement on the manifest `m` (a dict), e.g.
      "m['dispatches'][1]['workgroups_per_token'] = 9"
  edit_artifact.py IN.q35 OUT.q35 payload NAME FILE
      replaces payload NAME by FILE's bytes
"""
import json
import struct
import sys

OBLIGATIONS = "proofs/obligations.json"


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    src, dst, what = sys.argv[1:4]
    args = sys.argv[4:]
    blob = open(src, "rb").read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + hlen])
    data = blob[8 + hlen :]
    meta = header.pop("__metadata__")
    m = json.loads(meta["q35.manifest"])
    names = sorted(header, key=lambda n: header[n]["data_offsets"][0])
    payloads = {n: data[header[n]["data_offsets"][0] : header[n]["data_offsets"][1]] for n in names}
    if what == "obligation":
        prefix, param, value = args
        obligations = json.loads(payloads[OBLIGATIONS])
        target = next(o for o in obligations["obligations"] if o["id"].startswith(prefix))
        target["params"][param] = json.loads(value)
        payloads[OBLIGATIONS] = (json.dumps(obligations, indent=2) + "\n").encode()
        print(target["id"])
    elif what == "manifest":
        exec(args[0], {}, {"m": m})
    elif what == "payload":
        name, path = args
        payloads[name] = open(path, "rb").read()
    else:
        sys.exit("unknown edit " + what)
    for n in names:
        m["checksums"][n] = "%016x" % fnv1a64(payloads[n])
    text = json.dumps(m, separators=(",", ":"))
    out_header = {
        "__metadata__": {
            "q35.manifest_checksum": "%016x" % fnv1a64(text.encode()),
            "q35.manifest": text,
        }
    }
    offset = 0
    for n in names:
        size = len(payloads[n])
        out_header[n] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    htext = json.dumps(out_header, separators=(",", ":")).encode()
    htext += b" " * (-len(htext) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(htext)) + htext + b"".join(payloads[n] for n in names))


if __name__ == "__main__":
    main()
