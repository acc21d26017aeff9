//! The worker's data plane: the `WorkerData` service that serves its stored values to
//! peers and clients (they fetch with [`fabric_proto::transport::Peers`]).

use std::pin::Pin;
use std::sync::Arc;

use fabric_proto::v1::worker_data_server::WorkerData;
use fabric_proto::{v1, value_chunks};
use tokio_stream::Stream;
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
