# Experiment (not part of q35c): QuaRot-style rotation absorbed offline into
# a Llama checkpoint, to measure whether it helps q35's weight-only
# quantization before building it as a compiler pass (docs/quality.md,
# "Rotation"). Folds every RMSNorm scale into the matrices that read it,
# multiplies the residual stream by a randomized Hadamard matrix
# (576 = 12·12·4: Paley's order-12 matrix ⊗ Sylvester's), rotates each
# V/O head by a randomized Hadamard of order head_dim, and writes an
# untied LM head (E·diag(γ_final)·Q). Needs numpy.
#
#   python3 rotate.py SRC/model.safetensors DST [had|orth]
#   q35c DST --quant f16 --target cpu -o rot-f16.q35   # equals the source: 18.30 on GPL-3
import json, struct, sys, os, shutil
import numpy as np

def read_st(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == '__metadata__': continue
        a, b = v['data_offsets']
        buf = data[a:b]
        dt = v['dtype']
        if dt == 'F32': arr = np.frombuffer(buf, np.float32)
        elif dt == 'F16': arr = np.frombuffer(buf, np.float16).astype(np.float32)
        elif dt == 'BF16':
            u = np.frombuffer(buf, np.uint16).astype(np.uint32) << 16
            arr = u.view(np.float32)
        else: raise SystemExit(dt)
        out[k] = arr.reshape(v['shape']).astype(np.float64)
    return out

def write_st(path, tensors):
    hdr = {}; off = 0; blobs = []
    for k, v in tensors.items():
        b = np.ascontiguousarray(v.astype(np.float32)).tobytes()
        hdr[k] = {'dtype': 'F32', 'shape': list(v.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)

def paley12():
    q = 11
    chi = np.zeros(q)
    for x in range(1, q): chi[(x * x) % q] = 1
    chi = np.where(chi == 1, 1, -1); chi[0] = 0
    Qm = np.array([[chi[(j - i) % q] for j in range(q)] for i in range(q)])
    S = np.zeros((12, 12)); S[0, 1:] = 1; S[1:, 0] = -1; S[1:, 1:] = Qm
    H = S + np.eye(12)
    assert np.allclose(H @ H.T, 12 * np.eye(12))
    return H

def sylvester(n):
    H = np.array([[1.0]])
    while H.shape[0] < n: H = np.block([[H, H], [H, -H]])
    return H

def hadamard(n):
    H = np.array([[1.0]]); m = n
    while m & (m - 1) != 0:
        assert m % 12 == 0, n
        H = np.kron(H, paley12()); m //= 12
    H = np.kron(H, sylvester(m))
    assert np.allclose(H @ H.T, n * np.eye(n))
    return H / np.sqrt(n)

def rand_hadamard(n, rng):
    return np.diag(rng.choice([-1.0, 1.0], n)) @ hadamard(n)

src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else 'had'
cfg = json.load(open(os.path.join(os.path.dirname(src), 'config.json')))
W = read_st(src)
d = cfg['hidden_size']; hd = d // cfg['num_attention_heads']
rng = np.random.default_rng(0)
if mode == 'had': Q = rand_hadamard(d, rng)
else: Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
Hh = rand_hadamard(hd, rng)
E = W['model.embed_tokens.weight']
lm = W.get('lm_head.weight', E)
out = {}
out['model.embed_tokens.weight'] = E @ Q
L = cfg['num_hidden_layers']
for i in range(L):
    p = f'model.layers.{i}'
    g1 = W[f'{p}.input_layernorm.weight']; g2 = W[f'{p}.post_attention_layernorm.weight']
    for n in ['q_proj', 'k_proj', 'v_proj']:
        w = W[f'{p}.self_attn.{n}.weight'] * g1[None, :] @ Q
        if n == 'v_proj':
            w = np.concatenate([Hh.T @ w[h*hd:(h+1)*hd] for h in range(w.shape[0] // hd)])
        out[f'{p}.self_attn.{n}.weight'] = w
    wo = W[f'{p}.self_attn.o_proj.weight']
    wo = np.concatenate([wo[:, h*hd:(h+1)*hd] @ Hh for h in range(wo.shape[1] // hd)], axis=1)
    out[f'{p}.self_attn.o_proj.weight'] = Q.T @ wo
    out[f'{p}.input_layernorm.weight'] = np.ones(d)
    out[f'{p}.post_attention_layernorm.weight'] = np.ones(d)
    for n in ['gate_proj', 'up_proj']:
        out[f'{p}.mlp.{n}.weight'] = W[f'{p}.mlp.{n}.weight'] * g2[None, :] @ Q
    out[f'{p}.mlp.down_proj.weight'] = Q.T @ W[f'{p}.mlp.down_proj.weight']
gf = W['model.norm.weight']
out['model.norm.weight'] = np.ones(d)
out['lm_head.weight'] = lm * gf[None, :] @ Q
# keep HF order: embed, layers..., norm, lm_head
os.makedirs(dst, exist_ok=True)
for f in os.listdir(os.path.dirname(src)):
    if f.endswith('.json') or f.endswith('.txt'):
        shutil.copy(os.path.join(os.path.dirname(src), f), dst)
cfg['tie_word_embeddings'] = False
json.dump(cfg, open(os.path.join(dst, 'config.json'), 'w'), indent=1)
write_st(os.path.join(dst, 'model.safetensors'), out)
print('wrote', dst)
