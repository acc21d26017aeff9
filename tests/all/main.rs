//! Fabric's component and end-to-end tests, in one binary.

mod arrays;
mod cluster;
mod dashboard;
mod dataframes;
mod deploy;
mod fairness;
mod futures;
mod kubernetes;
mod netns;
mod observe;
mod polyglot;
mod python;
mod retire;
mod run;
mod runtime;
mod slurm;
mod tenants;
mod tpch;
mod typed;
