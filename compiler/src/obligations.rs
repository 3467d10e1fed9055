//! Per-artifact proof obligations (docs/proofs.md, "Per-artifact
//! obligations").
//!
//! The Coq theorems in `proofs/` are stated for any shape and any stored
//! parameters, under side conditions: `K <= K_max` for the int32
//! accumulator, `T > 0` and the tile arithmetic for tiling, a group width and
//! tail for the packed layout, bounds on `min`, `range` and the step for the
//! binary32 error bound. This module instantiates those side conditions with
//! the concrete constants of one compiled model: it derives them from the
//! artifact's manifest (buffer types, dispatch list) and its stored weights,
//! writes them into the artifact (payload [`OBLIGATIONS_PAYLOAD`], JSON), and
//! discharges every one with z3: each is emitted as SMT-LIB 2, the negation
//! of the side condition over its constants, and must be `unsat`.
//!
//! `q35c --target cpu` refuses to write an artifact whose obligations are
//! not all proved; `q35c verify model.q35` re-derives the obligations from
//! the artifact, compares them with the stored ones, re-runs z3 and prints a
//! summary.

use q35_dialect::PackedType;
use q35_format::{
    artifact::{Artifact, DispatchSpec, Manifest},
    GroupParams, GroupSize, Layout, Payload, QuantKind, QuantizedTensor, L3, L4,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt,
    io::Write as _,
    process::{Command, Stdio},
    str::FromStr,
    time::Instant,
};

pub use q35_format::artifact::OBLIGATIONS_PAYLOAD;

/// `ObligationSet::format`.
pub const OBLIGATIONS_FORMAT: &str = "q35-obligations";
/// Bumped when the obligations or their parameters change meaning.
pub const OBLIGATIONS_VERSION: u32 = 1;

/// `2^31 - 1`, `Accum.I32_MAX`.
pub const I32_MAX: i64 = 2_147_483_647;

/// `Accum.K_max C = (2^31 - 1) / (128 C)`: the largest K for which int8
/// activations times (code − zero point) with `|code − zero point| <= C`
/// cannot overflow an int32 accumulator (`Accum.K_max_tight`).
pub const fn k_max(code_bound: i64) -> i64 {
    I32_MAX / (128 * code_bound)
}

/// `Accum.K_max_15`.
pub const K_MAX_15: i64 = 1_118_481;
/// `Accum.K_max_7`.
pub const K_MAX_7: i64 = 2_396_745;
/// `Accum.K_max_105`.
pub const K_MAX_105: i64 = 159_783;

/// The code bound of the CPU integer path (`--activations int8`): codes
/// scaled to a common step, `7·q4` and `15·q3` (at most 105), so that both
/// planes of a group share one accumulator (docs/format.md §8).
pub const SCALED_CODE_BOUND: i64 = 105;

/// What an obligation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The packed row layout of a coded weight: group width, tail, block sizes.
    Layout,
    /// A matmul kernel's row tiles (workgroups) and K tiles (groups).
    Tiling,
    /// The binary32 dequantization error bound of a weight, per code level.
    Dequant,
    /// The int32 accumulator of the integer path.
    Accumulator,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Layout, Kind::Tiling, Kind::Dequant, Kind::Accumulator];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Layout => "layout",
            Kind::Tiling => "tiling",
            Kind::Dequant => "dequant",
            Kind::Accumulator => "accumulator",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter: an integer, an exact binary floating-point value (every f16
/// and f32 is one, and so is every f64), or a name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Int(v) => write!(f, "{v}"),
            Param::Real(v) => write!(f, "{v:e}"),
            Param::Text(v) => write!(f, "{v:?}"),
        }
    }
}

/// One side condition of one Coq theorem, instantiated with constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Obligation {
    /// Unique within the artifact, e.g. `tiling/dispatch 7/model.layers.0.mlp.up_proj.weight`.
    pub id: String,
    pub kind: Kind,
    /// The Coq theorem(s) the side condition belongs to (`proofs/theories`).
    pub theorem: String,
    /// The constants, by name (names are SMT-LIB symbols).
    pub params: BTreeMap<String, Param>,
}

impl Obligation {
    fn text(&self, name: &str) -> Result<&str, String> {
        match self.params.get(name) {
            Some(Param::Text(v)) => Ok(v),
            _ => Err(format!("obligation `{}` has no text parameter `{name}`", self.id)),
        }
    }
}

