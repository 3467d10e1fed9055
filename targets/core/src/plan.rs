//! The planned IR every backend consumes: the `q35.plan` op that
//! `q35-lower-to-kernels` leaves in the module, holding the buffer plan,
//! the dispatch list, and a typed description of every kernel the
//! dispatches name (`kernels`), so no target reads parameters back out of
//! a kernel's symbol.
//!
//! ```mlir
//! "q35.plan"() {buffers = [{element = "f32", name = "act3", role = "activation", width = 576 : i64}, ...],
//!               dispatches = [{buffers = [...], kernel = @rms_norm_576_eps1e_5, workgroups = 0 : i64, ...}, ...],
//!               kernels = {rms_norm_576_eps1e_5 = {epsilon = 9.9999997e-06 : f64, linalg = false, op = "rms_norm", width = 576 : i64}, ...}}
//! ```

use crate::activation_rows::ActivationCodes;
use crate::kernel::{AttentionShape, Epilogue, MatmulShape, RowOp};
use melior::{
    ir::{
        attribute::{
            ArrayAttribute, BoolAttribute, DictionaryAttribute, FlatSymbolRefAttribute, FloatAttribute,
            IntegerAttribute, StringAttribute,
        },
        operation::{OperationBuilder, OperationLike},
        Attribute, Identifier, Location, Operation, OperationRef,
    },
    Context,
};
use q35_format::{
    artifact::{BufferSpec, DispatchSpec},
    GroupSize, QuantKind,
};
use std::collections::BTreeMap;

/// What a kernel computes, as its builders need it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelSpec {
    Matmul(MatmulShape),
    /// The table has `n` (vocabulary) rows of width `k`.
    Embedding(MatmulShape),
    /// `linalg`: built from linalg.generic ops.
    Row { op: RowOp, width: usize, linalg: bool },
    Rope { width: usize, head_dim: usize, theta: f64, linalg: bool },
    KvUpdate(AttentionShape),
    Attention { shape: AttentionShape, linalg: bool },
    QuantizeActivations(ActivationCodes),
}

/// The buffer plan, the dispatch list and the kernels it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub buffers: Vec<BufferSpec>,
    pub dispatches: Vec<DispatchSpec>,
    pub kernels: BTreeMap<String, KernelSpec>,
}

impl Plan {
    /// The `q35.plan` op holding this plan.
    pub fn to_op<'c>(&self, context: &'c Context, location: Location<'c>) -> Result<Operation<'c>, String> {
        let dispatches: Vec<String> = self.dispatches.iter().map(|d| dispatch_text(d, "")).collect();
        let buffers: Vec<String> = self
            .buffers
            .iter()
            .map(|b| {
                format!(
                    "{{name = \"{}\", element = \"{}\", width = {} : i64, role = \"{}\"}}",
                    b.name,
                    b.element.replace('"', "\\\""),
                    b.width,
                    b.role
                )
            })
            .collect();
        let kernels: Vec<String> = self.kernels.iter().map(|(name, spec)| format!("{name} = {}", spec_text(spec))).collect();
        let parse = |text: String, what: &str| Attribute::parse(context, &text).ok_or_else(|| format!("internal: bad {what}: {text}"));
        OperationBuilder::new("q35.plan", location)
            .add_attributes(&[
                (Identifier::new(context, "buffers"), parse(format!("[{}]", buffers.join(", ")), "buffer list")?),
                (Identifier::new(context, "dispatches"), parse(format!("[{}]", dispatches.join(", ")), "dispatch list")?),
                (Identifier::new(context, "kernels"), parse(format!("{{{}}}", kernels.join(", ")), "kernel list")?),
            ])
            .build()
            .map_err(|e| e.to_string())
    }

