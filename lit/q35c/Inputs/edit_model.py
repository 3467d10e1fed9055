#!/usr/bin/env python3
"""Copies a Hugging Face model directory (model.safetensors, config.json,
tokenizer.json) and breaks one thing in the copy, for the error tests.

usage: edit_model.py SRC_DIR DST_DIR CASE
"""
import json
import os
import shutil
import sys


def tokenizer(edit):
    def apply(t):
        edit(t)
        return json.dumps(t)

    return ("tokenizer.json", apply)


def config(edit):
    def apply(c):
        edit(c)
        return json.dumps(c)

    return ("config.json", apply)


CASES = {
    # The tokenizer.json text itself.
    "tok-invalid": ("tokenizer.json", lambda t: "{{\n"),
    "tok-empty": ("tokenizer.json", lambda t: ""),
    "tok-bom": ("tokenizer.json", lambda t: "\ufeff" + json.dumps(t)),
    # Its content.
    "tok-empty-vocab": tokenizer(lambda t: t["model"].update(vocab={})),
    "tok-bad-merge": tokenizer(lambda t: t["model"]["merges"].append("\u0120 zz")),
    "tok-dup-id": tokenizer(lambda t: t["model"]["vocab"].update(dup=5)),
    "tok-beyond-model": tokenizer(
        lambda t: t["added_tokens"].append({"id": 300, "content": "<x>", "special": True})
    ),
    # A 10 MB token colliding with another token's id.
    "tok-long": tokenizer(lambda t: t["model"]["vocab"].update({"x" * 10_000_000: 5})),
    # config.json values.
    "eos-list": config(lambda c: c.update(eos_token_id=[263, 99999])),
    "rope-theta": config(lambda c: c.update(rope_theta=1e-30)),
    "eps": config(lambda c: c.update(rms_norm_eps=1.5)),
    "vocab-i32": config(lambda c: c.update(vocab_size=2**31)),
}


def main():
    src, dst, case = sys.argv[1:4]
    os.makedirs(dst, exist_ok=True)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    name, edit = CASES[case]
    path = os.path.join(dst, name)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(edit(json.loads(text)))


if __name__ == "__main__":
    main()
