//! Offline quantization experiments on a safetensors model (f32 tensors).
//! Run with `cargo run -p q35-format --example quant_lab -- COMMAND ...`
//! (the crate is built at opt-level 3 even in dev builds).
//!
//! ```text
//! quant_lab report MODEL_DIR KIND GROUP
//!     RMSE per tensor class: plain, mse search, and an "ideal" quantizer
//!     with unrounded f64 min/max (shows what the f16 min and u8 range
//!     code storage cost)
//! quant_lab subset MODEL_DIR KIND GROUP SEARCH
//!     RMSE and time on layers 0-2 and 8192 embedding rows (search tuning)
//! quant_lab calib MODEL_DIR IDS_FILE OUT.json
//!     a plain f32 forward pass (SmolLM2 shapes) over the token ids in
//!     windows of 256, writing the mean x^2 of every input column of every
//!     matrix (the tied embedding gets the LM head's input): the file
//!     `q35c --quant-importance` reads. Token ids: the q35-rt example
//!     `tokenize TOKENIZER_JSON TEXT`.
//! quant_lab fake MODEL_DIR OUT_DIR POLICY [--perm] [--imp FILE] [--awq]
//!     writes OUT_DIR (config, tokenizer, f32 model.safetensors) whose
//!     matrices are quantized and dequantized again with the reference
//!     decode, so policies can be measured with `q35c OUT_DIR --quant f32`
//!     before any kernel supports them. POLICY is comma-separated
//!     KEY=KIND[:GROUP[:SEARCH]]; a tensor takes the first KEY its name
//!     contains, else `default` (e.g. `default=q35,embed=int4:128`).
//!     --perm reorders each matrix's input columns by importance so the
//!     important half lands on the 4-bit (even) columns, then undoes it (an
//!     estimate of a stored permutation; the permutation itself is not
//!     counted in bpw). Importance is --imp FILE (from `calib`) or else the
//!     RMSNorm weight squared in front of q/k/v/gate/up and the LM head.
//!     --awq quantizes with `quantize_with_importance` using --imp.
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use q35_format::{GroupSize, QuantKind, QuantSearch, QuantizedTensor};

struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn load(dir: &Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("model.safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let base = 8 + n;
    let mut out = BTreeMap::new();
    for (name, v) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(v["dtype"], "F32", "{name}");
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let off = v["data_offsets"].as_array().unwrap();
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        let data = bytes[base + a..base + b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(name.clone(), Tensor { shape, data });
    }
    out
}

fn save(dir: &Path, tensors: &BTreeMap<String, Tensor>) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0usize;
    for (name, t) in tensors {
        let len = t.data.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.join("model.safetensors")).unwrap());
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    for t in tensors.values() {
        for x in &t.data {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}

fn is_matrix(name: &str, t: &Tensor) -> bool {
    t.shape.len() == 2 && name.ends_with(".weight")
}

fn class(name: &str) -> &'static str {
    for c in [
        "embed",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ] {
        if name.contains(c) {
            return c;
        }
    }
    "other"
}

/// Quantize-dequantize with plain min/max in f64 and no parameter rounding.
fn ideal(data: &[f32], cols: usize, kind: QuantKind, group: GroupSize) -> f64 {
    let g = group.width(cols);
    let mut sse = 0.0;
    for row in data.chunks_exact(cols) {
        for (gi, grp) in row.chunks(g).enumerate() {
            let _ = gi;
            let lo = grp.iter().fold(f64::INFINITY, |a, &x| a.min(f64::from(x)));
            let hi = grp
                .iter()
                .fold(f64::NEG_INFINITY, |a, &x| a.max(f64::from(x)));
            for (i, &x) in grp.iter().enumerate() {
                let l = f64::from(kind.levels(i).unwrap());
                let s = (hi - lo) / l;
                let q = if s > 0.0 {
                    ((f64::from(x) - lo) / s).round().clamp(0.0, l)
                } else {
                    0.0
                };
                let e = f64::from(x) - (lo + q * s);
                sse += e * e;
            }
        }
    }
    sse
}

fn fq(
    name: &str,
    t: &Tensor,
    kind: QuantKind,
    group: GroupSize,
    search: QuantSearch,
) -> (Vec<f32>, f64) {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let q = QuantizedTensor::quantize_with(name, rows, cols, &t.data, kind, group, search).unwrap();
    (q.dequantize(), q.byte_len() as f64 * 8.0)
}

fn sse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}

