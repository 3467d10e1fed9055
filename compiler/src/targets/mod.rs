//! The registry of targets: the one place that names every backend.
//! Adding a target is a crate under `targets/` and one line here.

use q35_target::Target;

/// Every target `--target` accepts, in `--help` order.
pub static REGISTRY: &[&dyn Target] = &[&q35_target_cpu::CpuTarget, &q35_target_nvptx::NvptxTarget, &q35_target_tsp::TspTarget];

/// The target named `name`.
pub fn find(name: &str) -> Option<&'static dyn Target> {
    REGISTRY.iter().copied().find(|t| t.name() == name)
}

/// The target that adds the `--emit` stage `stage`, if one does.
pub fn owner_of_stage(stage: &str) -> Option<&'static dyn Target> {
    REGISTRY.iter().copied().find(|t| t.stages().iter().any(|s| s.name == stage))
}

/// Every target's name, for messages.
pub fn names() -> String {
    REGISTRY.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod nvptx_tests;