    /// Reads the plan back from a `q35.plan` op.
    pub fn from_op(plan: OperationRef) -> Result<Plan, String> {
        let array = |name: &str| -> Result<ArrayAttribute, String> {
            plan.attribute(name)
                .ok()
                .and_then(|a| ArrayAttribute::try_from(a).ok())
                .ok_or_else(|| format!("q35.plan has no `{name}` array"))
        };
        let mut buffers = Vec::new();
        let list = array("buffers")?;
        for i in 0..list.len() {
            let entry = list.element(i).ok().and_then(|a| DictionaryAttribute::try_from(a).ok()).ok_or("bad buffer entry")?;
            let field = |name: &str| entry.element_by_name(name).and_then(string_of).ok_or_else(|| format!("buffer without `{name}`"));
            buffers.push(BufferSpec {
                name: field("name")?,
                element: field("element")?,
                width: int_of(entry.element_by_name("width")).ok_or("buffer without a width")?,
                role: field("role")?,
            });
        }
        let mut dispatches = Vec::new();
        let list = array("dispatches")?;
        for i in 0..list.len() {
            let entry = list.element(i).ok().and_then(|a| DictionaryAttribute::try_from(a).ok()).ok_or("bad dispatch entry")?;
            let kernel = entry
                .element_by_name("kernel")
                .and_then(|a| FlatSymbolRefAttribute::try_from(a).ok())
                .map(|s| s.value().to_string())
                .ok_or("dispatch without a kernel")?;
            let bound = entry
                .element_by_name("buffers")
                .and_then(|a| ArrayAttribute::try_from(a).ok())
                .ok_or("dispatch without buffers")?;
            let mut names = Vec::new();
            for j in 0..bound.len() {
                names.push(bound.element(j).ok().and_then(string_of).ok_or("bad buffer name")?);
            }
            dispatches.push(DispatchSpec {
                kernel,
                workgroups: int_of(entry.element_by_name("workgroups")).ok_or("dispatch without workgroups")?,
                workgroups_per_token: int_of(entry.element_by_name("workgroups_per_token")).ok_or("dispatch without workgroups_per_token")?,
                buffers: names,
                concurrent: entry.element_by_name("concurrent").is_some(),
            });
        }
        let mut kernels = BTreeMap::new();
        if let Some(table) = plan.attribute("kernels").ok().and_then(|a| DictionaryAttribute::try_from(a).ok()) {
            for i in 0..table.len() {
                let (name, attribute) = table.element(i).map_err(|e| e.to_string())?;
                let name = name.as_string_ref().as_str().map_err(|e| e.to_string())?.to_string();
                let spec = DictionaryAttribute::try_from(attribute)
                    .map_err(|_| format!("kernel `{name}`: its description is not a dictionary"))
                    .and_then(|d| spec_of(&d).map_err(|e| format!("kernel `{name}`: {e}")))?;
                kernels.insert(name, spec);
            }
        } else {
            return Err("q35.plan has no `kernels` dictionary".into());
        }
        Ok(Plan { buffers, dispatches, kernels })
    }
}

/// A dispatch list entry as attribute text, with `extra` fields appended.
pub fn dispatch_text(d: &DispatchSpec, extra: &str) -> String {
    let list: Vec<String> = d.buffers.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "{{kernel = @{}, workgroups = {} : i64, workgroups_per_token = {} : i64, buffers = [{}]{}{extra}}}",
        d.kernel,
        d.workgroups,
        d.workgroups_per_token,
        list.join(", "),
        if d.concurrent { ", concurrent" } else { "" }
    )
}

fn int_of(attribute: Option<Attribute>) -> Option<usize> {
    attribute.and_then(|a| IntegerAttribute::try_from(a).ok()).map(|a| a.value() as usize)
}

fn string_of(attribute: Attribute) -> Option<String> {
    StringAttribute::try_from(attribute).ok().map(|s| s.value().to_string())
}

/// An f64 as MLIR reads it back exactly (17 significant digits, a point).
fn float_text(value: f64) -> String {
    format!("{value:.16e} : f64")
}

