//! TLS for tidemark's PostgreSQL connections (SQL through tokio-postgres, and the
//! replication client), with rustls and libpq's `sslmode` rules.
//!
//! - [`for_target`] decides from a [`PgTarget`] whether to ask for TLS at all and builds
//!   the rustls [`ClientConfig`]: `disable` and `allow` never ask (tidemark does not do
//!   `allow`'s "plain first, TLS on refusal" dance); unix sockets never ask, whatever the
//!   mode, because libpq documents that "sslmode is ignored for Unix domain socket
//!   communication" (and the server answers `N` there anyway); `prefer`, `require` and
//!   `verify-*` ask.
//! - Verification follows libpq: `verify-ca` checks the chain against the root
//!   certificates, `verify-full` also the host name (DNS or IP subject alternative names).
//!   `require` and `prefer` check nothing, unless the root certificate file exists, in
//!   which case they check the chain as `verify-ca` does (libpq: "If a root CA file is
//!   present, verify the certificate in the same way as if verify-ca was specified").
//!   The root certificate file is `pg_sslrootcert`, else `PGSSLROOTCERT`, else
//!   `~/.postgresql/root.crt` (resolved in [`crate::settings::resolve`]).
//! - [`MakeRustlsConnect`] plugs that configuration into tokio-postgres; the replication
//!   client wraps its socket itself after the SSLRequest answer (see
//!   [`crate::conn`]).
//!
//! The crypto provider is aws-lc-rs, passed explicitly, so nothing depends on a
//! process-wide default provider. Not supported: client certificates (`sslcert`,
//! `sslkey`), CRLs (`sslcrl`), `sslrootcert=system`, and channel binding (SCRAM runs
//! without `-PLUS`, as libpq's `channel_binding=prefer` does when it cannot bind).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::settings::{PgTarget, SslMode};

/// Why TLS cannot be set up as the settings ask (before any connection is tried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `sslrootcert=system`, which tidemark does not support.
    #[error("pg_sslrootcert=system (the system's CA store) is not supported: name a PEM file")]
    SystemRootsUnsupported,
    /// `verify-ca`/`verify-full` without a root certificate file.
    #[error("{}", missing_root_message(*.mode, .looked.as_deref()))]
    MissingRoots {
        /// The mode that needs them.
        mode: SslMode,
        /// The file looked for, if any could be named.
        looked: Option<PathBuf>,
    },
    /// The root certificate file cannot be read, or holds no certificate.
    #[error("cannot read root certificate file {}: {reason}", path.display())]
    RootFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refuses the root certificates.
    #[error("root certificate file {}: {reason}", path.display())]
    Verifier {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// rustls refuses the configuration.
    #[error("TLS setup: {0}")]
    Setup(String),
    /// The host is not something a certificate can name.
    #[error("{host:?} is not a host name TLS can use: {reason}")]
    BadServerName {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Not at all (`require`/`prefer` without a root certificate file).
    None,
    /// The chain, against the root certificates; not the host name.
    Chain,
    /// The chain and the host name.
    Full,
}

/// TLS as one connection should try it.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Whether a server that refuses TLS is an error (`require`, `verify-*`) rather than
    /// a reason to continue in plain text (`prefer`).
    pub required: bool,
    /// What is checked.
    pub verification: Verification,
    /// The rustls configuration.
    pub config: Arc<ClientConfig>,
}

impl Tls {
    /// The name rustls checks (`verify-full`) and sends as SNI (DNS names only).
    pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(host.to_string()).map_err(|e| TlsError::BadServerName {
            host: host.to_string(),
            reason: e.to_string(),
        })
    }
}

