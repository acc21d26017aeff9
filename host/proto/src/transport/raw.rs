//! The raw data protocol: a client opens a connection to a worker's data port (TCP, or
//! TLS when the port has it) and sends [`MAGIC`](raw::MAGIC); then, any number of times, a request (job `u64`, unit
//! `u32`, the capability's length `u16`, little-endian, and the capability's bytes) and
//! the worker's answer: a status byte and a length (`u64` little-endian), then that many
//! bytes: the value's encoding (status 0, exactly what gRPC `Fetch` streams in chunks) or
//! an error message (status 1: the worker does not hold the value; status 2: it could not
//! read it; status 3: the capability was refused).

use std::io;

use bytes::BytesMut;
use fabric_core::Value;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use fabric_core::{Bulk, BulkKind};

use super::stream::BoxIo;
use crate::chunk::{ReceiveError, ValueReceiver, bulk_layout};
use crate::encode::{ValueChunks, le_bytes_mut};
use crate::v1;
use crate::value::element;

/// A packed list of `n` zeros.
fn zeroed(kind: BulkKind, n: usize) -> Bulk {
    match kind {
        BulkKind::U8 => Bulk::U8(vec![0; n]),
        BulkKind::S32 => Bulk::S32(vec![0; n]),
        BulkKind::U32 => Bulk::U32(vec![0; n]),
        BulkKind::S64 => Bulk::S64(vec![0; n]),
        BulkKind::U64 => Bulk::U64(vec![0; n]),
        BulkKind::F32 => Bulk::F32(vec![0.0; n]),
        BulkKind::F64 => Bulk::F64(vec![0.0; n]),
    }
}

/// The first bytes of a raw connection (an HTTP/2 connection starts with `PRI * HT`).
pub const MAGIC: &[u8; 8] = b"FABRAW02";
/// Bytes per read or write on a raw stream.
const BLOCK: usize = 4 << 20;

const OK: u8 = 0;
/// The worker does not hold the value.
pub const NOT_FOUND: u8 = 1;
/// The worker holds it but could not read it.
pub const FAILED: u8 = 2;
/// The capability was refused.
pub const DENIED: u8 = 3;
/// The longest capability a request may carry.
pub const MAX_CAPABILITY: usize = 1024;

/// Why a raw fetch failed.
#[derive(Debug)]
pub enum RawError {
    /// The stream failed (the caller may retry another way).
    Io(io::Error),
    /// The peer answered with an error, or sent something malformed or too large.
    Peer(ReceiveError),
}

impl From<io::Error> for RawError {
    fn from(e: io::Error) -> RawError {
        RawError::Io(e)
    }
}

/// Opens a raw stream to the data service at `address`: `http://host:port` plain,
/// `https://host:port` over TLS with `tls` (a data port's client settings, see
/// [`super::tls::data_client_config`]).
pub async fn connect(
    address: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<BoxIo, RawError> {
    let (secure, authority) = match address.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        _ => {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not an http(s):// address");
            return Err(e.into());
        }
    };
    let authority = authority.trim_end_matches('/');
    let tls = match (secure, tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => {
            return Err(RawError::Peer(ReceiveError::Status(
                tonic::Status::failed_precondition(format!(
                    "the data port {address} uses TLS, and no CA was given to verify it \
                     (set FABRIC_CA)"
                )),
            )));
        }
    };
    let mut stream: BoxIo = {
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            TcpStream::connect(authority),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
        tcp.set_nodelay(true)?;
        match tls {
            None => Box::new(tcp),
            Some(config) => Box::new(super::tls::connect(config, authority, tcp).await?),
        }
    };
    stream.write_all(MAGIC).await?;
    Ok(stream)
}

