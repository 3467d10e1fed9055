#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (scripts/fuzz.sh calls this).

    make_seeds.py --q35c PATH --out DIR

Everything comes from `q35c tiny-model` and `q35c` itself, nothing is
committed: DIR/<target>/ gets

- safetensors: the tiny model's model.safetensors alone (the target
  supplies its config.json), config.json + model.safetensors (tied and
  untied; F32, F16, BF16), and config.json + index + shard;
- gguf: the tiny model as a llama GGUF v3 with byte-level BPE tokenizer
  metadata, in F32 and in a mix of F16, BF16, Q8_0, Q4_0 and Q4_1;
- tokenizer: the tiny model's tokenizer.json and variants (more merges,
  the Digits pre-tokenizer, merges as pairs, unk_token, added-token
  flags), each followed by a text to encode;
- artifact: `q35c --target cpu` artifacts of the tiny model (q35, int4,
  f16 weights) with the code object replaced by 64 bytes (checksums
  recomputed): the target never loads the code, and a smaller input is
  fuzzed faster.

Multi-file inputs are joined by the separator in fuzz/src/lib.rs (SPLIT).
"""

import argparse
import copy
import json
import os
import struct
import subprocess
import sys
import tempfile
from array import array

SPLIT = b"\n#q35-fuzz-split#\n"
# fuzz_targets/safetensors.rs's built-in config is this model's.
SMALL = ["--layers", "1", "--hidden", "16", "--heads", "2", "--kv-heads", "1", "--ffn", "32"]
# Rows of 32 so that every tensor can be stored in ggml's 32-value blocks.
GGUF_MODEL = ["--layers", "1", "--hidden", "32", "--heads", "2", "--kv-heads", "1", "--ffn", "64"]
SAMPLE_TEXT = "Hello, world! It's 2024: the 12345 quick brown foxes jumped, didn't they? ünï 日本 🎉\n\tdone."


def run(cmd):
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.stderr.write(done.stdout.decode(errors="replace"))
        raise SystemExit("make_seeds: %s failed (exit status %d)" % (" ".join(cmd), done.returncode))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- safetensors

def read_safetensors(path):
    """(header dict in file order, data bytes)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + n])
    return header, raw[8 + n:]


def tensors_f32(path):
    """[(name, shape, array('f'))] in file order."""
    header, data = read_safetensors(path)
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        values = array("f")
        values.frombytes(data[a:b])
        out.append((name, info["shape"], values))
    return out


def f16_bytes(values):
    return struct.pack("<%de" % len(values), *values)


def bf16_bytes(values):
    raw = struct.pack("<%df" % len(values), *values)
    return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))


def safetensors_file(tensors, dtype):
    """tensors: [(name, shape, values)]; dtype F32, F16 or BF16."""
    encode = {"F32": lambda v: v.tobytes(), "F16": f16_bytes, "BF16": bf16_bytes}[dtype]
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name, shape, values in tensors:
        data = encode(values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def safetensors_seeds(tied, untied, out):
    config = open(os.path.join(tied, "config.json"), "rb").read()
    model = open(os.path.join(tied, "model.safetensors"), "rb").read()
    write(os.path.join(out, "tiny-alone"), model)
    write(os.path.join(out, "tiny-tied-f32"), config + SPLIT + model)
    tensors = tensors_f32(os.path.join(tied, "model.safetensors"))
    for dtype in ("F16", "BF16"):
        write(os.path.join(out, "tiny-tied-" + dtype.lower()), config + SPLIT + safetensors_file(tensors, dtype))
    write(os.path.join(out, "tiny-untied-f32"),
          open(os.path.join(untied, "config.json"), "rb").read() + SPLIT
          + open(os.path.join(untied, "model.safetensors"), "rb").read())
    index = {"metadata": {"total_size": sum(4 * len(v) for _, _, v in tensors)},
             "weight_map": {name: "model-00001-of-00001.safetensors" for name, _, _ in tensors}}
    write(os.path.join(out, "tiny-sharded-f16"),
          config + SPLIT + json.dumps(index, indent=2).encode() + SPLIT + safetensors_file(tensors, "F16"))


# ----------------------------------------------------------------------- GGUF

GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 3, 8, 30
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
          T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, value):
    if kind == T_STR:
        return gguf_str(value)
    if kind == T_ARR:
        elem, items = value
        return struct.pack("<IQ", elem, len(items)) + b"".join(gguf_value(elem, v) for v in items)
    return struct.pack(SCALAR[kind], value)


def q8_0(values):
    out = bytearray()
    for i in range(0, len(values), 32):
        block = values[i:i + 32]
        amax = max(abs(v) for v in block)
        d = amax / 127 if amax else 0.0
        out += struct.pack("<e", d)
        out += struct.pack("<32b", *[max(-127, min(127, round(v / d))) if d else 0 for v in block])
    return bytes(out)


def q4_0(values):
    out = bytearray()
    for i in range(0, len(values), 32):
        block = values[i:i + 32]
        m = max(block, key=abs)
        d = m / -8 if m else 0.0
        q = [max(0, min(15, int(v / d + 8.5))) if d else 8 for v in block]
        out += struct.pack("<e", d)
        out += bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    return bytes(out)