/// The obligations of one artifact, as stored in [`OBLIGATIONS_PAYLOAD`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObligationSet {
    pub format: String,
    pub version: u32,
    pub obligations: Vec<Obligation>,
}

impl ObligationSet {
    pub fn new(obligations: Vec<Obligation>) -> Self {
        Self {
            format: OBLIGATIONS_FORMAT.to_string(),
            version: OBLIGATIONS_VERSION,
            obligations,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("obligations serialize");
        text.push(b'\n');
        text
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let set: ObligationSet =
            serde_json::from_slice(bytes).map_err(|e| format!("the stored obligations are not valid JSON: {e}"))?;
        if set.format != OBLIGATIONS_FORMAT || set.version != OBLIGATIONS_VERSION {
            return Err(format!(
                "the stored obligations are {} version {}, this q35c reads {OBLIGATIONS_FORMAT} version {OBLIGATIONS_VERSION}",
                set.format, set.version
            ));
        }
        Ok(set)
    }

    /// How many obligations of each kind.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for o in &self.obligations {
            *counts.entry(o.kind).or_default() += 1;
        }
        counts
    }
}

fn params(list: &[(&str, Param)]) -> BTreeMap<String, Param> {
    list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

// ---------------------------------------------------------------- derivation

/// The code-minus-zero-point bound C of a coded kind (`Accum.q35_code_bound`,
/// `Accum.code_minus_zero_bound`): 15 for q35 and int4, 7 for int3.
pub fn code_bound(kind: QuantKind) -> Option<i64> {
    match kind {
        QuantKind::Q35 | QuantKind::Int4 => Some(L4 as i64),
        QuantKind::Int3 => Some(L3 as i64),
        QuantKind::F16 | QuantKind::F32 => None,
    }
}

/// The accumulator obligation of an integer-path matmul (int8 activations
/// times code − zero point, int32 accumulator, at most K terms per
/// accumulator), or the refusal when K is above the proven limit. The
/// compiler calls this for every integer-path matmul it is asked to build.
pub fn integer_matmul(subject: &str, n: u64, k: u64, kind: QuantKind) -> Result<Obligation, String> {
    let Some(c) = code_bound(kind) else {
        return Err(format!(
            "`{subject}`: the integer path needs integer codes, but the weight is {kind}"
        ));
    };
    accumulator_obligation(subject, n, k, kind, c)
}

/// [`integer_matmul`] for the CPU integer path, whose codes are scaled to
/// a common step ([`SCALED_CODE_BOUND`]).
pub fn scaled_integer_matmul(subject: &str, n: u64, k: u64, kind: QuantKind) -> Result<Obligation, String> {
    if code_bound(kind).is_none() {
        return Err(format!(
            "`{subject}`: the integer path needs integer codes, but the weight is {kind}"
        ));
    }
    accumulator_obligation(subject, n, k, kind, SCALED_CODE_BOUND)
}

fn accumulator_obligation(subject: &str, n: u64, k: u64, kind: QuantKind, c: i64) -> Result<Obligation, String> {
    let limit = k_max(c);
    let theorem_short = format!("Accum.accum_no_overflow_C{c}");
    let theorem = format!("{theorem_short}, Accum.acc_i32_exact, Accum.tiled_no_overflow");
    if k == 0 || k as i128 > limit as i128 {
        return Err(format!(
            "`{subject}` ({n}x{k} {kind}): the integer path (int8 activations times code minus zero point, \
             int32 accumulator) would sum K = {k} terms of magnitude up to 128*{c} = {}, above the proven limit \
             K_max = {limit} ({theorem_short}: 128*{c}*K <= 2^31 - 1); use the f32 path for this layer",
            128 * c
        ));
    }
    Ok(Obligation {
        id: format!("accumulator/{subject}"),
        kind: Kind::Accumulator,
        theorem: theorem.to_string(),
        params: params(&[
            ("k", Param::Int(k as i64)),
            ("code_bound", Param::Int(c)),
            ("x_min", Param::Int(-128)),
            ("x_max", Param::Int(127)),
            ("acc_bits", Param::Int(32)),
            ("k_max", Param::Int(limit)),
        ]),
    })
}

/// The kernel's group width for a packed buffer type: G, or K for a
/// per-channel group (what `Layout::group_width` gives the kernel).
fn kernel_layout(packed: &PackedType) -> Layout {
    let group = GroupSize::ALL
        .into_iter()
        .find(|g| g.fixed() == Some(packed.group as usize))
        .unwrap_or(GroupSize::Channel);
    Layout::new(packed.quant, group, packed.cols as usize)
}

/// Layout obligation of one coded weight (`Format.unpack_pack_group` per
/// group, tails included, and `Format.pack_group_length` for the row).
fn layout_obligation(name: &str, tensor: &QuantizedTensor, packed: &PackedType, code_bytes: usize) -> Obligation {
    let layout = tensor.layout();
    let groups = layout.groups();
    let width = layout.group_width().min(tensor.cols());
    let tail = tensor.cols() - (groups - 1) * width;
    let kernel = kernel_layout(packed);
    let theorem = match tensor.kind() {
        QuantKind::Q35 => "Format.unpack_pack_group, Format.pack_group_length",
        // Format.v models the q35 planes (n4 = ceil(n/2), n3 = floor(n/2));
        // int4/int3 use the same planes with n3 = 0 or n4 = 0.
        _ => "Format.pack_group_length (layout arithmetic; int4/int3 planes)",
    };
    Obligation {
        id: format!("layout/{name}"),
        kind: Kind::Layout,
        theorem: theorem.to_string(),
        params: params(&[
            ("quant", Param::Text(tensor.kind().to_string())),
            ("n", Param::Int(tensor.rows() as i64)),
            ("k", Param::Int(tensor.cols() as i64)),
            ("g", Param::Int(width as i64)),
            ("groups", Param::Int(groups as i64)),
            ("tail", Param::Int(tail as i64)),
            ("full_block", Param::Int(layout.block_len(0) as i64)),
            ("tail_block", Param::Int(layout.block_len(groups - 1) as i64)),
            ("row_bytes", Param::Int(layout.row_bytes() as i64)),
            ("code_bytes", Param::Int(code_bytes as i64)),
            ("kernel_n", Param::Int(packed.rows as i64)),
            ("kernel_k", Param::Int(packed.cols as i64)),
            ("kernel_g", Param::Int(kernel.group_width() as i64)),
        ]),
    }
}

/// Dequantization obligations of one coded weight, one per code level
/// (`Binary32.dequant_quant_error_stored` with the largest stored |min| and
/// range of the tensor, `Binary32.dequant_b32_correct`,
/// `Binary32.scale_b32_correct`).
fn dequant_obligations(name: &str, tensor: &QuantizedTensor) -> Result<Vec<Obligation>, String> {
    let Payload::Coded { .. } = tensor.payload() else {
        return Ok(Vec::new());
    };
    let groups = tensor.layout().groups();
    let mut abs_min_max = 0f64;
    let mut range_max = 0f32;
    let mut range_min_nonzero = f32::INFINITY;
    for r in 0..tensor.rows() {
        for g in 0..groups {
            let GroupParams { min, range } = tensor.group_params(r, g).expect("coded tensor");
            if !min.is_finite() || !range.is_finite() || range < 0.0 {
                return Err(format!(
                    "weight `{name}`: row {r}, group {g} has min {min} and range {range}; both must be finite, the range non-negative"
                ));
            }
            abs_min_max = abs_min_max.max(min.abs() as f64);
            range_max = range_max.max(range);
            if range > 0.0 {
                range_min_nonzero = range_min_nonzero.min(range);
            }
        }
    }
    if range_min_nonzero == f32::INFINITY {
        range_min_nonzero = 0.0;
    }
    let (n4, n3) = tensor.kind().code_counts(tensor.cols()).unwrap_or((0, 0));
    let mut levels = Vec::new();
    if n4 > 0 {
        levels.push(L4);
    }
    if n3 > 0 {
        levels.push(L3);
    }
    Ok(levels
        .into_iter()
        .map(|l| {
            let step = range_max / f32::from(l);
            let delta = delta_bound(l, abs_min_max, step as f64);
            Obligation {
                id: format!("dequant/{name}/L{l}"),
                kind: Kind::Dequant,
                theorem: "Binary32.dequant_quant_error_stored, Binary32.dequant_b32_correct, Binary32.scale_b32_correct"
                    .to_string(),
                params: params(&[
                    ("l", Param::Int(l as i64)),
                    ("abs_min_max", Param::Real(abs_min_max)),
                    ("range_max", Param::Real(range_max as f64)),
                    ("range_min_nonzero", Param::Real(range_min_nonzero as f64)),
                    ("step", Param::Real(step as f64)),
                    ("delta", Param::Real(delta)),
                ]),
            }
        })
        .collect())
}

/// An f64 upper bound of `s/2 + 2^-24 ((2 + 2^-24) L s + |min|)` (the
/// proven per-weight error with the stored parameters; z3 checks that it is
/// an upper bound, exactly).
pub fn delta_bound(l: u8, abs_min: f64, step: f64) -> f64 {
    let u = 2f64.powi(-24);
    let exact = step / 2.0 + u * ((2.0 + u) * f64::from(l) * step + abs_min);
    // A few f64 roundings above: a relative margin of 2^-40 covers them.
    exact * (1.0 + 2f64.powi(-40))
}

/// Tiling obligation of matmul dispatch `index` over `buffer`: rows in
/// workgroups of `rows_per_workgroup` (`Tn`), K in the kernel's groups (`Tk`,
/// the remainder being the tail group); `Tiling.tiled_dequant_matvec_eq`.
fn tiling_obligation(index: usize, dispatch: &DispatchSpec, buffer: &str, packed: &PackedType, rows_per_workgroup: usize) -> Obligation {
    let (n, k) = (packed.rows as i64, packed.cols as i64);
    let tile_n = rows_per_workgroup as i64;
    let tile_k = if packed.quant.is_coded() { kernel_layout(packed).group_width() as i64 } else { k };
    Obligation {
        id: format!("tiling/dispatch {index}/{buffer}"),
        kind: Kind::Tiling,
        theorem: "Tiling.tiled_dequant_matvec_eq, Tiling.tiles_cover".to_string(),
        params: params(&[
            ("kernel", Param::Text(dispatch.kernel.clone())),
            ("n", Param::Int(n)),
            ("k", Param::Int(k)),
            ("tile_n", Param::Int(tile_n)),
            ("tile_k", Param::Int(tile_k)),
            ("full_tiles_k", Param::Int(if tile_k > 0 { k / tile_k } else { 0 })),
            ("rem_k", Param::Int(if tile_k > 0 { k % tile_k } else { k })),
            ("workgroups", Param::Int(dispatch.workgroups as i64)),
            ("workgroups_per_token", Param::Int(dispatch.workgroups_per_token as i64)),
        ]),
    }
}

/// Derives every obligation of an artifact from its manifest and payloads
/// (`payload(name)` gives a payload's bytes). Fails with a message naming
/// the weight or dispatch when the artifact cannot be described (an unknown
/// weight, a payload that does not decode, a non-finite parameter).
pub fn derive<'p>(manifest: &Manifest, payload: &dyn Fn(&str) -> Option<&'p [u8]>) -> Result<Vec<Obligation>, String> {
    let mut out = Vec::new();
    let mut packed_buffers: BTreeMap<&str, PackedType> = BTreeMap::new();
    for buffer in &manifest.buffers {
        if buffer.role == "weight" && buffer.element.starts_with("!q35.packed") {
            let packed = PackedType::from_str(&buffer.element)
                .map_err(|e| format!("weight buffer `{}`: {e}", buffer.name))?;
            packed_buffers.insert(&buffer.name, packed);
        }
    }
    // Per coded weight: layout and dequantization.
    for weight in &manifest.weights {
        let Some(packed) = packed_buffers.get(weight.name.as_str()) else {
            continue;
        };
        if !packed.quant.is_coded() {
            continue;
        }
        let bytes = payload(&weight.tensor)
            .ok_or_else(|| format!("weight `{}`: payload `{}` is missing", weight.name, weight.tensor))?;
        let tensor = QuantizedTensor::from_bytes(&weight.name, bytes).map_err(|e| format!("weight `{}`: {e}", weight.name))?;
        let Payload::Coded { codes, .. } = tensor.payload() else {
            return Err(format!(
                "weight `{}`: the buffer type is {} but the payload is a {} tensor",
                weight.name,
                packed.quant,
                tensor.kind()
            ));
        };
        if tensor.cols() == 0 || tensor.rows() == 0 {
            return Err(format!("weight `{}` is empty ({}x{})", weight.name, tensor.rows(), tensor.cols()));
        }
        out.push(layout_obligation(&weight.name, &tensor, packed, codes.len()));
        out.extend(dequant_obligations(&weight.name, &tensor)?);
    }
    // Per matmul dispatch: row tiles (workgroups of rows_per_workgroup) and
    // K tiles (the kernel's groups); per integer-path dispatch: the accumulator.
    for (i, dispatch) in manifest.dispatches.iter().enumerate() {
        if !dispatch.kernel.starts_with("dequant_matmul") {
            continue;
        }
        for buffer in &dispatch.buffers {
            let Some(packed) = packed_buffers.get(buffer.as_str()) else {
                continue;
            };
            out.push(tiling_obligation(i, dispatch, buffer, packed, manifest.rows_per_workgroup));
            // The TSP's MXM runs every coded matmul as the CPU's integer
            // path does: int8 activations times scaled codes, int32 sums.
            let tsp = manifest.target.kind == "tsp" && packed.quant.is_coded();
            if dispatch.kernel.starts_with("dequant_matmul_i8") || tsp {
                let subject = format!("dispatch {i}/{buffer}");
                // The CPU's integer path (`activations = int8`) scales codes.
                let obligation = if manifest.activations == "int8" { scaled_integer_matmul } else { integer_matmul };
                out.push(obligation(&subject, packed.rows, packed.cols, packed.quant)?);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for o in &out {
        if !seen.insert(o.id.as_str()) {
            return Err(format!("internal: obligation `{}` derived twice", o.id));
        }
    }
    Ok(out)
}

/// Checks every integer-path matmul (`q35.dequant_matmul_i8`) of a q35
/// module against the proven accumulator bound before anything is lowered,
/// and returns their accumulator obligations. The error names the op (its
/// weight and location) and the bound.
pub fn check_integer_ops(module: &melior::ir::Module) -> Result<Vec<Obligation>, String> {
    use melior::ir::{
        operation::{OperationLike, OperationResult, WalkOrder, WalkResult},
        ValueLike,
    };
    let mut found = Vec::new();
    let mut problems = Vec::new();
    module.as_operation().walk(WalkOrder::PreOrder, |op| {
        if op.name().as_string_ref().as_str() != Ok("q35.dequant_matmul_i8") {
            return WalkResult::Advance;
        }
        let location = q35_dialect::context::render_location(op.location());
        let result = (|| -> Result<Obligation, String> {
            let w = op.operand(2).map_err(|e| e.to_string())?;
            let packed = PackedType::from_type(w.r#type())
                .ok_or("w is not a packed weight")?
                .map_err(|e| e.to_string())?;
            let weight = OperationResult::try_from(w)
                .ok()
                .map(|r| r.owner())
                .filter(|owner| owner.name().as_string_ref().as_str() == Ok("q35.weight"))
                .and_then(|owner| owner.attribute("name").ok())
                .and_then(q35_dialect::verify::string_value);
            let subject = match weight {
                Some(name) => format!("{name} at {location}"),
                None => format!("q35.dequant_matmul_i8 at {location}"),
            };
            integer_matmul(&subject, packed.rows, packed.cols, packed.quant)
        })();
        match result {
            Ok(o) => found.push(o),
            Err(e) => problems.push(e),
        }
        WalkResult::Advance
    });
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------- SMT-LIB

/// Definitions shared by every obligation.
pub const SMT_PRELUDE: &str = "\
(set-logic ALL)
(define-fun cdiv ((a Int) (b Int)) Int (div (+ a (- b 1)) b))
; Format.block_bytes n = nib + lo2 + hi1 for the q35 planes (n4 = ceil(n/2), n3 = floor(n/2))
(define-fun planes ((n4 Int) (n3 Int)) Int (+ (cdiv n4 2) (cdiv n3 4) (cdiv n3 8)))
(define-fun bb_q35 ((n Int)) Int (planes (cdiv n 2) (div n 2)))
(define-fun bb_int4 ((n Int)) Int (planes n 0))
(define-fun bb_int3 ((n Int)) Int (planes 0 n))
(define-fun u32 () Real (/ 1.0 16777216.0))
(define-fun two126 () Real 85070591730234615865843651857942052864.0)
";

/// `2^n` as a decimal integer.
fn pow2_decimal(n: u32) -> String {
    let mut digits = vec![1u8]; // little endian
    for _ in 0..n {
        let mut carry = 0;
        for d in digits.iter_mut() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        if carry > 0 {
            digits.push(carry);
        }
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

/// The exact value of a finite f64 as an SMT-LIB real term.
pub fn smt_real(x: f64) -> String {
    assert!(x.is_finite(), "non-finite real parameter");
    if x == 0.0 {
        return "0.0".to_string();
    }
    let bits = x.to_bits();
    let negative = bits >> 63 != 0;
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mut mantissa, mut exp) = if exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), exponent - 1075)
    };
    while mantissa % 2 == 0 && exp < 0 {
        mantissa /= 2;
        exp += 1;
    }
    let term = if exp == 0 {
        format!("{mantissa}.0")
    } else if exp > 0 {
        format!("(* {mantissa}.0 {}.0)", pow2_decimal(exp as u32))
    } else {
        format!("(/ {mantissa}.0 {}.0)", pow2_decimal((-exp) as u32))
    };
    if negative {
        format!("(- {term})")
    } else {
        term
    }
}

/// The side condition of an obligation, over its parameters (as SMT-LIB
/// constants defined by [`smt_text`]).
fn condition(o: &Obligation) -> Result<String, String> {
    Ok(match o.kind {
        Kind::Layout => {
            let bb = match o.text("quant")? {
                "q35" => "bb_q35",
                "int4" => "bb_int4",
                "int3" => "bb_int3",
                other => return Err(format!("obligation `{}`: unknown quant `{other}`", o.id)),
            };
            format!(
                "(and (> n 0) (> k 0) (> g 0)
     (= groups (cdiv k g)) (= tail (- k (* (- groups 1) g))) (< 0 tail) (<= tail g)
     (or (= (mod g 2) 0) (= groups 1))
     (= full_block (ite (> groups 1) ({bb} g) ({bb} tail))) (= tail_block ({bb} tail))
     (= row_bytes (+ (* (- groups 1) full_block) tail_block))
     (= code_bytes (* n row_bytes))
     (= kernel_n n) (= kernel_k k) (> kernel_g 0)
     (= (cdiv kernel_k kernel_g) groups)
     (or (= groups 1) (= kernel_g g)))"
            )
        }
        Kind::Tiling => "(and (> n 0) (> k 0) (> tile_n 0) (> tile_k 0)
     (= (+ (* full_tiles_k tile_k) rem_k) k) (<= 0 rem_k) (< rem_k tile_k)
     (= workgroups_per_token 0)
     (>= (* workgroups tile_n) n) (< (* (- workgroups 1) tile_n) n))"
            .to_string(),
        Kind::Dequant => "(and (<= 1.0 l) (<= l 4194304.0)
     (<= 0.0 abs_min_max) (<= abs_min_max 65504.0)
     (<= 0.0 range_min_nonzero) (<= range_min_nonzero range_max)
     (or (= range_min_nonzero 0.0) (>= range_min_nonzero (/ l two126)))
     (or (= range_max 0.0) (> range_min_nonzero 0.0))
     (<= 0.0 step)
     (<= (abs (- step (/ range_max l))) (* u32 (/ range_max l)))
     (<= (+ abs_min_max (* l step)) two126)
     (>= delta (+ (/ step 2.0) (* u32 (+ (* (+ 2.0 u32) l step) abs_min_max)))))"
            .to_string(),
        Kind::Accumulator => "(and (> k 0) (> code_bound 0) (= acc_bits 32) (= x_min (- 128)) (= x_max 127)
     (= k_max (div 2147483647 (* 128 code_bound)))
     (<= (* 128 code_bound k) 2147483647)
     (<= k k_max))"
            .to_string(),
    })
}

