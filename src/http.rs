//! The HTTP listener: a connection limit, a header timeout that also
//! closes idle keep-alive connections, TLS (rustls) reloaded on SIGHUP, and
//! a bounded graceful shutdown.
//!
//! axum's `serve` has none of these knobs, so connections are accepted here
//! and each is served by hyper's HTTP/1 connection with a timer: a client
//! that does not send a whole request head within `header_timeout` (from
//! when the connection opens or its previous response ended) is closed,
//! which is what stops slowloris and idle connections alike. Request bodies
//! are timed by the handlers that read them ([`crate::api`]).

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{ServerSettings, TlsFiles};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("server.{key}: {path}: {message}")]
    File {
        /// The config key naming the file.
        key: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the pair (a key that does not match the certificate).
    #[error("server.tls_cert_file / server.tls_key_file: {0}")]
    Config(String),
}

/// Loads a certificate chain and key into a rustls server config.
///
/// # Errors
/// [`TlsError`] naming the file and what is wrong with it.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let file_err = |key: &'static str, path: &Path, message: String| TlsError::File {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_err("tls_cert_file", &files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("tls_cert_file", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(
            "tls_cert_file",
            &files.cert,
            "no CERTIFICATE in the file".into(),
        ));
    }
    // The key's error never shows the key itself.
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        file_err(
            "tls_key_file",
            &files.key,
            format!(
                "no usable private key ({})",
                e.to_string().chars().take(80).collect::<String>()
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The TLS config in use, swapped on SIGHUP.
#[derive(Debug, Clone)]
struct Tls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl Tls {
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let c = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tokio_rustls::TlsAcceptor::from(c)
    }

    /// Reads the files again; on failure the previous certificate stays.
    fn reload(&self) {
        match load_tls(&self.files) {
            Ok(c) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
                tracing::info!("TLS certificate reloaded");
                metrics::counter!("trailkeep_tls_reloads_total", "outcome" => "ok").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %crate::report::Chain(&e), "TLS reload failed; the previous certificate stays in use");
                metrics::counter!("trailkeep_tls_reloads_total", "outcome" => "failed")
                    .increment(1);
            }
        }
    }
}

/// Serves `app` on `listener` with the limits of `settings` until
/// `shutdown` resolves; then stops accepting, lets in-flight requests
/// finish for up to `shutdown_grace`, and closes what is left.
///
/// # Errors
/// TLS files that cannot be loaded (checked before the first accept).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    settings: &ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TlsError> {
    let tls = match &settings.tls {
        None => None,
        Some(files) => Some(Tls {
            files: files.clone(),
            current: Arc::new(RwLock::new(load_tls(files)?)),
        }),
    };
    let reloader = tls.clone().map(|t| tokio::spawn(reload_on_sighup(t)));
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    let mut conns = tokio::task::JoinSet::new();
    let header_timeout = settings.header_timeout;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little
                        // rather than spin.
                        tracing::warn!(error = %crate::report::Chain(&e), "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    metrics::counter!("trailkeep_connections_refused_total").increment(1);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let http = http.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    match tls {
                        None => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn).await;
                        }
                        Some(tls) => {
                            // The handshake counts against the header timeout.
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(header_timeout, tls.acceptor().accept(stream)).await
                            else {
                                return;
                            };
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn).await;
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    if let Some(r) = reloader {
        r.abort();
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(open = conns.len(), "shutdown grace over; closing the connections still open");
        }
    }
    // Whatever is left holds router clones (and with them the writer):
    // drop them so the log can stop.
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

async fn reload_on_sighup(tls: Tls) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tls.reload();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        std::future::pending::<()>().await;
    }
}
