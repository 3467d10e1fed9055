//! A dispatch's kernel parameters: `tokens`, `start`, then every memref
//! descriptor's fields as separate 64-bit values (docs/artifact.md §5a).

use crate::artifact::Descriptor;

/// What one kernel parameter holds. Every parameter is a `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Tokens of the call.
    Tokens,
    /// Position of the call's first token.
    Start,
    /// A descriptor's allocated pointer (a device address).
    Allocated,
    /// A descriptor's aligned pointer (the same address).
    Aligned,
    /// A descriptor's offset, in elements (always 0).
    Offset,
    /// One of a descriptor's sizes.
    Size,
    /// One of a descriptor's strides, in elements.
    Stride,
}

impl ParamKind {
    /// Whether the parameter is a device pointer (`.ptr` in the PTX).
    pub fn is_pointer(self) -> bool {
        matches!(self, Self::Allocated | Self::Aligned)
    }
}

/// The parameter values of one dispatch, laid out once at load; a call
/// only rewrites `tokens`, `start` and the per-token sizes
/// ([`KernelParams::set_call`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelParams {
    kinds: Vec<ParamKind>,
    values: Vec<u64>,
    /// Indices of the sizes that are the call's token count.
    per_token: Vec<usize>,
}

impl KernelParams {
    pub(super) fn new() -> Self {
        Self {
            kinds: vec![ParamKind::Tokens, ParamKind::Start],
            values: vec![0, 0],
            per_token: Vec::new(),
        }
    }

    /// Appends a descriptor of `shape` over the device address `address`.
    pub(super) fn push_descriptor(&mut self, address: u64, shape: Descriptor) {
        let (sizes, strides) = match shape {
            Descriptor::Vector { len, .. } => (vec![len as u64], vec![1]),
            Descriptor::Matrix { rows, cols, .. } => {
                (vec![rows as u64, cols as u64], vec![cols as u64, 1])
            }
        };
        self.push(ParamKind::Allocated, address);
        self.push(ParamKind::Aligned, address);
        self.push(ParamKind::Offset, 0);
        if shape.per_token() {
            self.per_token.push(self.values.len());
        }
        sizes
            .into_iter()
            .for_each(|s| self.push(ParamKind::Size, s));
        strides
            .into_iter()
            .for_each(|s| self.push(ParamKind::Stride, s));
    }

    fn push(&mut self, kind: ParamKind, value: u64) {
        self.kinds.push(kind);
        self.values.push(value);
    }

    /// Sets the call's token count (parameter 0 and every per-token size)
    /// and start position (parameter 1).
    pub fn set_call(&mut self, tokens: usize, start: usize) {
        self.values[0] = tokens as u64;
        self.values[1] = start as u64;
        for &i in &self.per_token {
            self.values[i] = tokens as u64;
        }
    }

    /// What each parameter holds, in order.
    pub fn kinds(&self) -> &[ParamKind] {
        &self.kinds
    }

    /// The parameter values, in order.
    pub fn values(&self) -> &[u64] {
        &self.values
    }

    /// The values, for taking the addresses `cuLaunchKernel` reads them
    /// from.
    #[cfg(feature = "cuda")]
    pub(crate) fn values_mut(&mut self) -> &mut [u64] {
        &mut self.values
    }
}

