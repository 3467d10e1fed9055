//! The model graph: ops and the tensors flowing between them, built from a
//! model's configuration and checked to be acyclic.
//!
//! Nodes are ops of a Llama-family decoder (embedding, RMSNorm, linear
//! layers, RoPE, attention, SwiGLU, residual adds); edges carry
//! activations from producer to consumer with the operand position.
//! Weights are not nodes: an op names the weight it reads, as the IR will.
//! The MLIR emitter walks [`ModelGraph::order`]; `--emit=graph` prints
//! [`ModelGraph::to_dot`].

use crate::front::config::ModelConfig;
use petgraph::{
    algo::toposort,
    stable_graph::{NodeIndex, StableDiGraph},
    visit::EdgeRef,
    Direction,
};
use std::fmt::Write as _;

/// What an op computes. Widths are the last dimension of the result; the
/// first is the number of tokens, dynamic.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// Function argument: token ids, `tensor<?xi32>`.
    Tokens,
    /// Function argument: positions, `tensor<?xi32>`.
    Positions,
    Embedding { table: String },
    RmsNorm { gamma: String, epsilon: f64 },
    /// `x · Wᵀ` with `W[out_features, in_features]`, dequantized on the fly.
    Linear { weight: String, out_features: usize, in_features: usize },
    Rope { head_dim: usize, theta: f64 },
    /// Grouped-query causal attention of one layer over its KV cache.
    Attention { layer: usize, num_heads: usize, num_kv_heads: usize, head_dim: usize },
    SwiGlu,
    Add,
    /// The online incoherence transform `Q x` (`inverse`: `Qᵀ x`) of
    /// `q35_format::rotation`, inserted by [`ModelGraph::rotate_inputs`].
    Rotate { inverse: bool },
}

/// One op: a name saying where it sits in the model, what it computes,
/// and the width of its result.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub name: String,
    pub kind: OpKind,
    pub width: usize,
}

/// An activation flowing into operand `operand` of the consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand(pub usize);

/// A weight the graph reads, with its HF name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightUse {
    pub name: String,
    pub shape: Vec<usize>,
    /// Matrices are quantized; vectors (norm weights) stay f32.
    pub is_matrix: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model graph has a cycle through `{0}`")]
    Cycle(String),
}

/// The whole forward pass.
pub struct ModelGraph {
    pub graph: StableDiGraph<Op, Operand>,
    /// Topological order (producers before consumers).
    pub order: Vec<NodeIndex>,
    /// The op producing the logits.
    pub logits: NodeIndex,
    /// Attention ops, by layer, whose cache results the forward returns.
    pub attention: Vec<NodeIndex>,
    /// Matrices whose input [`ModelGraph::rotate_inputs`] rotated, with
    /// that input's width: they are stored as `W Qᵀ`
    /// ([`ModelGraph::weight_f32`]).
    pub rotated: std::collections::BTreeMap<String, usize>,
}

struct Builder {
    graph: StableDiGraph<Op, Operand>,
}

impl Builder {
    fn op(&mut self, name: impl Into<String>, kind: OpKind, width: usize, inputs: &[NodeIndex]) -> NodeIndex {
        let node = self.graph.add_node(Op {
            name: name.into(),
            kind,
            width,
        });
        for (i, &input) in inputs.iter().enumerate() {
            self.graph.add_edge(input, node, Operand(i));
        }
        node
    }

    fn linear(&mut self, weight: &str, out_features: usize, in_features: usize, x: NodeIndex) -> NodeIndex {
        let name = weight.trim_end_matches(".weight").to_string();
        self.op(
            name,
            OpKind::Linear {
                weight: weight.to_string(),
                out_features,
                in_features,
            },
            out_features,
            &[x],
        )
    }
}

