//! Transport settings of the data plane and the client side of it: connections to
//! workers' `WorkerData` services, used by workers (to fetch inputs from peers) and by
//! clients (to gather outputs).
//!
//! Values travel on a plain TCP stream when the peer offers it ([`raw`]), which moves large
//! values at the speed of the loopback or the NIC; gRPC `Fetch` (HTTP/2, whose send
//! buffers tonic does not let us size) is the fallback. Both run on the worker's one data
//! port: the first bytes of a connection tell them apart.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fabric_core::Value;
use rustc_hash::FxHashMap;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Server};

use crate::chunk::{ReceiveError, receive_value};
use crate::v1;
use crate::v1::worker_data_client::WorkerDataClient;

/// HTTP/2 flow-control windows and frames sized for bulk transfer (tonic's defaults stall
/// large values at a fraction of what loopback carries).
pub const STREAM_WINDOW: u32 = 16 << 20;
/// See [`STREAM_WINDOW`].
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// See [`STREAM_WINDOW`].
pub const MAX_FRAME: u32 = 1 << 20;

/// A server builder with the data plane's transport settings.
pub fn server_builder() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

/// The connections accepted on `listener`, with Nagle's algorithm off (a server's
/// `tcp_nodelay` applies only to listeners it binds itself; without this, small replies
/// wait for the peer's delayed ACK, 40 ms on Linux).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// An endpoint with the data plane's transport settings; fails for a malformed address.
pub fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(address.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME))
}

/// Connections to other workers' data services, one per address, made on first use.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<FxHashMap<String, WorkerDataClient<Channel>>>,
    /// Idle raw streams by address, for reuse.
    raw: Mutex<FxHashMap<String, Vec<tokio::net::TcpStream>>>,
}

impl Peers {
    /// The client for `address`.
    pub fn client(&self, address: &str) -> Result<WorkerDataClient<Channel>, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let endpoint = endpoint(address)
            .map_err(|e| Status::invalid_argument(format!("bad data address `{address}`: {e}")))?;
        let client =
            WorkerDataClient::new(endpoint.connect_lazy()).max_decoding_message_size(usize::MAX);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Forgets the connection to `address` (after it failed), so the next use redials.
    pub fn forget(&self, address: &str) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(address);
    }

    /// Fetches the value under `key` from the worker at `address`, accepting encodings of at
    /// most `limit` bytes.
    pub async fn fetch(
        &self,
        address: &str,
        key: v1::ValueKey,
        limit: u64,
    ) -> Result<Value, ReceiveError> {
        match self.fetch_raw(address, key, limit).await {
            Ok(value) => return Ok(value),
            // The peer answered: it does not have the value, or it is too large.
            Err(raw::RawError::Peer(e)) => return Err(e),
            // The stream failed: try gRPC, which also reports why more precisely.
            Err(raw::RawError::Io(e)) => {
                tracing::debug!(%address, "raw fetch failed ({e}); using gRPC");
            }
        }
        let mut client = self.client(address)?;
        let result = async {
            let mut stream = client
                .fetch(v1::FetchRequest { key: Some(key) })
                .await?
                .into_inner();
            receive_value(&mut stream, limit).await
        }
        .await;
        if let Err(ReceiveError::Status(s)) = &result
            && s.code() != tonic::Code::NotFound
        {
            self.forget(address);
        }
        result
    }

    /// Fetches over a raw stream (reused across fetches to the same peer).
    async fn fetch_raw(
        &self,
        address: &str,
        key: v1::ValueKey,
        limit: u64,
    ) -> Result<Value, raw::RawError> {
        let pooled = self
            .raw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(address)
            .and_then(Vec::pop);
        let mut stream = match pooled {
            Some(s) => s,
            None => raw::connect(address).await?,
        };
        let value = raw::fetch(&mut stream, key, limit).await?;
        self.raw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_string())
            .or_default()
            .push(stream);
        Ok(value)
    }
}

/// The raw data protocol: a client opens a TCP connection to a worker's data port and
/// sends [`MAGIC`](raw::MAGIC); then, any number of times, a request (job `u64`, unit
/// `u32`, little-endian) and the worker's answer: a status byte and a length (`u64`
/// little-endian), then that many bytes: the value's encoding (status 0, exactly what
/// gRPC `Fetch` streams in chunks) or an error message (status 1: the worker does not
/// hold the value; status 2: it could not read it).
pub mod raw {
    use std::io;

    use bytes::BytesMut;
    use fabric_core::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use fabric_core::{Bulk, BulkKind};

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
    pub const MAGIC: &[u8; 8] = b"FABRAW01";
    /// Bytes per read or write on a raw stream.
    const BLOCK: usize = 4 << 20;

    const OK: u8 = 0;
    /// The worker does not hold the value.
    pub const NOT_FOUND: u8 = 1;
    /// The worker holds it but could not read it.
    pub const FAILED: u8 = 2;

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

    /// Opens a raw stream to the data service at `address` (`http://host:port`).
    pub async fn connect(address: &str) -> Result<TcpStream, RawError> {
        let authority = address
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an http:// address"))?
            .trim_end_matches('/');
        let mut stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            TcpStream::connect(authority),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
        stream.set_nodelay(true)?;
        stream.write_all(MAGIC).await?;
        Ok(stream)
    }

