//! The registry of targets: the one place that names every backend.
//! Adding a target is a crate under `targets/` and one line here.

use q35_target::Target;

/// Every target `--target` accepts, in `--help` order.
pub static REGISTRY: &[&dyn Target] = &[&q35_target_cpu::CpuTarget, &q35_target_nvptx::NvptxTarget, &q35_target_tsp::TspTarget, &q35_target_csl::CslTarget];

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

/// Refuses an option of another target than `target` given on the
/// command line.
pub fn check_foreign_options(matches: &clap::ArgMatches, target: &dyn Target) -> anyhow::Result<()> {
    for other in REGISTRY.iter().filter(|t| t.name() != target.name()) {
        for option in other.args() {
            let id = option.arg.get_id().as_str();
            if matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let value = matches.get_raw(id).and_then(|mut v| v.next()).map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
            let flag = option.arg.get_long().unwrap_or(id);
            let owner = other.name().to_uppercase();
            let article = if owner.starts_with(['A', 'E', 'F', 'H', 'I', 'L', 'M', 'N', 'O', 'R', 'S', 'X']) { "an" } else { "a" };
            anyhow::bail!("--{flag} {value} is {article} {owner} option; the {} target {}", target.name(), option.elsewhere);
        }
    }
    Ok(())
}

#[cfg(test)]
mod nvptx_tests;
