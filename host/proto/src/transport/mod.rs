//! The data plane in one place: how workers serve the values they hold ([`serve`], one port
//! for raw streams and gRPC `WorkerData.Fetch`) and how workers and clients fetch them
//! ([`Peers`]), with the transport settings both sides share.
//!
//! Values travel on a plain TCP stream when the peer offers it ([`raw`]), which moves large
//! values at the speed of the loopback or the NIC; gRPC `Fetch` (HTTP/2, whose send
//! buffers tonic does not let us size) is the fallback. Both run on the worker's one data
//! port: the first bytes of a connection tell them apart. A worker with a certificate
//! serves TLS 1.3 on that port (`https://` in its address), and knows a peer that presents
//! a worker's certificate by its name.

mod client;
pub mod raw;
mod server;
mod stream;
pub mod tls;

use std::time::Duration;

use tonic::transport::{Endpoint, Server};

pub use client::Peers;
pub use server::{Refusal, ValueSource, serve};
pub use stream::{BoxIo, DataPeer, Io};

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

/// The next connection on `listener`, with Nagle's algorithm off. A failure to accept (out
/// of file descriptors and the like) is logged and waited out, never returned.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fabric_core::{Bulk, Value};

    use super::*;
    use crate::chunk::ReceiveError;
    use crate::v1;

    /// A raw server on 127.0.0.1 holding one value under job 1, unit 2.
    async fn serve_one(value: Value) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let value = Arc::new(value);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut magic = [0u8; 8];
                tokio::io::AsyncReadExt::read_exact(&mut stream, &mut magic)
                    .await
                    .unwrap();
                assert_eq!(&magic, raw::MAGIC);
                let value = value.clone();
                tokio::spawn(raw::serve(stream, move |job, unit, _capability| {
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
                            (1, 3) => Err(Refusal::Failed("disk on fire".to_string())),
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
                .fetch(&address, v1::ValueKey::new(1, 2), b"ok", 1 << 30)
                .await
                .unwrap();
            assert_eq!(v, big);
        }
        assert_eq!(peers.raw.lock().unwrap()[&address].len(), 1);
        // Values of other shapes, large and tiny, take the general path.
        let strings = peers
            .fetch(&address, v1::ValueKey::new(1, 4), b"ok", 1 << 30)
            .await
            .unwrap();
        assert!(matches!(&strings, Value::List(xs) if xs.len() == 50_000));
        let tiny = peers
            .fetch(&address, v1::ValueKey::new(1, 5), b"ok", 1 << 30)
            .await
            .unwrap();
        assert_eq!(tiny, Value::S64(7));
        let missing = peers
            .fetch(&address, v1::ValueKey::new(1, 9), b"ok", 1 << 30)
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("holds no value 1/9"),
            "{missing}"
        );
        let failed = peers
            .fetch(&address, v1::ValueKey::new(1, 3), b"ok", 1 << 30)
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("disk on fire"), "{failed}");
        // Over the limit: refused before reading the value.
        let too_big = peers
            .fetch(&address, v1::ValueKey::new(1, 2), b"ok", 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(too_big, ReceiveError::Proto(_)), "{too_big}");
    }

    /// Values 1/1 (a packed list) and 1/2 (a string); 1/3 cannot be read.
    #[derive(Clone)]
    struct Held;

    impl ValueSource for Held {
        fn check(
            &self,
            _key: (u64, u32),
            capability: &[u8],
            peer: &DataPeer,
        ) -> Result<(), String> {
            // `worker:NAME` asks for a TLS peer with NAME's certificate.
            match capability.strip_prefix(b"worker:") {
                Some(name) if peer.worker.as_deref().map(str::as_bytes) == Some(name) => Ok(()),
                Some(_) => Err(format!("not this peer: {peer:?}")),
                None if capability == b"ok" => Ok(()),
                None => Err("no good capability".into()),
            }
        }

        async fn get(&self, key: (fabric_core::JobId, u32)) -> Result<Option<Value>, String> {
            match key {
                (1, 1) => Ok(Some(Value::Bulk(Arc::new(Bulk::U8(vec![7; 100_000]))))),
                (1, 2) => Ok(Some(Value::String("hi".into()))),
                (1, 3) => Err("disk on fire".into()),
                _ => Ok(None),
            }
        }
    }

    /// Fetches value 1/1 raw (pooling the stream) and 1/2 by gRPC from `Held` at
    /// `address`, presenting `capability`, and checks both.
    async fn fetch_both(peers: &Peers, address: &str, capability: &'static [u8]) {
        let v = peers
            .fetch(address, v1::ValueKey::new(1, 1), capability, 1 << 30)
            .await
            .unwrap();
        assert_eq!(v, Value::Bulk(Arc::new(Bulk::U8(vec![7; 100_000]))));
        assert_eq!(peers.raw.lock().unwrap()[address].len(), 1);
        let mut stream = peers
            .client(address)
            .unwrap()
            .fetch(v1::FetchRequest {
                key: Some(v1::ValueKey::new(1, 2)),
                capability: bytes::Bytes::from_static(capability),
            })
            .await
            .unwrap()
            .into_inner();
        let v = crate::chunk::receive_value(&mut stream, 1 << 20)
            .await
            .unwrap();
        assert_eq!(v, Value::String("hi".into()));
    }

    #[tokio::test]
    async fn one_port_serves_raw_and_grpc_fetches() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, Held, None));
        // Raw through the peers' pool, and gRPC, on the same port.
        let peers = Peers::default();
        fetch_both(&peers, &address, b"ok").await;
        let mut client = peers.client(&address).unwrap();
        for (unit, says) in [(3, "disk on fire"), (9, "holds no value 1/9")] {
            let status = client
                .fetch(v1::FetchRequest {
                    key: Some(v1::ValueKey::new(1, unit)),
                    capability: bytes::Bytes::from_static(b"ok"),
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::NotFound);
            assert!(status.message().contains(says), "{status}");
        }
        // A job id beyond the domain's range is simply not held.
        let e = peers
            .fetch(
                &address,
                v1::ValueKey {
                    job: u64::MAX,
                    unit: 1,
                },
                b"ok",
                1 << 30,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("holds no value"), "{e}");
        // Without a good capability: denied, by both paths, and no value.
        let denied = peers
            .fetch(&address, v1::ValueKey::new(1, 1), b"forged", 1 << 30)
            .await
            .unwrap_err();
        assert!(
            matches!(&denied, ReceiveError::Status(s) if s.code() == tonic::Code::PermissionDenied),
            "{denied}"
        );
        let status = client
            .fetch(v1::FetchRequest {
                key: Some(v1::ValueKey::new(1, 2)),
                capability: bytes::Bytes::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    /// A CA and a certificate it signs (organizational unit `fabric-ROLE`, common name
    /// `name`), as PEM files in `dir`: (ca.pem, NAME.pem, NAME.key).
    fn issue(dir: &std::path::Path, ca: &str, role: &str, name: &str) -> tls::TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, ca);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, format!("fabric-{role}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let files = tls::TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{ca}.pem")),
        };
        std::fs::write(&files.ca, ca_cert.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[tokio::test]
    async fn a_tls_port_serves_raw_and_grpc_and_knows_its_worker_peers() {
        let dir = tempfile::tempdir().unwrap();
        let server = issue(dir.path(), "ca", "worker", "w1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("https://{}", listener.local_addr().unwrap());
        let config = tls::server_config(&server).unwrap();
        tokio::spawn(serve(listener, Held, Some(config)));

        // A worker (w1's certificate) fetches by both paths and is known by its name.
        let worker = Peers::with_tls(Some(
            tls::data_client_config(&server.ca, Some((&server.cert, &server.key))).unwrap(),
        ));
        fetch_both(&worker, &address, b"worker:w1").await;
        // Another worker's capability is not this peer's.
        let denied = worker
            .fetch(&address, v1::ValueKey::new(1, 1), b"worker:w2", 1 << 30)
            .await
            .unwrap_err();
        assert!(denied.to_string().contains("not this peer"), "{denied}");

        // A client (no certificate) is verified against the CA too, and has no name.
        let client = Peers::with_tls(Some(tls::data_client_config(&server.ca, None).unwrap()));
        let v = client
            .fetch(&address, v1::ValueKey::new(1, 2), b"ok", 1 << 30)
            .await
            .unwrap();
        assert_eq!(v, Value::String("hi".into()));
        let denied = client
            .fetch(&address, v1::ValueKey::new(1, 2), b"worker:w1", 1 << 30)
            .await
            .unwrap_err();
        assert!(denied.to_string().contains("worker: None"), "{denied}");

        // Without a CA: refused before dialling, naming what is missing.
        let e = Peers::default()
            .fetch(&address, v1::ValueKey::new(1, 2), b"ok", 1 << 30)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("set FABRIC_CA"), "{e}");
        // Plain text to the TLS port: the raw magic and gRPC get nothing back.
        let plain = address.replace("https://", "http://");
        let e = Peers::default()
            .fetch(&plain, v1::ValueKey::new(1, 2), b"ok", 1 << 30)
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("hi"), "{e}");

        // A port whose certificate is of another CA, or not a worker's, is not trusted.
        for (ca, role) in [("other", "worker"), ("ca2", "client")] {
            let files = issue(dir.path(), ca, role, &format!("{ca}-{role}"));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = format!("https://{}", listener.local_addr().unwrap());
            tokio::spawn(serve(
                listener,
                Held,
                Some(tls::server_config(&files).unwrap()),
            ));
            let trusting = if ca == "other" { &server.ca } else { &files.ca };
            let peers = Peers::with_tls(Some(tls::data_client_config(trusting, None).unwrap()));
            let e = peers
                .fetch(&address, v1::ValueKey::new(1, 2), b"ok", 1 << 30)
                .await
                .unwrap_err();
            assert!(matches!(e, ReceiveError::Status(_)), "{e}");
        }
    }
}