fn rms(x: &[f32], w: &[f32]) -> Vec<f32> {
    let ms = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + 1e-5).sqrt();
    x.iter()
        .zip(w)
        .map(|(&x, &w)| (f64::from(x) * inv * f64::from(w)) as f32)
        .collect()
}

fn mv(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn rope(head: &mut [f32], pos: usize, theta: f64) {
    let half = head.len() / 2;
    let d = head.len() as f64;
    for i in 0..half {
        let angle = pos as f64 * theta.powf(-2.0 * i as f64 / d);
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (f64::from(head[i]), f64::from(head[i + half]));
        head[i] = (a * cos - b * sin) as f32;
        head[i + half] = (b * cos + a * sin) as f32;
    }
}

/// Mean x^2 per input column of every matrix (SmolLM2 shapes: 9 heads,
/// 3 kv heads, head_dim 64, rope theta 1e5).
fn calibrate(m: &BTreeMap<String, Tensor>, ids: &[usize]) -> BTreeMap<String, Vec<f64>> {
    let (hd, heads, kvh, theta) = (64usize, 9usize, 3usize, 100000.0);
    let hidden = m["model.embed_tokens.weight"].shape[1];
    let layers = (0..)
        .take_while(|l| m.contains_key(&format!("model.layers.{l}.input_layernorm.weight")))
        .count();
    let mut acc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut add = |name: String, x: &[f32]| {
        let a = acc.entry(name).or_insert_with(|| vec![0.0; x.len()]);
        for (a, &v) in a.iter_mut().zip(x) {
            *a += f64::from(v) * f64::from(v);
        }
    };
    let w = |n: String| &m[&n].data;
    for window in ids.chunks(256) {
        let mut kc: Vec<Vec<f32>> = vec![Vec::new(); layers];
        let mut vc: Vec<Vec<f32>> = vec![Vec::new(); layers];
        for (pos, &t) in window.iter().enumerate() {
            let mut x = m["model.embed_tokens.weight"].data[t * hidden..(t + 1) * hidden].to_vec();
            for l in 0..layers {
                let p = format!("model.layers.{l}.");
                let h = rms(&x, w(p.clone() + "input_layernorm.weight"));
                for n in ["q_proj", "k_proj", "v_proj"] {
                    add(format!("{p}self_attn.{n}.weight"), &h);
                }
                let mut q = mv(w(p.clone() + "self_attn.q_proj.weight"), &h);
                let mut k = mv(w(p.clone() + "self_attn.k_proj.weight"), &h);
                let v = mv(w(p.clone() + "self_attn.v_proj.weight"), &h);
                q.chunks_exact_mut(hd).for_each(|hh| rope(hh, pos, theta));
                k.chunks_exact_mut(hd).for_each(|hh| rope(hh, pos, theta));
                kc[l].extend_from_slice(&k);
                vc[l].extend_from_slice(&v);
                let len = pos + 1;
                let mut att = vec![0f32; heads * hd];
                for hh in 0..heads {
                    let kv = (hh / (heads / kvh)) * hd;
                    let qh = &q[hh * hd..(hh + 1) * hd];
                    let sc: Vec<f64> = (0..len)
                        .map(|j| {
                            qh.iter()
                                .zip(&kc[l][j * kvh * hd + kv..][..hd])
                                .map(|(a, b)| f64::from(a * b))
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let mx = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                    let tot: f64 = e.iter().sum();
                    for d in 0..hd {
                        let s: f64 = (0..len)
                            .map(|j| e[j] * f64::from(vc[l][j * kvh * hd + kv + d]))
                            .sum();
                        att[hh * hd + d] = (s / tot) as f32;
                    }
                }
                add(format!("{p}self_attn.o_proj.weight"), &att);
                let o = mv(w(p.clone() + "self_attn.o_proj.weight"), &att);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let h = rms(&x, w(p.clone() + "post_attention_layernorm.weight"));
                add(format!("{p}mlp.gate_proj.weight"), &h);
                add(format!("{p}mlp.up_proj.weight"), &h);
                let g = mv(w(p.clone() + "mlp.gate_proj.weight"), &h);
                let u = mv(w(p.clone() + "mlp.up_proj.weight"), &h);
                let act: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                add(format!("{p}mlp.down_proj.weight"), &act);
                let dn = mv(w(p.clone() + "mlp.down_proj.weight"), &act);
                x.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
            }
            let h = rms(&x, w("model.norm.weight".into()));
            add("model.embed_tokens.weight".into(), &h);
        }
    }
    for v in acc.values_mut() {
        v.iter_mut().for_each(|a| *a /= ids.len() as f64);
    }
    acc
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = load(Path::new(&args[2]));
    match args[1].as_str() {
        "report" => {
            let kind: QuantKind = args[3].parse().unwrap();
            let group: GroupSize = args[4].parse().unwrap();
            // class -> (n, plain sse, mse sse, ideal sse)
            let mut acc: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
            let work: Vec<(&String, &Tensor)> =
                model.iter().filter(|(n, t)| is_matrix(n, t)).collect();
            let results = std::sync::Mutex::new(Vec::new());
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(name, t)) = work.get(i) else { break };
                        let (p, _) = fq(name, t, kind, group, QuantSearch::None);
                        let (m, _) = fq(name, t, kind, group, QuantSearch::Mse);
                        let r = [
                            t.data.len() as f64,
                            sse(&t.data, &p),
                            sse(&t.data, &m),
                            ideal(&t.data, t.shape[1], kind, group),
                        ];
                        results.lock().unwrap().push((class(name), r));
                    });
                }
            });
            for (c, r) in results.into_inner().unwrap() {
                for who in [c, "ALL"] {
                    let a = acc.entry(who).or_default();
                    for k in 0..4 {
                        a[k] += r[k];
                    }
                }
            }
            println!("{kind} g{group}: rmse per class   plain        mse   (mse/plain)   ideal-f64-minmax");
            for (c, a) in acc {
                let f = |x: f64| (x / a[0]).sqrt();
                println!(
                    "{c:>10} {:>12.4e} {:>10.4e}  ({:.3})  {:>10.4e}",
                    f(a[1]),
                    f(a[2]),
                    f(a[2]) / f(a[1]).powi(2) / a[0],
                    f(a[3])
                );
            }
        }
        "subset" => {
            // Layers 0..=2 and the first 8192 embedding rows: quick search tuning.
            let kind: QuantKind = args[3].parse().unwrap();
            let group: GroupSize = args[4].parse().unwrap();
            let search: QuantSearch = args[5].parse().unwrap();
            let started = std::time::Instant::now();
            let (mut n, mut e) = (0.0, 0.0);
            for (name, t) in model.iter().filter(|(n, t)| is_matrix(n, t)) {
                let keep = name.contains("embed")
                    || [".0.", ".1.", ".2."]
                        .iter()
                        .any(|l| name.contains(&format!("layers{l}")));
                if !keep {
                    continue;
                }
                let rows = if name.contains("embed") {
                    8192
                } else {
                    t.shape[0]
                };
                let sub = Tensor {
                    shape: vec![rows, t.shape[1]],
                    data: t.data[..rows * t.shape[1]].to_vec(),
                };
                let (d, _) = fq(name, &sub, kind, group, search);
                e += sse(&sub.data, &d);
                n += sub.data.len() as f64;
            }
            println!(
                "{kind} g{group} {search}: rmse {:.5e} in {:.1} s",
                (e / n).sqrt(),
                started.elapsed().as_secs_f64()
            );
        }
        "calib" => {
            // calib MODEL IDS_FILE OUT: per-input-column mean of x^2 for every
            // matrix, from a plain f32 forward pass over the ids (windows of 256).
            let ids: Vec<usize> = std::fs::read_to_string(&args[3])
                .unwrap()
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let imp = calibrate(&model, &ids);
            let mut f = std::io::BufWriter::new(std::fs::File::create(&args[4]).unwrap());
            serde_json::to_writer(&mut f, &imp).unwrap();
            println!("calibrated on {} tokens", ids.len());
        }
        "fake" => {
            let out = Path::new(&args[3]);
            // POLICY: comma-separated KEY=KIND[:GROUP[:SEARCH]]; a tensor takes
            // the first KEY that its name contains, else `default`.
            let policy: Vec<(String, (QuantKind, GroupSize, QuantSearch))> = args[4]
                .split(',')
                .map(|item| {
                    let (key, spec) = item.split_once('=').expect("KEY=SPEC");
                    let mut it = spec.split(':');
                    let kind = it.next().unwrap().parse().unwrap();
                    let group = it.next().map_or(GroupSize::G128, |g| g.parse().unwrap());
                    let search = it.next().map_or(QuantSearch::None, |s| s.parse().unwrap());
                    (key.to_string(), (kind, group, search))
                })
                .collect();
            let perm = args.iter().any(|a| a == "--perm");
            // --imp FILE: per-column mean x^2 from `calib` (else the RMSNorm
            // weight is the importance proxy where there is one).
            let imp: Option<BTreeMap<String, Vec<f64>>> = args
                .iter()
                .position(|a| a == "--imp")
                .map(|i| serde_json::from_slice(&std::fs::read(&args[i + 1]).unwrap()).unwrap());
            std::fs::create_dir_all(out).unwrap();
            for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
                std::fs::copy(Path::new(&args[2]).join(f), out.join(f)).unwrap();
            }
            let names: Vec<String> = model.keys().cloned().collect();
            let mut outm = BTreeMap::new();
            let (mut bits, mut weights, mut total_sse) = (0.0, 0.0, 0.0);
            for name in names {
                let t = &model[&name];
                if !is_matrix(&name, t) {
                    outm.insert(
                        name,
                        Tensor {
                            shape: t.shape.clone(),
                            data: t.data.clone(),
                        },
                    );
                    continue;
                }
                let (k, g, search) = policy
                    .iter()
                    .find(|(key, _)| key != "default" && name.contains(key.as_str()))
                    .or_else(|| policy.iter().find(|(key, _)| key == "default"))
                    .expect("a default policy")
                    .1;
                let (rows, cols) = (t.shape[0], t.shape[1]);
                // Importance proxy for the input columns: the RMSNorm weight
                // in front of the matrix, squared.
                let norm = if name.contains("embed") {
                    Some("model.norm.weight".to_string())
                } else if ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .any(|c| name.contains(c))
                {
                    Some(
                        name.split(".self_attn").next().unwrap().to_string()
                            + ".input_layernorm.weight",
                    )
                } else if ["gate_proj", "up_proj"].iter().any(|c| name.contains(c)) {
                    Some(
                        name.split(".mlp").next().unwrap().to_string()
                            + ".post_attention_layernorm.weight",
                    )
                } else {
                    None
                };
                let imp_v: Option<Vec<f32>> = match (&imp, norm) {
                    (Some(i), _) => i
                        .get(&name)
                        .map(|v| v.iter().map(|&x| x.sqrt() as f32).collect()),
                    (None, Some(n)) => Some(model[&n].data.clone()),
                    _ => None,
                };
                let order: Option<Vec<usize>> = match (perm && k == QuantKind::Q35, imp_v) {
                    (true, Some(gamma)) => {
                        let mut idx: Vec<usize> = (0..cols).collect();
                        idx.sort_by(|&a, &b| {
                            (gamma[b] * gamma[b]).total_cmp(&(gamma[a] * gamma[a]))
                        });
                        let half = cols.div_ceil(2);
                        // position 2j <- j-th most important, 2j+1 <- (half+j)-th
                        Some(
                            (0..cols)
                                .map(|p| {
                                    if p % 2 == 0 {
                                        idx[p / 2]
                                    } else {
                                        idx[half + p / 2]
                                    }
                                })
                                .collect(),
                        )
                    }
                    _ => None,
                };
                let src: Vec<f32> = match &order {
                    Some(o) => t
                        .data
                        .chunks_exact(cols)
                        .flat_map(|r| o.iter().map(move |&c| r[c]))
                        .collect(),
                    None => t.data.clone(),
                };
                let tt = Tensor {
                    shape: vec![rows, cols],
                    data: src,
                };
                let awq = args.iter().any(|a| a == "--awq") && k.is_coded();
                let (deq, b) = match imp.as_ref().and_then(|i| i.get(&name)).filter(|_| awq) {
                    Some(v) => {
                        let v: Vec<f32> = match &order {
                            Some(o) => o.iter().map(|&c| v[c] as f32).collect(),
                            None => v.iter().map(|&c| c as f32).collect(),
                        };
                        let q = QuantizedTensor::quantize_with_importance(
                            &name, rows, cols, &tt.data, k, g, &v,
                        )
                        .unwrap();
                        (q.dequantize(), q.byte_len() as f64 * 8.0)
                    }
                    None => fq(&name, &tt, k, g, search),
                };
                let deq = match &order {
                    Some(o) => {
                        let mut d = vec![0.0; deq.len()];
                        for (r, row) in deq.chunks_exact(cols).enumerate() {
                            for (p, &c) in o.iter().enumerate() {
                                d[r * cols + c] = row[p];
                            }
                        }
                        d
                    }
                    None => deq,
                };
                total_sse += sse(&t.data, &deq);
                bits += b;
                weights += t.data.len() as f64;
                outm.insert(
                    name,
                    Tensor {
                        shape: t.shape.clone(),
                        data: deq,
                    },
                );
            }
            save(out, &outm);
            println!(
                "bpw {:.4} rmse {:.4e} (matrices only, permutation not counted)",
                bits / weights,
                (total_sse / weights).sqrt()
            );
        }
        _ => panic!("usage: see the file's doc comment"),
    }
}
