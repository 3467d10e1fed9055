//! `q35-fuse`: folds elementwise epilogues into the matmul that feeds them,
//! so each becomes one kernel that never writes the intermediate result.
//!
//! Dequantization already happens inside every matmul kernel (a dequantized
//! weight matrix never exists); what this pass removes is the round trip of
//! the matmul's output through memory and one dispatch each:
//!
//! - a residual add, `add(r, dequant_matmul(x, w))` (either operand order),
//!   becomes `dequant_matmul_add(x, w, r)`;
//! - SwiGLU over two projections of the same input,
//!   `swiglu(dequant_matmul(x, g), dequant_matmul(x, u))`, becomes
//!   `dequant_matmul_swiglu(x, g, u)`, one pass over x for both weights.
//!
//! A matmul is folded only when the epilogue is its only use. The fused op
//! takes the epilogue's place, where every operand is already defined. The
//! result is the same function exactly: the kernel computes the same dot
//! products and then the same f32 add or the same SwiGLU on them.

use super::Findings;
use melior::{
    ir::{
        block::BlockLike,
        operation::{OperationLike, OperationResult},
        r#type::TypeId,
        Block, OperationRef, RegionLike, Value, ValueLike,
    },
    pass::{create_external, ExternalPass, Pass, RunExternalPass},
    Context, ContextRef, IrRewriter,
};
use q35_dialect::ops;
use std::collections::HashMap;

#[repr(align(8))]
struct PassId;
static PASS_ID: PassId = PassId;

#[derive(Clone)]
pub struct FusePass<'c> {
    context: &'c Context,
    findings: Findings,
}

impl<'c> FusePass<'c> {
    pub fn new(context: &'c Context) -> Self {
        Self {
            context,
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
            "q35-fuse",
            "q35-fuse",
            "fuse residual adds and SwiGLU into the dequant_matmul that feeds them",
            "builtin.module",
            &[],
        )
    }
}

impl<'c> RunExternalPass<'c> for FusePass<'c> {
    fn initialize(&mut self, _context: ContextRef<'c>) {}

    fn run(&mut self, operation: OperationRef<'c, '_>, pass: ExternalPass<'_>) {
        let mut blocks = Vec::new();
        collect_blocks(operation, &mut blocks);
        for block in blocks {
            if let Err(message) = fuse_block(self.context, block) {
                self.findings.push(format!("error: q35-fuse: {message}"));
                pass.signal_failure();
                return;
            }
        }
    }
}

fn key(value: Value) -> usize {
    value.to_raw().ptr as usize
}

fn name_of(op: OperationRef) -> String {
    op.name().as_string_ref().as_str().unwrap_or("").to_string()
}

/// Every block nested in `root` that holds q35 ops.
fn collect_blocks<'c, 'a>(root: OperationRef<'c, 'a>, out: &mut Vec<melior::ir::BlockRef<'c, 'a>>) {
    for region in root.regions() {
        let mut block = region.first_block();
        while let Some(b) = block {
            let mut op = b.first_operation();
            let mut has_q35 = false;
            while let Some(current) = op {
                has_q35 |= name_of(current).starts_with("q35.");
                collect_blocks(current, out);
                op = current.next_in_block();
            }
            if has_q35 {
                out.push(b);
            }
            block = b.next_in_region();
        }
    }
}

/// Uses of every value by ops of `block` (and of ops nested in them).
fn count_uses(block: &Block, uses: &mut HashMap<usize, usize>) {
    let mut op = block.first_operation();
    while let Some(current) = op {
        for operand in current.operands() {
            *uses.entry(key(operand)).or_default() += 1;
        }
        for region in current.regions() {
            let mut nested = region.first_block();
            while let Some(b) = nested {
                count_uses(&b, uses);
                nested = b.next_in_region();
            }
        }
        op = current.next_in_block();
    }
}

/// The `q35.dequant_matmul` that defines `value` when `value` has no other
/// use, in the same block.
fn sole_matmul<'c, 'a>(value: Value<'c, 'a>, block: &Block<'c>, uses: &HashMap<usize, usize>) -> Option<OperationRef<'c, 'a>> {
    let result = OperationResult::try_from(value).ok()?;
    let producer = result.owner();
    let same_block = producer.block().is_some_and(|b| b.to_raw().ptr == block.to_raw().ptr);
    (name_of(producer) == "q35.dequant_matmul" && same_block && uses.get(&key(value)) == Some(&1)).then_some(producer)
}

