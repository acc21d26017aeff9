//! Fabric's worker side: running the units a scheduler assigns.

pub mod executor;

pub use executor::{JobCode, UnitFailure, run_unit};
