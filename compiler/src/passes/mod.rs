//! The q35 passes, looked up by name from pipelines and command lines.
//!
//! Every pass is named `q35-<verb>`, has a one-line summary, a lit test in
//! `lit/passes/`, and a timing entry (each pipeline step is timed).

mod fuse;
mod ir;
pub mod lower_to_kernels;
mod tile;
mod verify;

pub use fuse::FusePass;
pub use q35_target::pass::{Error, Findings};
pub use tile::{parse_tile, TilePass, DEFAULT_TILE};
pub use verify::VerifyPass;

use lower_to_kernels as lower;
use melior::{pass::Pass, Context};
use q35_target::pass::PassSource;
use q35_target_nvptx as gpu;

/// A q35 pass as listed in `q35-opt --help` and docs/dialect.md.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// The option that `--<name>=VALUE` sets on the command line, if any.
    pub flag_option: Option<&'static str>,
}

/// Every q35 pass, in the order a pipeline would usually run them.
pub const PASSES: &[PassInfo] = &[
    PassInfo {
        name: "q35-verify",
        summary: "check q35 ops for what IRDL cannot express (shapes, element types, attribute ranges)",
        flag_option: None,
    },
    PassInfo {
        name: "q35-fuse",
        summary: "fuse residual adds and SwiGLU (gate and up projections) into the dequant_matmul that feeds them",
        flag_option: None,
    },
    PassInfo {
        name: "q35-lower-to-kernels",
        summary: "lower q35 ops to kernels (func/scf/arith/math/memref) and a dispatch list (rows=N output rows per matmul workgroup, default 64; activations=int8 for the integer path of coded matmuls, default f32; kernels=linalg builds every kernel but the KV-cache update from linalg.generic ops on views of their buffers, default native)",
        flag_option: Some("rows"),
    },
    PassInfo {
        name: "q35-lower-to-gpu",
        summary: "turn the kernels of q35-lower-to-kernels into gpu.func kernels in a gpu.module with a launch configuration per dispatch (matmuls: warp-per-row fused dequant GEMV, warps=W rows per block, default 4; row ops: a warp per token; attention: a warp per token and head)",
        flag_option: Some("warps"),
    },
    PassInfo {
        name: "q35-tile",
        summary: "tile q35.dequant_matmul over N and K into q35.dequant_matmul_tile (tile=NxK, default 320x320)",
        flag_option: Some("tile"),
    },
];

/// Every q35 pass, for pipelines: [`create`] by name.
pub struct Registry;

impl PassSource for Registry {
    fn create(&self, context: &Context, name: &str, options: &[(String, String)]) -> Result<(Pass, Findings), Error> {
        create(context, name, options)
    }
}

/// Creates the q35 pass `name` with its `{key=value ...}` options, or says
/// why not. Returns the pass and a handle through which the pipeline reads
/// what the pass found, since external passes cannot emit diagnostics
/// through melior.
pub fn create(context: &Context, name: &str, options: &[(String, String)]) -> Result<(Pass, Findings), Error> {
    let unknown_option = |key: &str| Error::UnknownOption {
        pass: name.into(),
        option: key.into(),
    };
    match name {
        "q35-verify" => {
            if let Some((key, _)) = options.first() {
                return Err(unknown_option(key));
            }
            let pass = VerifyPass::default();
            let findings = pass.findings();
            Ok((pass.into_pass(), findings))
        }
        "q35-tile" => {
            let mut tile = DEFAULT_TILE;
            for (key, value) in options {
                match key.as_str() {
                    "tile" => {
                        tile = parse_tile(value).map_err(|reason| Error::BadOption {
                            pass: name.into(),
                            option: key.clone(),
                            reason,
                        })?
                    }
                    _ => return Err(unknown_option(key)),
                }
            }
            let pass = TilePass::new(context, tile);
            let findings = pass.findings();
            Ok((pass.into_pass(), findings))
        }
        "q35-fuse" => {
            if let Some((key, _)) = options.first() {
                return Err(unknown_option(key));
            }
            let pass = FusePass::new(context);
            let findings = pass.findings();
            Ok((pass.into_pass(), findings))
        }
        "q35-lower-to-kernels" => {
            let mut rows = lower::DEFAULT_ROWS_PER_WORKGROUP;
            let mut int8 = false;
            let mut linalg = false;
            for (key, value) in options {
                match key.as_str() {
                    "rows" => {
                        rows = value.parse().ok().filter(|&r: &usize| r > 0).ok_or_else(|| Error::BadOption {
                            pass: name.into(),
                            option: key.clone(),
                            reason: format!("`{value}` is not a positive integer"),
                        })?
                    }
                    // Two-valued options: the second value sets the flag.
                    "activations" | "kernels" => {
                        let ((off, on), flag) = match key.as_str() {
                            "activations" => (("f32", "int8"), &mut int8),
                            _ => (("native", "linalg"), &mut linalg),
                        };
                        *flag = match value.as_str() {
                            v if v == off => false,
                            v if v == on => true,
                            _ => {
                                return Err(Error::BadOption {
                                    pass: name.into(),
                                    option: key.clone(),
                                    reason: format!("`{value}` is neither {off} nor {on}"),
                                })
                            }
                        }
                    }
                    _ => return Err(unknown_option(key)),
                }
            }
            let pass = lower::LowerPass::new(context, rows).with_int8_activations(int8).with_linalg(linalg);
            let findings = pass.findings();
            Ok((pass.into_pass(), findings))
        }
        "q35-lower-to-gpu" => {
            let mut warps = gpu::DEFAULT_WARPS;
            for (key, value) in options {
                match key.as_str() {
                    "warps" => {
                        warps = value.parse().ok().filter(|&w: &usize| (1..=32).contains(&w)).ok_or_else(|| Error::BadOption {
                            pass: name.into(),
                            option: key.clone(),
                            reason: format!("`{value}` is not a warp count from 1 to 32"),
                        })?
                    }
                    _ => return Err(unknown_option(key)),
                }
            }
            let pass = gpu::GpuPass::new(context, warps);
            let findings = pass.findings();
            Ok((pass.into_pass(), findings))
        }
        _ => Err(Error::Unknown {
            name: name.into(),
            known: PASSES.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        }),
    }
}
