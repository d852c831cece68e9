//! Mutual TLS on the links between segments (rustls, ring provider).
//!
//! Both ends verify: a server ([`ServerTls`]) takes only clients whose
//! certificate is signed by its CA (and so refuses plaintext and unknown
//! clients during the handshake); a client ([`ClientTls`]) presents its
//! own certificate and checks the server's against the same CA and the
//! address it dialled.
//!
//! Certificates, keys and CAs are read from PEM files and re-read when the
//! files change, without a restart: every handshake compares the files'
//! modification time, length and inode with what was loaded (a `stat` per
//! file) and reloads on a difference. A reload that fails (a key that does
//! not match its certificate yet, a file half written) is logged and the
//! previous material keeps serving until the files change again.
//! Kubernetes updates a mounted Secret by swapping a symlink, which changes
//! the inode every file resolves to.
//!
//! The server side wraps the connections a listener accepts
//! ([`accept`]): each handshake runs in its own task, bounded by
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent peer holds back nobody. The
//! client side is a connector for tonic's `Endpoint` ([`connect`]). The
//! `Push` path is unchanged above the socket: h2 writes the payload
//! `Bytes` into the TLS stream, which encrypts it into its record buffer
//! (the one copy TLS adds per direction).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::Service;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::spec::TlsFiles;

/// Longest a TLS handshake on an accepted connection may take before the
/// connection is closed (and counted).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("TLS {what} {}: cannot read: {source}", path.display())]
    Read {
        /// `certificate`, `key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The file was read but holds nothing usable.
    #[error("TLS {what} {}: {message}", path.display())]
    Invalid {
        /// `certificate`, `key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The files do not make a TLS configuration together.
    #[error("TLS certificate {} with key {} and CA {}: {message}", files.cert.display(), files.key.display(), files.ca.display())]
    Config {
        /// The files.
        files: TlsFiles,
        /// Why.
        message: String,
    },
}

/// The ring provider: it builds with a C compiler alone (aws-lc needs
/// cmake on some targets). rustls 0.23.48 deprecates it for its lack of
/// post-quantum key exchange (README, threat model).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The certificates of PEM file `path` (`CERTIFICATE` blocks), in order.
///
/// # Errors
/// [`TlsError`] naming the file when it cannot be read, a block is not
/// valid PEM, or it has no certificate.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: "no `BEGIN CERTIFICATE` block".into(),
        });
    }
    Ok(certs)
}

/// The private key of PEM file `path` (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError`] naming the file when it cannot be read or holds no key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        what: "key",
        path: path.to_owned(),
        message: format!("no PEM private key: {e}"),
    })
}

/// A certificate chain and its key, checked to match.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs("certificate", cert)?;
    let der = load_key(key)?;
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Invalid {
            what: "key",
            path: key.to_owned(),
            message: format!("unsupported private key: {e}"),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| TlsError::Invalid {
        what: "key",
        path: key.to_owned(),
        message: format!("does not match certificate {}: {e}", cert.display()),
    })?;
    Ok(ck)
}

/// The CA certificates of `path` as trust anchors.
fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs("CA", path)? {
        store.add(cert).map_err(|e| TlsError::Invalid {
            what: "CA",
            path: path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

/// What identifies a file's contents cheaply: modification time, length
/// and inode (`None`: the file cannot be read now).
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

/// A value loaded from files, reloaded when they change.
struct Reloading<T> {
    /// What it is, for the logs.
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    state: Mutex<(Stamp, Arc<T>)>,
}

impl<T> Reloading<T> {
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let at = stamp(&paths);
        let value = Arc::new(load()?);
        Ok(Self {
            what,
            paths,
            load: Box::new(load),
            state: Mutex::new((at, value)),
        })
    }

    /// The value, reloaded first if the files changed since it was loaded.
    fn current(&self) -> Arc<T> {
        let now = stamp(&self.paths);
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.0 != now {
            // Remember the new stamp either way: a failed load is retried
            // when the files change again, not on every handshake.
            state.0 = now;
            match (self.load)() {
                Ok(v) => {
                    tracing::info!(what = self.what, files = ?self.paths, "TLS files changed: reloaded");
                    state.1 = Arc::new(v);
                }
                Err(e) => {
                    tracing::warn!(what = self.what, error = %e, "TLS files changed but cannot be loaded; the previous ones stay in use");
                }
            }
        }
        state.1.clone()
    }
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// This end's certificate and key, reloaded on change.
#[derive(Debug)]
struct OwnCert(Reloading<CertifiedKey>);

impl OwnCert {
    fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let (cert, key) = (files.cert.clone(), files.key.clone());
        Ok(Self(Reloading::new(
            "certificate",
            vec![cert.clone(), key.clone()],
            move || certified_key(&cert, &key),
        )?))
    }
}

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the CA file, reloaded on change.
#[derive(Debug)]
struct ClientsOfCa(Reloading<Arc<dyn ClientCertVerifier>>);

impl ClientsOfCa {
    fn load(ca: &Path) -> Result<Self, TlsError> {
        let ca = ca.to_owned();
        Ok(Self(Reloading::new("CA", vec![ca.clone()], move || {
            WebPkiClientVerifier::builder_with_provider(roots(&ca)?, provider())
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: "CA",
                    path: ca.clone(),
                    message: format!("cannot verify clients with it: {e}"),
                })
        })?))
    }
}

