//! The thread that advances the engine's epoch, the clock of every task's deadline.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the granularity of timeouts.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Ticks the epoch of an engine until dropped.
pub(crate) struct EpochTicker {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine` every [`TICK`].
    pub(crate) fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fabric-epoch".into())
            .spawn(move || {
                // Wakes every tick; returns as soon as the sender is dropped.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_promptly_when_dropped() {
        let ticker = EpochTicker::start(Engine::default()).unwrap();
        std::thread::sleep(TICK * 3);
        let start = std::time::Instant::now();
        drop(ticker); // joins the thread
        assert!(start.elapsed() < TICK * 20, "{:?}", start.elapsed());
    }
}
