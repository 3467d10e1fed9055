//! Emits the model graph as a verified `q35` MLIR module.
//!
//! One function, `@forward`, runs the decoder on S new tokens:
//!
//! ```mlir
//! func.func @forward(%tokens: tensor<?xi32>, %positions: tensor<?xi32>, %start: index,
//!                    %k_cache_0: tensor<CxDkvxf32>, %v_cache_0: tensor<CxDkvxf32>, ...)
//!     -> (tensor<?xVxf32>, tensor<CxDkvxf32>, tensor<CxDkvxf32>, ...)
//! ```
//!
//! returning the logits and the updated KV caches, so prefill (S > 1) and
//! decode (S = 1) are the same function. Weights are `q35.weight` ops that
//! name a tensor: the IR stays small however large the model is.

use crate::{
    front::config::ModelConfig,
    graph::{ModelGraph, OpKind},
};
use melior::{
    dialect::func,
    ir::{
        attribute::{StringAttribute, TypeAttribute},
        block::BlockLike,
        operation::OperationLike,
        r#type::FunctionType,
        Block, Location, Module, Region, RegionLike, Type, Value, ValueLike,
    },
    Context,
};
use petgraph::stable_graph::NodeIndex;
use q35_dialect::{
    ops::{self, Heads},
    verify::verify_module,
    PackedType, Q35Context, Quant,
};
use std::collections::HashMap;

/// Group size along K for quantized matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Size(u64),
    /// One group per row (group = K).
    Channel,
}

/// What the emitted IR says about weights and the KV cache.
#[derive(Clone, Debug)]
pub struct EmitOptions {
    pub quant: Quant,
    pub group: Group,
    /// Matrices stored otherwise than `quant` and `group`
    /// (`--quant-policy`; first match wins).
    pub overrides: Vec<crate::policy::Rule>,
    /// Rows of each layer's KV cache: the longest sequence the compiled
    /// model can run.
    pub context_length: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dialect(#[from] q35_dialect::Error),
    #[error("internal error: emitted IR failed MLIR verification:\n{0}")]
    Invalid(String),
    #[error("internal error: emitted IR failed the q35 verifier:\n{0}")]
    Shapes(#[from] q35_dialect::VerifyError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn tensor_type<'c>(context: &'c Context, text: &str) -> Result<Type<'c>> {
    Type::parse(context, text).ok_or_else(|| Error::Internal(format!("bad type {text}")))
}

impl EmitOptions {
    /// The override rule for matrix `name`, if one matches.
    pub fn rule_for(&self, name: &str) -> Option<&crate::policy::Rule> {
        self.overrides.iter().find(|r| crate::policy::matches(&r.pattern, name))
    }

    /// The kind and group matrix `name` is stored with.
    pub fn format_of(&self, name: &str) -> (Quant, Group) {
        match self.rule_for(name) {
            Some(rule) => (
                rule.kind,
                rule.group.fixed().map_or(Group::Channel, |g| Group::Size(g as u64)),
            ),
            None => (self.quant, self.group),
        }
    }
}

/// The packed type of weight matrix `name` under `options`.
pub fn packed_type(name: &str, rows: usize, cols: usize, options: &EmitOptions) -> PackedType {
    let (quant, group) = options.format_of(name);
    let group = match (quant.is_coded(), group) {
        (true, Group::Size(g)) if (g as usize) < cols => g,
        _ => cols as u64,
    };
    PackedType::new(rows as u64, cols as u64, group, quant)
}

/// Builds and verifies the module.
pub fn emit_module<'c>(
    q35: &'c Q35Context,
    graph: &ModelGraph,
    config: &ModelConfig,
    source: &str,
    options: &EmitOptions,
) -> Result<Module<'c>> {
    let context = q35.context();
    let file = Location::new(context, source, 0, 0);
    let module = Module::new(file);

    let act = |width: usize| tensor_type(context, &format!("tensor<?x{width}xf32>"));
    let ids = tensor_type(context, "tensor<?xi32>")?;
    let kv_width = config.num_key_value_heads * config.head_dim;
    let cache = tensor_type(
        context,
        &format!("tensor<{}x{kv_width}xf32>", options.context_length),
    )?;
    let index = Type::index(context);

    let mut arg_types = vec![ids, ids, index];
    for _ in 0..config.num_hidden_layers {
        arg_types.extend([cache, cache]);
    }
    let block = Block::new(&arg_types.iter().map(|&t| (t, file)).collect::<Vec<_>>());
    let arg = |i: usize| -> Result<Value> {
        block
            .argument(i)
            .map(Into::into)
            .map_err(|e| Error::Internal(e.to_string()))
    };

    // Weights first, once each, in first-use order.
    let mut weights: HashMap<String, Value> = HashMap::new();
    for weight in graph.weights() {
        let location = Location::name(context, &weight.name, file);
        let ty = if weight.is_matrix {
            packed_type(&weight.name, weight.shape[0], weight.shape[1], options).to_type(context)?
        } else {
            tensor_type(context, &format!("tensor<{}xf32>", weight.shape[0]))?
        };
        let op = block.append_operation(ops::weight(context, &weight.name, ty, location)?);
        weights.insert(weight.name, result(&op, 0)?);
    }

