//! Ordinary SQL connections through tokio-postgres, to a [`PgTarget`], with TLS as
//! [`crate::tls::for_target`] decides (libpq's `sslmode` rules, `prefer`'s plain-text
//! retry included). [`ConnectError`] says where and as whom the connection failed.

use crate::settings::PgTarget;
use crate::tls::TlsError;

/// Why an SQL connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TLS settings cannot work (a missing or unreadable root certificate file).
    #[error(transparent)]
    TlsSetup(#[from] TlsError),
    /// The server could not be reached, refused the connection or the credentials.
    #[error("cannot connect to PostgreSQL at {place} as {user}: {why}")]
    Connect {
        /// `host:port` or `socket <path>`.
        place: String,
        /// The role.
        user: String,
        /// tokio-postgres's error in words (the server's message when it sent one).
        why: String,
        /// tokio-postgres's error, for callers that look at it (its SQLSTATE, …). Not a
        /// `source`: its text is already in `why`, in other words.
        error: tokio_postgres::Error,
    },
}

impl ConnectError {
    /// The SQLSTATE the server answered with, if it refused the connection itself.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnectError::Connect { error, .. } => error.as_db_error().map(|d| d.code().code()),
            ConnectError::TlsSetup(_) => None,
        }
    }
}

/// Connects for ordinary SQL, with TLS as [`crate::tls::for_target`] decides. The
/// connection task runs in the background.
///
/// Under `prefer`, a failed TLS handshake or a server error on the TLS connection is
/// followed by one plain-text attempt, as libpq does (e.g. `hostnossl` lines in pg_hba.conf).
pub async fn connect(target: &PgTarget) -> Result<tokio_postgres::Client, ConnectError> {
    let tls = crate::tls::for_target(target)?;
    let first = connect_with(target, tls.as_ref()).await;
    let result = match (first, &tls) {
        (Err(e), Some(t)) if !t.required && (is_tls_failure(&e) || e.as_db_error().is_some()) => {
            tracing::debug!(
                "sslmode=prefer: the TLS attempt failed ({}), retrying without TLS",
                describe_pg_error(&e)
            );
            connect_with(target, None).await
        }
        (r, _) => r,
    };
    let (client, connection) = result.map_err(|e| {
        let place = if target.host.starts_with('/') {
            format!("socket {}/.s.PGSQL.{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let mut why = describe_pg_error(&e);
        // tokio-postgres's words when the server answers the SSLRequest with `N`.
        if why.ends_with("server does not support TLS") {
            why.push_str(
                " (pg_sslmode requires TLS: turn ssl on in postgresql.conf, or use \
                 pg_sslmode=prefer)",
            );
        }
        ConnectError::Connect {
            place,
            user: target.user.clone(),
            why,
            error: e,
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    crate::tls::RustlsStream<tokio_postgres::Socket>,
>;

/// One attempt: with TLS (`Prefer` or `Require` in tokio-postgres's terms) or plain.
async fn connect_with(
    target: &PgTarget,
    tls: Option<&crate::tls::Tls>,
) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
    use tokio_postgres::config::SslMode as TpSslMode;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .user(&target.user)
        .dbname(&target.dbname)
        .application_name("tidemark")
        .ssl_mode(match tls {
            None => TpSslMode::Disable,
            Some(t) if t.required => TpSslMode::Require,
            Some(_) => TpSslMode::Prefer,
        });
    config.connect_timeout(std::time::Duration::from_secs(10));
    if let Some(p) = &target.password {
        config.password(p.expose());
    }
    let make = crate::tls::MakeRustlsConnect(tls.map(|t| t.config.clone()));
    config.connect(make).await
}

/// Whether tokio-postgres failed in the TLS handshake (our connector's error).
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<crate::tls::HandshakeError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// tokio-postgres's error with its cause chain on one line.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
