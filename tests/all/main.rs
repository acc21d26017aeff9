//! Fabric's component and end-to-end tests, in one binary.

mod run;
mod runtime;
