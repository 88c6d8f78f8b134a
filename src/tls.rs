//! TLS termination for `cashloop serve`: the certificate chain and private key (PEM files
//! named in `[server.tls]`) loaded into a rustls server configuration at startup, and a
//! listener that accepts TCP connections and completes the TLS handshake before axum sees
//! them. rustls (ring provider) offers TLS 1.3 and 1.2 only; ALPN offers HTTP/1.1 only,
//! the one HTTP version the server speaks.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Handshakes in progress at once; beyond this the listener stops accepting until one ends.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 1024;
/// Completed handshakes waiting for the HTTP server to pick them up.
const READY_QUEUE_MAX: usize = 64;
/// Pause after an `accept` error that is not about one connection (e.g. out of descriptors).
const ACCEPT_ERROR_PAUSE_MS: u64 = 1000;

/// Which of the two configured files a loading error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemFile {
    Cert,
    Key,
}

/// Why the certificate or key could not be loaded. The message never contains key material.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub file: PemFile,
    pub message: String,
}

fn load_error(file: PemFile, message: impl Into<String>) -> LoadError {
    LoadError {
        file,
        message: message.into(),
    }
}

/// TLS as configured: where the files are, and the server configuration built from them.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server_config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads and checks the certificate chain (leaf first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1 PEM), and builds the server configuration.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<TlsSettings, LoadError> {
        let cert_pem = std::fs::read(cert_file).map_err(|e| {
            load_error(
                PemFile::Cert,
                format!("cannot read {}: {e}", cert_file.display()),
            )
        })?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                load_error(
                    PemFile::Cert,
                    format!("{}: not valid PEM: {e}", cert_file.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(load_error(
                PemFile::Cert,
                format!(
                    "no certificate found in {} (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                    cert_file.display()
                ),
            ));
        }
        let key_pem = std::fs::read(key_file).map_err(|e| {
            load_error(
                PemFile::Key,
                format!("cannot read {}: {e}", key_file.display()),
            )
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => load_error(
                PemFile::Key,
                format!(
                    "no private key found in {} (expected an unencrypted PKCS#8, PKCS#1 or SEC1 PEM key)",
                    key_file.display()
                ),
            ),
            // pem::Error's text names the PEM structure at fault, never the key bytes.
            e => load_error(
                PemFile::Key,
                format!("{}: not valid PEM: {e}", key_file.display()),
            ),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Load the key on its own first, so an unusable key is reported as the key's fault.
        provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| {
                load_error(
                    PemFile::Key,
                    format!("{}: not a usable private key: {e}", key_file.display()),
                )
            })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.3 and 1.2")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => load_error(
                    PemFile::Key,
                    format!(
                        "{} does not match the certificate in server.tls.cert_file",
                        key_file.display()
                    ),
                ),
                e => load_error(
                    PemFile::Cert,
                    format!("{}: unusable certificate: {e}", cert_file.display()),
                ),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsSettings {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            server_config: Arc::new(config),
        })
    }
}

/// An [`axum::serve::Listener`] that yields connections whose TLS handshake has completed.
///
/// A background task accepts TCP connections and runs each handshake in its own task, bounded
/// by [`HANDSHAKE_TIMEOUT_MS`] and [`HANDSHAKES_IN_FLIGHT_MAX`], so a slow or hostile client
/// delays nobody else. A failed handshake is logged at debug level and the connection
/// dropped; plain HTTP on this port gets no HTTP answer. Dropping the listener (axum does so
/// when graceful shutdown starts) stops accepting and abandons unfinished handshakes.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE_MAX);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            local_addr,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop never ends on its own (it is only aborted, by our Drop).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    // Dropped (aborting every handshake in it) when this task is aborted.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            // Reap finished handshakes; when at the limit, this is the only branch enabled.
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept(), if handshakes.len() < HANDSHAKES_IN_FLIGHT_MAX => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; pausing");
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let ready = ready.clone();
                handshakes.spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            // Fails only when the server has stopped accepting: drop it.
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Errors that concern one connection only (the next `accept` may well succeed).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
