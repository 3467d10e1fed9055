//! The TSP target: a cycle-exact simulator of the program q35c scheduled
//! ([`sim`]), on the machine its target description names.

pub mod sim;
pub mod vxm;
