//! # Fabric SDK: write Fabric tasks in Rust
//!
//! Fabric runs tasks as WebAssembly components. A *task component* is a Rust `cdylib` built
//! for `wasm32-wasip2` whose WIT world includes `fabric:task/task@0.1.0` (the imports the
//! host provides: [`log`] and [`context`]) and exports plain functions. Every exported function
//! is a task that a graph can call as `component/export`, with typed arguments and results.
//!
//! This crate is everything a task author depends on:
//!
//! - [`component!`] generates the bindings for the author's world (the `Guest` trait to
//!   implement and the `export!` macro), reusing this crate's bindings for the `fabric:task`
//!   imports and finding the `fabric:task` WIT package for you;
//! - [`log`] and the [`trace!`], [`debug!`], [`info!`], [`warn!`] and [`error!`] macros send log
//!   lines to the host, which attaches them to the task's record and error reports;
//! - [`context`] tells a running task its id, its attempt number and its tenant;
//! - [`wit_bindgen`] is re-exported, so a task crate needs no other dependency.
//!
//! ## Writing a task
//!
//! `Cargo.toml`: a `cdylib` that depends on this crate only.
//!
//! ```toml
//! [package]
//! name = "math"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! fabric-sdk = { path = "../sdk" }
//! ```
//!
//! `wit/world.wit`: a package of your own with one world that includes `fabric:task/task` (the
//! version is required) and exports functions at the world level. The `fabric:task` package
//! itself is supplied by the SDK: do not copy it into `wit/deps/`.
//!
//! ```wit
//! package fabric:math;
//!
//! world math {
//!     include fabric:task/task@0.1.0;
//!
//!     /// x + 1 (wrapping).
//!     export inc: func(x: s64) -> s64;
//!     /// a / b, or an error when b is 0.
//!     export div: func(a: s64, b: s64) -> result<s64, string>;
//! }
//! ```
//!
//! `src/lib.rs`: name the world (fully qualified, `package/world`), implement the generated
//! `Guest` trait on a type of yours and hand that type to the generated `export!` macro.
//!
//! ```ignore
//! fabric_sdk::component!("fabric:math/math");
//!
//! struct Math;
//!
//! impl Guest for Math {
//!     fn inc(x: i64) -> i64 {
//!         fabric_sdk::debug!("inc({x}) in task {}", fabric_sdk::context::task_id());
//!         x.wrapping_add(1)
//!     }
//!
//!     fn div(a: i64, b: i64) -> Result<i64, String> {
//!         a.checked_div(b)
//!             .ok_or_else(|| format!("cannot divide {a} by {b}"))
//!     }
//! }
//!
//! export!(Math);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`: Cargo (through
//! `wasm-component-ld`) writes a component, `target/wasm32-wasip2/release/math.wasm`, ready
//! for Fabric.
//!
//! ## From WIT types to Rust types
//!
//! The generated `Guest` trait takes owned values and returns owned values:
//!
//! | WIT                        | Rust                                    |
//! |----------------------------|-----------------------------------------|
//! | `s64`, `u32`, `f64`, `bool`| `i64`, `u32`, `f64`, `bool`             |
//! | `string`                   | `String`                                |
//! | `list<T>`                  | `Vec<T>`                                |
//! | `tuple<A, B>`              | `(A, B)`                                |
//! | `option<T>`                | `Option<T>`                             |
//! | `result<T, string>`        | `Result<T, String>`                     |
//! | `record point { .. }`      | `struct Point { .. }` (generated)       |
//! | `enum mode { .. }`         | `enum Mode { .. }` (generated)          |
//!
//! Types declared in the world (`record`, `enum`, `variant`, ...) are generated next to the
//! `component!` call, so `Point` and `Mode` above are in scope where `Guest` is implemented.
//!
//! ## Errors and panics
//!
//! - Return `result<T, string>` for expected failures: an `Err(message)` becomes a task error
//!   carrying `message`, and the host may retry the task ([`context::attempt`] counts retries).
//! - A panic traps the component. Rust's default panic hook prints
//!   `panicked at FILE:LINE:COL:` and the message to stderr, which the host captures and turns
//!   into the task error. This SDK keeps that default hook: if you install your own with
//!   [`std::panic::set_hook`], keep the message on stderr (for example by calling the hook
//!   returned by [`std::panic::take_hook`]).
//! - Anything written to stdout and stderr (`println!`, `eprintln!`) is captured by the host
//!   too, but prefer [`log`] for messages meant for people: lines carry a level and are
//!   attached to the task's record.
//! - Overflow and out-of-bounds accesses panic (and so trap) as in any Rust program: use
//!   `wrapping_*`, `checked_*` or `get` where inputs may be out of range.
//!
//! ## Pitfall: export names that are C library symbols
//!
//! A function exported at the world level keeps its bare WIT name as its symbol in the core
//! module. If that name is also a C library function the component ends up calling
//! (`f64::round` calls `round`, `f64::exp` calls `exp`, `f64::powf` calls `pow`, `f64::ln`
//! calls `log`, ...), the linker binds those calls to the export instead, without a warning:
//! the module is invalid when the signatures differ and silently wrong when they agree. Avoid
//! such names, export those functions from an interface, or avoid the clashing C function.

