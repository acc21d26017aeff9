//! A loaded component: linked once, with its exports' signatures, indices and fast paths
//! worked out up front so that a call looks nothing up but one hash-map entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_core::{FuncType, Value};
use rustc_hash::FxHashMap;
use wasmtime::component::types::{ComponentFunc, ComponentInstance, ComponentItem};
use wasmtime::component::{ComponentExportIndex, InstancePre, Linker};

use crate::config::Limits;
use crate::error::{RuntimeError, TaskError};
use crate::store::TaskState;
use crate::typed::{FastCall, fast_path};
use crate::types::func_type;

/// A task component: typed exports that graphs call. Usually WebAssembly, compiled and
/// linked, ready to be instantiated for each call (from
/// [`Runtime::load`](crate::Runtime::load)); or one of the host's own built-in components
/// ([`Component::native`]). Cheap to share (`Arc`).
pub struct Component {
    hash: String,
    exports: BTreeMap<String, FuncType>,
    code: Code,
}

/// How a component's exports run.
enum Code {
    Wasm(Wasm),
    Native(Arc<dyn Native>),
}

/// A WebAssembly component's code: what each call instantiates, and its exports.
pub(crate) struct Wasm {
    pub(crate) pre: InstancePre<TaskState>,
    entries: FxHashMap<String, Export>,
}

impl Wasm {
    pub(crate) fn entry(&self, name: &str) -> Option<&Export> {
        self.entries.get(name)
    }
}

/// The code of a component implemented by the host, such as Fabric's built-in array and
/// dataframe kernels: it is trusted native code, run on the worker's thread without a
/// sandbox, and it sees the same values a WebAssembly export would.
pub trait Native: Send + Sync + 'static {
    /// Calls `export` with `args`, which the graph's validation checked against the
    /// export's signature. An error is the task's error; `call.limits.memory_bytes` bounds
    /// what the call should allocate (refuse larger outputs with
    /// [`TaskErrorKind::OutOfMemory`](crate::TaskErrorKind::OutOfMemory)).
    fn call(&self, export: &str, args: &[Value], call: &NativeCall) -> Result<Value, TaskError>;
}

/// What a native export knows about the task it runs for.
#[derive(Clone, Copy, Debug)]
pub struct NativeCall<'a> {
    /// The task's limits.
    pub limits: &'a Limits,
    /// The tenant that submitted the job.
    pub tenant: &'a str,
    /// The local directories the task may read and write files under
    /// ([`RuntimeConfig::local_data`](crate::RuntimeConfig::local_data)); `None`: any.
    pub local_data: Option<&'a [std::path::PathBuf]>,
    /// When the call started (its time limit counts from there).
    pub started: std::time::Instant,
    /// Set when the task's job is cancelled.
    pub cancel: Option<&'a crate::CancelFlag>,
}

impl NativeCall<'_> {
    /// Why the task must stop now, if it must: its job was cancelled, or its time limit
    /// passed. Long native calls ask between pieces of work (a CSV read, per batch).
    pub fn interrupted(&self) -> Option<TaskError> {
        if self.cancel.is_some_and(|c| c.is_cancelled()) {
            return Some(TaskError::new(
                crate::TaskErrorKind::Cancelled,
                "its job was cancelled".to_string(),
            ));
        }
        (self.started.elapsed() > self.limits.timeout).then(|| {
            TaskError::new(
                crate::TaskErrorKind::Timeout,
                format!(
                    "exceeded its time limit of {}",
                    crate::format_duration(self.limits.timeout)
                ),
            )
        })
    }
}

/// What a call needs to know about one export.
pub(crate) struct Export {
    pub(crate) ty: FuncType,
    pub(crate) index: ComponentExportIndex,
    pub(crate) fast: Option<FastCall>,
    /// Why the export cannot be called by Fabric, if it cannot.
    pub(crate) unsupported: Option<String>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("hash", &self.hash)
            .field("exports", &self.exports)
            .finish_non_exhaustive()
    }
}

/// Whether an exported instance is componentize-py's pre-initialization hook (`exports`
/// with one function, `init(app-name, symbols, stub-wasi)`): it ran when the component was
/// built, is no task, and must not run again.
fn is_componentize_py_init(
    name: &str,
    instance: &ComponentInstance,
    engine: &wasmtime::Engine,
) -> bool {
    let mut funcs = instance
        .exports(engine)
        .filter_map(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(f) => Some((name, f)),
            _ => None,
        });
    let (Some(("init", init)), None) = (funcs.next(), funcs.next()) else {
        return false;
    };
    name == "exports"
        && init
            .params()
            .map(|(n, _)| n)
            .eq(["app-name", "symbols", "stub-wasi"])
}

