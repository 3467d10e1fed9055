//! The q35 runtime (being written).
