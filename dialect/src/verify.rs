//! Checks on `q35` ops that IRDL cannot express: element types of builtin
//! tensors, shape agreement between activations and packed weights, and
//! attribute value ranges.
//!
//! IRDL already guarantees operand/result counts, which operands are tensors
//! or packed weights, which attributes exist and their kinds, and equality of
//! types bound to one constraint variable. This module reads the IR and
//! reports; it never changes it.

use crate::{context::render_location, packed::PackedType};
use melior::ir::{
    attribute::{FloatAttribute, IntegerAttribute, StringAttribute},
    operation::{OperationLike, WalkOrder, WalkResult},
    r#type::{DimSize, RankedTensorType},
    Attribute, Module, OperationRef, ShapedTypeLike, Type, ValueLike,
};
use std::fmt;

/// Every problem found in a module, each naming the op and its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: String,
    pub op: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: '{}' op {}", self.location, self.op, self.message)
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for VerifyError {}

impl VerifyError {
    /// Renames locations MLIR gave as `-` (a buffer parsed from a string)
    /// to the file the text came from.
    pub fn in_file(mut self, path: &str) -> Self {
        for problem in &mut self.problems {
            if let Some(rest) = problem.location.strip_prefix("-:") {
                problem.location = format!("{path}:{rest}");
            }
        }
        self
    }
}

/// Verifies every `q35` op in `module`.
pub fn verify_module(module: &Module) -> Result<(), VerifyError> {
    verify_operation(module.as_operation())
}

/// Verifies every `q35` op nested in `root` (used by the `q35-verify` pass,
/// which receives an operation rather than a module).
pub fn verify_operation(root: OperationRef) -> Result<(), VerifyError> {
    let mut problems = Vec::new();
    root.walk(WalkOrder::PreOrder, |op| {
        let name = op.name().as_string_ref().as_str().unwrap_or("").to_string();
        if let Some(mnemonic) = name.strip_prefix("q35.") {
            if let Err(message) = check_op(mnemonic, &op) {
                problems.push(Problem {
                    location: render_location(op.location()),
                    op: name,
                    message,
                });
            }
        }
        WalkResult::Advance
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VerifyError { problems })
    }
}

type Check = Result<(), String>;

/// A ranked tensor's dimensions (`None` = dynamic) and element type.
#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    dims: Vec<Option<u64>>,
    element: String,
}