fn operand<'c, 'a>(op: OperationRef<'c, 'a>, index: usize) -> Result<Value<'c, 'a>, String> {
    op.operand(index).map_err(|e| format!("`{}`: {e}", name_of(op)))
}

fn fuse_block<'c>(context: &'c Context, block: melior::ir::BlockRef<'c, '_>) -> Result<(), String> {
    let mut uses = HashMap::new();
    count_uses(&block, &mut uses);
    // Decide first, rewrite after: rewriting invalidates the walk.
    let mut plans = Vec::new();
    let mut op = block.first_operation();
    while let Some(current) = op {
        match name_of(current).as_str() {
            "q35.add" => {
                let (a, b) = (operand(current, 0)?, operand(current, 1)?);
                // Values are read again when the fusion is applied. Prefer the right operand as the matmul (residual + f(x) is
                // how the emitter writes it); either order is the same sum.
                if let Some(matmul) = sole_matmul(b, &block, &uses) {
                    plans.push(Fusion::Add { add: current, matmul, residual: 0 });
                } else if let Some(matmul) = sole_matmul(a, &block, &uses) {
                    plans.push(Fusion::Add { add: current, matmul, residual: 1 });
                }
            }
            "q35.swiglu" => {
                let (g, u) = (operand(current, 0)?, operand(current, 1)?);
                if let (Some(gate), Some(up)) = (sole_matmul(g, &block, &uses), sole_matmul(u, &block, &uses)) {
                    let (x_gate, x_up) = (operand(gate, 0)?, operand(up, 0)?);
                    let (w_gate, w_up) = (operand(gate, 1)?, operand(up, 1)?);
                    if key(x_gate) == key(x_up) && gate != up && w_gate.r#type() == w_up.r#type() {
                        plans.push(Fusion::SwiGlu { swiglu: current, gate, up });
                    }
                }
            }
            _ => {}
        }
        op = current.next_in_block();
    }
    for plan in plans {
        plan.apply(context)?;
    }
    Ok(())
}

enum Fusion<'c, 'a> {
    Add {
        add: OperationRef<'c, 'a>,
        matmul: OperationRef<'c, 'a>,
        /// Which operand of the add is the residual. An index, not the
        /// value: an earlier fusion may have replaced the value's producer.
        residual: usize,
    },
    SwiGlu {
        swiglu: OperationRef<'c, 'a>,
        gate: OperationRef<'c, 'a>,
        up: OperationRef<'c, 'a>,
    },
}

impl<'c> Fusion<'c, '_> {
    fn apply(self, context: &'c Context) -> Result<(), String> {
        let (epilogue, fused, producers) = match self {
            Fusion::Add { add, matmul, residual } => {
                let residual = operand(add, residual)?;
                let fused = ops::dequant_matmul_add(context, operand(matmul, 0)?, operand(matmul, 1)?, residual, add.location())
                    .map_err(|e| e.to_string())?;
                (add, fused, vec![matmul])
            }
            Fusion::SwiGlu { swiglu, gate, up } => {
                let result = swiglu.result(0).map_err(|e| e.to_string())?.r#type();
                let fused = ops::dequant_matmul_swiglu(
                    context,
                    operand(gate, 0)?,
                    operand(gate, 1)?,
                    operand(up, 1)?,
                    result,
                    swiglu.location(),
                )
                .map_err(|e| e.to_string())?;
                (swiglu, fused, vec![gate, up])
            }
        };
        let staging = Block::new(&[]);
        let fused = staging.append_operation(fused);
        let rewriter = IrRewriter::from_op(epilogue);
        let rewriter = rewriter.as_rewriter_base();
        rewriter.move_op_before(fused, epilogue);
        let value: Value = fused.result(0).map_err(|e| e.to_string())?.into();
        rewriter.replace_op_with_values(epilogue, &[value]);
        for producer in producers {
            rewriter.erase_op(producer);
        }
        Ok(())
    }
}