/// Fetches one value on an open raw stream.
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: v1::ValueKey,
    capability: &[u8],
    limit: u64,
) -> Result<Value, RawError> {
    let capability = &capability[..capability.len().min(MAX_CAPABILITY)];
    let mut request = Vec::with_capacity(14 + capability.len());
    request.extend_from_slice(&key.job.to_le_bytes());
    request.extend_from_slice(&key.unit.to_le_bytes());
    request.extend_from_slice(&(capability.len() as u16).to_le_bytes());
    request.extend_from_slice(capability);
    stream.write_all(&request).await?;
    stream.flush().await?;
    let status = stream.read_u8().await?;
    let len = stream.read_u64_le().await?;
    if status != OK {
        let mut message = vec![0u8; len.min(64 << 10) as usize];
        stream.read_exact(&mut message).await?;
        let message = String::from_utf8_lossy(&message).into_owned();
        let status = match status {
            NOT_FOUND => tonic::Status::not_found(message),
            DENIED => tonic::Status::permission_denied(message),
            _ => tonic::Status::unavailable(message),
        };
        return Err(RawError::Peer(status.into()));
    }
    if len > limit {
        return Err(RawError::Peer(ReceiveError::Proto(
            crate::ProtoError::invalid(
                "value",
                format!("the peer announced {len} bytes, more than the limit of {limit}"),
            ),
        )));
    }
    // One large packed list (an array): read straight into its final memory.
    let mut head = [0u8; 32];
    let peek = (len as usize).min(head.len());
    stream.read_exact(&mut head[..peek]).await?;
    if let Some((kind, header, data)) = bulk_layout(&head[..peek], len)
        && data >= BLOCK as u64
    {
        let (size, _) = element(kind);
        let mut bulk = zeroed(kind, (data / size as u64) as usize);
        if let Some(bytes) = le_bytes_mut(&mut bulk) {
            let already = peek - header;
            bytes[..already].copy_from_slice(&head[header..peek]);
            stream.read_exact(&mut bytes[already..]).await?;
            return Ok(Value::Bulk(std::sync::Arc::new(bulk)));
        }
    }
    let mut receiver = ValueReceiver::new(limit);
    receiver
        .push(v1::ValueChunk {
            total_size: len,
            data: bytes::Bytes::copy_from_slice(&head[..peek]),
        })
        .map_err(|e| RawError::Peer(ReceiveError::Proto(e)))?;
    let mut left = len - peek as u64;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        let mut buf = BytesMut::with_capacity(n);
        while buf.len() < n {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
        left -= n as u64;
        let chunk = v1::ValueChunk {
            total_size: 0,
            data: buf.freeze(),
        };
        receiver
            .push(chunk)
            .map_err(|e| RawError::Peer(ReceiveError::Proto(e)))?;
    }
    receiver
        .finish()
        .map_err(|e| RawError::Peer(ReceiveError::Proto(e)))
}

/// Serves raw fetches on `stream` (a new connection whose [`MAGIC`] was read) until the
/// client closes it. `lookup` answers a key and its capability with the value, `Ok(None)`
/// when it is not held, or why it is refused or could not be read.
pub async fn serve<S, F, Fut>(mut stream: S, lookup: F) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(u64, u32, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Value>, super::Refusal>>,
{
    loop {
        let mut request = [0u8; 14];
        match stream.read_exact(&mut request).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let job = u64::from_le_bytes(request[..8].try_into().expect("8 bytes"));
        let unit = u32::from_le_bytes(request[8..12].try_into().expect("4 bytes"));
        let len = u16::from_le_bytes(request[12..].try_into().expect("2 bytes")) as usize;
        if len > MAX_CAPABILITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a capability longer than allowed",
            ));
        }
        let mut capability = vec![0u8; len];
        stream.read_exact(&mut capability).await?;
        let (status, message) = match lookup(job, unit, capability).await {
            Ok(Some(value)) => {
                let chunks = ValueChunks::new(&value, BLOCK);
                let mut header = [0u8; 9];
                header[1..].copy_from_slice(&(chunks.total_size() as u64).to_le_bytes());
                stream.write_all(&header).await?;
                // Straight from the value's memory: no copy on this side (TLS encrypts
                // from it).
                for piece in chunks.pieces() {
                    for block in piece.chunks(BLOCK) {
                        stream.write_all(block).await?;
                    }
                }
                stream.flush().await?;
                continue;
            }
            Ok(None) => (
                NOT_FOUND,
                format!("this worker holds no value {job}/{unit}"),
            ),
            Err(super::Refusal::Denied(e)) => (DENIED, e),
            Err(super::Refusal::Failed(e)) => (FAILED, e),
        };
        let mut header = [0u8; 9];
        header[0] = status;
        header[1..].copy_from_slice(&(message.len() as u64).to_le_bytes());
        stream.write_all(&header).await?;
        stream.write_all(message.as_bytes()).await?;
        stream.flush().await?;
    }
}