    let mut values: HashMap<NodeIndex, Value> = HashMap::new();
    let mut caches: Vec<(Value, Value)> = Vec::new();
    for &node in &graph.order {
        let op = &graph.graph[node];
        let location = Location::name(context, &op.name, file);
        let inputs: Vec<Value> = graph
            .inputs(node)
            .iter()
            .map(|i| values.get(i).copied().ok_or_else(|| Error::Internal(format!("`{}` used before defined", op.name))))
            .collect::<Result<_>>()?;
        let weight = |name: &str| {
            weights
                .get(name)
                .copied()
                .ok_or_else(|| Error::Internal(format!("weight `{name}` not emitted")))
        };
        let built = match &op.kind {
            OpKind::Tokens => {
                values.insert(node, arg(0)?);
                continue;
            }
            OpKind::Positions => {
                values.insert(node, arg(1)?);
                continue;
            }
            OpKind::Embedding { table } => ops::embedding(context, inputs[0], weight(table)?, act(op.width)?, location)?,
            OpKind::RmsNorm { gamma, epsilon } => ops::rms_norm(context, inputs[0], weight(gamma)?, *epsilon, location)?,
            OpKind::Linear { weight: w, .. } => ops::dequant_matmul(context, inputs[0], weight(w)?, act(op.width)?, location)?,
            OpKind::Rope { head_dim, theta } => {
                ops::rope(context, inputs[0], inputs[1], *head_dim as u64, *theta, location)?
            }
            OpKind::Attention {
                layer,
                num_heads,
                num_kv_heads,
                head_dim,
            } => {
                let (k_cache, v_cache) = (arg(3 + 2 * layer)?, arg(4 + 2 * layer)?);
                let heads = Heads {
                    num_heads: *num_heads as u64,
                    num_kv_heads: *num_kv_heads as u64,
                    head_dim: *head_dim as u64,
                };
                let start = arg(2)?;
                let built = block.append_operation(ops::attention(
                    context, inputs[0], inputs[1], inputs[2], k_cache, v_cache, start, heads, location,
                )?);
                caches.push((result(&built, 1)?, result(&built, 2)?));
                values.insert(node, result(&built, 0)?);
                continue;
            }
            OpKind::SwiGlu => ops::swiglu(context, inputs[0], inputs[1], location)?,
            OpKind::Add => ops::add(context, inputs[0], inputs[1], location)?,
            OpKind::Rotate { inverse } => ops::rotate(context, inputs[0], *inverse, location)?,
        };
        let built = block.append_operation(built);
        values.insert(node, result(&built, 0)?);
    }

    let logits = values[&graph.logits];
    let mut returned = vec![logits];
    for (k, v) in &caches {
        returned.extend([*k, *v]);
    }
    let result_types: Vec<Type> = returned.iter().map(|v| v.r#type()).collect();
    block.append_operation(func::r#return(&returned, file));
    let region = Region::new();
    region.append_block(block);
    module.body().append_operation(func::func(
        context,
        StringAttribute::new(context, "forward"),
        TypeAttribute::new(FunctionType::new(context, &arg_types, &result_types).into()),
        region,
        &[],
        file,
    ));

    q35.diagnostics().take();
    if !module.as_operation().verify() {
        return Err(Error::Invalid(q35.diagnostics().take_rendered(source)));
    }
    verify_module(&module)?;
    Ok(module)
}

fn result<'c, 'a>(op: &melior::ir::OperationRef<'c, 'a>, index: usize) -> Result<Value<'c, 'a>> {
    op.result(index)
        .map(Into::into)
        .map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::{self, testmodel};

    fn tiny_module_text(spec: testmodel::TinySpec, options: &EmitOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = testmodel::write_tiny_model(dir.path(), spec).unwrap();
        let model = front::load(&path).unwrap();
        let graph = ModelGraph::llama(&model.config).unwrap();
        let q35 = Q35Context::new().unwrap();
        let module = emit_module(&q35, &graph, &model.config, "tiny/model.safetensors", options).unwrap();
        module.as_operation().to_string()
    }

    fn options() -> EmitOptions {
        EmitOptions {
            quant: Quant::Q35,
            group: Group::Size(32),
            context_length: 16,
            overrides: Vec::new(),
        }
    }

    /// The whole forward function of a one-layer tiny model, pinned.
    #[test]
    fn tiny_model_ir() {
        let spec = testmodel::TinySpec {
            num_hidden_layers: 1,
            ..Default::default()
        };
        insta::assert_snapshot!(tiny_module_text(spec, &options()));
    }

    /// An untied LM head reads lm_head.weight, not the embedding.
    #[test]
    fn untied_head_reads_lm_head() {
        let spec = testmodel::TinySpec {
            num_hidden_layers: 1,
            tie_word_embeddings: false,
            ..Default::default()
        };
        let text = tiny_module_text(spec, &options());
        assert!(text.contains(r#"{name = "lm_head.weight"}"#), "{text}");
    }

    #[test]
    fn group_larger_than_k_becomes_per_channel() {
        let p = packed_type("w", 8, 64, &EmitOptions {
            quant: Quant::Q35,
            group: Group::Size(128),
            context_length: 1,
            overrides: Vec::new(),
        });
        assert_eq!(p.group, 64);
        let f = packed_type("w", 8, 64, &EmitOptions {
            quant: Quant::F16,
            group: Group::Size(32),
            context_length: 1,
            overrides: Vec::new(),
        });
        assert_eq!(f.group, 64, "pass-through weights have one group per row");
    }
}