impl ClientCertVerifier for ClientsOfCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; the CA may change under a borrowed list.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// Verifies server certificates against the CA file, reloaded on change.
#[derive(Debug)]
struct ServersOfCa(Reloading<Arc<WebPkiServerVerifier>>);

impl ServersOfCa {
    fn load(ca: &Path) -> Result<Self, TlsError> {
        let ca = ca.to_owned();
        Ok(Self(Reloading::new("CA", vec![ca.clone()], move || {
            WebPkiServerVerifier::builder_with_provider(roots(&ca)?, provider())
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: "CA",
                    path: ca.clone(),
                    message: format!("cannot verify servers with it: {e}"),
                })
        })?))
    }
}

impl ServerCertVerifier for ServersOfCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// The server side of mutual TLS: this server's certificate, and the CA
/// its clients' certificates must be signed by.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `files` (each checked now: a server never starts with a file
    /// it cannot use).
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be read or used.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config {
                files: files.clone(),
                message: e.to_string(),
            })?
            .with_client_cert_verifier(Arc::new(ClientsOfCa::load(&files.ca)?))
            .with_cert_resolver(Arc::new(OwnCert::load(files)?));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// The client side of mutual TLS: this end's certificate, presented to
/// servers, and the CA their certificates must be signed by.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads `files` (each checked now).
    ///
    /// # Errors
    /// [`TlsError`] naming the file that cannot be read or used.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config {
                files: files.clone(),
                message: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServersOfCa::load(&files.ca)?))
            .with_client_cert_resolver(Arc::new(OwnCert::load(files)?));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// Bytes a TLS connection reads from its socket at once: rustls asks for
/// 4 KiB at a time, which for a 3.7 MB frame is about 900 `read` calls;
/// through this buffer it is about 15, for one extra copy in memory.
pub const READ_BUFFER: usize = 256 << 10;

/// A socket read through a [`READ_BUFFER`]-sized buffer (writes go
/// straight through), keeping its connection info for tonic.
pub struct Buffered<IO>(tokio::io::BufReader<IO>);

impl<IO: tokio::io::AsyncRead> Buffered<IO> {
    /// `io` with a read buffer.
    pub fn new(io: IO) -> Self {
        Self(tokio::io::BufReader::with_capacity(READ_BUFFER, io))
    }
}

impl<IO: Connected + tokio::io::AsyncRead> Connected for Buffered<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().connect_info()
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Buffered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite
    for Buffered<IO>
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// A TLS connection a server accepted.
pub type Accepted<IO> = tokio_rustls::server::TlsStream<Buffered<IO>>;

