//! Transport settings of the data plane and the client side of it: connections to
//! workers' `WorkerData` services, used by workers (to fetch inputs from peers) and by
//! clients (to gather outputs).

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
}