impl Tensor {
    fn of(r#type: Type, what: &str) -> Result<Self, String> {
        let tensor = RankedTensorType::try_from(r#type)
            .map_err(|_| format!("{what} must be a ranked tensor, got {type}"))?;
        let dims = (0..tensor.rank())
            .map(|i| match tensor.dim_size(i) {
                Ok(DimSize::Static(n)) => Some(n),
                _ => None,
            })
            .collect();
        Ok(Self {
            dims,
            element: tensor.element().to_string(),
        })
    }

    fn expect_element(&self, element: &str, what: &str) -> Check {
        if self.element == element {
            Ok(())
        } else {
            Err(format!("{what} must have {element} elements, got {}", self.element))
        }
    }

    fn expect_rank(&self, ranks: &[usize], what: &str) -> Check {
        if ranks.contains(&self.dims.len()) {
            Ok(())
        } else {
            Err(format!(
                "{what} must have rank {}, got rank {}",
                ranks.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or "),
                self.dims.len()
            ))
        }
    }

    fn last(&self) -> Option<u64> {
        self.dims.last().copied().flatten()
    }

    fn leading(&self) -> &[Option<u64>] {
        &self.dims[..self.dims.len().saturating_sub(1)]
    }
}

/// Two dimensions agree unless both are static and differ.
fn dims_agree(a: Option<u64>, b: Option<u64>) -> bool {
    !matches!((a, b), (Some(x), Some(y)) if x != y)
}

fn expect_dim(actual: Option<u64>, expected: u64, what: &str) -> Check {
    if dims_agree(actual, Some(expected)) {
        Ok(())
    } else {
        Err(format!("{what} is {}, expected {expected}", actual.unwrap_or_default()))
    }
}

/// `2x?x4`, as MLIR writes shapes.
fn render_dims(dims: &[Option<u64>]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
        .collect();
    dims.join("x")
}

fn expect_leading(a: &Tensor, b: &Tensor, what: &str) -> Check {
    let same = a.leading().len() == b.leading().len()
        && a.leading().iter().zip(b.leading()).all(|(&x, &y)| dims_agree(x, y));
    if same {
        Ok(())
    } else {
        Err(format!(
            "{what}: leading dimensions [{}] and [{}] disagree",
            render_dims(a.leading()),
            render_dims(b.leading())
        ))
    }
}

fn operand_type<'c>(op: &OperationRef<'c, '_>, index: usize) -> Result<Type<'c>, String> {
    op.operand(index)
        .map(|v| v.r#type())
        .map_err(|_| format!("missing operand #{index}"))
}

fn result_type<'c>(op: &OperationRef<'c, '_>, index: usize) -> Result<Type<'c>, String> {
    op.result(index)
        .map(|v| v.r#type())
        .map_err(|_| format!("missing result #{index}"))
}

fn packed(r#type: Type, what: &str) -> Result<PackedType, String> {
    let packed = PackedType::from_type(r#type)
        .ok_or_else(|| format!("{what} must be a !q35.packed weight, got {type}"))?
        .map_err(|e| e.to_string())?;
    match packed.problem() {
        Some(problem) => Err(format!("{what}: {problem}")),
        None => Ok(packed),
    }
}

/// A string attribute's value. melior's `StringAttribute::value` reads a
/// null pointer for the empty string, so that case is answered from the
/// printed form.
pub fn string_value(attribute: Attribute) -> Option<String> {
    let string = StringAttribute::try_from(attribute).ok()?;
    if attribute.to_string() == "\"\"" {
        Some(String::new())
    } else {
        Some(string.value().to_string())
    }
}

fn int_attr(op: &OperationRef, name: &str) -> Result<i64, String> {
    op.attribute(name)
        .ok()
        .and_then(|a| IntegerAttribute::try_from(a).ok())
        .map(|a| a.value())
        .ok_or_else(|| format!("requires integer attribute `{name}`"))
}

fn positive_attr(op: &OperationRef, name: &str) -> Result<u64, String> {
    let value = int_attr(op, name)?;
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("attribute `{name}` must be positive, got {value}"))
}

fn positive_float_attr(op: &OperationRef, name: &str) -> Result<f64, String> {
    let value = op
        .attribute(name)
        .ok()
        .and_then(|a| FloatAttribute::try_from(a).ok())
        .map(|a| a.value())
        .ok_or_else(|| format!("requires float attribute `{name}`"))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("attribute `{name}` must be a positive finite number, got {value}"))
    }
}

fn check_op(mnemonic: &str, op: &OperationRef) -> Check {
    match mnemonic {
        "weight" => check_weight(op),
        "embedding" => check_embedding(op),
        "rms_norm" => check_rms_norm(op),
        "rope" => check_rope(op),
        "attention" => check_attention(op),
        "rotate" => check_rotate(op),
        "silu" | "swiglu" | "add" | "mul" => {
            // IRDL already made operands and result one type.
            Tensor::of(result_type(op, 0)?, "result")?.expect_element("f32", "result")
        }
        "dequant_matmul" | "dequant_matmul_add" => check_dequant_matmul(op),
        "dequant_matmul_swiglu" => check_dequant_matmul_swiglu(op),
        "dequant_matmul_i8" => check_dequant_matmul_i8(op),
        "dequant_matmul_tile" => check_dequant_matmul_tile(op),
        // IRDL rejects names it does not define before we get here.
        _ => Ok(()),
    }
}

fn check_rotate(op: &OperationRef) -> Check {
    let ty = Tensor::of(result_type(op, 0)?, "result")?;
    ty.expect_element("f32", "result")?;
    let width = ty.dims.last().copied().flatten();
    match width {
        Some(n) if q35_format::rotation::supported(n as usize) => Ok(()),
        _ => Err(format!(
            "rotates a last dimension of {}, which is not 12^a · 2^b (a ≤ 2, at least 16)",
            width.map_or("?".to_string(), |n| n.to_string())
        )),
    }
}

fn check_weight(op: &OperationRef) -> Check {
    let name = op.attribute("name").ok().and_then(string_value).unwrap_or_default();
    if name.is_empty() {
        return Err("attribute `name` must name a weight (it is empty)".into());
    }
    let ty = result_type(op, 0)?;
    if PackedType::from_type(ty).is_some() {
        packed(ty, &format!("weight `{name}`")).map(drop)
    } else {
        Tensor::of(ty, &format!("weight `{name}`"))?.expect_element("f32", &format!("weight `{name}`"))
    }
}

/// The (rows, cols) of an operand that is a packed weight or an f32 matrix.
fn matrix_shape(r#type: Type, what: &str) -> Result<(Option<u64>, Option<u64>), String> {
    if PackedType::from_type(r#type).is_some() {
        let p = packed(r#type, what)?;
        Ok((Some(p.rows), Some(p.cols)))
    } else {
        let t = Tensor::of(r#type, what)?;
        t.expect_rank(&[2], what)?;
        t.expect_element("f32", what)?;
        Ok((t.dims[0], t.dims[1]))
    }
}

fn check_embedding(op: &OperationRef) -> Check {
    let tokens = Tensor::of(operand_type(op, 0)?, "tokens")?;
    tokens.expect_rank(&[1], "tokens")?;
    tokens.expect_element("i32", "tokens")?;
    let (_, width) = matrix_shape(operand_type(op, 1)?, "table")?;
    let out = Tensor::of(result_type(op, 0)?, "result")?;
    out.expect_rank(&[2], "result")?;
    out.expect_element("f32", "result")?;
    if !dims_agree(out.dims[0], tokens.dims[0]) {
        return Err("result has a different number of rows than there are tokens".into());
    }
    if !dims_agree(out.dims[1], width) {
        return Err(format!(
            "result width {} differs from the table's row length {}",
            out.dims[1].unwrap_or_default(),
            width.unwrap_or_default()
        ));
    }
    Ok(())
}

fn check_rms_norm(op: &OperationRef) -> Check {
    let x = Tensor::of(operand_type(op, 0)?, "x")?;
    x.expect_element("f32", "x")?;
    let gamma = Tensor::of(operand_type(op, 1)?, "gamma")?;
    gamma.expect_rank(&[1], "gamma")?;
    gamma.expect_element("f32", "gamma")?;
    if !dims_agree(gamma.dims[0], x.last()) {
        return Err(format!(
            "gamma length {} differs from the normalized dimension {}",
            gamma.dims[0].unwrap_or_default(),
            x.last().unwrap_or_default()
        ));
    }
    positive_float_attr(op, "epsilon").map(drop)
}

fn check_rope(op: &OperationRef) -> Check {
    let x = Tensor::of(operand_type(op, 0)?, "x")?;
    x.expect_rank(&[2], "x")?;
    x.expect_element("f32", "x")?;
    let pos = Tensor::of(operand_type(op, 1)?, "positions")?;
    pos.expect_rank(&[1], "positions")?;
    pos.expect_element("i32", "positions")?;
    if !dims_agree(pos.dims[0], x.dims[0]) {
        return Err("positions must have one entry per row of x".into());
    }
    let head_dim = positive_attr(op, "head_dim")?;
    if head_dim % 2 != 0 {
        return Err(format!("head_dim must be even to rotate halves, got {head_dim}"));
    }
    if let Some(width) = x.last() {
        if width % head_dim != 0 {
            return Err(format!("x width {width} is not a multiple of head_dim {head_dim}"));
        }
    }
    positive_float_attr(op, "theta").map(drop)
}

fn check_attention(op: &OperationRef) -> Check {
    let heads = positive_attr(op, "num_heads")?;
    let kv_heads = positive_attr(op, "num_kv_heads")?;
    let head_dim = positive_attr(op, "head_dim")?;
    if heads % kv_heads != 0 {
        return Err(format!(
            "num_heads {heads} is not a multiple of num_kv_heads {kv_heads}"
        ));
    }
    let q = Tensor::of(operand_type(op, 0)?, "q")?;
    let k = Tensor::of(operand_type(op, 1)?, "k")?;
    let cache = Tensor::of(operand_type(op, 3)?, "k_cache")?;
    for (t, what) in [(&q, "q"), (&k, "k"), (&cache, "k_cache")] {
        t.expect_rank(&[2], what)?;
        t.expect_element("f32", what)?;
    }
    expect_dim(q.last(), heads * head_dim, "q width (num_heads * head_dim)")?;
    expect_dim(k.last(), kv_heads * head_dim, "k/v width (num_kv_heads * head_dim)")?;
    expect_dim(cache.last(), kv_heads * head_dim, "cache width (num_kv_heads * head_dim)")?;
    if !dims_agree(q.dims[0], k.dims[0]) {
        return Err("q and k/v must have the same number of rows (tokens)".into());
    }
    Ok(())
}

/// x[..., K] and w[N, K] give out[..., N], all f32.
fn check_dequant_matmul(op: &OperationRef) -> Check {
    let x = Tensor::of(operand_type(op, 0)?, "x")?;
    x.expect_element("f32", "x")?;
    let w = packed(operand_type(op, 1)?, "w")?;
    let out = Tensor::of(result_type(op, 0)?, "result")?;
    out.expect_element("f32", "result")?;
    check_matmul_shapes(&x, &w, &out)
}

/// IRDL made gate and up one packed type, so checking gate checks both.
fn check_dequant_matmul_swiglu(op: &OperationRef) -> Check {
    check_dequant_matmul(op)
}

fn check_matmul_shapes(x: &Tensor, w: &PackedType, out: &Tensor) -> Check {
    x.expect_rank(&[1, 2], "x")?;
    expect_dim(x.last(), w.cols, "x's last dimension (K)")?;
    expect_leading(x, out, "x and result")?;
    expect_dim(out.last(), w.rows, "result's last dimension (N)")
}

fn check_dequant_matmul_i8(op: &OperationRef) -> Check {
    let x = Tensor::of(operand_type(op, 0)?, "x")?;
    x.expect_element("i8", "x")?;
    let scale = Tensor::of(operand_type(op, 1)?, "x_scale")?;
    scale.expect_element("f32", "x_scale")?;
    let w = packed(operand_type(op, 2)?, "w")?;
    if !w.quant.is_coded() {
        return Err(format!("the integer path needs integer codes, but w is {}", w.quant));
    }
    let out = Tensor::of(result_type(op, 0)?, "result")?;
    out.expect_element("f32", "result")?;
    check_matmul_shapes(&x, &w, &out)?;
    let leading_ok = scale.dims.len() == x.leading().len()
        && scale.dims.iter().zip(x.leading()).all(|(&a, &b)| dims_agree(a, b));
    if !leading_ok {
        return Err("x_scale must have one scale per row of x".into());
    }
    let acc_len = positive_attr(op, "acc_len")?;
    if acc_len > w.cols {
        return Err(format!("acc_len {acc_len} exceeds K = {}", w.cols));
    }
    Ok(())
}

fn check_dequant_matmul_tile(op: &OperationRef) -> Check {
    let tile_n = positive_attr(op, "tile_n")?;
    positive_attr(op, "tile_k")?;
    let x = Tensor::of(operand_type(op, 0)?, "x")?;
    x.expect_element("f32", "x")?;
    let w = packed(operand_type(op, 1)?, "w")?;
    x.expect_rank(&[1, 2], "x")?;
    expect_dim(x.last(), w.cols, "x's last dimension (K)")?;
    let acc = Tensor::of(operand_type(op, 2)?, "acc")?;
    acc.expect_element("f32", "acc")?;
    expect_leading(&x, &acc, "x and acc")?;
    match acc.last() {
        Some(n) if n > tile_n.min(w.rows) => Err(format!(
            "acc width {n} exceeds the tile (tile_n = {tile_n}, N = {})",
            w.rows
        )),
        _ => Ok(()),
    }
}
