//! `fabric._native`: the extension module behind the Python package `fabric` (distribution
//! `fabric-tasks`), a thin binding of [`fabric_client`]'s typed calls.
//!
//! A [`client::Client`] holds a connection to a scheduler and a [`fabric_client::Session`];
//! its components' exports are Python attributes whose calls are checked against the WIT
//! signature at once (a mismatch is a `TypeError` naming the parameter) and give lazy
//! [`task::Task`]s. `compute` and `persist` send the graph of the tasks asked for; the
//! thread waits with the GIL released and checks for Ctrl-C, which cancels the job. Values
//! come back as Python objects by the mapping of [`convert`].
//!
//! Futures ([`future::Future`]): `Client.submit` and `Client.map` send calls at once (one
//! job per call of them), each future resolving as its task finishes; `gather`, and
//! `as_completed` for `for` and `async for`.
//!
//! Collections: [`dataframe::Frame`] and [`array::Chunked`] wrap the Rust `DataFrame` and
//! `Array` for the pure-Python `fabric.dataframe` and `fabric.array`; a computed frame
//! leaves through the Arrow C stream interface ([`dataframe::ArrowStream`]), an array as one
//! buffer of f64.
//!
//! The pure-Python layer (`host/python/python/fabric/`) re-exports these classes and holds
//! the value classes (`Variant`, `Ok`, `Err`, `Some`) and the exceptions (`FabricError`,
//! `TaskError`) that this module builds and recognizes.

use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;

mod array;
mod client;
mod cluster;
mod convert;
mod dataframe;
mod errors;
mod future;
mod html;
mod nested;
mod task;
mod wait;

/// The tokio runtime every client of the process shares: connections (tonic channels) live
/// on the runtime that made them, so there is one per process, made on first use and never
/// dropped. A child made by `fork()` (multiprocessing's default on Linux) has none of its
/// parent's threads: it gets a runtime of its own (the clients it inherited cannot be used
/// there; new ones can).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    match *slot {
        Some((owner, runtime)) if owner == pid => runtime,
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("fabric-client")
                .enable_all()
                .build()
                .expect("cannot start the client's tokio runtime");
            // Never dropped: a forked child's copy of its parent's runtime has no threads to
            // stop, and the process's own lives as long as the process.
            let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
            *slot = Some((pid, runtime));
            runtime
        }
    }
}

/// The module `fabric._native`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<cluster::LocalCluster>()?;
    m.add_class::<task::Component>()?;
    m.add_class::<task::Export>()?;
    m.add_class::<task::Task>()?;
    m.add_class::<future::Future>()?;
    m.add_class::<future::AsCompleted>()?;
    m.add_class::<dataframe::Frame>()?;
    m.add_class::<dataframe::FrameRolling>()?;
    m.add_class::<dataframe::ArrowStream>()?;
    m.add_class::<array::Chunked>()?;
    m.add_function(wrap_pyfunction!(client::compute, m)?)?;
    m.add_function(wrap_pyfunction!(client::persist, m)?)?;
    m.add_function(wrap_pyfunction!(future::gather, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::find_fabric, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::_shutdown, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
