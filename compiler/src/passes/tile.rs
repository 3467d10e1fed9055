//! `q35-tile`: tiles `q35.dequant_matmul` over N (output rows) and K
//! (reduction) into `q35.dequant_matmul_tile` ops, 320×320 by default (the
//! TSP's systolic array), with the remainders peeled into static edge tiles
//! so every tile has a static shape.
//!
//! Before (N = 576, K = 576, tile 320×320):
//!
//! ```mlir
//! %y = "q35.dequant_matmul"(%x, %w) : (tensor<?x576xf32>, !q35.packed<576, 576, ...>) -> tensor<?x576xf32>
//! ```
//!
//! After (one full N tile in a loop, then the 256-row edge tile; in each,
//! the full K tile in a loop, then the 256-column edge tile):
//!
//! ```mlir
//! %init = tensor.splat %zero[%m] : tensor<?x576xf32>
//! %r = scf.for %n0 = %c0 to %c320 step %c320 iter_args(%out = %init) -> (tensor<?x576xf32>) {
//!   %acc0 = tensor.splat %zero[%m] : tensor<?x320xf32>
//!   %acc1 = scf.for %k0 = %c0 to %c320 step %c320 iter_args(%a = %acc0) -> (tensor<?x320xf32>) {
//!     %t = "q35.dequant_matmul_tile"(%x, %w, %a, %n0, %k0) {tile_n = 320, tile_k = 320}
//!     scf.yield %t
//!   }
//!   %acc2 = "q35.dequant_matmul_tile"(%x, %w, %acc1, %n0, %c320) {tile_n = 320, tile_k = 256}
//!   %o = tensor.insert_slice %acc2 into %out[0, %n0] [%m, 320] [1, 1]
//!   scf.yield %o
//! }
//! // ... the same for the edge tile at n0 = 320 of width 256
//! ```
//!
//! The tiled IR computes the same function: the sum over K splits exactly
//! into tiles (proved in proofs/, `Tiling.v`), and N tiles write disjoint
//! columns of the result.

use super::{ir, Findings};
use melior::{
    ir::{
        block::BlockLike,
        operation::OperationLike,
        r#type::{RankedTensorType, TypeId},
        Block, OperationRef, RegionLike, ShapedTypeLike, Type, Value, ValueLike,
    },
    IrRewriter,
    pass::{create_external, ExternalPass, Pass, RunExternalPass},
    Context, ContextRef,
};
use q35_dialect::{
    ops::{self, TileSizes},
    PackedType,
};

#[repr(align(8))]
struct PassId;
static PASS_ID: PassId = PassId;

/// Default tile: the 320×320 systolic array of a TSP-shaped target.
pub const DEFAULT_TILE: TileSizes = TileSizes { n: 320, k: 320 };

/// Parses `NxK` (e.g. `320x320`).
pub fn parse_tile(text: &str) -> Result<TileSizes, String> {
    let (n, k) = text
        .split_once('x')
        .ok_or_else(|| format!("tile `{text}` must be NxK, e.g. 320x320"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("tile `{text}`: `{s}` is not a positive integer"))
    };
    Ok(TileSizes {
        n: parse(n)?,
        k: parse(k)?,
    })
}

#[derive(Clone)]
pub struct TilePass<'c> {
    context: &'c Context,
    tile: TileSizes,
    findings: Findings,
}

impl<'c> TilePass<'c> {
    pub fn new(context: &'c Context, tile: TileSizes) -> Self {
        Self {
            context,
            tile,
            findings: Findings::default(),
        }
    }

    pub fn findings(&self) -> Findings {
        self.findings.clone()
    }

    pub fn into_pass(self) -> Pass {
        create_external(
            self,
            TypeId::create(&PASS_ID),
            "q35-tile",
            "q35-tile",
            "tile q35.dequant_matmul over N and K (default 320x320)",
            "builtin.module",
            &[],
        )
    }
}

