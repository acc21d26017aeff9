//! The server side of the data plane: one port serving the values a worker holds, on raw
//! streams to peers that open with the raw magic and on gRPC `WorkerData.Fetch` to the
//! others, over TLS when the worker has a certificate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fabric_core::{JobId, UnitIdx, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::stream::{BoxIo, DataPeer, Rewind};
use super::{raw, server_builder};
use crate::convert::required_key;
use crate::v1;
use crate::v1::worker_data_server::{WorkerData, WorkerDataServer};

/// How long a new connection may take to show which protocol it speaks.
const FIRST_BYTES: Duration = Duration::from_secs(10);

/// Where a data server finds the values it serves, and what it asks of a fetch.
pub trait ValueSource: Clone + Send + Sync + 'static {
    /// Whether `peer`, fetching `key` and presenting `capability`, may have it (see
    /// fabric-auth's capabilities): `Err` says why not, and the fetch gets no byte of the
    /// value.
    fn check(&self, key: (u64, u32), capability: &[u8], peer: &DataPeer) -> Result<(), String>;

    /// The value under `key`: `None` when it is not held here, an error (for the fetcher)
    /// when it is held but cannot be read.
    fn get(
        &self,
        key: (JobId, UnitIdx),
    ) -> impl Future<Output = Result<Option<Value>, String>> + Send;
}

/// Why a fetch gets no value.
#[derive(Debug)]
pub enum Refusal {
    /// The capability was refused.
    Denied(String),
    /// The value is held but could not be read.
    Failed(String),
}

/// Checks the capability, then looks the value up.
async fn lookup<S: ValueSource>(
    source: &S,
    job: u64,
    unit: u32,
    capability: &[u8],
    peer: &DataPeer,
) -> Result<Option<Value>, Refusal> {
    if let Err(why) = source.check((job, unit), capability, peer) {
        let worker = peer.worker.as_deref().unwrap_or("");
        tracing::warn!(
            target: "fabric::audit", job, unit, tls = peer.tls, worker,
            "data fetch denied: {why}"
        );
        return Err(Refusal::Denied(why));
    }
    match JobId::try_from(job) {
        Ok(job) => source.get((job, unit)).await.map_err(Refusal::Failed),
        Err(_) => Ok(None),
    }
}

/// Serves the values of `source` on `listener` until the listener fails for good: raw
/// fetches on connections that start with [`raw::MAGIC`], gRPC `WorkerData` on the others;
/// with `tls`, every connection is TLS first (a peer presenting a worker's certificate is
/// known by its name, see [`DataPeer`]).
pub async fn serve<S: ValueSource>(
    listener: TcpListener,
    source: S,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let (grpc, incoming) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<Rewind>>();
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let accept = {
        let source = source.clone();
        async move {
            loop {
                let (stream, address) = super::accept(&listener).await;
                let (grpc, source, tls) = (grpc.clone(), source.clone(), tls.clone());
                tokio::spawn(async move {
                    let Some((mut stream, mut peer)) = secure(stream, tls.as_ref()).await else {
                        return;
                    };
                    peer.address = Some(address);
                    let mut head = [0u8; 8];
                    let first =
                        tokio::time::timeout(FIRST_BYTES, stream.read_exact(&mut head)).await;
                    if !matches!(first, Ok(Ok(_))) {
                        tracing::debug!(%address, "a data connection sent no request");
                        return;
                    }
                    if &head == raw::MAGIC {
                        let lookup = |job: u64, unit: u32, capability: Vec<u8>| {
                            let (source, peer) = (source.clone(), peer.clone());
                            async move { lookup(&source, job, unit, &capability, &peer).await }
                        };
                        if let Err(e) = raw::serve(stream, lookup).await {
                            tracing::debug!(%address, "raw data connection ended: {e}");
                        }
                    } else {
                        let _ = grpc.send(Ok(Rewind {
                            head: head.to_vec(),
                            at: 0,
                            inner: stream,
                            peer,
                        }));
                    }
                });
            }
        }
    };
    let server = server_builder()
        .add_service(WorkerDataServer::new(FetchService { source }))
        .serve_with_incoming(UnboundedReceiverStream::new(incoming));
    tokio::select! {
        () = accept => {}
        result = server => {
            if let Err(e) = result {
                tracing::error!("the data service failed: {e}");
            }
        }
    }
}

/// The connection, after a TLS handshake when the port has TLS (`None`: the handshake
/// failed or timed out, and the connection is dropped).
async fn secure(
    stream: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Option<(BoxIo, DataPeer)> {
    let Some(acceptor) = tls else {
        return Some((Box::new(stream), DataPeer::default()));
    };
    let address = stream.peer_addr().ok();
    let stream = super::tls::buffered(stream);
    match tokio::time::timeout(super::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let worker = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(super::tls::worker_certificate)
                .map(|c| c.name)
                .map(Arc::from);
            let peer = DataPeer {
                tls: true,
                worker,
                address: None,
            };
            Some((Box::new(stream), peer))
        }
        Ok(Err(e)) => {
            tracing::info!(?address, "data port: TLS handshake refused: {e}");
            None
        }
        Err(_) => {
            tracing::info!(?address, "data port: TLS handshake timed out");
            None
        }
    }
}

/// gRPC `WorkerData` over a source.
struct FetchService<S> {
    source: S,
}

#[tonic::async_trait]
impl<S: ValueSource> WorkerData for FetchService<S> {
    type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::ValueChunk, Status>> + Send>>;

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let peer = request
            .extensions()
            .get::<DataPeer>()
            .cloned()
            .unwrap_or_default();
        let request = request.into_inner();
        let key = required_key(request.key.as_ref(), "FetchRequest", "key")?;
        let value = lookup(
            &self.source,
            key.0.into(),
            key.1,
            &request.capability,
            &peer,
        )
        .await
        .map_err(|refusal| match refusal {
            Refusal::Denied(why) => Status::permission_denied(why),
            Refusal::Failed(why) => Status::not_found(why),
        })?
        .ok_or_else(|| {
            Status::not_found(format!("this worker holds no value {}/{}", key.0, key.1))
        })?;
        let chunks = crate::value_chunks(&value).map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
