//! What a pipeline needs of a q35 pass: a source that creates passes by
//! name, and the findings a pass reports through (external passes cannot
//! emit diagnostics through melior).

use melior::{pass::Pass, Context};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown q35 pass `{name}` (known: {known})")]
    Unknown { name: String, known: String },
    #[error("pass `{pass}` takes no option `{option}`")]
    UnknownOption { pass: String, option: String },
    #[error("pass `{pass}`: bad option `{option}`: {reason}")]
    BadOption { pass: String, option: String, reason: String },
}

/// Creates the q35 passes a pipeline names.
pub trait PassSource {
    /// The pass `name` with its `{key=value ...}` options, and the handle
    /// through which the pipeline reads what the pass found.
    fn create(&self, context: &Context, name: &str, options: &[(String, String)]) -> Result<(Pass, Findings), Error>;
}

/// A source with no q35 passes, for upstream-only pipelines.
pub struct NoPasses;

impl PassSource for NoPasses {
    fn create(&self, _: &Context, name: &str, _: &[(String, String)]) -> Result<(Pass, Findings), Error> {
        Err(Error::Unknown {
            name: name.into(),
            known: "none in this pipeline".into(),
        })
    }
}

/// Problems a pass found, shared between the pass (which MLIR clones) and
/// the pipeline that reports them.
#[derive(Clone, Default)]
pub struct Findings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Findings {
    pub fn push(&self, message: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(message);
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
