//! Fabric's component and end-to-end tests, in one binary.

mod arrays;
mod cluster;
mod dashboard;
mod dataframes;
mod fairness;
mod netns;
mod observe;
mod polyglot;
mod run;
mod runtime;
mod tenants;
