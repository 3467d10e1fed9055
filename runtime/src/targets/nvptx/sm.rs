//! The SM an `nvptx` artifact is compiled for, and which devices run it.

/// The SM an artifact's PTX is for (`target.cpu`): `sm_80` runs on compute
/// capability 8.0 and later; `sm_90a` (architecture-specific features)
/// only on 9.0; `sm_100f` (family) on 10.x from 10.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sm {
    pub major: u32,
    pub minor: u32,
    pub variant: SmVariant,
}

/// The suffix of an SM name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmVariant {
    /// `sm_80`: this compute capability or any later one.
    Portable,
    /// `sm_90a`: exactly this compute capability.
    ArchSpecific,
    /// `sm_100f`: this major version, this minor version or later.
    Family,
}

impl Sm {
    /// Parses `sm_80`, `sm_90a`, `sm_100f`, ...
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("sm_")?;
        let (digits, variant) = match rest.strip_suffix('a') {
            Some(digits) => (digits, SmVariant::ArchSpecific),
            None => match rest.strip_suffix('f') {
                Some(digits) => (digits, SmVariant::Family),
                None => (rest, SmVariant::Portable),
            },
        };
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u32 = digits.parse().ok()?;
        Some(Self {
            major: number / 10,
            minor: number % 10,
            variant,
        })
    }

    /// Whether code for this SM runs on a device of compute capability
    /// `major.minor`.
    pub fn runs_on(&self, major: u32, minor: u32) -> bool {
        match self.variant {
            SmVariant::Portable => (major, minor) >= (self.major, self.minor),
            SmVariant::ArchSpecific => (major, minor) == (self.major, self.minor),
            SmVariant::Family => major == self.major && minor >= self.minor,
        }
    }
}

impl std::fmt::Display for Sm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let suffix = match self.variant {
            SmVariant::Portable => "",
            SmVariant::ArchSpecific => "a",
            SmVariant::Family => "f",
        };
        write!(f, "sm_{}{}{suffix}", self.major, self.minor)
    }
}