/// The aws-lc-rs provider, explicitly (never the process default).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Whether and how `target` uses TLS: `None` for a plain connection (see the module doc).
pub fn for_target(target: &PgTarget) -> Result<Option<Tls>, TlsError> {
    if Path::new(&target.host).is_absolute() {
        return Ok(None);
    }
    let required = match target.sslmode {
        SslMode::Disable | SslMode::Allow => return Ok(None),
        SslMode::Prefer => false,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => true,
    };
    if target.sslrootcert.as_deref() == Some(Path::new("system")) {
        return Err(TlsError::SystemRootsUnsupported);
    }
    let root_file = target
        .sslrootcert
        .as_deref()
        .filter(|p| p.exists())
        .map(Path::to_path_buf);
    let verification = match (target.sslmode, &root_file) {
        (SslMode::VerifyFull, Some(_)) => Verification::Full,
        (SslMode::VerifyCa, Some(_)) | (SslMode::Prefer | SslMode::Require, Some(_)) => {
            Verification::Chain
        }
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(TlsError::MissingRoots {
                mode: target.sslmode,
                looked: target.sslrootcert.clone(),
            })
        }
        _ => Verification::None,
    };
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match &root_file {
        None => Arc::new(NoVerification {
            algorithms: provider.signature_verification_algorithms,
        }),
        Some(file) => {
            let roots = Arc::new(load_roots(file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier {
                    path: file.clone(),
                    reason: e.to_string(),
                })?;
            if verification == Verification::Full {
                webpki
            } else {
                Arc::new(ChainOnly { inner: webpki })
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(Tls {
        required,
        verification,
        config: Arc::new(config),
    }))
}

fn missing_root_message(mode: SslMode, looked: Option<&Path>) -> String {
    let mode = match mode {
        SslMode::VerifyCa => "verify-ca",
        _ => "verify-full",
    };
    match looked {
        Some(p) => format!(
            "pg_sslmode={mode} needs root certificates, and the root certificate file {} does not \
             exist: set pg_sslrootcert (or PGSSLROOTCERT) to the CA's PEM file, or use \
             pg_sslmode=require to skip certificate verification",
            p.display()
        ),
        None => format!(
            "pg_sslmode={mode} needs root certificates: set pg_sslrootcert (or PGSSLROOTCERT) to \
             the CA's PEM file (HOME is not set, so ~/.postgresql/root.crt could not be looked at)"
        ),
    }
}

/// Reads every certificate of a PEM file into a root store.
fn load_roots(file: &Path) -> Result<RootCertStore, TlsError> {
    let what = |e: &dyn std::fmt::Display| TlsError::RootFile {
        path: file.to_path_buf(),
        reason: e.to_string(),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file).map_err(|e| what(&e))? {
        let cert = cert.map_err(|e| what(&e))?;
        roots.add(cert).map_err(|e| what(&e))?;
    }
    if roots.is_empty() {
        return Err(what(&"no PEM certificate in it"));
    }
    Ok(roots)
}

/// `require` without root certificates: any certificate is accepted (libpq's rule: the
/// connection is encrypted, not authenticated), but the handshake signatures are still
/// checked with the provider's algorithms, so the server must hold the certificate's key.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's checks minus the host name. webpki checks the chain (and
/// validity dates) before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A failed TLS handshake, kept as its own type so that callers can tell it apart from
/// other connection errors in tokio-postgres's cause chain (`prefer` then retries plain).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandshakeError(pub io::Error);

/// tokio-postgres's `MakeTlsConnect` over tokio-rustls. `None` never connects (use it
/// with `SslMode::Disable`: tokio-postgres still asks for a connector).
#[derive(Clone)]
pub struct MakeRustlsConnect(pub Option<Arc<ClientConfig>>);

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, HandshakeError> {
        // The name is checked when the handshake starts: tokio-postgres asks for a
        // connector even for plain and unix-socket connections (with an empty name).
        Ok(RustlsConnect {
            config: self.0.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One handshake for tokio-postgres.
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    domain: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                HandshakeError(io::Error::other("TLS is off for this connection"))
            })?;
            let name = Tls::server_name(&self.domain)
                .map_err(|e| HandshakeError(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(HandshakeError)?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS stream for tokio-postgres (no channel binding data: SCRAM runs without `-PLUS`).
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
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
}

/// The default root certificate file, `~/.postgresql/root.crt`, as libpq looks for it.
pub fn default_root_cert(home: Option<&str>) -> Option<PathBuf> {
    home.map(|h| Path::new(h).join(".postgresql").join("root.crt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, mode: SslMode, root: Option<PathBuf>) -> PgTarget {
        PgTarget {
            host: host.into(),
            port: 5432,
            user: "u".into(),
            dbname: "postgres".into(),
            password: None,
            sslmode: mode,
            sslrootcert: root,
        }
    }

    #[test]
    fn modes_map_to_libpq_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("root.crt");
        let t = |host: &str, mode| for_target(&target(host, mode, Some(missing.clone())));
        // Never TLS: disable, allow, and any unix socket.
        assert!(t("db", SslMode::Disable).unwrap().is_none());
        assert!(t("db", SslMode::Allow).unwrap().is_none());
        assert!(t("/run/postgresql", SslMode::VerifyFull).unwrap().is_none());
        let prefer = t("db", SslMode::Prefer).unwrap().unwrap();
        assert!(!prefer.required);
        assert_eq!(prefer.verification, Verification::None);
        let require = t("db", SslMode::Require).unwrap().unwrap();
        assert!(require.required);
        assert_eq!(require.verification, Verification::None);
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = t("db", mode).unwrap_err().to_string();
            assert!(e.contains(&missing.display().to_string()), "{e}");
            assert!(e.contains("pg_sslrootcert"), "{e}");
        }
        let e = for_target(&target("db", SslMode::VerifyCa, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOME"), "{e}");
        let e = for_target(&target("db", SslMode::VerifyFull, Some("system".into())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        // A file that is there but holds no certificate is named.
        std::fs::write(&missing, "not a certificate\n").unwrap();
        let e = t("db", SslMode::Require).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn server_names_accept_dns_names_and_ip_addresses() {
        assert!(matches!(
            Tls::server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            Tls::server_name("db.example").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(Tls::server_name("not a name").is_err());
        assert_eq!(
            default_root_cert(Some("/home/u")).unwrap(),
            Path::new("/home/u/.postgresql/root.crt")
        );
        assert_eq!(default_root_cert(None), None);
    }
}