def q4_1(values):
    out = bytearray()
    for i in range(0, len(values), 32):
        block = values[i:i + 32]
        lo, hi = min(block), max(block)
        d = (hi - lo) / 15 if hi > lo else 0.0
        q = [max(0, min(15, int((v - lo) / d + 0.5))) if d else 0 for v in block]
        out += struct.pack("<ee", d, lo)
        out += bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    return bytes(out)


ENCODE = {GGML_F32: lambda v: v.tobytes(), GGML_F16: f16_bytes, GGML_BF16: bf16_bytes,
          GGML_Q8_0: q8_0, GGML_Q4_0: q4_0, GGML_Q4_1: q4_1}

GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    parts = hf.split(".")  # model.layers.N.rest
    return "blk.%s.%s" % (parts[2], GGUF_NAMES[".".join(parts[3:])])


def gguf_file(config, tokenizer, tensors, types):
    """A llama GGUF v3; `types(name, shape)` picks each tensor's ggml type.
    (q/k rows are not permuted as llama.cpp does: the values do not matter.)"""
    vocab = tokenizer["model"]["vocab"]
    added = {t["id"]: t["content"] for t in tokenizer["added_tokens"]}
    n = max(list(vocab.values()) + list(added)) + 1
    tokens = [""] * n
    kinds = [1] * n
    for tok, i in vocab.items():
        tokens[i] = tok
    for i, tok in added.items():
        tokens[i], kinds[i] = tok, 3
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    kv = [
        ("general.architecture", T_STR, "llama"),
        ("general.name", T_STR, "q35 fuzz seed"),
        ("general.alignment", T_U32, 32),
        ("llama.vocab_size", T_U32, config["vocab_size"]),
        ("llama.context_length", T_U32, config["max_position_embeddings"]),
        ("llama.embedding_length", T_U32, config["hidden_size"]),
        ("llama.feed_forward_length", T_U32, config["intermediate_size"]),
        ("llama.block_count", T_U32, config["num_hidden_layers"]),
        ("llama.attention.head_count", T_U32, config["num_attention_heads"]),
        ("llama.attention.head_count_kv", T_U32, config["num_key_value_heads"]),
        ("llama.attention.key_length", T_U32, config["head_dim"]),
        ("llama.rope.dimension_count", T_U32, config["head_dim"]),
        ("llama.attention.layer_norm_rms_epsilon", T_F32, config["rms_norm_eps"]),
        ("llama.rope.freq_base", T_F32, config["rope_theta"]),
        ("tokenizer.ggml.model", T_STR, "gpt2"),
        ("tokenizer.ggml.pre", T_STR, "smollm"),
        ("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        ("tokenizer.ggml.token_type", T_ARR, (T_I32, kinds)),
        ("tokenizer.ggml.merges", T_ARR, (T_STR, merges)),
        ("tokenizer.ggml.bos_token_id", T_U32, config["bos_token_id"]),
        ("tokenizer.ggml.eos_token_id", T_U32, config["eos_token_id"]),
        ("tokenizer.ggml.add_bos_token", T_BOOL, False),
        ("tokenizer.chat_template", T_STR, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ]
    infos, blobs = b"", []
    offset = 0
    for name, shape, values in tensors:
        kind = types(name, shape)
        data = ENCODE[kind](values)
        infos += gguf_str(gguf_name(name)) + struct.pack("<I", len(shape))
        infos += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        infos += struct.pack("<IQ", kind, offset)
        pad = -len(data) % 32
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    out += b"".join(gguf_str(k) + struct.pack("<I", t) + gguf_value(t, v) for k, t, v in kv)
    out += infos
    out += b"\0" * (-len(out) % 32)
    return out + b"".join(blobs)


def gguf_seeds(small_dir, model_dir, out):
    def load(d):
        return (json.load(open(os.path.join(d, "config.json"))),
                json.load(open(os.path.join(d, "tokenizer.json"))),
                tensors_f32(os.path.join(d, "model.safetensors")))
    config, tokenizer, tensors = load(small_dir)
    write(os.path.join(out, "tiny-f32.gguf"), gguf_file(config, tokenizer, tensors, lambda n, s: GGML_F32))
    config, tokenizer, tensors = load(model_dir)
    cycle = [GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_BF16, GGML_F16]
    kinds = {}

    def mixed(name, shape):
        if len(shape) == 1:
            return GGML_F16 if "norm" in name and "layers" in name else GGML_F32
        kinds[name] = cycle[len(kinds) % len(cycle)]
        return kinds[name]
    write(os.path.join(out, "tiny-mixed.gguf"), gguf_file(config, tokenizer, tensors, mixed))


# ------------------------------------------------------------------ tokenizer

def byte_level(text):
    """GPT-2's byte-to-unicode mapping of `text`'s UTF-8 bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, map(chr, cs)))
    return "".join(table[b] for b in text.encode())


def with_more_merges(tokenizer, text, count):
    """Adds up to `count` merges (and their tokens) learned from `text`."""
    t = copy.deepcopy(tokenizer)
    vocab = t["model"]["vocab"]
    merges = t["model"]["merges"]
    words = [[c for c in byte_level(w)] for w in text.replace(" ", "\n ").split("\n") if w]
    next_id = max(list(vocab.values()) + [a["id"] for a in t["added_tokens"]]) + 1
    for _ in range(count):
        pairs = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: kv[1])
        merges.append(a + " " + b)
        if a + b not in vocab:
            vocab[a + b] = next_id
            next_id += 1
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    return t


def tokenizer_seeds(tokenizer_path, out):
    base = json.load(open(tokenizer_path))
    variants = {"tiny": base}
    more = with_more_merges(base, SAMPLE_TEXT * 3, 60)
    variants["more-merges"] = more
    digits = copy.deepcopy(more)
    digits["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
    variants["digits"] = digits
    pairs = copy.deepcopy(more)
    pairs["model"]["merges"] = [m.split(" ") for m in pairs["model"]["merges"]]
    pairs["model"]["unk_token"] = byte_level("?")
    pairs["pre_tokenizer"]["use_regex"] = False
    variants["pairs-unk-noregex"] = pairs
    flags = copy.deepcopy(more)
    nid = max(flags["model"]["vocab"].values()) + 10
    flags["added_tokens"] += [
        {"id": nid, "content": "<|im_start|>", "special": True, "lstrip": True, "rstrip": False, "single_word": False, "normalized": False},
        {"id": nid + 1, "content": "<|im_end|>", "special": True, "lstrip": False, "rstrip": True, "single_word": False, "normalized": False},
        {"id": nid + 2, "content": "word", "special": False, "lstrip": False, "rstrip": False, "single_word": True, "normalized": True},
    ]
    variants["added-flags"] = flags
    for name, t in variants.items():
        text = json.dumps(t, indent=1, ensure_ascii=False).encode()
        write(os.path.join(out, name), text + SPLIT + ("<s>" + SAMPLE_TEXT + "<|im_start|>word</s>").encode())


# ------------------------------------------------------------------- artifact

def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def small_code(artifact):
    """The artifact with its code object replaced by 64 bytes."""
    header, data = read_safetensors_bytes(artifact)
    manifest = json.loads(header["__metadata__"]["q35.manifest"])
    payloads = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        payloads.append((name, data[a:b]))
    payloads = [(n, b"\x7fELF" + b"\0" * 60 if n == manifest["code"] else d) for n, d in payloads]
    manifest["checksums"] = {n: "%016x" % fnv1a64(d) for n, d in payloads}
    text = json.dumps(manifest, separators=(",", ":"))
    meta = dict(header["__metadata__"], **{"q35.manifest": text})
    if "q35.manifest_checksum" in meta:  # artifact version 2
        meta["q35.manifest_checksum"] = "%016x" % fnv1a64(text.encode())
    out = {"__metadata__": meta}
    offset = 0
    for name, d in payloads:
        out[name] = {"dtype": "U8", "shape": [len(d)], "data_offsets": [offset, offset + len(d)]}
        offset += len(d)
    text = json.dumps(out, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(d for _, d in payloads)


def read_safetensors_bytes(raw):
    (n,) = struct.unpack_from("<Q", raw)
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def artifact_seeds(q35c, model_dir, work, out):
    for quant, group in (("q35", "32"), ("int4", "32"), ("f16", "32")):
        path = os.path.join(work, "tiny-%s.q35" % quant)
        run([q35c, model_dir, "--target", "cpu", "--quant", quant, "--group", group,
             "--context", "16", "--max-tokens", "4", "-o", path])
        write(os.path.join(out, "tiny-%s" % quant), small_code(open(path, "rb").read()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--q35c", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        tied, untied, wide = (os.path.join(work, d) for d in ("tied", "untied", "wide"))
        run([args.q35c, "tiny-model", "-o", tied] + SMALL)
        run([args.q35c, "tiny-model", "-o", untied, "--untied", "--seed", "1"] + SMALL)
        run([args.q35c, "tiny-model", "-o", wide] + GGUF_MODEL)
        safetensors_seeds(tied, untied, os.path.join(args.out, "safetensors"))
        gguf_seeds(tied, wide, os.path.join(args.out, "gguf"))
        tokenizer_seeds(os.path.join(tied, "tokenizer.json"), os.path.join(args.out, "tokenizer"))
        # The converter's tokenizer.json (from the GGUF's metadata) as well.
        conv = os.path.join(work, "converted")
        run([args.q35c, "convert", os.path.join(args.out, "gguf", "tiny-mixed.gguf"), "-o", conv])
        text = open(os.path.join(conv, "tokenizer.json"), "rb").read()
        write(os.path.join(args.out, "tokenizer", "from-gguf"), text + SPLIT + SAMPLE_TEXT.encode())
        artifact_seeds(args.q35c, tied, work, os.path.join(args.out, "artifact"))
    for target in sorted(os.listdir(args.out)):
        files = os.listdir(os.path.join(args.out, target))
        print("seeds: %s: %d files" % (target, len(files)), file=sys.stderr)


if __name__ == "__main__":
    main()
