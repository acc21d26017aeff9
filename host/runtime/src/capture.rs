//! A task's stdout or stderr, captured in memory and bounded: the first and the last
//! [`HALF`] bytes are kept, what lies between is counted and dropped. Writes never fail,
//! so a chatty guest behaves as it would with a real terminal.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept from the start, and from the end, of the output.
pub(crate) const HALF: usize = 32 * 1024;

/// A shared handle on one captured stream.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Buffer>>);

#[derive(Default)]
struct Buffer {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    omitted: u64,
}

impl Buffer {
    fn push(&mut self, mut bytes: &[u8]) {
        let take = bytes.len().min(HALF - self.head.len());
        self.head.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        if bytes.len() >= HALF {
            self.omitted += (self.tail.len() + bytes.len() - HALF) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - HALF..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(HALF);
            self.tail.drain(..overflow);
            self.omitted += overflow as u64;
            self.tail.extend(bytes);
        }
    }

    fn text(&self) -> String {
        let mut bytes = self.head.clone();
        if self.omitted > 0 {
            bytes.extend_from_slice(
                format!("\n[... {} bytes omitted ...]\n", self.omitted).as_bytes(),
            );
        }
        bytes.extend(&self.tail);
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

impl Capture {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends bytes, dropping from the middle past the bound.
    pub(crate) fn write_bytes(&self, bytes: &[u8]) {
        self.buffer().push(bytes);
    }

    /// What was written, as text (invalid UTF-8 replaced), with a marker where bytes were
    /// dropped. Empty without allocating when nothing was written.
    pub(crate) fn text(&self) -> String {
        let buffer = self.buffer();
        if buffer.head.is_empty() {
            return String::new();
        }
        buffer.text()
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail() {
        let c = Capture::default();
        assert_eq!(c.text(), "");
        c.write_bytes(b"hello ");
        c.write_bytes(b"world");
        assert_eq!(c.text(), "hello world");

        let c = Capture::default();
        c.write_bytes(&vec![b'a'; HALF]);
        c.write_bytes(&vec![b'b'; HALF]);
        c.write_bytes(&[b'c'; 10]);
        c.write_bytes(b"end");
        let text = c.text();
        assert!(text.starts_with(&"a".repeat(HALF)));
        assert!(
            text.contains("[... 13 bytes omitted ...]"),
            "{}",
            &text[HALF..HALF + 40]
        );
        assert!(text.ends_with("cccend"));
        assert_eq!(
            text.len(),
            2 * HALF + "\n[... 13 bytes omitted ...]\n".len()
        );

        let c = Capture::default();
        c.write_bytes(&vec![b'x'; 5 * HALF]);
        assert!(
            c.text()
                .contains(&format!("[... {} bytes omitted ...]", 3 * HALF))
        );
    }
}