impl<'c> RunExternalPass<'c> for TilePass<'c> {
    fn initialize(&mut self, _context: ContextRef<'c>) {}

    fn run(&mut self, operation: OperationRef<'c, '_>, pass: ExternalPass<'_>) {
        let mut targets = Vec::new();
        collect(operation, &mut targets);
        for op in targets {
            if let Err(message) = tile_one(self.context, op, self.tile) {
                self.findings.push(format!(
                    "{}: error: 'q35.dequant_matmul' op cannot be tiled: {message}",
                    q35_dialect::context::render_location(op.location())
                ));
                pass.signal_failure();
                return;
            }
        }
    }
}

/// Every `q35.dequant_matmul` nested in `root`, in program order.
fn collect<'c, 'a>(root: OperationRef<'c, 'a>, out: &mut Vec<OperationRef<'c, 'a>>) {
    for region in root.regions() {
        let mut block = region.first_block();
        while let Some(b) = block {
            let mut next = b.first_operation();
            while let Some(op) = next {
                if op.name().as_string_ref().as_str() == Ok("q35.dequant_matmul") {
                    out.push(op);
                } else {
                    collect(op, out);
                }
                next = op.next_in_block();
            }
            block = b.next_in_region();
        }
    }
}

fn arg<'c, 'b>(block: &'b Block<'c>, index: usize) -> Result<Value<'c, 'b>, String> {
    block.argument(index).map(Into::into).map_err(|e| e.to_string())
}

