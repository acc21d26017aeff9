//! A component's export signatures, read from its bytes: the component is validated and its
//! type decoded, never compiled. The scheduler and the clients learn what a component offers
//! this way; only the workers that run it compile it.
//!
//! Exports are named as the runtime names them (`fabric_runtime::Component::exports`):
//! functions at the root of the world by their name, functions of an exported interface as
//! `{interface}.{function}` (the interface without package or version; should two exported
//! interfaces share that short name, the second keeps its full name). componentize-py's
//! pre-initialization hook is not a task and is left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use fabric_core::{ComponentInfo, FuncType, Type};
use wasmparser::component_types::{
    ComponentDefinedType, ComponentEntityType, ComponentFuncType, ComponentItem, ComponentValType,
};
use wasmparser::types::TypesRef;
use wasmparser::{Parser, Payload, PrimitiveValType, Validator, WasmFeatures};

/// Why a component's signatures cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The bytes are not a WebAssembly component (garbage, a core module, a precompiled
    /// artifact...).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The bytes are a component that does not validate.
    #[error("invalid WebAssembly component: {0}")]
    Invalid(String),
}

/// The exported functions of the component in `bytes`, with their signatures.
pub fn read(bytes: &[u8]) -> Result<ComponentInfo, SignatureError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(SignatureError::NotAComponent(
            "it does not start with the WebAssembly magic number".into(),
        ));
    }
    if !Parser::is_component(bytes) {
        return Err(SignatureError::NotAComponent(
            "it is a core WebAssembly module (build it as a component, e.g. for \
             wasm32-wasip2)"
                .into(),
        ));
    }
    // Every feature a component may use: which of them the workers' engine supports is
    // decided where it is compiled. What does not validate under any is refused here.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let types = validator
        .validate_all(bytes)
        .map_err(|e| SignatureError::Invalid(e.to_string()))?;
    let types = types.as_ref();
    let mut exports = BTreeMap::new();
    let mut interfaces: Vec<(&str, &str)> = Vec::new();
    let names = root_exports(bytes)?;
    for name in &names {
        let Some(item) = types.component_item_for_export(name) else {
            continue;
        };
        match item.ty {
            ComponentEntityType::Func(id) => {
                exports.insert(name.clone(), func_type(&types[id], &types));
            }
            ComponentEntityType::Instance(id) => {
                let instance = &types[id];
                if is_componentize_py_init(name, &instance.exports, &types) {
                    continue;
                }
                // Interfaces go by their short name, unless another interface took it.
                let short = interface_name(name);
                let prefix = if interfaces
                    .iter()
                    .any(|&(s, full)| s == short && full != name)
                {
                    name.as_str()
                } else {
                    interfaces.push((short, name));
                    short
                };
                for (func, item) in &instance.exports {
                    if let ComponentEntityType::Func(id) = item.ty {
                        exports.insert(format!("{prefix}.{func}"), func_type(&types[id], &types));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ComponentInfo { exports })
}

/// The names the outermost component exports, in order (nested modules and components
/// skipped).
fn root_exports(bytes: &[u8]) -> Result<Vec<String>, SignatureError> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| SignatureError::Invalid(e.to_string()))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.map_err(|e| SignatureError::Invalid(e.to_string()))?;
                    names.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Whether an exported instance is componentize-py's pre-initialization hook (`exports`
/// with one function, `init(app-name, symbols, stub-wasi)`): it ran when the component was
/// built, is no task, and must not run again.
fn is_componentize_py_init(
    name: &str,
    exports: &wasmparser::collections::IndexMap<String, ComponentItem>,
    types: &TypesRef<'_>,
) -> bool {
    let mut funcs = exports.iter().filter_map(|(name, item)| match item.ty {
        ComponentEntityType::Func(id) => Some((name.as_str(), &types[id])),
        _ => None,
    });
    let (Some(("init", init)), None) = (funcs.next(), funcs.next()) else {
        return false;
    };
    name == "exports"
        && init
            .params
            .iter()
            .map(|(n, _)| n.as_str())
            .eq(["app-name", "symbols", "stub-wasi"])
}

/// The short name an exported interface's functions go by: `ops` for
/// `fabric:math/ops@0.1.0` (the runtime names exports with it too).
pub fn interface_name(full: &str) -> &str {
    let name = full.rsplit_once('/').map_or(full, |(_, name)| name);
    name.split_once('@').map_or(name, |(name, _)| name)
}

/// The Fabric signature of a component function.
fn func_type(func: &ComponentFuncType, types: &TypesRef<'_>) -> FuncType {
    FuncType {
        params: func
            .params
            .iter()
            .map(|(name, ty)| (Arc::from(name.as_str()), value_type(ty, types)))
            .collect(),
        result: func.result.as_ref().map(|ty| value_type(ty, types)),
    }
}

/// The Fabric type of a component value type. Types no task can pass (resources,
/// futures, streams...) become [`Type::Unsupported`] naming what they are.
fn value_type(ty: &ComponentValType, types: &TypesRef<'_>) -> Type {
    match ty {
        ComponentValType::Primitive(p) => primitive(*p),
        ComponentValType::Type(id) => defined_type(&types[*id], types),
    }
}

fn primitive(p: PrimitiveValType) -> Type {
    use PrimitiveValType as P;
    match p {
        P::Bool => Type::Bool,
        P::S8 => Type::S8,
        P::U8 => Type::U8,
        P::S16 => Type::S16,
        P::U16 => Type::U16,
        P::S32 => Type::S32,
        P::U32 => Type::U32,
        P::S64 => Type::S64,
        P::U64 => Type::U64,
        P::F32 => Type::F32,
        P::F64 => Type::F64,
        P::Char => Type::Char,
        P::String => Type::String,
        P::ErrorContext => Type::Unsupported("error-context".into()),
    }
}

fn defined_type(ty: &ComponentDefinedType, types: &TypesRef<'_>) -> Type {
    use ComponentDefinedType as D;
    let value = |t: &ComponentValType| value_type(t, types);
    match ty {
        D::Primitive(p) => primitive(*p),
        D::Record(r) => Type::Record(
            r.fields
                .iter()
                .map(|(name, t)| (Arc::from(name.as_str()), value(t)))
                .collect(),
        ),
        D::Variant(v) => Type::Variant(
            v.cases
                .iter()
                .map(|(name, case)| (Arc::from(name.as_str()), case.ty.as_ref().map(value)))
                .collect(),
        ),
        D::List { element, .. } => Type::list(value(element)),
        D::Tuple(t) => Type::Tuple(t.types.iter().map(value).collect()),
        D::Flags(names) => Type::Flags(names.iter().map(|n| Arc::from(n.as_str())).collect()),
        D::Enum(names) => Type::Enum(names.iter().map(|n| Arc::from(n.as_str())).collect()),
        D::Option { ty, .. } => Type::Option(Arc::new(value(ty))),
        D::Result { ok, err, .. } => Type::Result {
            ok: ok.as_ref().map(|t| Arc::new(value(t))),
            err: err.as_ref().map(|t| Arc::new(value(t))),
        },
        D::Own(_) => Type::Unsupported("own<resource>".into()),
        D::Borrow(_) => Type::Unsupported("borrow<resource>".into()),
        D::Future { .. } => Type::Unsupported("future".into()),
        D::Stream { .. } => Type::Unsupported("stream".into()),
        D::Map { .. } => Type::Unsupported("map".into()),
        D::FixedLengthList { .. } => Type::Unsupported("fixed-length list".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_short() {
        assert_eq!(interface_name("fabric:math/ops@0.1.0"), "ops");
        assert_eq!(interface_name("ops"), "ops");
        assert_eq!(interface_name("a:b/c"), "c");
    }

    #[test]
    fn what_is_not_a_component_is_refused_with_the_reason() {
        for (bytes, why) in [
            (&b""[..], "magic number"),
            (b"\x7fELF garbage", "magic number"),
            (b"\0asm\x01\0\0\0", "core WebAssembly module"),
        ] {
            let e = read(bytes).unwrap_err();
            assert!(matches!(e, SignatureError::NotAComponent(_)), "{e:?}");
            assert!(e.to_string().contains(why), "{e}");
        }
        // A component header followed by garbage.
        let e = read(b"\0asm\x0d\0\x01\0garbage").unwrap_err();
        assert!(matches!(e, SignatureError::Invalid(_)), "{e:?}");
    }
}