    /// Fetches one value on an open raw stream.
    pub async fn fetch(
        stream: &mut TcpStream,
        key: v1::ValueKey,
        limit: u64,
    ) -> Result<Value, RawError> {
        let mut request = [0u8; 12];
        request[..8].copy_from_slice(&key.job.to_le_bytes());
        request[8..].copy_from_slice(&key.unit.to_le_bytes());
        stream.write_all(&request).await?;
        let status = stream.read_u8().await?;
        let len = stream.read_u64_le().await?;
        if status != OK {
            let mut message = vec![0u8; len.min(64 << 10) as usize];
            stream.read_exact(&mut message).await?;
            let message = String::from_utf8_lossy(&message).into_owned();
            let status = if status == NOT_FOUND {
                tonic::Status::not_found(message)
            } else {
                tonic::Status::unavailable(message)
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

    /// Serves raw fetches on `stream` (a new connection that [`is_raw`]) until the client
    /// closes it. `lookup` answers a key with the value, `Ok(None)` when it is not held, or
    /// why it could not be read.
    pub async fn serve<F, Fut>(mut stream: TcpStream, lookup: F) -> io::Result<()>
    where
        F: Fn(u64, u32) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Value>, String>>,
    {
        let mut magic = [0u8; 8];
        stream.read_exact(&mut magic).await?;
        loop {
            let mut request = [0u8; 12];
            match stream.read_exact(&mut request).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let job = u64::from_le_bytes(request[..8].try_into().expect("8 bytes"));
            let unit = u32::from_le_bytes(request[8..].try_into().expect("4 bytes"));
            let (status, message) = match lookup(job, unit).await {
                Ok(Some(value)) => {
                    let chunks = ValueChunks::new(&value, BLOCK);
                    let mut header = [0u8; 9];
                    header[1..].copy_from_slice(&(chunks.total_size() as u64).to_le_bytes());
                    stream.write_all(&header).await?;
                    // Straight from the value's memory: no copy on this side.
                    for piece in chunks.pieces() {
                        for block in piece.chunks(BLOCK) {
                            stream.write_all(block).await?;
                        }
                    }
                    continue;
                }
                Ok(None) => (
                    NOT_FOUND,
                    format!("this worker holds no value {job}/{unit}"),
                ),
                Err(e) => (FAILED, e),
            };
            let mut header = [0u8; 9];
            header[0] = status;
            header[1..].copy_from_slice(&(message.len() as u64).to_le_bytes());
            stream.write_all(&header).await?;
            stream.write_all(message.as_bytes()).await?;
        }
    }

    /// Reads the first 8 bytes of a new connection without consuming them; whether they
    /// are [`MAGIC`] (false also when the peer sends fewer bytes within `wait`).
    pub async fn is_raw(stream: &TcpStream, wait: std::time::Duration) -> bool {
        let peek = async {
            let mut buf = [0u8; 8];
            loop {
                let n = stream.peek(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                if n >= 8 || buf[..n] != MAGIC[..n] {
                    return Some(n >= 8 && &buf == MAGIC);
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        matches!(tokio::time::timeout(wait, peek).await, Ok(Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fabric_core::{Bulk, Value};

    use super::*;

    /// A raw server on 127.0.0.1 holding one value under job 1, unit 2.
    async fn serve_one(value: Value) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let value = Arc::new(value);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                assert!(raw::is_raw(&stream, Duration::from_secs(5)).await);
                let value = value.clone();
                tokio::spawn(raw::serve(stream, move |job, unit| {
                    let value = value.clone();
                    async move {
                        match (job, unit) {
                            (1, 2) => Ok(Some((*value).clone())),
                            (1, 4) => Ok(Some(Value::List(
                                (0..50_000)
                                    .map(|i| Value::String(format!("s{i}").into()))
                                    .collect::<Vec<_>>()
                                    .into(),
                            ))),
                            (1, 5) => Ok(Some(Value::S64(7))),
                            (1, 3) => Err("disk on fire".to_string()),
                            _ => Ok(None),
                        }
                    }
                }));
            }
        });
        address
    }

    #[tokio::test]
    async fn raw_fetches_values_and_reports_what_is_missing() {
        let big = Value::Bulk(Arc::new(Bulk::F64((0..3_000_000).map(f64::from).collect())));
        let address = serve_one(big.clone()).await;
        let peers = Peers::default();
        // Twice: the second fetch reuses the pooled stream.
        for _ in 0..2 {
            let v = peers
                .fetch(&address, v1::ValueKey::new(1, 2), 1 << 30)
                .await
                .unwrap();
            assert_eq!(v, big);
        }
        assert_eq!(peers.raw.lock().unwrap()[&address].len(), 1);
        // Values of other shapes, large and tiny, take the general path.
        let strings = peers
            .fetch(&address, v1::ValueKey::new(1, 4), 1 << 30)
            .await
            .unwrap();
        assert!(matches!(&strings, Value::List(xs) if xs.len() == 50_000));
        let tiny = peers
            .fetch(&address, v1::ValueKey::new(1, 5), 1 << 30)
            .await
            .unwrap();
        assert_eq!(tiny, Value::S64(7));
        let missing = peers
            .fetch(&address, v1::ValueKey::new(1, 9), 1 << 30)
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("holds no value 1/9"),
            "{missing}"
        );
        let failed = peers
            .fetch(&address, v1::ValueKey::new(1, 3), 1 << 30)
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("disk on fire"), "{failed}");
        // Over the limit: refused before reading the value.
        let too_big = peers
            .fetch(&address, v1::ValueKey::new(1, 2), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(too_big, ReceiveError::Proto(_)), "{too_big}");
    }
}