fn epilogue_name(epilogue: Epilogue) -> &'static str {
    match epilogue {
        Epilogue::None => "none",
        Epilogue::AddResidual => "add",
        Epilogue::SwiGlu => "swiglu",
    }
}

fn matmul_text(op: &str, s: &MatmulShape) -> String {
    format!(
        "{{op = \"{op}\", n = {} : i64, k = {} : i64, quant = \"{}\", group = \"{}\", rows = {} : i64, epilogue = \"{}\", int8 = {}, linalg = {}}}",
        s.n,
        s.k,
        s.quant,
        s.group,
        s.rows_per_workgroup,
        epilogue_name(s.epilogue),
        s.int8_activations,
        s.linalg
    )
}

fn attention_text(op: &str, s: &AttentionShape, extra: &str) -> String {
    format!(
        "{{op = \"{op}\", num_heads = {} : i64, num_kv_heads = {} : i64, head_dim = {} : i64, context = {} : i64{extra}}}",
        s.num_heads, s.num_kv_heads, s.head_dim, s.context
    )
}

/// A kernel description as dictionary attribute text.
fn spec_text(spec: &KernelSpec) -> String {
    match spec {
        KernelSpec::Matmul(s) => matmul_text("matmul", s),
        KernelSpec::Embedding(s) => matmul_text("embedding", s),
        KernelSpec::Row { op, width, linalg } => {
            let epsilon = match op {
                RowOp::RmsNorm { epsilon } => format!(", epsilon = {}", float_text(*epsilon)),
                _ => String::new(),
            };
            format!("{{op = \"{}\", width = {width} : i64, linalg = {linalg}{epsilon}}}", op.name())
        }
        KernelSpec::Rope { width, head_dim, theta, linalg } => format!(
            "{{op = \"rope\", width = {width} : i64, head_dim = {head_dim} : i64, theta = {}, linalg = {linalg}}}",
            float_text(*theta)
        ),
        KernelSpec::KvUpdate(s) => attention_text("kv_update", s, ""),
        KernelSpec::Attention { shape, linalg } => attention_text("attention", shape, &format!(", linalg = {linalg}")),
        KernelSpec::QuantizeActivations(c) => {
            format!("{{op = \"quantize_activations\", quant = \"{}\", group = \"{}\", k = {} : i64}}", c.quant, c.group, c.k)
        }
    }
}

