//! Fabric's built-in kernels: chunk operations implemented natively in Rust and published
//! to graphs as components (`builtin:array`, `builtin:dataframe`), so that a graph calls
//! `builtin:array/add` like any component, the validator type-checks the call, and user
//! WebAssembly tasks can take and return the same chunk and frame records.

pub mod array;
pub mod chunk;
pub mod dataframe;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use fabric_core::{Catalog, ComponentInfo, FuncType, Type};
use fabric_runtime::Component;

pub use chunk::{Chunk, ChunkRef};

/// The signature `(params) -> result` of a built-in export.
pub(crate) fn signature(params: &[(&str, &Type)], result: &Type) -> FuncType {
    FuncType {
        params: params
            .iter()
            .map(|&(n, t)| (Arc::from(n), t.clone()))
            .collect(),
        result: Some(result.clone()),
    }
}

/// The WIT type `enum { names... }`.
pub(crate) fn enum_of(names: &[&str]) -> Type {
    Type::Enum(names.iter().map(|&n| Arc::from(n)).collect())
}

/// The prefix of every built-in component's name.
pub const PREFIX: &str = "builtin:";

/// The built-in components by name (`builtin:array`). Graphs use them without listing them
/// under `components`.
pub fn components() -> &'static BTreeMap<String, Arc<Component>> {
    static ALL: OnceLock<BTreeMap<String, Arc<Component>>> = OnceLock::new();
    ALL.get_or_init(|| {
        [array::component(), dataframe::component()]
            .into_iter()
            .map(|c| (c.hash().to_string(), Arc::new(c)))
            .collect()
    })
}

/// The built-in components' signatures, as a catalog that validation extends with the
/// graph's own components.
pub fn catalog() -> Catalog {
    components()
        .iter()
        .map(|(name, c)| {
            let info = ComponentInfo {
                exports: c.exports().clone(),
            };
            (name.clone(), Ok(info))
        })
        .collect()
}
