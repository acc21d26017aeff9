//! The server side of the data plane: one port serving the values a worker holds, on raw
//! streams to peers that open with the raw magic and on gRPC `WorkerData.Fetch` to the
//! others.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use fabric_core::{JobId, UnitIdx, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::{raw, server_builder};
use crate::convert::required_key;
use crate::v1;
use crate::v1::worker_data_server::{WorkerData, WorkerDataServer};

/// How long a new connection may take to show which protocol it speaks.
const FIRST_BYTES: Duration = Duration::from_secs(10);

/// Where a data server finds the values it serves.
pub trait ValueSource: Clone + Send + Sync + 'static {
    /// The value under `key`: `None` when it is not held here, an error (for the fetcher)
    /// when it is held but cannot be read.
    fn get(
        &self,
        key: (JobId, UnitIdx),
    ) -> impl Future<Output = Result<Option<Value>, String>> + Send;
}

/// Serves the values of `source` on `listener` until the listener fails for good: raw
/// fetches on connections that start with [`raw::MAGIC`], gRPC `WorkerData` on the others.
pub async fn serve<S: ValueSource>(listener: TcpListener, source: S) {
    let (grpc, incoming) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<TcpStream>>();
    let accept = {
        let source = source.clone();
        async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!("cannot accept a data connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (grpc, source) = (grpc.clone(), source.clone());
                tokio::spawn(async move {
                    if raw::is_raw(&stream, FIRST_BYTES).await {
                        let lookup = |job: u64, unit: u32| {
                            let source = source.clone();
                            async move {
                                match JobId::try_from(job) {
                                    Ok(job) => source.get((job, unit)).await,
                                    Err(_) => Ok(None),
                                }
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
        let key = required_key(request.into_inner().key.as_ref(), "FetchRequest", "key")?;
        let value = self
            .source
            .get(key)
            .await
            .map_err(Status::not_found)?
            .ok_or_else(|| {
                Status::not_found(format!("this worker holds no value {}/{}", key.0, key.1))
            })?;
        let chunks = crate::value_chunks(&value).map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
