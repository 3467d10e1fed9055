"""Writes compiler/tests/data/ggml-blocks.json: random blocks of every ggml
block type q35 reads that gguf-py (llama.cpp's Python package) can
dequantize, with gguf-py's values, so that q35's decoder is checked against
an implementation it shares no code with. Run once (needs gguf==0.19.0 and
numpy); the output is committed.

    python3 scripts/kquant-fixture.py compiler/tests/data/ggml-blocks.json
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# (type, block bytes, offsets of its f16 fields)
TYPES = {
    "Q5_0": (T.Q5_0, 22, [0]),
    "Q5_1": (T.Q5_1, 24, [0, 2]),
    "Q2_K": (T.Q2_K, 84, [80, 82]),
    "Q3_K": (T.Q3_K, 110, [108]),
    "Q4_K": (T.Q4_K, 144, [0, 2]),
    "Q5_K": (T.Q5_K, 176, [0, 2]),
    "Q6_K": (T.Q6_K, 210, [208]),
}

rng = np.random.default_rng(35)
out = {}
for name, (qtype, size, halves) in TYPES.items():
    blocks = rng.integers(0, 256, size=(3, size), dtype=np.uint8)
    for b in blocks:
        for at in halves:
            # Finite scales of a realistic size, either sign.
            b[at:at + 2] = np.frombuffer(np.float16(rng.uniform(-1, 1) * 2.0 ** -rng.integers(2, 12)).tobytes(), np.uint8)
    values = dequantize(blocks.reshape(-1), qtype).astype(np.float32)
    out[name] = {"bytes": blocks.tobytes().hex(), "values": values.tobytes().hex()}
json.dump(out, open(sys.argv[1], "w"), indent=1)
