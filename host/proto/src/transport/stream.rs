//! The byte streams of the data plane: plain TCP or TLS behind one type, what the server
//! learned about the peer of a connection, and a stream that gives back the bytes read to
//! tell the raw protocol from gRPC.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's bytes, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A data-plane connection.
pub type BoxIo = Box<dyn Io>;

/// Who is on the other end of a data connection, as far as the server can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataPeer {
    /// The connection is TLS.
    pub tls: bool,
    /// The worker a verified certificate names (its common name), when the peer presented
    /// a worker's certificate of the cluster's CA.
    pub worker: Option<Arc<str>>,
    /// Its address.
    pub address: Option<std::net::SocketAddr>,
}

/// A connection whose first bytes were read (to tell the protocols apart) and are given
/// back to the next reader.
pub(super) struct Rewind {
    pub(super) head: Vec<u8>,
    pub(super) at: usize,
    pub(super) inner: BoxIo,
    pub(super) peer: DataPeer,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.at);
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Rewind {
    type ConnectInfo = DataPeer;

    fn connect_info(&self) -> DataPeer {
        self.peer.clone()
    }
}