fn sanitize_comment(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// One obligation as an SMT-LIB 2 block: `(push)`, the constants, the
/// negated side condition, `(check-sat)`, `(pop)`. `unsat` proves it.
pub fn smt_text(o: &Obligation) -> Result<String, String> {
    let mut text = format!("; {} ({})\n(push 1)\n", sanitize_comment(&o.id), sanitize_comment(&o.theorem));
    for (name, value) in &o.params {
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || name.is_empty() {
            return Err(format!("obligation `{}`: bad parameter name `{name}`", o.id));
        }
        match value {
            Param::Int(v) if o.kind == Kind::Dequant => text.push_str(&format!("(define-fun {name} () Real {v}.0)\n")),
            Param::Int(v) if *v < 0 => text.push_str(&format!("(define-fun {name} () Int (- {}))\n", v.unsigned_abs())),
            Param::Int(v) => text.push_str(&format!("(define-fun {name} () Int {v})\n")),
            Param::Real(v) if v.is_finite() => text.push_str(&format!("(define-fun {name} () Real {})\n", smt_real(*v))),
            Param::Real(v) => return Err(format!("obligation `{}`: parameter `{name}` is {v}", o.id)),
            Param::Text(_) => {}
        }
    }
    text.push_str(&format!("(assert (not {}))\n(check-sat)\n(pop 1)\n", condition(o)?));
    Ok(text)
}

/// The whole z3 script for a list of obligations.
pub fn smt_script(obligations: &[Obligation]) -> Result<String, String> {
    let mut script = String::from(SMT_PRELUDE);
    for o in obligations {
        script.push_str(&smt_text(o)?);
    }
    Ok(script)
}

/// The z3 binary: `Q35_Z3`, or `z3` on the PATH.
fn z3_binary() -> String {
    std::env::var("Q35_Z3").unwrap_or_else(|_| "z3".to_string())
}

fn z3_missing(binary: &str, e: &std::io::Error) -> String {
    format!(
        "cannot run z3 (`{binary}`: {e}): q35c proves each artifact's proof obligations with z3; \
         install it (Debian package `z3`, scripts/setup.sh) or point Q35_Z3 at it"
    )
}

/// `z3 --version`, e.g. `4.8.12`.
pub fn z3_version() -> Result<String, String> {
    let binary = z3_binary();
    let output = Command::new(&binary).arg("--version").output().map_err(|e| z3_missing(&binary, &e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .split_whitespace()
        .nth(2)
        .filter(|_| text.starts_with("Z3 version"))
        .unwrap_or(text.trim())
        .to_string())
}

/// z3's answer for one obligation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Proved,
    /// `sat` (the side condition fails for these constants) or `unknown`.
    NotProved(String),
}

/// Runs every obligation through one z3 process; one verdict per obligation.
pub fn discharge(obligations: &[Obligation]) -> Result<Vec<Verdict>, String> {
    if obligations.is_empty() {
        return Ok(Vec::new());
    }
    let script = smt_script(obligations)?;
    let binary = z3_binary();
    let mut child = Command::new(&binary)
        .args(["-in", "-smt2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| z3_missing(&binary, &e))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let output = child.wait_with_output().map_err(|e| format!("z3 failed: {e}"))?;
    writer
        .join()
        .map_err(|_| "z3: writing the script panicked".to_string())?
        .map_err(|e| format!("z3 did not read the script: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(error) = lines.iter().find(|l| l.starts_with("(error")) {
        return Err(format!("z3 rejected the obligation script: {error}"));
    }
    if lines.len() != obligations.len() {
        return Err(format!(
            "z3 answered {} of {} obligations (exit {}): {}",
            lines.len(),
            obligations.len(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(lines
        .into_iter()
        .map(|l| if l == "unsat" { Verdict::Proved } else { Verdict::NotProved(l.to_string()) })
        .collect())
}

/// One message per obligation z3 did not prove.
fn failures(obligations: &[Obligation], verdicts: &[Verdict]) -> Vec<String> {
    obligations
        .iter()
        .zip(verdicts)
        .filter_map(|(o, v)| match v {
            Verdict::Proved => None,
            Verdict::NotProved(answer) => Some(format!(
                "obligation `{}` is not proved (z3: {answer}): the side condition of {} fails for {}",
                o.id,
                o.theorem,
                describe_params(o)
            )),
        })
        .collect()
}

/// Discharges `obligations`; the error names every one z3 does not prove
/// (or says why z3 could not run).
pub fn prove_all(obligations: &[Obligation]) -> Result<(), String> {
    let failed = failures(obligations, &discharge(obligations)?);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

fn describe_params(o: &Obligation) -> String {
    o.params
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------- compile and verify

/// Derives and proves the obligations of an artifact about to be written;
/// returns the payload to store. The error names the layer and the bound.
pub fn for_new_artifact(manifest: &Manifest, payloads: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let lookup = |name: &str| payloads.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice());
    let obligations = derive(manifest, &lookup)?;
    let failed = failures(&obligations, &discharge(&obligations)?);
    if !failed.is_empty() {
        return Err(format!(
            "refusing to write the artifact: {} proof obligation(s) do not hold:\n{}",
            failed.len(),
            failed.join("\n")
        ));
    }
    Ok(ObligationSet::new(obligations).to_json())
}

/// What `q35c verify` found.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The plan's dispatches, checked against this many kernel signatures.
    pub dispatches: usize,
    pub kernels: usize,
    pub counts: BTreeMap<Kind, usize>,
    pub total: usize,
    pub z3: String,
    pub seconds: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} {k}", self.counts.get(k).copied().unwrap_or(0)))
            .collect();
        write!(
            f,
            "plan of {} dispatches agrees with the code's {} kernel signatures; verified {} obligations (z3 {}, {:.2} s): {}",
            self.dispatches,
            self.kernels,
            self.total,
            self.z3,
            self.seconds,
            parts.join(", ")
        )
    }
}

/// Compares stored obligations with re-derived ones; one message per difference.
pub fn compare(stored: &[Obligation], derived: &[Obligation]) -> Vec<String> {
    let mut problems = Vec::new();
    let derived_by_id: BTreeMap<&str, &Obligation> = derived.iter().map(|o| (o.id.as_str(), o)).collect();
    let stored_by_id: BTreeMap<&str, &Obligation> = stored.iter().map(|o| (o.id.as_str(), o)).collect();
    if stored_by_id.len() != stored.len() {
        problems.push("the stored obligations repeat an id".to_string());
    }
    for o in stored {
        let Some(d) = derived_by_id.get(o.id.as_str()) else {
            problems.push(format!("obligation `{}` is stored, but the artifact gives no such obligation", o.id));
            continue;
        };
        if o.kind != d.kind || o.theorem != d.theorem {
            problems.push(format!(
                "obligation `{}`: stored as {} of {}, the artifact gives {} of {}",
                o.id, o.kind, o.theorem, d.kind, d.theorem
            ));
        }
        for name in o.params.keys().chain(d.params.keys().filter(|k| !o.params.contains_key(*k))) {
            match (o.params.get(name), d.params.get(name)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => problems.push(format!(
                    "obligation `{}`: stored {name} = {}, the artifact gives {name} = {}",
                    o.id,
                    a.map_or("(none)".to_string(), |v| v.to_string()),
                    b.map_or("(none)".to_string(), |v| v.to_string())
                )),
            }
        }
    }
    for o in derived {
        if !stored_by_id.contains_key(o.id.as_str()) {
            problems.push(format!("obligation `{}` is missing from the artifact", o.id));
        }
    }
    problems
}

/// `q35c verify`: checks the container (checksums included), re-derives the
/// obligations, compares them with the stored ones and proves the stored
/// ones with z3.
pub fn verify_artifact(path: &str, bytes: &[u8]) -> Result<Summary, String> {
    let started = Instant::now();
    let artifact = Artifact::parse(path, bytes).map_err(|e| e.to_string())?;
    // The plan first: the runtime's own checks, and the plan against the
    // kernels the code object declares.
    let kernels = q35_rt::artifact::check_artifact_plan(&artifact).map_err(|e| format!("{path}: {e}"))?;
    let stored = artifact.payload(OBLIGATIONS_PAYLOAD).ok_or_else(|| {
        format!("{path}: the artifact has no proof obligations (payload `{OBLIGATIONS_PAYLOAD}`); recompile it with this q35c")
    })?;
    let stored = ObligationSet::from_json(stored).map_err(|e| format!("{path}: {e}"))?;
    let derived = derive(&artifact.manifest, &|name| artifact.payload(name)).map_err(|e| format!("{path}: {e}"))?;
    let mut problems = compare(&stored.obligations, &derived);
    let z3 = z3_version()?;
    problems.extend(failures(&stored.obligations, &discharge(&stored.obligations)?));
    if !problems.is_empty() {
        return Err(format!(
            "{path}: {} problem(s) with the proof obligations:\n{}",
            problems.len(),
            problems.join("\n")
        ));
    }
    Ok(Summary {
        dispatches: artifact.manifest.dispatches.len(),
        kernels,
        counts: stored.counts(),
        total: stored.obligations.len(),
        z3,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests;