/// Reads a kernel description written by [`spec_text`].
fn spec_of(d: &DictionaryAttribute) -> Result<KernelSpec, String> {
    let get = |name: &str| d.element_by_name(name).ok_or_else(|| format!("no `{name}`"));
    let int = |name: &str| int_of(Some(get(name)?)).ok_or_else(|| format!("`{name}` is not an integer"));
    let text = |name: &str| string_of(get(name)?).ok_or_else(|| format!("`{name}` is not a string"));
    let flag = |name: &str| {
        BoolAttribute::try_from(get(name)?)
            .map(|b| b.value())
            .map_err(|_| format!("`{name}` is not a bool"))
    };
    let float = |name: &str| {
        FloatAttribute::try_from(get(name)?)
            .map(|f| f.value())
            .map_err(|_| format!("`{name}` is not a float"))
    };
    let quant = |name: &str| text(name)?.parse::<QuantKind>().map_err(|e| e.to_string());
    let group = |name: &str| text(name)?.parse::<GroupSize>().map_err(|e| e.to_string());
    let matmul = || -> Result<MatmulShape, String> {
        Ok(MatmulShape {
            n: int("n")?,
            k: int("k")?,
            quant: quant("quant")?,
            group: group("group")?,
            rows_per_workgroup: int("rows")?,
            epilogue: match text("epilogue")?.as_str() {
                "none" => Epilogue::None,
                "add" => Epilogue::AddResidual,
                "swiglu" => Epilogue::SwiGlu,
                other => return Err(format!("unknown epilogue `{other}`")),
            },
            int8_activations: flag("int8")?,
            linalg: flag("linalg")?,
        })
    };
    let attention = || -> Result<AttentionShape, String> {
        Ok(AttentionShape {
            num_heads: int("num_heads")?,
            num_kv_heads: int("num_kv_heads")?,
            head_dim: int("head_dim")?,
            context: int("context")?,
        })
    };
    let row = |op: RowOp| -> Result<KernelSpec, String> { Ok(KernelSpec::Row { op, width: int("width")?, linalg: flag("linalg")? }) };
    match text("op")?.as_str() {
        "matmul" => Ok(KernelSpec::Matmul(matmul()?)),
        "embedding" => Ok(KernelSpec::Embedding(matmul()?)),
        "add" => row(RowOp::Add),
        "mul" => row(RowOp::Mul),
        "silu" => row(RowOp::Silu),
        "swiglu" => row(RowOp::SwiGlu),
        "rms_norm" => row(RowOp::RmsNorm { epsilon: float("epsilon")? }),
        "rotate" => row(RowOp::Rotate { inverse: false }),
        "rotate_inverse" => row(RowOp::Rotate { inverse: true }),
        "rope" => Ok(KernelSpec::Rope {
            width: int("width")?,
            head_dim: int("head_dim")?,
            theta: float("theta")?,
            linalg: flag("linalg")?,
        }),
        "kv_update" => Ok(KernelSpec::KvUpdate(attention()?)),
        "attention" => Ok(KernelSpec::Attention { shape: attention()?, linalg: flag("linalg")? }),
        "quantize_activations" => Ok(KernelSpec::QuantizeActivations(ActivationCodes {
            quant: quant("quant")?,
            group: group("group")?,
            k: int("k")?,
        })),
        other => Err(format!("unknown kernel op `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of kernel description survives the op and back, floats
    /// to the bit.
    #[test]
    fn plan_round_trips_through_its_op() {
        let q35 = q35_dialect::Q35Context::new().unwrap();
        let context = q35.context();
        let matmul = MatmulShape {
            epilogue: Epilogue::SwiGlu,
            int8_activations: true,
            ..MatmulShape::new(1536, 576, QuantKind::Q35, GroupSize::G128, 64)
        };
        let attention = AttentionShape { num_heads: 9, num_kv_heads: 3, head_dim: 64, context: 2048 };
        let specs = [
            KernelSpec::Matmul(matmul),
            KernelSpec::Embedding(MatmulShape::new(49152, 576, QuantKind::Int4, GroupSize::Channel, 64)),
            KernelSpec::Row { op: RowOp::RmsNorm { epsilon: 1e-5_f32 as f64 }, width: 576, linalg: false },
            KernelSpec::Row { op: RowOp::SwiGlu, width: 1536, linalg: true },
            KernelSpec::Row { op: RowOp::Rotate { inverse: true }, width: 576, linalg: false },
            KernelSpec::Rope { width: 576, head_dim: 64, theta: 100000.0, linalg: false },
            KernelSpec::KvUpdate(attention),
            KernelSpec::Attention { shape: attention, linalg: true },
            KernelSpec::QuantizeActivations(matmul.activation_codes()),
        ];
        let plan = Plan {
            buffers: vec![BufferSpec { name: "w".into(), element: "!q35.packed<8 : i64, 64 : i64, 32 : i64, \"q35\", \"planar\">".into(), width: 512, role: "weight".into() }],
            dispatches: vec![DispatchSpec { kernel: "k0".into(), workgroups: 2, workgroups_per_token: 1, buffers: vec!["w".into()], concurrent: true }],
            kernels: specs.iter().enumerate().map(|(i, s)| (format!("k{i}"), *s)).collect(),
        };
        let module = melior::ir::Module::new(Location::unknown(context));
        melior::ir::block::BlockLike::append_operation(&module.body(), plan.to_op(context, Location::unknown(context)).unwrap());
        let back = crate::target::read_plan(&module).unwrap();
        assert_eq!(back, plan);
    }
}
