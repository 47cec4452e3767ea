//! TLS to PostgreSQL with libpq's `sslmode` semantics, on rustls.
//!
//! `tokio-postgres` understands `sslmode=disable|prefer|require` but not
//! `verify-ca`/`verify-full`, and no `sslrootcert`; this module takes those
//! off the URL and builds the matching rustls verifier:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (libpq's default) | if the server offers it | no |
//! | `require` | yes | no (as libpq without a root certificate) |
//! | `verify-ca` | yes | chain to `sslrootcert` |
//! | `verify-full` | yes | chain to `sslrootcert` and host name |
//!
//! `sslrootcert` is a PEM file, or `system` for the platform's roots; the
//! default is `~/.postgresql/root.crt`, as libpq's. Client certificates
//! (`sslcert`/`sslkey`) are not supported yet and are refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, no certificate check.
    Prefer,
    /// TLS, no certificate check.
    Require,
    /// TLS, certificate chain checked.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The platform's roots (`sslrootcert=system`).
    System,
}

/// The TLS part of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Mode.
    pub mode: SslMode,
    /// Roots for `verify-*`.
    pub root_cert: Option<RootCert>,
}

/// Takes `sslmode` and `sslrootcert` off a `postgres://` URL: returns the URL
/// for `tokio-postgres` (with `sslmode` it understands) and the settings.
/// Key-value connection strings pass through unchanged (their `sslmode` is
/// read by `tokio-postgres`: `disable`, `prefer`, `require`).
///
/// # Errors
/// An unknown `sslmode`, or client-certificate parameters, by name.
pub fn split_tls_params(url: &str) -> Result<(String, TlsSettings), String> {
    let default = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.to_owned(), default));
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return Ok((url.to_owned(), default)); // tokio-postgres reports it
    };
    let mut settings = default;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                settings.mode = match v.as_ref() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ));
                    }
                };
            }
            "sslrootcert" => {
                settings.root_cert = Some(if v == "system" {
                    RootCert::System
                } else {
                    RootCert::File(PathBuf::from(v.as_ref()))
                });
            }
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!("{k} (client certificates) is not supported yet"));
            }
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    let pg_mode = match settings.mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    kept.push(("sslmode".into(), pg_mode.into()));
    // Percent-encoded, not form-encoded: tokio-postgres decodes `%20` but
    // reads `+` literally (`options=-c%20search_path%3Dx` must survive).
    let enc = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let query = kept
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    parsed.set_query(Some(&query));
    Ok((parsed.into(), settings))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(settings: &TlsSettings) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    let root = settings.root_cert.clone().unwrap_or_else(|| {
        RootCert::File(
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".postgresql/root.crt"),
        )
    });
    match root {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = store.add(c);
            }
        }
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                store
                    .add(c)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
    }
    if store.is_empty() {
        return Err("sslrootcert holds no certificate".into());
    }
    Ok(store)
}

/// The rustls client configuration for `settings` (`None` for `disable`).
///
/// # Errors
/// Unreadable or empty root certificates.
pub fn client_config(settings: &TlsSettings) -> Result<Option<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(NoCertCheck(provider())),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(settings)?),
                provider(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            if settings.mode == SslMode::VerifyFull {
                inner
            } else {
                Arc::new(ChainOnly(inner))
            }
        }
    };
    Ok(Some(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// Connects one plain client (no pool) to `url` with its `sslmode`
/// honoured, for tools such as the benchmarks.
///
/// # Errors
/// Bad parameters, roots, or the connection itself.
pub async fn connect_one(url: &str) -> Result<tokio_postgres::Client, String> {
    let (url, settings) = split_tls_params(url)?;
    match client_config(&settings)? {
        None => {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(client)
        }
        Some(c) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(c);
            let (client, conn) = tokio_postgres::connect(&url, tls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(client)
        }
    }
}

/// `require`/`prefer`: encrypt, accept any certificate (libpq's behaviour
/// without a root certificate); handshake signatures are still checked.
#[derive(Debug)]
struct NoCertCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name may differ.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn libpq_parameters_come_off_the_url() {
        let (u, s) = split_tls_params(
            "postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(RootCert::File("/ca.pem".into())));
        assert!(
            u.contains("sslmode=require")
                && u.contains("application_name=x")
                && !u.contains("sslrootcert"),
            "{u}"
        );
        let (u, s) = split_tls_params("postgres://h/db").unwrap();
        assert_eq!(
            (s.mode, u.contains("sslmode=prefer")),
            (SslMode::Prefer, true)
        );
        let (_, s) =
            split_tls_params("postgresql://h/db?sslmode=disable&sslrootcert=system").unwrap();
        assert_eq!(
            (s.mode, s.root_cert),
            (SslMode::Disable, Some(RootCert::System))
        );
        let e = split_tls_params("postgres://h/db?sslmode=maybe").unwrap_err();
        assert!(e.contains("sslmode \"maybe\""), "{e}");
        let e = split_tls_params("postgres://h/db?sslcert=/c.pem").unwrap_err();
        assert!(e.contains("sslcert"), "{e}");
        assert_eq!(
            split_tls_params("host=h sslmode=require").unwrap().0,
            "host=h sslmode=require"
        );
        // A space in a kept parameter stays a space for tokio-postgres.
        let (u, _) = split_tls_params("postgres://h/db?options=-c%20search_path%3Dx").unwrap();
        let cfg: tokio_postgres::Config = u.parse().unwrap();
        assert_eq!(cfg.get_options(), Some("-c search_path=x"), "{u}");
    }

    #[test]
    fn verify_modes_need_readable_roots() {
        let s = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCert::File("/nonexistent/ca.pem".into())),
        };
        let e = client_config(&s).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let s = TlsSettings {
            mode: SslMode::Disable,
            root_cert: None,
        };
        assert!(client_config(&s).unwrap().is_none());
        let s = TlsSettings {
            mode: SslMode::Require,
            root_cert: None,
        };
        assert!(client_config(&s).unwrap().is_some());
    }
}