impl ModelGraph {
    /// The graph of a Llama-family decoder (HF tensor names).
    pub fn llama(config: &ModelConfig) -> Result<Self, Error> {
        let c = config;
        let (hidden, ffn) = (c.hidden_size, c.intermediate_size);
        let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let mut b = Builder {
            graph: StableDiGraph::new(),
        };
        let tokens = b.op("tokens", OpKind::Tokens, 1, &[]);
        let positions = b.op("positions", OpKind::Positions, 1, &[]);
        let mut x = b.op(
            "model.embed_tokens",
            OpKind::Embedding {
                table: "model.embed_tokens.weight".into(),
            },
            hidden,
            &[tokens],
        );
        let mut attention = Vec::new();
        for layer in 0..c.num_hidden_layers {
            let p = format!("model.layers.{layer}");
            let norm = |b: &mut Builder, which: &str, x| {
                b.op(
                    format!("{p}.{which}"),
                    OpKind::RmsNorm {
                        gamma: format!("{p}.{which}.weight"),
                        epsilon: c.rms_norm_eps,
                    },
                    hidden,
                    &[x],
                )
            };
            let n1 = norm(&mut b, "input_layernorm", x);
            let q = b.linear(&format!("{p}.self_attn.q_proj.weight"), heads * head_dim, hidden, n1);
            let k = b.linear(&format!("{p}.self_attn.k_proj.weight"), kv_heads * head_dim, hidden, n1);
            let v = b.linear(&format!("{p}.self_attn.v_proj.weight"), kv_heads * head_dim, hidden, n1);
            let rope = |b: &mut Builder, which: &str, width, input| {
                b.op(
                    format!("{p}.self_attn.rope_{which}"),
                    OpKind::Rope {
                        head_dim,
                        theta: c.rope_theta,
                    },
                    width,
                    &[input, positions],
                )
            };
            let q = rope(&mut b, "q", heads * head_dim, q);
            let k = rope(&mut b, "k", kv_heads * head_dim, k);
            let attn = b.op(
                format!("{p}.self_attn"),
                OpKind::Attention {
                    layer,
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim,
                },
                heads * head_dim,
                &[q, k, v],
            );
            attention.push(attn);
            let o = b.linear(&format!("{p}.self_attn.o_proj.weight"), hidden, heads * head_dim, attn);
            let h = b.op(format!("{p}.attn_residual"), OpKind::Add, hidden, &[x, o]);
            let n2 = norm(&mut b, "post_attention_layernorm", h);
            let gate = b.linear(&format!("{p}.mlp.gate_proj.weight"), ffn, hidden, n2);
            let up = b.linear(&format!("{p}.mlp.up_proj.weight"), ffn, hidden, n2);
            let act = b.op(format!("{p}.mlp.act"), OpKind::SwiGlu, ffn, &[gate, up]);
            let down = b.linear(&format!("{p}.mlp.down_proj.weight"), hidden, ffn, act);
            x = b.op(format!("{p}.mlp_residual"), OpKind::Add, hidden, &[h, down]);
        }
        let n = b.op(
            "model.norm",
            OpKind::RmsNorm {
                gamma: "model.norm.weight".into(),
                epsilon: c.rms_norm_eps,
            },
            hidden,
            &[x],
        );
        let head = if c.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let logits = b.linear(head, c.vocab_size, hidden, n);
        if c.tie_word_embeddings {
            b.graph[logits].name = "lm_head".into();
        }

        let graph = b.graph;
        let order = toposort(&graph, None).map_err(|cycle| Error::Cycle(graph[cycle.node_id()].name.clone()))?;
        Ok(Self {
            graph,
            order,
            logits,
            attention,
            rotated: Default::default(),
        })
    }

    /// The activations an op consumes, in operand order.
    pub fn inputs(&self, node: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<_> = self
            .graph
            .edges_directed(node, Direction::Incoming)
            .map(|e| (e.weight().0, e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, source)| source).collect()
    }

