//! Typed calls of user components: graphs built call by call from Rust (or, through a
//! binding, from a dynamic language), each call checked against the export's WIT signature
//! the moment it is made.
//!
//! A [`Session`] holds components, loaded from a file or from bytes; their signatures are
//! read from the bytes ([`fabric_signatures`]: nothing is compiled, no WebAssembly engine is
//! linked). [`Component::call`] checks the number of arguments and each argument against its
//! parameter's WIT type, and returns a lazy [`Task`]: a cheap handle carrying the type of
//! the value it will produce, which later calls take as an argument (checked by that type).
//! Nothing runs until [`Session::compute`] (or [`Session::persist`]) sends the graph of the
//! tasks asked for, and only of those, to a cluster; [`Session::to_graph`] writes the same
//! graph as the document `fabric run` and `fabric submit` take. [`Session::submit`] sends
//! tasks at once and returns a [`Future`] per task, resolved as soon as its task finishes,
//! and itself an argument of later calls (`docs/rust-client.md`, Futures).
//!
//! ```no_run
//! # async fn example() -> Result<(), fabric_client::ClientError> {
//! use fabric_client::{Arg, Client, Session};
//!
//! let session = Session::new();
//! let math = session.component("guest-examples/target/wasm32-wasip2/release/math.wasm")?;
//! let a = math.call("inc", (1,))?;                        // a task returning s64
//! let b = math.call("add", (&a, 2))?;
//! let c = math.call("sum", (vec![Arg::from(&a), Arg::from(&b), Arg::from(10)],))?;
//! assert_eq!(c.ty().to_string(), "s64");
//!
//! // Checked at once, before anything runs:
//! let e = math.call("add", (&a, "x")).unwrap_err();
//! assert_eq!(e.to_string(), r#"math/add: parameter `b` expects s64, got string "x""#);
//!
//! let client = Client::connect("http://127.0.0.1:7878").await?;
//! let values = session.compute(&client, [&c]).await?;    // [S64(16)]
//! println!("{}", values[0].to_json());
//! # Ok(())
//! # }
//! ```
//!
//! Literal arguments are [`Arg`]s, made from Rust values with `From` (numbers, `bool`,
//! `char`, strings, `Vec`s, `Option`, `Result`, tuples, [`Value`], JSON) or with its
//! constructors ([`Arg::record`], [`Arg::case`]...); tasks are arguments too. Each is
//! converted to its parameter's type as a graph literal would be (the JSON mapping of
//! `docs/graph-format.md`): integers in range, one-character strings for `char`, records by
//! field names, case names for enums and variants.

pub use fabric_core::{FuncType, Type, Value};

mod arg;
mod check;
mod error;
mod future;
mod session;
mod task;
#[cfg(test)]
mod tests;

pub use arg::{Arg, IntoArgs};
pub use error::CallError;
pub use future::{AsCompleted, Future, FutureStatus, as_completed, gather};
pub use session::Session;
pub use task::{Component, Task};
