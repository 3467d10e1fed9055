//! `q35-verify`: the checks IRDL cannot express, as a pass.
//!
//! IRDL checks op structure; this pass checks that a `q35.dequant_matmul`'s
//! activation width equals its weight's K, that element types are what the
//! op computes on, and that attribute values are in range. Example: it
//! rejects
//!
//! ```mlir
//! %y = "q35.dequant_matmul"(%x, %w) : (tensor<1x512xf32>,
//!        !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<1x1536xf32>
//! ```
//!
//! with `x's last dimension (K) is 512, expected 576`. The IR is unchanged.

use super::Findings;
use melior::{
    ir::{r#type::TypeId, OperationRef},
    pass::{create_external, ExternalPass, Pass, RunExternalPass},
    ContextRef,
};
use q35_dialect::verify::verify_operation;

#[repr(align(8))]
struct PassId;
static PASS_ID: PassId = PassId;

#[derive(Clone, Default)]
pub struct VerifyPass {
    findings: Findings,
}

impl VerifyPass {
    pub fn findings(&self) -> Findings {
        self.findings.clone()
    }

    pub fn into_pass(self) -> Pass {
        create_external(
            self,
            TypeId::create(&PASS_ID),
            "q35-verify",
            "q35-verify",
            super::PASSES[0].summary,
            "builtin.module",
            &[],
        )
    }
}

impl<'c> RunExternalPass<'c> for VerifyPass {
    fn initialize(&mut self, _context: ContextRef<'c>) {}

    fn run(&mut self, operation: OperationRef<'c, '_>, pass: ExternalPass<'_>) {
        if let Err(error) = verify_operation(operation) {
            for problem in error.problems {
                self.findings.push(problem.to_string());
            }
            pass.signal_failure();
        }
    }
}
