//! The worker's data plane: the `WorkerData` service that serves its stored values to
//! peers and clients (they fetch with [`fabric_proto::transport::Peers`]).

use std::pin::Pin;
use std::sync::Arc;

use fabric_proto::transport::raw;
use fabric_proto::v1::worker_data_server::{WorkerData, WorkerDataServer};
use fabric_proto::{v1, value_chunks};
use tokio::net::TcpStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::store::ValueStore;

/// Serves a worker's store.
pub struct DataService {
    store: Arc<ValueStore>,
}

impl DataService {
    /// Serves `store`.
    pub fn new(store: Arc<ValueStore>) -> DataService {
        DataService { store }
    }
}

#[tonic::async_trait]
impl WorkerData for DataService {
    type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::ValueChunk, Status>> + Send>>;

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let key = fabric_proto::convert::required_key(
            request.into_inner().key.as_ref(),
            "FetchRequest",
            "key",
        )?;
        let store = self.store.clone();
        // A spilled value is read back from disk: not on the reactor.
        let value = tokio::task::spawn_blocking(move || store.get(key))
            .await
            .map_err(|e| Status::internal(format!("reading a value panicked: {e}")))?
            .map_err(|e| Status::not_found(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!("this worker holds no value {}/{}", key.0, key.1))
            })?;
        let chunks = value_chunks(&value).map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// Serves `store` on `listener`: raw fetches on connections that start with the raw magic,
/// gRPC `WorkerData` on the others (see [`fabric_proto::transport::raw`]).
pub async fn serve(listener: tokio::net::TcpListener, store: Arc<ValueStore>) {
    let (grpc, incoming) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<TcpStream>>();
    let accept = {
        let store = store.clone();
        async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!("cannot accept a data connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (grpc, store) = (grpc.clone(), store.clone());
                tokio::spawn(async move {
                    if raw::is_raw(&stream, std::time::Duration::from_secs(10)).await {
                        let lookup = |job: u64, unit: u32| {
                            let store = store.clone();
                            async move {
                                let Ok(job) = u32::try_from(job) else {
                                    return Ok(None);
                                };
                                tokio::task::spawn_blocking(move || store.get((job, unit)))
                                    .await
                                    .map_err(|e| e.to_string())?
                                    .map_err(|e| e.to_string())
                            }
                        };
                        if let Err(e) = raw::serve(stream, lookup).await {
                            tracing::debug!("raw data connection ended: {e}");
                        }
                    } else {
                        let _ = grpc.send(Ok(stream));
                    }
                });
            }
        }
    };
    let server = fabric_proto::transport::server_builder()
        .add_service(WorkerDataServer::new(DataService::new(store)))
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
