//! What each buffer of a manifest is ([`BufferClass`], from its role and
//! element type) and the memref descriptors it is passed to kernels as
//! ([`Descriptor`]): the one table every target lays out its kernel
//! arguments from (docs/artifact.md §5).

use q35_format::artifact::BufferSpec;
use q35_format::{GroupSize, QuantKind};

/// A `!q35.packed<N, K, G, "kind", "layout">` buffer element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedElement {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    pub kind: QuantKind,
    pub layout: String,
}

impl PackedElement {
    /// Parses the element text as the compiler prints it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text
            .strip_prefix("!q35.packed<")
            .and_then(|rest| rest.strip_suffix('>'))
            .ok_or_else(|| {
                format!(
                    "element `{text}` is neither f32, i32 nor !q35.packed<N, K, G, kind, layout>"
                )
            })?;
        let params: Vec<&str> = body.split(',').map(str::trim).collect();
        let [rows, cols, group, kind, layout] = params[..] else {
            return Err(format!("element `{text}` does not have 5 parameters"));
        };
        let int = |param: &str, what: &str| {
            param
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("element `{text}`: {what} `{param}` is not a number"))
        };
        let unquote = |s: &str| s.trim_matches('"').to_string();
        Ok(Self {
            rows: int(rows, "rows")?,
            cols: int(cols, "cols")?,
            group: int(group, "group")?,
            kind: unquote(kind)
                .parse()
                .map_err(|e: q35_format::Error| format!("element `{text}`: {e}"))?,
            layout: unquote(layout),
        })
    }

    /// The group size the kernels use: a fixed width, else per-channel.
    pub(crate) fn group_size(&self) -> GroupSize {
        GroupSize::ALL
            .into_iter()
            .find(|g| g.fixed() == Some(self.group))
            .unwrap_or(GroupSize::Channel)
    }
}

/// What a manifest buffer is, from its role and element type.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferClass {
    /// Token ids of the current call (i32, one per token).
    Tokens,
    /// Positions of the current call (i32, one per token).
    Positions,
    /// An activation, `[tokens, width]` f32.
    Activation { width: usize },
    /// Activations quantized for the integer path (`element` i8): `width`
    /// bytes per token, written by a quantize kernel from an f32
    /// activation and read by the matmuls of that activation.
    ActivationCodes { width: usize },
    /// The logits, `[tokens, width]` f32.
    Output { width: usize },
    /// A KV cache, `[rows, cols]` f32, persistent across calls.
    KvCache { rows: usize, cols: usize },
    /// A weight matrix of a packed type.
    PackedWeight(PackedElement),
    /// An f32 weight vector (norm gains).
    VectorWeight { len: usize },
}

impl BufferClass {
    /// Classifies `spec` for an artifact with `context` KV rows.
    pub fn of(spec: &BufferSpec, context: usize) -> Result<Self, String> {
        let name = &spec.name;
        let (element, width) = (spec.element.as_str(), spec.width);
        if width == 0 {
            return Err(format!("buffer `{name}` has width 0"));
        }
        let need = |expected: &str| {
            if element == expected {
                Ok(())
            } else {
                Err(format!(
                    "{} buffer `{name}` has element `{element}`, expected `{expected}`",
                    spec.role
                ))
            }
        };
        match spec.role.as_str() {
            "input" => {
                need("i32")?;
                if width != 1 {
                    return Err(format!("input buffer `{name}` has width {width}, expected 1"));
                }
                match name.as_str() {
                    "tokens" => Ok(Self::Tokens),
                    "positions" => Ok(Self::Positions),
                    _ => Err(format!("input buffer `{name}`: this runtime provides only `tokens` and `positions`")),
                }
            }
            "activation" if element == "i8" => Ok(Self::ActivationCodes { width }),
            "activation" => need("f32").map(|()| Self::Activation { width }),
            "output" => need("f32").map(|()| Self::Output { width }),
            "kv_cache" => {
                need("f32")?;
                if width % context != 0 {
                    return Err(format!(
                        "kv_cache buffer `{name}` has width {width}, not a multiple of the context length {context}"
                    ));
                }
                Ok(Self::KvCache {
                    rows: context,
                    cols: width / context,
                })
            }
            "weight" if element == "f32" => Ok(Self::VectorWeight { len: width }),
            "weight" => {
                let packed = PackedElement::parse(element).map_err(|e| format!("weight buffer `{name}`: {e}"))?;
                if packed.layout != "planar" {
                    return Err(format!("weight buffer `{name}` has layout `{}`; this runtime reads `planar`", packed.layout));
                }
                if packed.rows.checked_mul(packed.cols) != Some(width) {
                    return Err(format!(
                        "weight buffer `{name}` has width {width}, but its type is {}x{}",
                        packed.rows, packed.cols
                    ));
                }
                Ok(Self::PackedWeight(packed))
            }
            role => Err(format!(
                "buffer `{name}` has role `{role}` (expected input, weight, kv_cache, activation or output)"
            )),
        }
    }