    /// Every weight the graph reads, once each, in first-use order.
    pub fn weights(&self) -> Vec<WeightUse> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for &node in &self.order {
            let op = &self.graph[node];
            let weight = match &op.kind {
                OpKind::Embedding { table } => Some((table.clone(), vec![0, op.width], true)),
                OpKind::RmsNorm { gamma, .. } => Some((gamma.clone(), vec![op.width], false)),
                OpKind::Linear {
                    weight,
                    out_features,
                    in_features,
                } => Some((weight.clone(), vec![*out_features, *in_features], true)),
                _ => None,
            };
            if let Some((name, shape, is_matrix)) = weight {
                if seen.insert(name.clone()) {
                    out.push(WeightUse { name, shape, is_matrix });
                }
            }
        }
        // The embedding table's row count is the vocabulary.
        for w in &mut out {
            if w.shape.first() == Some(&0) {
                w.shape[0] = self.vocab_size();
            }
        }
        out
    }

    /// Rotates the input of every matrix whose input width
    /// `q35_format::rotation` supports: a `Rotate` after each norm, after
    /// attention and after SwiGLU (shared by the matrices that read it),
    /// and its inverse after the embedding's gather (the table is stored
    /// rotated, as the tied LM head reads it). The matrices now stored
    /// rotated (`W Qᵀ`), the embedding table included, go in
    /// [`ModelGraph::rotated`]. `q35_rt`'s reference forward pass puts the
    /// same transforms at the same places (every supported width).
    pub fn rotate_inputs(&mut self) {
        // The embedding and the final norm have the same width (the
        // hidden size), so a tied table's gather and its LM head are
        // rotated together or not at all.
        let mut rotated = std::collections::BTreeMap::new();
        let order = self.order.clone();
        for node in order {
            let op = self.graph[node].clone();
            let consumers: Vec<_> = self.graph.edges_directed(node, Direction::Outgoing).map(|e| (e.id(), e.target(), *e.weight())).collect();
            let reads_matrices = !consumers.is_empty()
                && consumers.iter().all(|&(_, c, _)| matches!(self.graph[c].kind, OpKind::Linear { .. }));
            let site = match op.kind {
                OpKind::RmsNorm { .. } | OpKind::Attention { .. } | OpKind::SwiGlu => reads_matrices,
                OpKind::Embedding { .. } => true,
                _ => false,
            };
            if !site || !q35_format::rotation::supported(op.width) {
                continue;
            }
            let inverse = if let OpKind::Embedding { table } = &op.kind {
                rotated.insert(table.clone(), op.width);
                true
            } else {
                for &(_, c, _) in &consumers {
                    if let OpKind::Linear { weight, .. } = &self.graph[c].kind {
                        rotated.insert(weight.clone(), op.width);
                    }
                }
                false
            };
            let rotate = self.graph.add_node(Op {
                name: format!("{}.rotate", op.name),
                kind: OpKind::Rotate { inverse },
                width: op.width,
            });
            for (edge, consumer, operand) in consumers {
                self.graph.remove_edge(edge);
                self.graph.add_edge(rotate, consumer, operand);
            }
            self.graph.add_edge(node, rotate, Operand(0));
        }
        self.order = toposort(&self.graph, None).expect("inserting a node on an edge keeps the graph acyclic");
        self.rotated = rotated;
    }

    /// A weight as the compiled model stores it: the source tensor, with
    /// each row rotated (`q35_format::rotation::rotate_rows`) if its
    /// input is.
    pub fn weight_f32(&self, model: &crate::front::Model, name: &str) -> crate::front::Result<Vec<f32>> {
        let mut data = model.tensor_f32(name)?;
        if let Some(&cols) = self.rotated.get(name) {
            q35_format::rotation::rotate_rows(&mut data, cols);
        }
        Ok(data)
    }

    fn vocab_size(&self) -> usize {
        self.graph[self.logits].width
    }

    /// Graphviz DOT: one box per op (named and labelled with its weight or
    /// kind and result width), edges labelled with the operand position.
    pub fn to_dot(&self) -> String {
        let mut dot = String::from("digraph model {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
        for &node in &self.order {
            let op = &self.graph[node];
            let detail = match &op.kind {
                OpKind::Tokens => "input tokens: ?xi32".to_string(),
                OpKind::Positions => "input positions: ?xi32".to_string(),
                OpKind::Embedding { table } => format!("embedding {table}"),
                OpKind::RmsNorm { epsilon, .. } => format!("rms_norm eps={epsilon:e}"),
                OpKind::Linear {
                    out_features,
                    in_features,
                    ..
                } => format!("dequant_matmul {out_features}x{in_features}"),
                OpKind::Rope { head_dim, theta } => format!("rope head_dim={head_dim} theta={theta}"),
                OpKind::Attention {
                    num_heads,
                    num_kv_heads,
                    head_dim,
                    ..
                } => format!("attention heads={num_heads} kv={num_kv_heads} hd={head_dim}"),
                OpKind::SwiGlu => "swiglu".into(),
                OpKind::Add => "add".into(),
                OpKind::Rotate { inverse } => format!("rotate{}", if *inverse { " inverse" } else { "" }),
            };
            let _ = writeln!(
                dot,
                "  n{} [label=\"{}\\n{}\\n-> ?x{}\"];",
                node.index(),
                op.name,
                detail,
                op.width
            );
        }
        for &node in &self.order {
            for edge in self.graph.edges_directed(node, Direction::Incoming) {
                let _ = writeln!(
                    dot,
                    "  n{} -> n{} [label=\"{}\"];",
                    edge.source().index(),
                    node.index(),
                    edge.weight().0
                );
            }
        }
        dot.push_str("}\n");
        dot
    }
}