impl Component {
    /// Links a compiled component and indexes its exported functions.
    pub(crate) fn new(
        hash: String,
        compiled: &wasmtime::component::Component,
        linker: &Linker<TaskState>,
        origin: &str,
        fast_paths: bool,
    ) -> Result<Component, RuntimeError> {
        let pre = linker
            .instantiate_pre(compiled)
            .map_err(|e| RuntimeError::Link {
                origin: origin.to_string(),
                reason: format!("{e:#}"),
            })?;
        let engine = compiled.engine();
        let mut found: Vec<(String, ComponentFunc, ComponentExportIndex)> = Vec::new();
        let ty = compiled.component_type();
        let mut interfaces: Vec<(&str, &str)> = Vec::new();
        for (name, item) in ty.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(func) => {
                    if let Some(index) = compiled.get_export_index(None, name) {
                        found.push((name.to_string(), func, index));
                    }
                }
                ComponentItem::ComponentInstance(instance) => {
                    let Some(instance_index) = compiled.get_export_index(None, name) else {
                        continue;
                    };
                    if is_componentize_py_init(name, &instance, engine) {
                        continue;
                    }
                    // Interfaces go by their short name, unless another interface took it.
                    let short = fabric_signatures::interface_name(name);
                    let prefix = if interfaces
                        .iter()
                        .any(|&(s, full)| s == short && full != name)
                    {
                        name
                    } else {
                        interfaces.push((short, name));
                        short
                    };
                    for (func_name, item) in instance.exports(engine) {
                        let ComponentItem::ComponentFunc(func) = item.ty else {
                            continue;
                        };
                        if let Some(index) =
                            compiled.get_export_index(Some(&instance_index), func_name)
                        {
                            found.push((format!("{prefix}.{func_name}"), func, index));
                        }
                    }
                }
                _ => {}
            }
        }

        let mut exports = BTreeMap::new();
        let mut entries = FxHashMap::default();
        for (name, func, index) in found {
            let ty = func_type(&func);
            let unsupported = if func.async_() {
                Some("it is an async function".to_string())
            } else {
                ty.params
                    .iter()
                    .map(|(_, t)| t)
                    .chain(&ty.result)
                    .find_map(|t| t.unsupported_part())
                    .map(|part| format!("its signature uses {part}, which Fabric cannot pass"))
            };
            let fast = if fast_paths && unsupported.is_none() {
                fast_path(&ty)
            } else {
                None
            };
            exports.insert(name.clone(), ty.clone());
            entries.insert(
                name,
                Export {
                    ty,
                    index,
                    fast,
                    unsupported,
                },
            );
        }
        Ok(Component {
            hash,
            exports,
            code: Code::Wasm(Wasm { pre, entries }),
        })
    }

    /// A component whose exports (`exports`, by name) are run by the host's `code`. Its
    /// name is its identity (what [`Component::hash`] returns): `builtin:array`, say.
    pub fn native(
        name: impl Into<String>,
        exports: BTreeMap<String, FuncType>,
        code: Arc<dyn Native>,
    ) -> Component {
        Component {
            hash: name.into(),
            exports,
            code: Code::Native(code),
        }
    }

    /// The blake3 hash of the component's bytes, in hex: its identity (a built-in
    /// component's name).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The exported functions by name: functions at the root of the component's world by
    /// their name, functions of an exported interface as `{interface}.{function}` (the
    /// interface named without package or version, e.g. `ops.inc`; should two exported
    /// interfaces share that short name, the second keeps its full name).
    pub fn exports(&self) -> &BTreeMap<String, FuncType> {
        &self.exports
    }

    /// The signature of one export.
    pub fn export(&self, name: &str) -> Option<&FuncType> {
        self.exports.get(name)
    }

    /// Whether the host runs this component natively (a built-in).
    pub fn is_native(&self) -> bool {
        matches!(self.code, Code::Native(_))
    }

    /// The WebAssembly code, or the native code, of the component.
    pub(crate) fn code(&self) -> Result<&Wasm, &dyn Native> {
        match &self.code {
            Code::Wasm(wasm) => Ok(wasm),
            Code::Native(native) => Err(native.as_ref()),
        }
    }
}
