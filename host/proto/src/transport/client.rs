//! The client side of the data plane: connections to workers' data ports (TLS for
//! `https://` ones), raw first and gRPC `Fetch` as the fallback, used by workers (to fetch inputs from peers) and by clients
//! (to gather outputs).

use std::sync::{Arc, Mutex, PoisonError};

use fabric_core::Value;
use rustc_hash::FxHashMap;
use tonic::Status;
use tonic::transport::Channel;

use super::stream::BoxIo;
use super::{endpoint, raw};
use crate::chunk::{ReceiveError, receive_value};
use crate::v1;
use crate::v1::worker_data_client::WorkerDataClient;

/// Connections to other workers' data services, one per address, made on first use.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<FxHashMap<String, WorkerDataClient<Channel>>>,
    /// Idle raw streams by address, for reuse.
    pub(super) raw: Mutex<FxHashMap<String, Vec<BoxIo>>>,
    /// How to reach `https://` data ports (see [`super::tls::data_client_config`]).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peers {
    /// Connections that reach `https://` data ports with `tls` (without it they are
    /// refused, naming the missing CA).
    pub fn with_tls(tls: Option<Arc<rustls::ClientConfig>>) -> Peers {
        Peers {
            tls,
            ..Peers::default()
        }
    }

    /// The client for `address`.
    pub fn client(&self, address: &str) -> Result<WorkerDataClient<Channel>, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let bad = |e: &dyn std::fmt::Display| {
            Status::invalid_argument(format!("bad data address `{address}`: {e}"))
        };
        let channel = match address.strip_prefix("https://") {
            None => endpoint(address).map_err(|e| bad(&e))?.connect_lazy(),
            Some(authority) => {
                let config = self.tls.clone().ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "the data port {address} uses TLS, and no CA was given to verify it \
                         (set FABRIC_CA)"
                    ))
                })?;
                // Our own TLS (a worker's certificate, not a host name, is what is
                // verified), under an http:// endpoint so that tonic adds none.
                let authority = authority.trim_end_matches('/').to_string();
                let dial = authority.clone();
                let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
                    let (config, authority) = (config.clone(), dial.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(&authority).await?;
                        tcp.set_nodelay(true)?;
                        let tls = super::tls::connect(&config, &authority, tcp).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                    }
                });
                endpoint(&format!("http://{authority}"))
                    .map_err(|e| bad(&e))?
                    .connect_with_connector_lazy(connect)
            }
        };
        let client = WorkerDataClient::new(channel).max_decoding_message_size(usize::MAX);
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

    /// Fetches the value under `key` from the worker at `address` presenting `capability`
    /// (signed by the scheduler), accepting encodings of at most `limit` bytes.
    #[tracing::instrument(name = "fetch", level = "debug", skip(self, capability), fields(job = key.job, unit = key.unit))]
    pub async fn fetch(
        &self,
        address: &str,
        key: v1::ValueKey,
        capability: &[u8],
        limit: u64,
    ) -> Result<Value, ReceiveError> {
        match self.fetch_raw(address, key, capability, limit).await {
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
                .fetch(v1::FetchRequest {
                    key: Some(key),
                    capability: bytes::Bytes::copy_from_slice(capability),
                })
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
        capability: &[u8],
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
            None => raw::connect(address, self.tls.as_ref()).await?,
        };
        let value = raw::fetch(&mut stream, key, capability, limit).await?;
        self.raw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_string())
            .or_default()
            .push(stream);
        Ok(value)
    }
}