/// Appends `op` to `block` and returns its first result.
fn push<'c, 'b>(block: &'b Block<'c>, op: melior::ir::Operation<'c>) -> Result<Value<'c, 'b>, String> {
    block
        .append_operation(op)
        .result(0)
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn tile_one<'c>(context: &'c Context, op: OperationRef<'c, '_>, tile: TileSizes) -> Result<(), String> {
    let location = op.location();
    let x = op.operand(0).map_err(|e| e.to_string())?;
    let w = op.operand(1).map_err(|e| e.to_string())?;
    let packed = PackedType::from_type(w.r#type())
        .ok_or("the weight is not a !q35.packed")?
        .map_err(|e| e.to_string())?;
    let x_type = RankedTensorType::try_from(x.r#type()).map_err(|_| "x is not a ranked tensor")?;
    if x_type.rank() != 2 {
        return Err(format!("x must have rank 2 (tokens x K), got rank {}", x_type.rank()));
    }
    let (n, k) = (packed.rows as i64, packed.cols as i64);
    let (tn, tk) = (tile.n as i64, tile.k as i64);
    let rows_static = match x_type.dim_size(0) {
        Ok(melior::ir::r#type::DimSize::Static(m)) => Some(m as i64),
        _ => None,
    };

    // Build everything in a detached block, then move it before `op`.
    let staging = Block::new(&[]);
    let c0 = push(&staging, ir::index_constant(context, 0, location))?;
    let zero = push(&staging, ir::f32_constant(context, 0.0, location))?;
    let rows = match rows_static {
        Some(m) => Rows::Static(m),
        None => Rows::Dynamic(push(&staging, ir::tensor_dim(context, x, c0, location)?)?),
    };
    let tiler = Tiler {
        context,
        location,
        x,
        w,
        zero,
        rows,
        k,
        tk,
    };
    let mut result = tiler.splat(&staging, n)?;
    let n_full = n / tn * tn;
    if n_full > 0 {
        let hi = tiler.constant(&staging, n_full)?;
        let step = tiler.constant(&staging, tn)?;
        let body = ir::loop_body(context, result.r#type(), location);
        let (n0, out) = (arg(&body, 0)?, arg(&body, 1)?);
        let tiled = tiler.n_tile(&body, n0, tn, out)?;
        ir::scf_yield(&body, tiled, location);
        let looped = ir::for_loop(c0, hi, step, result, body, location)?;
        result = push(&staging, looped)?;
    }
    if n % tn != 0 {
        let n0 = tiler.constant(&staging, n_full)?;
        result = tiler.n_tile(&staging, n0, n % tn, result)?;
    }

    // Move the staged ops before `op`, then replace it.
    let rewriter = IrRewriter::from_op(op);
    let rewriter = rewriter.as_rewriter_base();
    while let Some(staged) = staging.first_operation() {
        rewriter.move_op_before(staged, op);
    }
    rewriter.replace_op_with_values(op, &[result]);
    Ok(())
}

/// The number of rows (tokens) of x: static, or a `tensor.dim` value.
#[derive(Clone, Copy)]
enum Rows<'c, 'a> {
    Static(i64),
    Dynamic(Value<'c, 'a>),
}

/// What every tile of one `q35.dequant_matmul` shares.
struct Tiler<'c, 'a> {
    context: &'c Context,
    location: melior::ir::Location<'c>,
    x: Value<'c, 'a>,
    w: Value<'c, 'a>,
    zero: Value<'c, 'a>,
    rows: Rows<'c, 'a>,
    k: i64,
    tk: i64,
}

impl<'c, 'a> Tiler<'c, 'a> {
    fn constant<'b>(&self, block: &'b Block<'c>, value: i64) -> Result<Value<'c, 'b>, String> {
        push(block, ir::index_constant(self.context, value, self.location))
    }

    /// A zero tensor of `rows x width`.
    fn splat<'b>(&self, block: &'b Block<'c>, width: i64) -> Result<Value<'c, 'b>, String>
    where
        'a: 'b,
    {
        let (m, dynamic) = match self.rows {
            Rows::Static(m) => (m.to_string(), vec![]),
            Rows::Dynamic(v) => ("?".to_string(), vec![v]),
        };
        let r#type = Type::parse(self.context, &format!("tensor<{m}x{width}xf32>"))
            .ok_or_else(|| format!("bad tile width {width}"))?;
        push(block, ir::tensor_splat(self.zero, &dynamic, r#type, self.location)?)
    }

    fn tile<'b>(
        &self,
        block: &'b Block<'c>,
        acc: Value<'c, 'b>,
        n0: Value<'c, 'b>,
        k0: Value<'c, 'b>,
        tile: TileSizes,
    ) -> Result<Value<'c, 'b>, String>
    where
        'a: 'b,
    {
        let op = ops::dequant_matmul_tile(self.context, self.x, self.w, acc, n0, k0, tile, self.location)
            .map_err(|e| e.to_string())?;
        push(block, op)
    }

    /// One N tile of `width` rows at `n0`: the loop over full K tiles, the
    /// K edge tile, then the insert into `out`.
    fn n_tile<'b>(&self, block: &'b Block<'c>, n0: Value<'c, 'b>, width: i64, out: Value<'c, 'b>) -> Result<Value<'c, 'b>, String>
    where
        'a: 'b,
    {
        let mut acc = self.splat(block, width)?;
        let k_full = self.k / self.tk * self.tk;
        let tile = |tile_k: i64| TileSizes {
            n: width as u64,
            k: tile_k as u64,
        };
        if k_full > 0 {
            let lo = self.constant(block, 0)?;
            let hi = self.constant(block, k_full)?;
            let step = self.constant(block, self.tk)?;
            let body = ir::loop_body(self.context, acc.r#type(), self.location);
            let (k0, a) = (arg(&body, 0)?, arg(&body, 1)?);
            let tiled = self.tile(&body, a, n0, k0, tile(self.tk))?;
            ir::scf_yield(&body, tiled, self.location);
            let looped = ir::for_loop(lo, hi, step, acc, body, self.location)?;
            acc = push(block, looped)?;
        }
        if self.k % self.tk != 0 {
            let k0 = self.constant(block, k_full)?;
            acc = self.tile(block, acc, n0, k0, tile(self.k % self.tk))?;
        }
        let rows: (i64, Option<Value<'c, 'b>>) = match self.rows {
            Rows::Static(m) => (m, None),
            Rows::Dynamic(v) => (ir::DYNAMIC, Some(v)),
        };
        let spec: ir::SliceSpec<'c, 'b> = ir::SliceSpec {
            offsets: vec![(0, None), (ir::DYNAMIC, Some(n0))],
            sizes: vec![rows, (width, None)],
        };
        let inserted: melior::ir::Operation<'c> = ir::insert_slice(self.context, acc, out, &spec, self.location)?;
        push(block, inserted)
    }
}
