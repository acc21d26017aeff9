//! TLS 1.3 on Fabric's ports (rustls, with aws-lc-rs as its cryptography): servers that
//! present a certificate of the cluster's CA and may ask for the peer's, the client
//! settings that verify a scheduler against the same CA, and those that verify a worker's
//! data port (any worker's certificate of the CA: the capability, not the port, says who
//! may have a value).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// A TLS handshake that has not finished after this long is dropped.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The organizational unit of a worker's certificate (`fabric cert issue --role worker`).
pub const WORKER_UNIT: &str = "fabric-worker";

/// A worker's certificate, as read from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCertificate {
    /// The worker's name: the common name (`worker` when it has none).
    pub name: String,
    /// The certificate's serial number (hex), which tells certificates apart.
    pub serial: String,
}

/// The worker a certificate names: one whose subject's organizational unit is
/// [`WORKER_UNIT`]. `None` for another role's certificate or one that does not parse.
/// Checks no signature: give it only certificates a TLS handshake verified.
pub fn worker_certificate(leaf: &CertificateDer<'_>) -> Option<WorkerCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let subject = cert.subject();
    let is_worker = subject
        .iter_organizational_unit()
        .any(|ou| ou.as_str() == Ok(WORKER_UNIT));
    if !is_worker {
        return None;
    }
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("worker");
    Some(WorkerCertificate {
        name: name.to_string(),
        serial: cert.raw_serial_as_string(),
    })
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the combination.
    #[error("{0}")]
    Rustls(String),
}

/// A certificate chain, its key and the CA that signs the cluster's certificates, as PEM
/// files (`fabric ca init`, `fabric cert issue`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This process's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// The certificates in `pem`, the contents of `path`.
fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The private key in `pem`, the contents of `path`.
fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("no private key in it: {e}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The CA certificates in the file at `ca`.
fn roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca, &read(ca)?)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: ca.to_path_buf(),
            what: format!("not a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// A server's TLS: TLS 1.3 only, HTTP/2, its certificate from `files`; a peer may present a
/// certificate, which must then be signed by the CA (workers do; clients present tokens).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = roots(&files.ca)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&files.cert, &read(&files.cert)?)?,
            key(&files.key, &read(&files.key)?)?,
        )
        .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The settings a client uses to reach a TLS server: verify it against the CA at `ca`, and
/// present `identity` (a certificate and its key, PEM files) when given.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    // Each file is read once and checked here, so that a bad one is named now rather
    // than failing the first connection.
    let ca_pem = read(ca)?;
    certs(ca, &ca_pem)?;
    let mut config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    if let Some((cert, key_path)) = identity {
        let (cert_pem, key_pem) = (read(cert)?, read(key_path)?);
        certs(cert, &cert_pem)?;
        key(key_path, &key_pem)?;
        config = config.identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
    }
    Ok(config)
}

/// The settings a worker (with its certificate, `identity`) or a client (without) uses to
/// fetch from workers' TLS data ports: TLS 1.3, the port's certificate verified against
/// the CA at `ca` and required to be a worker's. Its host names are not compared with the
/// address dialled: every worker of the cluster is trusted to serve what it holds, and
/// which values a fetch may have is decided by the capability it presents.
pub fn data_client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let verifier = Arc::new(WorkerPort {
        roots: Arc::new(roots(ca)?),
        provider: provider(),
    });
    // Bulk data: AES-128-GCM first (fewer rounds than AES-256, as strong as the P-256 keys
    // that negotiate it); the server follows the client's order.
    let mut bulk = rustls::crypto::aws_lc_rs::default_provider();
    bulk.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(bulk))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some((cert, key_path)) => builder
            .with_client_auth_cert(certs(cert, &read(cert)?)?, key(key_path, &read(key_path)?)?)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", cert.display())))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A TLS connection over `tcp` to the data port at `authority` (`host:port`).
pub(super) async fn connect(
    config: &Arc<rustls::ClientConfig>,
    authority: &str,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::io::BufReader<TcpStream>>> {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, buffered(tcp)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Bytes read from the socket per system call under a TLS stream: rustls reads 4 KiB at a
/// time, which for a large value is a system call per 4 KiB without this buffer.
const READ_BUFFER: usize = 256 << 10;

/// `tcp` with a read buffer for TLS (writes pass straight through).
pub(super) fn buffered(tcp: TcpStream) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::with_capacity(READ_BUFFER, tcp)
}

/// Verifies a data port's certificate: signed by the cluster's CA, and a worker's.
#[derive(Debug)]
struct WorkerPort {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for WorkerPort {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if worker_certificate(end_entity).is_none() {
            return Err(rustls::Error::General(
                "the data port's certificate is not a worker's".into(),
            ));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS connections accepted on `listener`: each handshake runs on its own task (a slow
/// or hostile peer holds up nobody), and one that fails (plain text, a certificate of
/// another CA, a timeout) is dropped and logged.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = super::accept(&listener) => accepted,
                () = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
