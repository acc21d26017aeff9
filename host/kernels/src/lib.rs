//! Fabric's built-in kernels: chunk operations implemented natively in Rust and published
//! to graphs as components (`builtin:array`, `builtin:dataframe`), so that a graph calls
//! `builtin:array/add` like any component, the validator type-checks the call (against the
//! signatures in fabric-builtins), and user WebAssembly tasks can take and return the same
//! chunk and frame records.

// The kernels are reached through their components only: a call's arguments and errors
// cross this crate's boundary as values and task errors.
mod array;
mod chunk;
mod dataframe;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use fabric_runtime::Component;

pub use fabric_builtins::{PREFIX, catalog};
pub use fabric_frame::Grants;

/// The built-in components by their names (`builtin:array`).
pub type Builtins = BTreeMap<String, Arc<Component>>;

/// The built-in components by name (`builtin:array`), reading any file and any store (with
/// the environment's credentials). Graphs use them without listing them under `components`.
pub fn components() -> &'static Builtins {
    static ALL: OnceLock<Builtins> = OnceLock::new();
    ALL.get_or_init(|| components_with(None))
}

/// The built-in components, whose readers and writers use, with `grants`, only what the
/// operator granted each tenant (`fabric worker --grants`).
pub fn components_with(grants: Option<Arc<fabric_frame::Grants>>) -> Builtins {
    [
        array::component(grants.clone()),
        dataframe::component(grants),
    ]
    .into_iter()
    .map(|c| (c.hash().to_string(), Arc::new(c)))
    .collect()
}

#[cfg(test)]
mod tests {
    use fabric_frame::groupby::How;
    use fabric_frame::join::JoinHow;

    use crate::array::{BinaryOp, Reduction, UnaryOp};

    /// The kernels know every case of the enums their signatures declare, by the same names
    /// in the same order.
    #[test]
    fn the_kernels_know_every_case_of_their_signatures() {
        assert_eq!(BinaryOp::ALL.map(|(n, _)| n), fabric_builtins::BINARY_OPS);
        assert_eq!(UnaryOp::ALL.map(|(n, _)| n), fabric_builtins::UNARY_OPS);
        assert_eq!(Reduction::ALL.map(|(n, _)| n), fabric_builtins::REDUCTIONS);
        assert_eq!(How::ALL.map(|(n, _)| n), fabric_builtins::AGGREGATES);
        assert_eq!(JoinHow::ALL.map(|(n, _)| n), fabric_builtins::JOINS);
    }

    #[test]
    fn the_components_publish_the_builtin_signatures() {
        let components = super::components();
        for (name, info) in fabric_builtins::catalog() {
            assert_eq!(
                components[&name].exports(),
                &info.unwrap().exports,
                "{name}"
            );
        }
    }
}
