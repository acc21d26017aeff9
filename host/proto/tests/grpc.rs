//! The data plane over real gRPC: a tiny `WorkerData` server on 127.0.0.1 (port from the
//! OS) serving one value, fetched with the generated client and compared.
//!
//! `fetch_throughput_over_loopback` also prints (never asserts) how fast a large packed
//! value travels: 256 MiB of f64 in release builds (`cargo test -p fabric-proto --release
//! -- --nocapture`), 16 MiB in debug builds.

// The allocator of Fabric's binaries, so that the figures printed below are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fabric_core::{Bulk, Value};
use fabric_proto::chunk::encoded_value_chunks;
use fabric_proto::v1::worker_data_client::WorkerDataClient;
use fabric_proto::v1::worker_data_server::{WorkerData, WorkerDataServer};
use fabric_proto::{ReceiveError, ValueReceiver, encode_value, receive_value, v1, value_chunks};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// Serves one value under one key, encoding it chunk by chunk per request as a worker
/// would.
struct OneValue {
    key: v1::ValueKey,
    value: Arc<Value>,
}

#[tonic::async_trait]
impl WorkerData for OneValue {
    type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::ValueChunk, Status>> + Send>>;

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let key = request
            .into_inner()
            .key
            .ok_or_else(|| Status::invalid_argument("FetchRequest without a key"))?;
        if key != self.key {
            return Err(Status::not_found(format!(
                "no value for job {} unit {}",
                key.job, key.unit
            )));
        }
        let chunks = value_chunks(&self.value).map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// HTTP/2 settings: tonic's defaults, or tuned for bulk transfer (large flow-control
/// windows and frames).
#[derive(Clone, Copy, Debug)]
enum Windows {
    Default,
    Tuned,
}

const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
const FRAME: u32 = 1 << 20;

/// A running server: its address and what stops it.
struct Running {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start(service: OneValue, windows: Windows) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Windows::Tuned = windows {
        builder = builder
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(FRAME);
    }
    let router = builder.add_service(WorkerDataServer::new(service));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));
    Running { url, stop, task }
}

impl Running {
    async fn client(&self, windows: Windows) -> WorkerDataClient<Channel> {
        let mut endpoint = Endpoint::from_shared(self.url.clone()).unwrap();
        if let Windows::Tuned = windows {
            endpoint = endpoint
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(FRAME);
        }
        // The listener is bound before the server task starts: connecting cannot race it.
        WorkerDataClient::new(endpoint.connect().await.unwrap())
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

async fn fetch(
    client: &mut WorkerDataClient<Channel>,
    key: v1::ValueKey,
    limit: u64,
) -> Result<Value, ReceiveError> {
    let request = v1::FetchRequest {
        key: Some(key),
        capability: Default::default(),
    };
    let mut stream = client.fetch(request).await?.into_inner();
    receive_value(&mut stream, limit).await
}

fn sample() -> Value {
    let s = |x: &str| Arc::<str>::from(x);
    Value::Record(Arc::from([
        (s("name"), Value::String(s("sensor-7"))),
        (
            s("readings"),
            Value::Bulk(Arc::new(Bulk::F64(vec![1.5, f64::NAN, -0.0, 1e300]))),
        ),
        (
            s("tags"),
            Value::List(Arc::from([
                Value::Option(Some(Box::new(Value::Char('λ')))),
                Value::Option(None),
            ])),
        ),
        (
            s("status"),
            Value::Result(Err(Some(Box::new(Value::Variant(
                s("late"),
                Some(Box::new(Value::U16(300))),
            ))))),
        ),
        (s("flags"), Value::Flags(Arc::from([s("a"), s("c")]))),
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_a_value_over_grpc() {
    let key = v1::ValueKey::new(4, 17);
    let value = sample();
    let server = start(
        OneValue {
            key,
            value: Arc::new(value.clone()),
        },
        Windows::Default,
    )
    .await;
    let mut client = server.client(Windows::Default).await;

    let got = fetch(&mut client, key, 1 << 20).await.unwrap();
    // NaN != NaN: compare the JSON forms, which spell it "NaN", and the debug forms.
    assert_eq!(got.to_json(), value.to_json());
    assert_eq!(format!("{got:?}"), format!("{value:?}"));

    // A key it does not hold: NOT_FOUND, with the server's message.
    let missing = fetch(&mut client, v1::ValueKey::new(4, 18), 1 << 20).await;
    match missing {
        Err(ReceiveError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::NotFound);
            assert_eq!(s.message(), "no value for job 4 unit 18");
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }

    // A receiver's limit applies to what the first chunk announces.
    let small = fetch(&mut client, key, 16).await.unwrap_err();
    assert!(
        small.to_string().contains("over the limit of 16 bytes"),
        "{small}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_throughput_over_loopback() {
    let mib: usize = if cfg!(debug_assertions) { 16 } else { 256 };
    let n = mib << 17; // f64 per MiB: 2^20 / 8
    let xs: Vec<f64> = (0..n).map(|i| i as f64 * 0.25).collect();
    let value = Value::Bulk(Arc::new(Bulk::F64(xs)));
    let key = v1::ValueKey::new(1, 0);
    let bytes = (mib << 20) as f64;
    let rate = |d: Duration| bytes / d.as_secs_f64() / 1e9;

    // The conversions alone: encoding into chunks, and receiving them. Best of 3: the
    // first touch of fresh memory is slow and erratic on virtual machines.
    let (mut encode, mut decode) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let chunks: Vec<v1::ValueChunk> = value_chunks(&value).collect();
        encode = encode.min(t.elapsed());
        let t = Instant::now();
        let mut receiver = ValueReceiver::new(1 << 31);
        for c in chunks {
            receiver.push(c).unwrap();
        }
        let decoded = receiver.finish().unwrap();
        decode = decode.min(t.elapsed());
        assert_eq!(decoded, value);
    }
    println!(
        "{mib} MiB of f64: into chunks {:.1} ms ({:.2} GB/s), from chunks {:.1} ms ({:.2} GB/s), best of 3",
        encode.as_secs_f64() * 1e3,
        rate(encode),
        decode.as_secs_f64() * 1e3,
        rate(decode),
    );

    for windows in [Windows::Default, Windows::Tuned] {
        let server = start(
            OneValue {
                key,
                value: Arc::new(value.clone()),
            },
            windows,
        )
        .await;
        let mut client = server.client(windows).await;
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let got = fetch(&mut client, key, 1 << 31).await.unwrap();
            best = best.min(t.elapsed());
            assert_eq!(got, value);
        }
        println!(
            "{mib} MiB of f64 fetched over loopback ({windows:?} HTTP/2 settings): best of 3 {:.1} ms, {:.2} GB/s (encode + send + receive + decode)",
            best.as_secs_f64() * 1e3,
            rate(best),
        );
        server.stop().await;
    }
}

/// The reassembled bytes match what was sent, chunk boundaries and all.
#[test]
fn encoded_chunks_cover_the_encoding() {
    let value = sample();
    let encoded = encode_value(&value);
    let joined: Vec<u8> = encoded_value_chunks(encoded.clone(), 7)
        .flat_map(|c| c.data.to_vec())
        .collect();
    assert_eq!(Bytes::from(joined), encoded);
}