    /// How many memref descriptors the buffer passes to a kernel.
    pub fn descriptor_count(&self) -> usize {
        match self {
            Self::PackedWeight(p) if p.kind.is_coded() => 4,
            _ => 1,
        }
    }

    /// The memref descriptors a buffer of this class passes to a kernel, in
    /// argument order, given the byte length of each of its arrays:
    /// descriptor `i` views array `i` (docs/artifact.md §5). Every backend
    /// lays out its kernel arguments from this one table.
    pub fn descriptors(&self, array_bytes: &[usize]) -> Vec<Descriptor> {
        match self {
            Self::Tokens | Self::Positions => vec![Descriptor::Vector {
                len: 0,
                per_token: true,
            }],
            Self::Activation { width } | Self::ActivationCodes { width } | Self::Output { width } => vec![Descriptor::Matrix {
                rows: 0,
                cols: *width,
                per_token: true,
            }],
            Self::KvCache { rows, cols } => vec![Descriptor::Matrix {
                rows: *rows,
                cols: *cols,
                per_token: false,
            }],
            Self::PackedWeight(p) => {
                let element_sizes: &[usize] = match p.kind {
                    QuantKind::F16 => &[2],
                    QuantKind::F32 => &[4],
                    // codes (u8), mins (f16), range codes (u8), range scales (f16)
                    _ => &[1, 2, 1, 2],
                };
                array_bytes
                    .iter()
                    .zip(element_sizes)
                    .map(|(bytes, size)| Descriptor::Vector {
                        len: bytes / size,
                        per_token: false,
                    })
                    .collect()
            }
            Self::VectorWeight { len } => vec![Descriptor::Vector {
                len: *len,
                per_token: false,
            }],
        }
    }

    /// Bytes of the single array of a buffer that is not a weight (per-token
    /// buffers get `max_tokens` rows); `None` for weights, whose payloads
    /// size them. `check_plan` has bounded every product.
    pub(crate) fn array_bytes(&self, max_tokens: usize) -> Option<usize> {
        match self {
            Self::Tokens | Self::Positions => Some(max_tokens * 4),
            Self::Activation { width } | Self::Output { width } => Some(max_tokens * width * 4),
            Self::ActivationCodes { width } => Some(max_tokens * width),
            Self::KvCache { rows, cols } => Some(rows * cols * 4),
            Self::PackedWeight(_) | Self::VectorWeight { .. } => None,
        }
    }
}

/// The shape of one memref descriptor: offset 0, row-major strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// Rank 1, `len` elements, stride 1.
    Vector { len: usize, per_token: bool },
    /// Rank 2, `rows × cols`, strides `[cols, 1]`.
    Matrix {
        rows: usize,
        cols: usize,
        per_token: bool,
    },
}

impl Descriptor {
    /// Whether the first size is the call's token count (set before every
    /// call; the value above is a placeholder).
    pub fn per_token(&self) -> bool {
        match *self {
            Self::Vector { per_token, .. } | Self::Matrix { per_token, .. } => per_token,
        }
    }
}
