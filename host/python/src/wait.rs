//! Waiting for the client's futures from Python: on the shared runtime, with the GIL
//! released, and signals (Ctrl-C) checked every [`POLL`] so that a `KeyboardInterrupt`
//! reaches the program while it waits.

use std::future::Future;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::task::JoinHandle;

use crate::errors::fabric_error;
use crate::runtime;

/// How often a waiting thread checks for signals.
const POLL: Duration = Duration::from_millis(50);

/// Work running on the runtime, whose answer a Python thread waits for.
pub(crate) struct Pending<T> {
    rx: Option<Receiver<T>>,
    handle: JoinHandle<()>,
}

impl<T: Send + 'static> Pending<T> {
    /// Starts `work` on the runtime.
    pub(crate) fn spawn(work: impl Future<Output = T> + Send + 'static) -> Pending<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let handle = runtime().spawn(async move {
            let _ = tx.send(work.await);
        });
        Pending {
            rx: Some(rx),
            handle,
        }
    }

    /// Waits for the answer with the GIL released. With `interruptible`, the exception a
    /// signal handler raised (`KeyboardInterrupt`) ends the wait (the work goes on: abort it
    /// or wait again).
    pub(crate) fn wait(&mut self, py: Python<'_>, interruptible: bool) -> PyResult<T> {
        Ok(self
            .wait_until(py, interruptible, None)?
            .expect("no deadline to pass"))
    }

    /// [`Pending::wait`] until `deadline` at most: `None` when it passed first (the work
    /// goes on).
    pub(crate) fn wait_until(
        &mut self,
        py: Python<'_>,
        interruptible: bool,
        deadline: Option<Instant>,
    ) -> PyResult<Option<T>> {
        loop {
            let rx = self
                .rx
                .take()
                .expect("the receiver is put back after each poll");
            let poll = match deadline {
                Some(deadline) => POLL.min(deadline.saturating_duration_since(Instant::now())),
                None => POLL,
            };
            let (rx, got) = py.detach(move || {
                let got = rx.recv_timeout(poll);
                (rx, got)
            });
            self.rx = Some(rx);
            match got {
                Ok(value) => return Ok(Some(value)),
                Err(RecvTimeoutError::Timeout) => {
                    if interruptible {
                        py.check_signals()?;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(fabric_error(
                        py,
                        "the client's background task ended without an answer (it panicked)",
                    ));
                }
            }
        }
    }

    /// Stops the work (its future is dropped at its next await).
    pub(crate) fn abort(self) {
        self.handle.abort();
    }
}

/// Runs `work` and waits for it, interruptible: on `KeyboardInterrupt` the work is
/// abandoned. For calls that change nothing when dropped half-way (queries, a connection).
pub(crate) fn block<T: Send + 'static>(
    py: Python<'_>,
    work: impl Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    let mut pending = Pending::spawn(work);
    match pending.wait(py, true) {
        Ok(value) => Ok(value),
        Err(e) => {
            pending.abort();
            Err(e)
        }
    }
}