/// The connections of `incoming` after a TLS handshake each: a
/// connection whose handshake fails (plaintext, no client certificate, a
/// certificate of another CA) or takes longer than [`HANDSHAKE_TIMEOUT`]
/// is closed, logged and counted in `refused` (one its peer closes before
/// sending anything, a port check, is only closed). Handshakes run side by
/// side, each in its own task.
pub fn accept<S, IO>(
    incoming: S,
    tls: ServerTls,
    refused: prometheus_client::metrics::counter::Counter,
) -> impl Stream<Item = io::Result<Accepted<IO>>>
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Connected<ConnectInfo = TcpConnectInfo>
        + Unpin
        + Send
        + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    // Connections wait here only between their handshake and the server
    // taking them; the server's connection cap bounds them.
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Accepted<IO>>>(16);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(conn) = incoming.next().await {
            let io = match conn {
                Ok(io) => io,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (acceptor, tx, refused) = (acceptor.clone(), tx.clone(), refused.clone());
            tokio::spawn(async move {
                let peer = io
                    .connect_info()
                    .remote_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let io = Buffered::new(io);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        // Closed by the peer before a handshake: a port
                        // check, not an attempt to talk; not counted.
                        tracing::debug!(%peer, "connection closed before a TLS handshake");
                    }
                    Ok(Err(e)) => {
                        refused.inc();
                        tracing::warn!(%peer, error = %e, "TLS handshake refused: connection closed");
                    }
                    Err(_) => {
                        refused.inc();
                        tracing::warn!(%peer, "no TLS handshake in {} s: connection closed", HANDSHAKE_TIMEOUT.as_secs());
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A connector for tonic's `Endpoint`: TCP (no delay), then a TLS
/// handshake that presents this end's certificate and verifies the server
/// against the CA and the host of the URI.
#[derive(Clone)]
struct Connector {
    config: Arc<rustls::ClientConfig>,
}

/// A client's TLS connection.
type ClientConn = TokioIo<tokio_rustls::client::TlsStream<Buffered<TcpStream>>>;

type Connecting = Pin<Box<dyn Future<Output = io::Result<ClientConn>> + Send>>;

impl Service<http::Uri> for Connector {
    type Response = ClientConn;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Box::pin(async move {
            let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| bad(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| bad(format!("{uri}: no port")))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| bad(format!("{host} is not a server name: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // A failed handshake is a setting to fix (a certificate the
            // server does not take, or one that does not name `host`), not
            // a server still starting: said at warn level.
            let tls = connector
                .connect(name, Buffered::new(tcp))
                .await
                .inspect_err(|e| {
                    tracing::warn!(%host, port, error = %e, "TLS handshake with the server failed");
                })?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A channel to `endpoint`: through mutual TLS with `tls`, else plaintext.
///
/// # Errors
/// The transport error when no connection (or no handshake) could be made.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&ClientTls>,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some(t) => {
            endpoint
                .connect_with_connector(Connector {
                    config: t.config.clone(),
                })
                .await
        }
        None => endpoint.connect().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    #[test]
    fn unusable_files_are_named_in_the_error() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let other = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .and_then(|p| p.self_signed(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        let files = TlsFiles {
            cert: write(d.path(), "c.pem", &cert.pem()),
            key: write(d.path(), "k.pem", &key.serialize_pem()),
            ca: write(d.path(), "ca.pem", &cert.pem()),
        };
        assert!(ServerTls::load(&files).is_ok());
        assert!(ClientTls::load(&files).is_ok());
        let empty = write(d.path(), "empty.pem", "");
        let wrong_key = write(d.path(), "other.pem", &other.serialize_pem());
        for (f, want) in [
            (
                TlsFiles {
                    cert: empty.clone(),
                    ..files.clone()
                },
                format!(
                    "TLS certificate {}: no `BEGIN CERTIFICATE` block",
                    empty.display()
                ),
            ),
            (
                TlsFiles {
                    key: d.path().join("nope.pem"),
                    ..files.clone()
                },
                format!(
                    "TLS key {}: cannot read",
                    d.path().join("nope.pem").display()
                ),
            ),
            (
                TlsFiles {
                    key: wrong_key.clone(),
                    ..files.clone()
                },
                format!(
                    "TLS key {}: does not match certificate {}",
                    wrong_key.display(),
                    files.cert.display()
                ),
            ),
            (
                TlsFiles {
                    ca: empty.clone(),
                    ..files.clone()
                },
                format!("TLS CA {}", empty.display()),
            ),
        ] {
            let e = ServerTls::load(&f)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with(&want), "want `{want}`: {e}");
        }
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_change_keeps_the_old_value() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = write(d.path(), "v", "1");
        let path = f.clone();
        let r = Reloading::new("test", vec![f.clone()], move || {
            let t = std::fs::read_to_string(&path).map_err(|source| TlsError::Read {
                what: "test",
                path: path.clone(),
                source,
            })?;
            t.trim().parse::<u32>().map_err(|e| TlsError::Invalid {
                what: "test",
                path: path.clone(),
                message: e.to_string(),
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(*r.current(), 1);
        let swap = |text: &str| {
            let tmp = write(d.path(), "v.new", text);
            std::fs::rename(tmp, &f).unwrap_or_else(|e| panic!("{e}"));
        };
        swap("22");
        assert_eq!(*r.current(), 22);
        swap("bad");
        assert_eq!(
            *r.current(),
            22,
            "a file that does not load keeps the old value"
        );
        swap("333");
        assert_eq!(*r.current(), 333);
    }
}
