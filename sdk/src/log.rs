//! Log lines from a task, sent to the host.
//!
//! The host attaches every line, with its level, to the task's record and to its error report
//! if the task fails; which levels are kept is the host's choice. Use the functions here for
//! fixed messages and the crate's macros ([`trace!`](crate::trace), [`debug!`](crate::debug),
//! [`info!`](crate::info), [`warn!`](crate::warn), [`error!`](crate::error)) to format:
//!
//! ```no_run
//! fabric_sdk::log::info("starting");
//! let rows = 42;
//! fabric_sdk::info!("read {rows} rows");
//! ```

use std::fmt;

use crate::__bindings::fabric::task::log as raw;

/// How much a line matters, from [`Level::Trace`] (least) to [`Level::Error`] (most).
pub use raw::Level;

/// Sends one line at the given level.
///
/// ```no_run
/// use fabric_sdk::log::{self, Level};
///
/// log::log(Level::Warn, "input is empty; returning 0");
/// ```
#[inline]
pub fn log(level: Level, message: &str) {
    raw::log(level, message);
}

/// Sends one line at [`Level::Trace`].
#[inline]
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Sends one line at [`Level::Debug`].
#[inline]
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Sends one line at [`Level::Info`].
#[inline]
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Sends one line at [`Level::Warn`].
#[inline]
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Sends one line at [`Level::Error`].
#[inline]
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Sends formatted arguments at the given level, without allocating when they are a plain
/// string. Used by the logging macros.
#[doc(hidden)]
pub fn __log_fmt(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => log(level, message),
        None => log(level, &fmt::format(args)),
    }
}

/// Logs a formatted line at [`Level::Trace`](crate::log::Level::Trace), with the syntax of
/// [`format!`].
///
/// ```no_run
/// let step = 3;
/// fabric_sdk::trace!("entering step {step}");
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Trace, ::core::format_args!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Debug`](crate::log::Level::Debug), with the syntax of
/// [`format!`].
///
/// ```no_run
/// let attempt = fabric_sdk::context::attempt();
/// fabric_sdk::debug!("attempt {attempt}");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Debug, ::core::format_args!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Info`](crate::log::Level::Info), with the syntax of
/// [`format!`].
///
/// ```no_run
/// let rows = 42;
/// fabric_sdk::info!("read {rows} rows");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Warn`](crate::log::Level::Warn), with the syntax of
/// [`format!`].
///
/// ```no_run
/// let skipped = 2;
/// fabric_sdk::warn!("skipped {skipped} malformed rows");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// Logs a formatted line at [`Level::Error`](crate::log::Level::Error), with the syntax of
/// [`format!`].
///
/// ```no_run
/// let path = "input.csv";
/// fabric_sdk::error!("cannot parse {path}");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::__log_fmt($crate::log::Level::Error, ::core::format_args!($($arg)+))
    };
}