#![warn(missing_docs)]

pub use wit_bindgen;

pub mod context;
pub mod log;

/// Bindings for the `fabric:task/task` world, generated once here and reused by every task
/// component through [`component!`]'s `with` mappings.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    // Same directory as `WIT_DIR` in build.rs (the repository's top-level `wit/`).
    crate::wit_bindgen::generate!({
        world: "fabric:task/task@0.1.0",
        path: "../wit",
    });
}

// Defines `__with_fabric_wit_dir!`, which knows the absolute path of the `fabric:task` WIT
// directory (see build.rs).
include!(concat!(env!("OUT_DIR"), "/wit_dir.rs"));

/// Generates the bindings for a task component's WIT world.
///
/// ```ignore
/// fabric_sdk::component!("fabric:math/math");
/// ```
///
/// The argument is the fully qualified name of the world (`namespace:package/world`) to
/// generate. It is read from the `wit/` directory next to the crate's `Cargo.toml`; the
/// `fabric:task` package that the world includes is supplied by the SDK. The call generates,
/// in the module where it is made:
///
/// - a `Guest` trait with one method per function the world exports, which you implement on a
///   type of yours (for example an empty `struct`);
/// - the Rust types for the types declared in the world (records, enums, variants, ...);
/// - an `export!` macro: `export!(MyType);` emits the component's exports and must be called
///   exactly once, in the same module as `component!`.
///
/// The imports from `fabric:task` are not generated again: they are this SDK's, available
/// through [`log`], [`context`] and the logging macros.
///
/// # Other forms
///
/// A WIT directory other than `wit/`, relative to the crate's `Cargo.toml`:
///
/// ```ignore
/// fabric_sdk::component!("fabric:math/math" in "../shared-wit");
/// ```
///
/// Further options of [`wit_bindgen::generate!`] may follow the world (and directory), after a
/// comma, such as `additional_derives`, or `generate_all` when the world also uses packages
/// from `wit/deps/`:
///
/// ```ignore
/// fabric_sdk::component!("fabric:math/math", additional_derives: [PartialEq, Clone]);
/// ```
///
/// # Expansion
///
/// `component!("fabric:math/math")` is `wit_bindgen::generate!` with the SDK's `fabric:task`
/// WIT directory added to the path and the SDK's bindings and runtime plugged in:
///
/// ```ignore
/// fabric_sdk::wit_bindgen::generate!({
///     world: "fabric:math/math",
///     path: ["<the SDK's fabric:task WIT directory>", "wit"],
///     runtime_path: "::fabric_sdk::wit_bindgen::rt",
///     with: {
///         "fabric:task/log@0.1.0": ::fabric_sdk::__bindings::fabric::task::log,
///         "fabric:task/context@0.1.0": ::fabric_sdk::__bindings::fabric::task::context,
///     },
/// });
/// ```
///
/// As the expansion names the crate `fabric_sdk`, depend on it under that name (do not rename
/// the dependency in `Cargo.toml`). The world must include `fabric:task/task@0.1.0` (rather
/// than import only some of its interfaces), since `generate!` rejects `with` mappings that
/// it does not use.
#[macro_export]
macro_rules! component {
    ($world:literal in $wit_dir:literal $(, $($option:tt)*)?) => {
        $crate::__with_fabric_wit_dir!($world, $wit_dir, { $($($option)*)? });
    };
    ($world:literal $(, $($option:tt)*)?) => {
        $crate::component!($world in "wit" $(, $($option)*)?);
    };
}

/// The body of [`component!`], called by `__with_fabric_wit_dir!` with the `fabric:task` WIT
/// directory as its first argument.
#[doc(hidden)]
#[macro_export]
macro_rules! __generate_component {
    ($fabric_wit_dir:literal, $world:literal, $wit_dir:literal, { $($option:tt)* }) => {
        $crate::wit_bindgen::generate!({
            world: $world,
            // `fabric:task` first: later directories may depend on earlier ones.
            path: [$fabric_wit_dir, $wit_dir],
            // `generate!` reads these as strings and paths, so they cannot use `$crate`.
            runtime_path: "::fabric_sdk::wit_bindgen::rt",
            with: {
                "fabric:task/log@0.1.0": ::fabric_sdk::__bindings::fabric::task::log,
                "fabric:task/context@0.1.0": ::fabric_sdk::__bindings::fabric::task::context,
            },
            $($option)*
        });
    };
}
