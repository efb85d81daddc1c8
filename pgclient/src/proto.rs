//! The replication protocol without IO: message framing, authentication, simple-query
//! results, and the replication commands' result rows.
//!
//! Nothing here touches a socket, a runtime or a clock (see [`super::conn`] for that): the
//! caller appends what it reads to a `BytesMut` and calls [`decode`], hands each message to
//! an [`Authenticator`] or a [`SimpleQuery`], and sends whatever they framed. Framing, the
//! MD5 hash and SCRAM-SHA-256 come from `postgres-protocol`; the one backend message it
//! cannot parse, CopyBothResponse (`W`, the reply to `START_REPLICATION`), is recognised
//! here before its parser runs.
//!
//! Main types: [`Backend`] (a decoded message), [`Authenticator`], [`SimpleQuery`],
//! [`QueryResult`], [`IdentifySystem`], [`TimelineHistory`], [`ServerError`], [`ProtoError`].

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tidemark_pg::Lsn;
// postgres-protocol's iterators implement this trait; tokio-postgres re-exports the crate
// (the same version), which saves a dependency. Only the trait is used: no IO comes with it.
use tokio_postgres::fallible_iterator::FallibleIterator;

/// CopyBothResponse, which `postgres_protocol::message::backend::Message::parse` rejects.
pub const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// The `application_name` the server shows in `pg_stat_replication`.
pub const APPLICATION_NAME: &str = "tidemark";

/// An `ErrorResponse` from the server: its SQLSTATE and message (plus detail and hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// SQLSTATE, e.g. `28P01` (invalid password).
    pub code: String,
    /// The primary message.
    pub message: String,
    /// DETAIL, if any.
    pub detail: Option<String>,
    /// HINT, if any.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl ServerError {
    fn parse(mut fields: ErrorFields<'_>) -> Result<ServerError, ProtoError> {
        let mut e = ServerError {
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        while let Some(field) = fields.next().map_err(bad_message)? {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        Ok(e)
    }
}

/// A `NoticeResponse` from the server: a warning (or notice) that does not stop the
/// command. During `BASE_BACKUP` the server reports this way what it skipped ("skipping
/// special file"), and every page whose data checksum failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNotice {
    /// The severity, untranslated when the server sends it (`WARNING`, `NOTICE`, …).
    pub severity: String,
    /// SQLSTATE (`01000` for a plain warning).
    pub code: String,
    /// The primary message.
    pub message: String,
    /// DETAIL, if any.
    pub detail: Option<String>,
}

impl fmt::Display for ServerNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl ServerNotice {
    fn parse(mut fields: ErrorFields<'_>) -> Result<ServerNotice, ProtoError> {
        let mut n = ServerNotice {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        let mut localized = String::new();
        while let Some(field) = fields.next().map_err(bad_message)? {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                // `V` is never translated (PostgreSQL 9.6+); `S` may be.
                b'V' => n.severity = value,
                b'S' => localized = value,
                b'C' => n.code = value,
                b'M' => n.message = value,
                b'D' => n.detail = Some(value),
                _ => {}
            }
        }
        if n.severity.is_empty() {
            n.severity = localized;
        }
        Ok(n)
    }

    /// The same, from an error the caller chose to carry on after.
    fn from_error(e: ServerError) -> ServerNotice {
        ServerNotice {
            severity: "ERROR".into(),
            code: e.code,
            message: e.message,
            detail: e.detail,
        }
    }

    /// Whether this is the server's verdict that data checksums failed: the `ERROR`
    /// `BASE_BACKUP` ends with (SQLSTATE `XX001`, data_corrupted) after it has sent the
    /// whole backup and its end position, once per backup with any failed page.
    pub fn is_checksum_failure(&self) -> bool {
        self.code == DATA_CORRUPTED
    }
}

/// SQLSTATE data_corrupted: what `BASE_BACKUP` ends with when data checksums failed.
pub const DATA_CORRUPTED: &str = "XX001";

/// What went wrong, at the protocol level. [`super::conn::ReplError`] turns these into
/// errors a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The server sent an `ErrorResponse`.
    #[error("{0}")]
    Server(ServerError),
    /// Authentication cannot proceed on the client's side (no password, an unsupported
    /// method, a SCRAM exchange that does not verify).
    #[error("{0}")]
    Auth(String),
    /// Bytes or a message sequence that do not follow the protocol.
    #[error("{0}")]
    Protocol(String),
}

fn bad_message(e: std::io::Error) -> ProtoError {
    ProtoError::Protocol(format!("malformed message from the server: {e}"))
}

/// One decoded backend message.
pub enum Backend {
    /// Everything `postgres-protocol` parses.
    Message(Message),
    /// CopyBothResponse (`W`): the server is ready for `CopyData` both ways.
    CopyBothResponse,
}

/// Decodes one backend message from the front of `buf`, removing it; `Ok(None)` (and
/// `buf` untouched) while the frame is not complete.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Backend>, ProtoError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] == COPY_BOTH_RESPONSE_TAG {
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        // Format (i8), column count (i16), one i16 format per column: at least 7 bytes.
        if len < 7 {
            return Err(ProtoError::Protocol(format!(
                "malformed CopyBothResponse: length {len}"
            )));
        }
        let total = len as usize + 1;
        if buf.len() < total {
            return Ok(None);
        }
        // Replication streams are always binary with no columns: nothing to keep.
        let _ = buf.split_to(total);
        return Ok(Some(Backend::CopyBothResponse));
    }
    Ok(Message::parse(buf)
        .map_err(bad_message)?
        .map(Backend::Message))
}

/// Frames the startup packet of a physical replication connection (`replication=true`;
/// `database` is ignored by a physical walsender, so it is usually left out).
pub fn startup_message(
    user: &str,
    database: Option<&str>,
    buf: &mut BytesMut,
) -> Result<(), ProtoError> {
    let mut params = vec![("user", user)];
    if let Some(db) = database {
        params.push(("database", db));
    }
    params.push(("replication", "true"));
    params.push(("application_name", APPLICATION_NAME));
    frontend::startup_message(params, buf)
        .map_err(|e| ProtoError::Protocol(format!("cannot frame the startup message: {e}")))
}

/// Frames a simple query (`Q`): the only query protocol a walsender accepts.
pub fn query(sql: &str, buf: &mut BytesMut) -> Result<(), ProtoError> {
    frontend::query(sql, buf)
        .map_err(|e| ProtoError::Protocol(format!("cannot frame the query: {e}")))
}

/// Frames `Terminate` (`X`), the polite goodbye.
pub fn terminate(buf: &mut BytesMut) {
    frontend::terminate(buf);
}

/// The server's one-byte answer to an SSLRequest: go ahead with the TLS handshake.
pub const SSL_ACCEPTED: u8 = b'S';
/// The server's one-byte answer to an SSLRequest: no TLS, continue in plain text.
pub const SSL_REFUSED: u8 = b'N';

/// Frames an SSLRequest (length 8, code 80877103), sent before the startup packet; the
/// server answers one byte, [`SSL_ACCEPTED`] or [`SSL_REFUSED`], and nothing else.
pub fn ssl_request(buf: &mut BytesMut) {
    frontend::ssl_request(buf);
}

/// What the server told a new session: its `ParameterStatus` values and `BackendKeyData`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `server_version`, `integer_datetimes`, … as the server reported them.
    pub parameters: BTreeMap<String, String>,
    /// The backend's process id and cancel key.
    pub backend_key: Option<(i32, i32)>,
}

/// What the caller does after [`Authenticator::handle`].
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Send what was framed (if anything) and read the next message.
    Continue,
    /// The session is ready for queries.
    Ready(Session),
}

enum AuthState {
    /// Waiting for the server's authentication request (or its `AuthenticationOk`).
    Start,
    /// SCRAM in progress: after `SASLInitialResponse` or `SASLResponse`.
    Scram(Box<ScramSha256>),
    /// `AuthenticationOk` received; parameters follow until `ReadyForQuery`.
    Authenticated,
    /// Done.
    Ready,
}

/// The startup and authentication exchange, as a state machine over backend messages:
/// trust, cleartext password, MD5 and SCRAM-SHA-256 (without channel binding: no TLS yet).
/// Anything else, an `ErrorResponse` included, is an error carrying the server's words.
pub struct Authenticator {
    user: String,
    password: Option<Vec<u8>>,
    state: AuthState,
    session: Session,
}

impl Authenticator {
    /// A new exchange for `user`, with a password if one is configured.
    pub fn new(user: &str, password: Option<&[u8]>) -> Authenticator {
        Authenticator {
            user: user.to_string(),
            password: password.map(<[u8]>::to_vec),
            state: AuthState::Start,
            session: Session::default(),
        }
    }

    fn password(&self, method: &str) -> Result<&[u8], ProtoError> {
        self.password.as_deref().ok_or_else(|| {
            ProtoError::Auth(format!(
                "the server asks for a password ({method}) for user {:?} and none is configured \
                 (pg_password, pg_password_file, PGPASSWORD or ~/.pgpass)",
                self.user
            ))
        })
    }

    /// Takes one backend message; frames any reply into `out`.
    pub fn handle(&mut self, msg: Backend, out: &mut BytesMut) -> Result<AuthStep, ProtoError> {
        let msg = match msg {
            Backend::Message(m) => m,
            Backend::CopyBothResponse => {
                return Err(ProtoError::Protocol(
                    "unexpected CopyBothResponse during startup".into(),
                ))
            }
        };
        let framing = |e: std::io::Error| ProtoError::Protocol(format!("cannot frame: {e}"));
        match (msg, &mut self.state) {
            (Message::ErrorResponse(body), _) => {
                Err(ProtoError::Server(ServerError::parse(body.fields())?))
            }
            (Message::NoticeResponse(_), _) => Ok(AuthStep::Continue),
            (Message::AuthenticationOk, AuthState::Start) => {
                self.state = AuthState::Authenticated;
                Ok(AuthStep::Continue)
            }
            (Message::AuthenticationCleartextPassword, AuthState::Start) => {
                let pw = self.password("cleartext")?;
                frontend::password_message(pw, out).map_err(framing)?;
                Ok(AuthStep::Continue)
            }
            (Message::AuthenticationMd5Password(body), AuthState::Start) => {
                let pw = self.password("md5")?;
                let hash = md5_hash(self.user.as_bytes(), pw, body.salt());
                frontend::password_message(hash.as_bytes(), out).map_err(framing)?;
                Ok(AuthStep::Continue)
            }
            (Message::AuthenticationSasl(body), AuthState::Start) => {
                let mut offered = Vec::new();
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(bad_message)? {
                    offered.push(m.to_string());
                }
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(ProtoError::Auth(format!(
                        "the server offers SASL mechanisms {offered:?}; tidemark supports {SCRAM_SHA_256} (without TLS)"
                    )));
                }
                let pw = self.password(SCRAM_SHA_256)?;
                // No TLS, so no channel binding: the GS2 header says "n" (not supported).
                let scram = ScramSha256::new(pw, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), out)
                    .map_err(framing)?;
                self.state = AuthState::Scram(Box::new(scram));
                Ok(AuthStep::Continue)
            }
            (Message::AuthenticationSaslContinue(body), AuthState::Scram(scram)) => {
                scram.update(body.data()).map_err(|e| {
                    ProtoError::Auth(format!("SCRAM: the server's first message: {e}"))
                })?;
                frontend::sasl_response(scram.message(), out).map_err(framing)?;
                Ok(AuthStep::Continue)
            }
            (Message::AuthenticationSaslFinal(body), AuthState::Scram(scram)) => {
                scram.finish(body.data()).map_err(|e| {
                    ProtoError::Auth(format!(
                        "SCRAM: the server's signature does not verify, it may not know the password: {e}"
                    ))
                })?;
                // AuthenticationOk follows.
                self.state = AuthState::Start;
                Ok(AuthStep::Continue)
            }
            (
                Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential,
                AuthState::Start,
            ) => Err(ProtoError::Auth(
                "the server asks for GSSAPI, SSPI or Kerberos authentication, which tidemark does not support: \
                 use scram-sha-256 (or md5) in pg_hba.conf for tidemark's replication connections"
                    .into(),
            )),
            (Message::ParameterStatus(body), AuthState::Authenticated) => {
                let name = body.name().map_err(bad_message)?.to_string();
                let value = body.value().map_err(bad_message)?.to_string();
                self.session.parameters.insert(name, value);
                Ok(AuthStep::Continue)
            }
            (Message::BackendKeyData(body), AuthState::Authenticated) => {
                self.session.backend_key = Some((body.process_id(), body.secret_key()));
                Ok(AuthStep::Continue)
            }
            (Message::ReadyForQuery(_), AuthState::Authenticated) => {
                self.state = AuthState::Ready;
                Ok(AuthStep::Ready(std::mem::take(&mut self.session)))
            }
            (_, _) => Err(ProtoError::Protocol(
                "unexpected message from the server during startup".into(),
            )),
        }
    }
}

/// One result set of a simple query: column names and raw (text-format) cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names, from `RowDescription`.
    pub columns: Vec<String>,
    /// Rows, from `DataRow`: `None` for NULL.
    pub rows: Vec<Vec<Option<Bytes>>>,
}

/// Collects the results of one simple query until `ReadyForQuery`. A walsender's replies
/// (`IDENTIFY_SYSTEM`, `TIMELINE_HISTORY`) are ordinary result sets.
#[derive(Debug, Default)]
pub struct SimpleQuery {
    results: Vec<QueryResult>,
    current: Option<QueryResult>,
    error: Option<ServerError>,
}

impl SimpleQuery {
    /// Waiting for the first reply.
    pub fn new() -> SimpleQuery {
        SimpleQuery::default()
    }

    /// Takes one backend message; `Some` with every result set once the server is ready
    /// again, or the server's error (the first, if several).
    pub fn handle(&mut self, msg: Backend) -> Result<Option<Vec<QueryResult>>, ProtoError> {
        let msg = match msg {
            Backend::Message(m) => m,
            Backend::CopyBothResponse => {
                return Err(ProtoError::Protocol(
                    "the server started a CopyBoth stream in reply to a simple query".into(),
                ))
            }
        };
        match msg {
            Message::RowDescription(body) => {
                let mut columns = Vec::new();
                let mut fields = body.fields();
                while let Some(f) = fields.next().map_err(bad_message)? {
                    columns.push(f.name().to_string());
                }
                self.current = Some(QueryResult {
                    columns,
                    rows: Vec::new(),
                });
            }
            Message::DataRow(body) => {
                let current = self
                    .current
                    .as_mut()
                    .ok_or_else(|| ProtoError::Protocol("DataRow before RowDescription".into()))?;
                let storage = body.buffer_bytes();
                let mut ranges = body.ranges();
                let mut row = Vec::new();
                while let Some(r) = ranges.next().map_err(bad_message)? {
                    row.push(r.map(|r| storage.slice(r)));
                }
                if row.len() != current.columns.len() {
                    return Err(ProtoError::Protocol(format!(
                        "DataRow with {} cells for {} columns",
                        row.len(),
                        current.columns.len()
                    )));
                }
                current.rows.push(row);
            }
            Message::CommandComplete(body) => {
                body.tag().map_err(bad_message)?;
                self.results.push(self.current.take().unwrap_or_default());
            }
            Message::EmptyQueryResponse
            | Message::NoticeResponse(_)
            | Message::ParameterStatus(_) => {}
            Message::ErrorResponse(body) => {
                let e = ServerError::parse(body.fields())?;
                self.error.get_or_insert(e);
            }
            Message::ReadyForQuery(_) => {
                return match self.error.take() {
                    Some(e) => Err(ProtoError::Server(e)),
                    None => Ok(Some(std::mem::take(&mut self.results))),
                };
            }
            _ => {
                return Err(ProtoError::Protocol(
                    "unexpected message in reply to a simple query".into(),
                ))
            }
        }
        Ok(None)
    }
}

/// The one row a command returns, checked against the columns it must have.
fn single_row<'a>(
    command: &str,
    results: &'a [QueryResult],
    columns: &[&str],
) -> Result<&'a [Option<Bytes>], ProtoError> {
    let bad = |why: String| ProtoError::Protocol(format!("{command}: {why}"));
    let [result] = results else {
        return Err(bad(format!("{} result sets, expected 1", results.len())));
    };
    if result.columns.len() < columns.len()
        || result.columns.iter().zip(columns).any(|(a, b)| a != b)
    {
        return Err(bad(format!(
            "columns {:?}, expected {columns:?}",
            result.columns
        )));
    }
    match result.rows.as_slice() {
        [row] => Ok(row),
        rows => Err(bad(format!("{} rows, expected 1", rows.len()))),
    }
}

fn text_cell<'a>(
    command: &str,
    row: &'a [Option<Bytes>],
    i: usize,
    name: &str,
) -> Result<Option<&'a str>, ProtoError> {
    row[i]
        .as_deref()
        .map(std::str::from_utf8)
        .transpose()
        .map_err(|_| ProtoError::Protocol(format!("{command}: {name} is not UTF-8")))
}

fn required<'a>(command: &str, cell: Option<&'a str>, name: &str) -> Result<&'a str, ProtoError> {
    cell.ok_or_else(|| ProtoError::Protocol(format!("{command}: {name} is NULL")))
}

/// `IDENTIFY_SYSTEM`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    /// The cluster's system identifier.
    pub system_id: u64,
    /// The current timeline (1 or more).
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database of a logical replication connection; `None` on a physical one.
    pub dbname: Option<String>,
}

impl IdentifySystem {
    /// The command to send.
    pub const COMMAND: &'static str = "IDENTIFY_SYSTEM";

    /// Parses its result: one row `systemid, timeline, xlogpos, dbname`.
    pub fn from_results(results: &[QueryResult]) -> Result<IdentifySystem, ProtoError> {
        let c = Self::COMMAND;
        let row = single_row(c, results, &["systemid", "timeline", "xlogpos", "dbname"])?;
        let bad = |name: &str, v: &str| ProtoError::Protocol(format!("{c}: bad {name} {v:?}"));
        let sys = required(c, text_cell(c, row, 0, "systemid")?, "systemid")?;
        let tli = required(c, text_cell(c, row, 1, "timeline")?, "timeline")?;
        let pos = required(c, text_cell(c, row, 2, "xlogpos")?, "xlogpos")?;
        Ok(IdentifySystem {
            system_id: sys.parse().map_err(|_| bad("systemid", sys))?,
            timeline: tli
                .parse()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| bad("timeline", tli))?,
            xlogpos: parse_lsn(pos).ok_or_else(|| bad("xlogpos", pos))?,
            dbname: text_cell(c, row, 3, "dbname")?.map(str::to_string),
        })
    }
}

/// `TIMELINE_HISTORY tli`'s answer: the history file's name and exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// `0000000X.history`.
    pub filename: String,
    /// The file's content, byte for byte.
    pub content: Vec<u8>,
}

impl TimelineHistory {
    /// The command to send for timeline `tli` (timeline 1 has no history file).
    pub fn command(tli: u32) -> String {
        format!("TIMELINE_HISTORY {tli}")
    }

    /// Parses its result: one row `filename, content`.
    pub fn from_results(results: &[QueryResult]) -> Result<TimelineHistory, ProtoError> {
        let c = "TIMELINE_HISTORY";
        let row = single_row(c, results, &["filename", "content"])?;
        let filename = required(c, text_cell(c, row, 0, "filename")?, "filename")?;
        let content = row[1]
            .as_ref()
            .ok_or_else(|| ProtoError::Protocol(format!("{c}: content is NULL")))?;
        Ok(TimelineHistory {
            filename: filename.to_string(),
            content: content.to_vec(),
        })
    }
}

/// How to take a base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// The backup's label (in `backup_label`); any text without NUL bytes.
    pub label: String,
    /// `CHECKPOINT 'fast'` (an immediate checkpoint) rather than a spread one.
    pub fast_checkpoint: bool,
    /// Ask for a backup manifest, with CRC-32C file checksums: what `pg_verifybackup` needs
    /// to check a restored folder, at a fraction of SHA-256's cost on the server (tidemark
    /// verifies its own copy with the SHA-256 of every chunk).
    pub manifest: bool,
    /// The server's major version (`server_version`'s first number): the syntax depends on it.
    pub server_major: u32,
}

/// Quotes a replication-command string literal: the replication grammar's scanner
/// (`repl_scanner.l`) knows only `''` as an escape, and backslashes are literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `BASE_BACKUP` command for `opts`: the parenthesised option list of PostgreSQL 15+,
/// or the older keyword syntax of 13 and 14 (see `protocol-replication.html`). Always
/// `WAIT false` / `NOWAIT` (tidemark checks WAL itself) and no `WAL`: the WAL comes from
/// the archive. Servers before 13 have no manifests and are refused.
pub fn base_backup_command(opts: &BaseBackupOptions) -> Result<String, ProtoError> {
    if opts.label.contains('\0') {
        return Err(ProtoError::Protocol(
            "a backup label cannot contain NUL bytes".into(),
        ));
    }
    let label = quote_literal(&opts.label);
    match opts.server_major {
        15.. => {
            let mut parts = vec![
                format!("LABEL {label}"),
                "PROGRESS".to_string(),
                format!(
                    "CHECKPOINT '{}'",
                    if opts.fast_checkpoint {
                        "fast"
                    } else {
                        "spread"
                    }
                ),
                "WAIT false".to_string(),
            ];
            if opts.manifest {
                parts.push("MANIFEST 'yes'".into());
                parts.push("MANIFEST_CHECKSUMS 'CRC32C'".into());
            }
            Ok(format!("BASE_BACKUP ( {} )", parts.join(", ")))
        }
        13 | 14 => {
            let mut s = format!("BASE_BACKUP LABEL {label} PROGRESS");
            if opts.fast_checkpoint {
                s.push_str(" FAST");
            }
            s.push_str(" NOWAIT");
            if opts.manifest {
                s.push_str(" MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'");
            }
            Ok(s)
        }
        major => Err(ProtoError::Protocol(format!(
            "base backups need PostgreSQL 13 or later (the server is {major})"
        ))),
    }
}

/// The first number of a `server_version` ParameterStatus (`15.8`, `16beta1`,
/// `15.8 (Ubuntu 15.8-1.pgdg22.04+1)`, `9.6.24` → 9).
pub fn server_major(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// CopyData type byte (PostgreSQL 15+ `BASE_BACKUP`): a new archive starts.
pub const BACKUP_NEW_ARCHIVE_TAG: u8 = b'n';
/// CopyData type byte: a piece of the current archive or of the manifest.
pub const BACKUP_DATA_TAG: u8 = b'd';
/// CopyData type byte: progress, the bytes sent so far (int64).
pub const BACKUP_PROGRESS_TAG: u8 = b'p';
/// CopyData type byte: the manifest follows (as `d` messages).
pub const BACKUP_MANIFEST_TAG: u8 = b'm';

/// One typed CopyData message of a PostgreSQL 15+ base backup, as
/// `src/backend/backup/basebackup_copy.c` sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupCopyData {
    /// `n`: archive name\0, tablespace location\0 (empty for the main data directory).
    NewArchive {
        /// `base.tar`, `16384.tar`, …
        name: String,
        /// The tablespace's location, `None` for the data directory.
        tablespace_location: Option<String>,
    },
    /// `d`: bytes of the current archive, or of the manifest after `m`.
    Data(Bytes),
    /// `p`: bytes done so far.
    Progress(u64),
    /// `m`: the manifest follows.
    ManifestStart,
}

impl BackupCopyData {
    /// Decodes a CopyData payload (`data` keeps a slice of it, no copy).
    pub fn parse(mut payload: Bytes) -> Result<BackupCopyData, ProtoError> {
        let bad = |why: &str| ProtoError::Protocol(format!("BASE_BACKUP stream: {why}"));
        if payload.is_empty() {
            return Err(bad("an empty CopyData message"));
        }
        let tag = payload[0];
        let _ = payload.split_to(1);
        match tag {
            BACKUP_DATA_TAG => Ok(BackupCopyData::Data(payload)),
            BACKUP_PROGRESS_TAG => {
                let b: [u8; 8] = payload[..]
                    .try_into()
                    .map_err(|_| bad("a progress message that is not 8 bytes"))?;
                let done = i64::from_be_bytes(b);
                u64::try_from(done)
                    .map(BackupCopyData::Progress)
                    .map_err(|_| bad("negative progress"))
            }
            BACKUP_MANIFEST_TAG if payload.is_empty() => Ok(BackupCopyData::ManifestStart),
            BACKUP_NEW_ARCHIVE_TAG => {
                let mut fields = payload.split(|b| *b == 0);
                let name = fields.next().unwrap_or_default();
                let location = fields
                    .next()
                    .ok_or_else(|| bad("a truncated 'n' message"))?;
                if fields.next() != Some(&[][..]) || fields.next().is_some() {
                    return Err(bad("an 'n' message with trailing bytes"));
                }
                let text = |b: &[u8]| {
                    String::from_utf8(b.to_vec()).map_err(|_| bad("a non-UTF-8 archive name"))
                };
                let name = text(name)?;
                if name.is_empty() {
                    return Err(bad("an archive without a name"));
                }
                let location = text(location)?;
                Ok(BackupCopyData::NewArchive {
                    name,
                    tablespace_location: (!location.is_empty()).then_some(location),
                })
            }
            BACKUP_MANIFEST_TAG => Err(bad("an 'm' message with a body")),
            other => Err(bad(&format!(
                "an unknown CopyData type {:?}",
                other as char
            ))),
        }
    }
}

/// A tablespace in the backup, from the second result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTablespace {
    /// Its OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Its location; `None` for the main data directory.
    pub location: Option<String>,
    /// Its estimated size in kB, when `PROGRESS` was asked for.
    pub size_kb: Option<u64>,
}

/// What the server says before the data: where the backup starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStart {
    /// The backup's start LSN (its checkpoint's redo point).
    pub start_lsn: Lsn,
    /// The timeline it starts on.
    pub timeline: u32,
    /// The tablespaces, in the order their archives follow.
    pub tablespaces: Vec<BackupTablespace>,
}

/// What the server says after the data: where the backup ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEnd {
    /// The backup's end LSN: WAL up to here is needed for it to be consistent.
    pub end_lsn: Lsn,
    /// The timeline it ends on.
    pub timeline: u32,
}

/// Parses a `recptr, tli` result set (the start and the end position).
fn position(what: &str, result: Option<&QueryResult>) -> Result<(Lsn, u32), ProtoError> {
    let c = "BASE_BACKUP";
    let bad = |why: String| ProtoError::Protocol(format!("{c}: {what}: {why}"));
    let result = result.ok_or_else(|| bad("missing result set".into()))?;
    let row = single_row(c, std::slice::from_ref(result), &["recptr", "tli"])?;
    let lsn = required(c, text_cell(c, row, 0, "recptr")?, "recptr")?;
    let tli = required(c, text_cell(c, row, 1, "tli")?, "tli")?;
    Ok((
        parse_lsn(lsn).ok_or_else(|| bad(format!("bad LSN {lsn:?}")))?,
        tli.parse()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| bad(format!("bad timeline {tli:?}")))?,
    ))
}

/// An LSN in PostgreSQL's text form (`16/B374D848`), exactly: no surrounding blanks.
fn parse_lsn(s: &str) -> Option<Lsn> {
    if s.trim() != s {
        return None;
    }
    Lsn::parse(s)
}

impl BackupStart {
    /// Parses the two result sets before the CopyOutResponse: `recptr, tli`, then one
    /// row per tablespace `spcoid, spclocation, size`.
    pub fn from_results(results: &[QueryResult]) -> Result<BackupStart, ProtoError> {
        let c = "BASE_BACKUP";
        let bad = |why: String| ProtoError::Protocol(format!("{c}: {why}"));
        if results.len() != 2 {
            return Err(bad(format!(
                "{} result sets before the data, expected 2",
                results.len()
            )));
        }
        let (start_lsn, timeline) = position("start position", results.first())?;
        let list = &results[1];
        if list.columns != ["spcoid", "spclocation", "size"] {
            return Err(bad(format!(
                "tablespace columns {:?}, expected spcoid, spclocation, size",
                list.columns
            )));
        }
        let mut tablespaces = Vec::new();
        for row in &list.rows {
            let num = |i: usize, name: &str| -> Result<Option<u64>, ProtoError> {
                text_cell(c, row, i, name)?
                    .map(|v| v.parse().map_err(|_| bad(format!("bad {name} {v:?}"))))
                    .transpose()
            };
            tablespaces.push(BackupTablespace {
                oid: num(0, "spcoid")?
                    .map(|o| u32::try_from(o).map_err(|_| bad(format!("bad spcoid {o}"))))
                    .transpose()?,
                location: text_cell(c, row, 1, "spclocation")?.map(str::to_string),
                size_kb: num(2, "size")?,
            });
        }
        Ok(BackupStart {
            start_lsn,
            timeline,
            tablespaces,
        })
    }
}

impl BackupEnd {
    /// Parses the results after CopyDone: a `recptr, tli` result set (and the empty
    /// one of the command's own `CommandComplete`).
    pub fn from_results(results: &[QueryResult]) -> Result<BackupEnd, ProtoError> {
        let (end_lsn, timeline) = position(
            "end position",
            results.iter().find(|r| !r.columns.is_empty()),
        )?;
        Ok(BackupEnd { end_lsn, timeline })
    }
}

/// What [`BaseBackupReply::handle`] found in one backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupMessage {
    /// The start position and tablespaces (at the CopyOutResponse).
    Start(BackupStart),
    /// A typed CopyData message.
    Copy(BackupCopyData),
    /// CopyDone: no more data (in this CopyOut stream).
    CopyDone,
    /// PostgreSQL 13–14 only: another CopyOutResponse. Those servers send one CopyOut
    /// per tablespace, in the order of the tablespace list (the data directory last), and
    /// then one for the manifest; their CopyData messages are raw bytes.
    NextCopy,
    /// The end position, after `ReadyForQuery`: the command is over.
    End(BackupEnd),
    /// A `NoticeResponse` (a warning that does not stop the backup), in any phase; or,
    /// when checksum failures are tolerated, the error the server ends with for them.
    Notice(ServerNotice),
}

#[derive(Debug)]
enum ReplyPhase {
    /// Result sets before the data.
    Head,
    /// Inside the CopyOut stream.
    Copy,
    /// PostgreSQL 13–14: after a CopyDone, another CopyOut may follow.
    Between,
    /// After CopyDone (or an error inside the stream): result sets until ReadyForQuery.
    Tail,
    /// ReadyForQuery seen.
    Done,
}

/// The reply to `BASE_BACKUP`, as a state machine over backend messages. PostgreSQL 15+:
/// result set `recptr, tli`; result set `spcoid, spclocation, size`; CopyOutResponse;
/// CopyData messages (see [`BackupCopyData`]); CopyDone; result set `recptr, tli`;
/// CommandComplete; ReadyForQuery. PostgreSQL 13–14 ([`BaseBackupReply::new_legacy`]):
/// the same, except one CopyOut of raw tar bytes per tablespace and one for the manifest. An `ErrorResponse` anywhere ends it
/// with the server's error once `ReadyForQuery` arrives.
#[derive(Debug)]
pub struct BaseBackupReply {
    phase: ReplyPhase,
    query: SimpleQuery,
    /// The reply of a PostgreSQL 13–14 server (see [`BackupMessage::NextCopy`]).
    legacy: bool,
    /// Carry on after the server's "checksum verification failure" error (it comes after
    /// the whole backup and its end position): see [`BaseBackupReply::tolerate_checksum_failures`].
    tolerate_checksum_failures: bool,
}

impl Default for BaseBackupReply {
    fn default() -> Self {
        BaseBackupReply::new()
    }
}

impl BaseBackupReply {
    /// Waiting for the first reply to `BASE_BACKUP`.
    pub fn new() -> BaseBackupReply {
        BaseBackupReply {
            phase: ReplyPhase::Head,
            query: SimpleQuery::new(),
            legacy: false,
            tolerate_checksum_failures: false,
        }
    }

    /// Takes the server's closing "checksum verification failure during base backup"
    /// error (SQLSTATE `XX001`, sent after the data and the end position) as a
    /// [`BackupMessage::Notice`] instead of a failure, so that a backup of a cluster with
    /// damaged pages can still be completed when the operator asks for it.
    pub fn tolerate_checksum_failures(&mut self, tolerate: bool) {
        self.tolerate_checksum_failures = tolerate;
    }

    /// Waiting for the first reply of a PostgreSQL 13–14 server.
    pub fn new_legacy() -> BaseBackupReply {
        BaseBackupReply {
            legacy: true,
            ..BaseBackupReply::new()
        }
    }

    /// Whether the reply is complete (after [`BackupMessage::End`] or an error).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, ReplyPhase::Done)
    }

    /// Takes one backend message.
    pub fn handle(&mut self, msg: Backend) -> Result<Option<BackupMessage>, ProtoError> {
        let unexpected =
            |what: &str| ProtoError::Protocol(format!("BASE_BACKUP: unexpected {what}"));
        // Warnings can come in any phase (a skipped file inside the stream, the checksum
        // summary after it): every one is handed up, none is dropped.
        if !matches!(self.phase, ReplyPhase::Done) {
            match &msg {
                Backend::Message(Message::NoticeResponse(body)) => {
                    return ServerNotice::parse(body.fields())
                        .map(|n| Some(BackupMessage::Notice(n)));
                }
                Backend::Message(Message::ErrorResponse(body))
                    if self.tolerate_checksum_failures
                        && matches!(self.phase, ReplyPhase::Between | ReplyPhase::Tail) =>
                {
                    let e = ServerError::parse(body.fields())?;
                    if e.code == DATA_CORRUPTED {
                        return Ok(Some(BackupMessage::Notice(ServerNotice::from_error(e))));
                    }
                }
                _ => {}
            }
        }
        match self.phase {
            ReplyPhase::Done => Err(unexpected("message after the end")),
            ReplyPhase::Head => match msg {
                Backend::Message(Message::CopyOutResponse(_)) => {
                    if let Some(e) = self.query.error.take() {
                        self.phase = ReplyPhase::Done;
                        return Err(ProtoError::Server(e));
                    }
                    let results = std::mem::take(&mut self.query.results);
                    self.phase = ReplyPhase::Copy;
                    BackupStart::from_results(&results).map(|s| Some(BackupMessage::Start(s)))
                }
                msg => self.tail(msg, "the reply ended before the backup data"),
            },
            ReplyPhase::Copy => match msg {
                Backend::Message(Message::CopyData(body)) if self.legacy => Ok(Some(
                    BackupMessage::Copy(BackupCopyData::Data(body.into_bytes())),
                )),
                Backend::Message(Message::CopyData(body)) => {
                    BackupCopyData::parse(body.into_bytes()).map(|c| Some(BackupMessage::Copy(c)))
                }
                Backend::Message(Message::CopyDone) => {
                    self.phase = if self.legacy {
                        ReplyPhase::Between
                    } else {
                        ReplyPhase::Tail
                    };
                    Ok(Some(BackupMessage::CopyDone))
                }
                Backend::Message(Message::ParameterStatus(_)) => Ok(None),
                Backend::Message(Message::ErrorResponse(body)) => {
                    // The stream is over; the error is reported at ReadyForQuery.
                    let e = ServerError::parse(body.fields())?;
                    self.query.error.get_or_insert(e);
                    self.phase = ReplyPhase::Tail;
                    Ok(None)
                }
                _ => Err(unexpected("message inside the CopyOut stream")),
            },
            ReplyPhase::Between => match msg {
                Backend::Message(Message::CopyOutResponse(_)) => {
                    self.phase = ReplyPhase::Copy;
                    Ok(Some(BackupMessage::NextCopy))
                }
                msg => {
                    self.phase = ReplyPhase::Tail;
                    self.tail(msg, "the reply ended without an end position")
                }
            },
            ReplyPhase::Tail => self.tail(msg, "the reply ended without an end position"),
        }
    }

    /// Result sets until ReadyForQuery; then the end position (or the server's error).
    fn tail(&mut self, msg: Backend, early: &str) -> Result<Option<BackupMessage>, ProtoError> {
        let Some(results) = self.query.handle(msg).inspect_err(|_| {
            self.phase = ReplyPhase::Done;
        })?
        else {
            return Ok(None);
        };
        let head = matches!(self.phase, ReplyPhase::Head);
        self.phase = ReplyPhase::Done;
        if head {
            return Err(ProtoError::Protocol(format!("BASE_BACKUP: {early}")));
        }
        BackupEnd::from_results(&results).map(|e| Some(BackupMessage::End(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_request_is_the_eight_byte_packet() {
        let mut buf = BytesMut::new();
        ssl_request(&mut buf);
        let mut want = 8i32.to_be_bytes().to_vec();
        want.extend_from_slice(&80877103i32.to_be_bytes());
        assert_eq!(&buf[..], &want[..]);
    }

    /// A backend message: tag, length (itself included), body.
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn auth(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        msg(b'R', &body)
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn error_response(code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in [(b'S', "FATAL"), (b'C', code), (b'M', message)] {
            body.push(t);
            body.extend(cstr(v));
        }
        body.push(0);
        msg(b'E', &body)
    }

    fn parameter_status(name: &str, value: &str) -> Vec<u8> {
        msg(b'S', &[cstr(name), cstr(value)].concat())
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    fn row_description(columns: &[&str]) -> Vec<u8> {
        let mut body = (columns.len() as i16).to_be_bytes().to_vec();
        for c in columns {
            body.extend(cstr(c));
            body.extend_from_slice(&0i32.to_be_bytes()); // table oid
            body.extend_from_slice(&0i16.to_be_bytes()); // attnum
            body.extend_from_slice(&25i32.to_be_bytes()); // text
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
        msg(b'T', &body)
    }

    fn data_row(cells: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (cells.len() as i16).to_be_bytes().to_vec();
        for c in cells {
            match c {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        msg(b'D', &body)
    }

    fn command_complete(tag: &str) -> Vec<u8> {
        msg(b'C', &cstr(tag))
    }

    /// Decodes every complete message in `bytes`.
    fn decode_all(bytes: &[u8]) -> Vec<Backend> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = decode(&mut buf).unwrap() {
            out.push(m);
        }
        assert!(buf.is_empty(), "leftover bytes");
        out
    }

    /// Runs an authenticator over `server` messages; returns the last step and what it sent.
    fn run_auth(
        a: &mut Authenticator,
        server: &[Vec<u8>],
    ) -> (Result<AuthStep, ProtoError>, BytesMut) {
        let mut out = BytesMut::new();
        let mut last = Ok(AuthStep::Continue);
        for m in decode_all(&server.concat()) {
            last = a.handle(m, &mut out);
            if last.is_err() {
                break;
            }
        }
        (last, out)
    }

    /// The frontend messages in `out`: (tag, body).
    fn frontend_messages(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = i32::from_be_bytes(out[at + 1..at + 5].try_into().unwrap()) as usize;
            v.push((out[at], out[at + 5..at + 1 + len].to_vec()));
            at += 1 + len;
        }
        v
    }

    #[test]
    fn startup_message_asks_for_a_physical_replication_connection() {
        let mut buf = BytesMut::new();
        startup_message("repl", None, &mut buf).unwrap();
        let len = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len());
        assert_eq!(&buf[4..8], &196608i32.to_be_bytes(), "protocol 3.0");
        assert_eq!(
            &buf[8..],
            b"user\0repl\0replication\0true\0application_name\0tidemark\0\0"
        );
        let mut buf = BytesMut::new();
        startup_message("u", Some("db"), &mut buf).unwrap();
        assert!(buf.windows(12).any(|w| w == b"database\0db\0"));
    }

    #[test]
    fn query_and_terminate_frames() {
        let mut buf = BytesMut::new();
        query(IdentifySystem::COMMAND, &mut buf).unwrap();
        terminate(&mut buf);
        assert_eq!(
            frontend_messages(&buf),
            vec![(b'Q', b"IDENTIFY_SYSTEM\0".to_vec()), (b'X', vec![])]
        );
    }

    #[test]
    fn partial_frames_decode_to_none_until_complete() {
        let whole = [ready(), msg(b'W', &[0, 0, 0])].concat();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &whole {
            buf.extend_from_slice(&[*b]);
            if let Some(m) = decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert!(buf.is_empty());
        assert!(matches!(
            got.as_slice(),
            [
                Backend::Message(Message::ReadyForQuery(_)),
                Backend::CopyBothResponse
            ]
        ));
        // A CopyBothResponse shorter than its fixed part is refused, not waited for.
        let mut short = BytesMut::from(&msg(b'W', &[0])[..]);
        assert!(matches!(decode(&mut short), Err(ProtoError::Protocol(_))));
        let mut unknown = BytesMut::from(&msg(b'?', b"")[..]);
        assert!(matches!(decode(&mut unknown), Err(ProtoError::Protocol(_))));
    }

    #[test]
    fn trust_goes_straight_to_ready_and_keeps_the_parameters() {
        let mut a = Authenticator::new("u", None);
        let key = msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]);
        let (step, out) = run_auth(
            &mut a,
            &[
                auth(0, b""),
                parameter_status("server_version", "15.8"),
                key,
                msg(b'N', b"\0"),
                ready(),
            ],
        );
        assert!(out.is_empty());
        let Ok(AuthStep::Ready(session)) = step else {
            panic!("{step:?}")
        };
        assert_eq!(session.parameters["server_version"], "15.8");
        assert_eq!(session.backend_key, Some((42, 7)));
    }

    #[test]
    fn cleartext_and_md5_send_the_password() {
        let mut a = Authenticator::new("u", Some(b"pw"));
        let (step, out) = run_auth(&mut a, &[auth(3, b"")]);
        assert_eq!(step.unwrap(), AuthStep::Continue);
        assert_eq!(frontend_messages(&out), vec![(b'p', b"pw\0".to_vec())]);

        let mut a = Authenticator::new("md5_user", Some(b"password"));
        let (step, out) = run_auth(&mut a, &[auth(5, &[0x2a, 0x3d, 0x8f, 0xe0])]);
        assert_eq!(step.unwrap(), AuthStep::Continue);
        // md5(md5(password + user) + salt), as computed independently (and in postgres-protocol's test).
        assert_eq!(
            frontend_messages(&out),
            vec![(b'p', cstr("md562af4dd09bbb41884907a838a3233294"))]
        );
        let (step, _) = run_auth(&mut a, &[auth(0, b""), ready()]);
        assert!(matches!(step, Ok(AuthStep::Ready(_))));
    }

    #[test]
    fn a_password_request_without_a_password_says_where_to_set_one() {
        let mut a = Authenticator::new("u", None);
        let (step, _) = run_auth(&mut a, &[auth(5, &[1, 2, 3, 4])]);
        let Err(ProtoError::Auth(m)) = step else {
            panic!("{step:?}")
        };
        assert!(m.contains("md5") && m.contains("pg_password"), "{m}");
    }

    #[test]
    fn an_error_during_auth_carries_sqlstate_and_message() {
        let mut a = Authenticator::new("u", Some(b"wrong"));
        let (step, _) = run_auth(
            &mut a,
            &[
                auth(3, b""),
                error_response("28P01", "password authentication failed for user \"u\""),
            ],
        );
        let Err(ProtoError::Server(e)) = step else {
            panic!("{step:?}")
        };
        assert_eq!(e.code, "28P01");
        assert_eq!(e.message, "password authentication failed for user \"u\"");
    }

    #[test]
    fn unsupported_methods_and_sequences_are_errors() {
        for code in [2, 6, 7, 9] {
            let mut a = Authenticator::new("u", Some(b"pw"));
            let (step, _) = run_auth(&mut a, &[auth(code, b"")]);
            assert!(matches!(step, Err(ProtoError::Auth(_))), "method {code}");
        }
        let mut a = Authenticator::new("u", Some(b"pw"));
        let (step, _) = run_auth(&mut a, &[auth(10, b"SCRAM-SHA-256-PLUS\0\0")]);
        assert!(matches!(step, Err(ProtoError::Auth(_))), "{step:?}");
        // ReadyForQuery before AuthenticationOk, and a query reply during startup.
        let mut a = Authenticator::new("u", None);
        let (step, _) = run_auth(&mut a, &[ready()]);
        assert!(matches!(step, Err(ProtoError::Protocol(_))));
        let mut a = Authenticator::new("u", None);
        let (step, _) = run_auth(&mut a, &[msg(b'W', &[0, 0, 0])]);
        assert!(matches!(step, Err(ProtoError::Protocol(_))));
        // SASLContinue without a SASL start.
        let mut a = Authenticator::new("u", Some(b"pw"));
        let (step, _) = run_auth(&mut a, &[auth(11, b"r=x")]);
        assert!(matches!(step, Err(ProtoError::Protocol(_))));
    }

    #[test]
    fn scram_exchange_follows_the_server() {
        let mut a = Authenticator::new("u", Some(b"pencil"));
        let (step, out) = run_auth(&mut a, &[auth(10, b"SCRAM-SHA-256\0\0")]);
        assert_eq!(step.unwrap(), AuthStep::Continue);
        let sent = frontend_messages(&out);
        assert_eq!(sent.len(), 1);
        let (tag, body) = &sent[0];
        assert_eq!(*tag, b'p');
        // SASLInitialResponse: mechanism, length, client-first message "n,,n=,r=<nonce>".
        let (mech, rest) = body.split_at(14);
        assert_eq!(mech, b"SCRAM-SHA-256\0");
        let first = std::str::from_utf8(&rest[4..]).unwrap();
        assert_eq!(
            i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize,
            first.len()
        );
        let nonce = first.strip_prefix("n,,n=,r=").expect(first);
        assert!(nonce.len() >= 18, "{first}");

        // The server's first message must extend the client's nonce.
        let mut wrong = Authenticator::new("u", Some(b"pencil"));
        let _ = run_auth(&mut wrong, &[auth(10, b"SCRAM-SHA-256\0\0")]);
        let (step, _) = run_auth(
            &mut wrong,
            &[auth(11, b"r=not-the-nonce,s=QSXCR+Q6sek8bf92,i=4096")],
        );
        assert!(matches!(step, Err(ProtoError::Auth(_))), "{step:?}");

        let server_first = format!("r={nonce}srv,s=QSXCR+Q6sek8bf92,i=4096");
        let (step, out) = run_auth(&mut a, &[auth(11, server_first.as_bytes())]);
        assert_eq!(step.unwrap(), AuthStep::Continue);
        let sent = frontend_messages(&out);
        let final_msg = std::str::from_utf8(&sent[0].1).unwrap();
        assert!(
            final_msg.starts_with(&format!("c=biws,r={nonce}srv,p=")),
            "{final_msg}"
        );
        // A server signature that does not verify means the server does not know the password.
        let (step, _) = run_auth(
            &mut a,
            &[auth(12, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")],
        );
        let Err(ProtoError::Auth(m)) = step else {
            panic!("{step:?}")
        };
        assert!(m.contains("signature"), "{m}");
    }

    fn run_query(server: &[Vec<u8>]) -> Result<Option<Vec<QueryResult>>, ProtoError> {
        let mut q = SimpleQuery::new();
        let mut last = Ok(None);
        for m in decode_all(&server.concat()) {
            last = q.handle(m);
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        last
    }

    fn identify_reply(cells: &[Option<&[u8]>]) -> Vec<Vec<u8>> {
        vec![
            row_description(&["systemid", "timeline", "xlogpos", "dbname"]),
            data_row(cells),
            command_complete("IDENTIFY_SYSTEM"),
            ready(),
        ]
    }

    #[test]
    fn identify_system_from_its_row() {
        let results = run_query(&identify_reply(&[
            Some(b"7312345678901234567"),
            Some(b"3"),
            Some(b"16/B374D848"),
            None,
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            IdentifySystem::from_results(&results).unwrap(),
            IdentifySystem {
                system_id: 7312345678901234567,
                timeline: 3,
                xlogpos: Lsn(0x16_B374_D848),
                dbname: None,
            }
        );
        let logical = run_query(&identify_reply(&[
            Some(b"1"),
            Some(b"1"),
            Some(b"0/0"),
            Some(b"postgres"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            IdentifySystem::from_results(&logical).unwrap().dbname,
            Some("postgres".into())
        );
        for bad in [
            [Some(&b"x"[..]), Some(b"1"), Some(b"0/0"), None],
            [Some(b"1"), Some(b"0"), Some(b"0/0"), None],
            [Some(b"1"), Some(b"1"), Some(b"nope"), None],
            [Some(b"1"), None, Some(b"0/0"), None],
            [Some(b"1"), Some(b"1"), Some(b"\xff/0"), None],
        ] {
            let results = run_query(&identify_reply(&bad)).unwrap().unwrap();
            assert!(
                matches!(
                    IdentifySystem::from_results(&results),
                    Err(ProtoError::Protocol(_))
                ),
                "{bad:?}"
            );
        }
        // Wrong shapes: no result set, no row, other columns.
        assert!(IdentifySystem::from_results(&[]).is_err());
        let empty = run_query(&[
            row_description(&["systemid", "timeline", "xlogpos", "dbname"]),
            command_complete("IDENTIFY_SYSTEM"),
            ready(),
        ])
        .unwrap()
        .unwrap();
        assert!(IdentifySystem::from_results(&empty).is_err());
        let other = run_query(&[
            row_description(&["a"]),
            data_row(&[Some(b"1")]),
            command_complete("SELECT 1"),
            ready(),
        ])
        .unwrap()
        .unwrap();
        assert!(IdentifySystem::from_results(&other).is_err());
    }

    #[test]
    fn timeline_history_keeps_the_exact_bytes() {
        let content = b"1\t0/3000000\tno recovery target specified\n\xff";
        let results = run_query(&[
            row_description(&["filename", "content"]),
            data_row(&[Some(b"00000002.history"), Some(content)]),
            command_complete("TIMELINE_HISTORY"),
            ready(),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            TimelineHistory::from_results(&results).unwrap(),
            TimelineHistory {
                filename: "00000002.history".into(),
                content: content.to_vec()
            }
        );
        assert_eq!(TimelineHistory::command(2), "TIMELINE_HISTORY 2");
        let null = run_query(&[
            row_description(&["filename", "content"]),
            data_row(&[Some(b"00000002.history"), None]),
            command_complete("TIMELINE_HISTORY"),
            ready(),
        ])
        .unwrap()
        .unwrap();
        assert!(TimelineHistory::from_results(&null).is_err());
    }

    #[test]
    fn query_errors_wait_for_ready_and_carry_the_sqlstate() {
        let mut q = SimpleQuery::new();
        let msgs = decode_all(
            &[
                msg(b'N', b"\0"),
                parameter_status("a", "b"),
                error_response("58P01", "could not open file \"pg_wal/00000001.history\""),
                error_response("XX000", "second"),
            ]
            .concat(),
        );
        for m in msgs {
            assert!(matches!(q.handle(m), Ok(None)));
        }
        let last = q.handle(decode_all(&ready()).pop().unwrap());
        let Err(ProtoError::Server(e)) = last else {
            panic!("{last:?}")
        };
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("58P01", "could not open file \"pg_wal/00000001.history\"")
        );
        // Several statements, an empty one, and a command without rows.
        let results = run_query(&[
            msg(b'I', b""),
            command_complete("SET"),
            row_description(&["a", "b"]),
            data_row(&[Some(b"1"), None]),
            data_row(&[Some(b""), Some(b"x")]),
            command_complete("SELECT 2"),
            ready(),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(results.len(), 2);
        assert!(results[0].columns.is_empty());
        assert_eq!(
            results[1].rows,
            vec![
                vec![Some(Bytes::from_static(b"1")), None],
                vec![Some(Bytes::new()), Some(Bytes::from_static(b"x"))]
            ]
        );
    }

    #[test]
    fn malformed_query_replies_are_protocol_errors() {
        for server in [
            vec![data_row(&[Some(b"1")])],
            vec![row_description(&["a", "b"]), data_row(&[Some(b"1")])],
            vec![msg(b'W', &[0, 0, 0])],
            vec![auth(0, b"")],
        ] {
            assert!(
                matches!(run_query(&server), Err(ProtoError::Protocol(_))),
                "{server:?}"
            );
        }
    }

    #[test]
    fn server_errors_display_message_detail_and_hint() {
        let e = ServerError {
            code: "42501".into(),
            message: "permission denied to start WAL sender".into(),
            detail: Some(
                "Only roles with the REPLICATION attribute may start a WAL sender process.".into(),
            ),
            hint: Some("try".into()),
        };
        assert_eq!(
            e.to_string(),
            "permission denied to start WAL sender (Only roles with the REPLICATION attribute may start a WAL sender process.) (hint: try)"
        );
    }

    fn opts(label: &str, fast: bool, manifest: bool, major: u32) -> BaseBackupOptions {
        BaseBackupOptions {
            label: label.into(),
            fast_checkpoint: fast,
            manifest,
            server_major: major,
        }
    }

    #[test]
    fn base_backup_command_per_server_version() {
        assert_eq!(
            base_backup_command(&opts("tidemark 2026-11-21", true, true, 15)).unwrap(),
            "BASE_BACKUP ( LABEL 'tidemark 2026-11-21', PROGRESS, CHECKPOINT 'fast', WAIT false, \
             MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C' )"
        );
        assert_eq!(
            base_backup_command(&opts("it's \\ x", false, false, 17)).unwrap(),
            "BASE_BACKUP ( LABEL 'it''s \\ x', PROGRESS, CHECKPOINT 'spread', WAIT false )"
        );
        assert_eq!(
            base_backup_command(&opts("l", true, true, 14)).unwrap(),
            "BASE_BACKUP LABEL 'l' PROGRESS FAST NOWAIT MANIFEST 'yes' MANIFEST_CHECKSUMS 'CRC32C'"
        );
        assert_eq!(
            base_backup_command(&opts("'", false, false, 13)).unwrap(),
            "BASE_BACKUP LABEL '''' PROGRESS NOWAIT"
        );
        assert!(base_backup_command(&opts("l", true, true, 12)).is_err());
        assert!(base_backup_command(&opts("a\0b", true, true, 15)).is_err());
        assert_eq!(server_major("15.8"), Some(15));
        assert_eq!(server_major("16beta1"), Some(16));
        assert_eq!(server_major("15.8 (Ubuntu 15.8-1.pgdg22.04+1)"), Some(15));
        assert_eq!(server_major("9.6.24"), Some(9));
        assert_eq!(server_major("x"), None);
    }

    fn copy_data(payload: &[u8]) -> Vec<u8> {
        msg(b'd', payload)
    }

    fn new_archive(name: &str, location: &str) -> Vec<u8> {
        copy_data(&[&b"n"[..], &cstr(name), &cstr(location)].concat())
    }

    fn progress(done: i64) -> Vec<u8> {
        copy_data(&[&b"p"[..], &done.to_be_bytes()].concat())
    }

    #[test]
    fn backup_copy_data_messages_decode() {
        let parse = |b: &[u8]| BackupCopyData::parse(Bytes::copy_from_slice(b));
        assert_eq!(
            parse(b"nbase.tar\0\0").unwrap(),
            BackupCopyData::NewArchive {
                name: "base.tar".into(),
                tablespace_location: None
            }
        );
        assert_eq!(
            parse(b"n16384.tar\0/srv/ts\0").unwrap(),
            BackupCopyData::NewArchive {
                name: "16384.tar".into(),
                tablespace_location: Some("/srv/ts".into())
            }
        );
        assert_eq!(
            parse(b"dxyz").unwrap(),
            BackupCopyData::Data(Bytes::from_static(b"xyz"))
        );
        assert_eq!(
            parse(&[&b"p"[..], &1234i64.to_be_bytes()].concat()).unwrap(),
            BackupCopyData::Progress(1234)
        );
        assert_eq!(parse(b"m").unwrap(), BackupCopyData::ManifestStart);
        let negative = [&b"p"[..], &(-1i64).to_be_bytes()].concat();
        for bad in [
            &b""[..],
            b"p\0\0",
            &negative,
            b"mx",
            b"nbase.tar\0",
            b"n\0\0",
            b"nbase.tar\0\0x",
            b"nbase.tar\0loc\0\0",
            b"n\xff\0\0",
            b"z",
        ] {
            assert!(
                matches!(parse(bad), Err(ProtoError::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    fn recptr_result(lsn: &str, tli: &str) -> Vec<u8> {
        [
            row_description(&["recptr", "tli"]),
            data_row(&[Some(lsn.as_bytes()), Some(tli.as_bytes())]),
            command_complete("SELECT"),
        ]
        .concat()
    }

    fn copy_out_response() -> Vec<u8> {
        msg(b'H', &[0, 0, 0])
    }

    /// The head of a reply: start position, an empty tablespace list, CopyOutResponse.
    fn head(lsn: &str) -> Vec<u8> {
        [
            recptr_result(lsn, "1"),
            row_description(&["spcoid", "spclocation", "size"]),
            command_complete("SELECT"),
            copy_out_response(),
        ]
        .concat()
    }

    /// A whole PostgreSQL 15 reply, as basebackup_copy.c and walsender.c send it.
    fn backup_reply() -> Vec<u8> {
        [
            recptr_result("0/2000028", "1"),
            row_description(&["spcoid", "spclocation", "size"]),
            data_row(&[None, None, Some(b"22837")]),
            data_row(&[Some(b"16384"), Some(b"/srv/ts"), Some(b"8")]),
            command_complete("SELECT"),
            copy_out_response(),
            new_archive("base.tar", ""),
            copy_data(b"dtar bytes"),
            progress(10),
            notice("WARNING", "01000", "skipping special file \"./fifo\""),
            new_archive("16384.tar", "/srv/ts"),
            copy_data(b"dmore"),
            copy_data(b"m"),
            copy_data(b"d{\"PostgreSQL-Backup-Manifest-Version\": 1}"),
            msg(b'c', b""),
            recptr_result("0/2000100", "1"),
            command_complete("BASE_BACKUP"),
            ready(),
        ]
        .concat()
    }

    /// A NoticeResponse with untranslated severity `V`, a translated one `S`, SQLSTATE and
    /// message, as the server sends it.
    fn notice(severity: &str, code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in [
            (b'S', "WARNUNG"),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            body.push(t);
            body.extend(cstr(v));
        }
        body.push(0);
        msg(b'N', &body)
    }

    /// Feeds `bytes` one byte at a time; the messages the reply produced.
    fn run_backup_reply(bytes: &[u8]) -> Result<Vec<BackupMessage>, ProtoError> {
        run_reply(BaseBackupReply::new(), bytes)
    }

    fn run_reply(mut r: BaseBackupReply, bytes: &[u8]) -> Result<Vec<BackupMessage>, ProtoError> {
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            while let Some(m) = decode(&mut buf)? {
                if let Some(ev) = r.handle(m)? {
                    out.push(ev);
                }
            }
        }
        assert!(r.is_done());
        Ok(out)
    }

    #[test]
    fn base_backup_reply_in_order() {
        let got = run_backup_reply(&backup_reply()).unwrap();
        let data =
            |b: &'static [u8]| BackupMessage::Copy(BackupCopyData::Data(Bytes::from_static(b)));
        assert_eq!(
            got,
            vec![
                BackupMessage::Start(BackupStart {
                    start_lsn: Lsn(0x2000028),
                    timeline: 1,
                    tablespaces: vec![
                        BackupTablespace {
                            oid: None,
                            location: None,
                            size_kb: Some(22837)
                        },
                        BackupTablespace {
                            oid: Some(16384),
                            location: Some("/srv/ts".into()),
                            size_kb: Some(8)
                        },
                    ],
                }),
                BackupMessage::Copy(BackupCopyData::NewArchive {
                    name: "base.tar".into(),
                    tablespace_location: None
                }),
                data(b"tar bytes"),
                BackupMessage::Copy(BackupCopyData::Progress(10)),
                BackupMessage::Notice(ServerNotice {
                    severity: "WARNING".into(),
                    code: "01000".into(),
                    message: "skipping special file \"./fifo\"".into(),
                    detail: None,
                }),
                BackupMessage::Copy(BackupCopyData::NewArchive {
                    name: "16384.tar".into(),
                    tablespace_location: Some("/srv/ts".into())
                }),
                data(b"more"),
                BackupMessage::Copy(BackupCopyData::ManifestStart),
                data(b"{\"PostgreSQL-Backup-Manifest-Version\": 1}"),
                BackupMessage::CopyDone,
                BackupMessage::End(BackupEnd {
                    end_lsn: Lsn(0x2000100),
                    timeline: 1
                }),
            ]
        );
    }

    /// PostgreSQL 13–14: one CopyOut of raw bytes per tablespace (data directory last),
    /// then one for the manifest; no type bytes in CopyData.
    #[test]
    fn legacy_base_backup_reply_in_order() {
        let bytes = [
            recptr_result("0/2000028", "1"),
            row_description(&["spcoid", "spclocation", "size"]),
            data_row(&[Some(b"16384"), Some(b"/srv/ts"), Some(b"8")]),
            data_row(&[None, None, Some(b"22837")]),
            command_complete("SELECT"),
            copy_out_response(),
            copy_data(b"ts tar"),
            msg(b'c', b""),
            copy_out_response(),
            copy_data(b"base tar"),
            msg(b'c', b""),
            copy_out_response(),
            copy_data(b"{manifest}"),
            msg(b'c', b""),
            recptr_result("0/2000100", "1"),
            command_complete("BASE_BACKUP"),
            ready(),
        ]
        .concat();
        let got = run_reply(BaseBackupReply::new_legacy(), &bytes).unwrap();
        let data =
            |b: &'static [u8]| BackupMessage::Copy(BackupCopyData::Data(Bytes::from_static(b)));
        assert!(matches!(&got[0], BackupMessage::Start(s) if s.tablespaces.len() == 2));
        assert_eq!(
            got[1..],
            [
                data(b"ts tar"),
                BackupMessage::CopyDone,
                BackupMessage::NextCopy,
                data(b"base tar"),
                BackupMessage::CopyDone,
                BackupMessage::NextCopy,
                data(b"{manifest}"),
                BackupMessage::CopyDone,
                BackupMessage::End(BackupEnd {
                    end_lsn: Lsn(0x2000100),
                    timeline: 1
                }),
            ]
        );
        // The same bytes read as a PostgreSQL 15 reply are refused (no type byte `t`).
        assert!(run_backup_reply(&bytes).is_err());
    }

    /// Data checksum failures: a warning per damaged page inside the stream, then, after
    /// the end position, a warning with the total and the `XX001` error. The backup fails
    /// unless the failures are tolerated; then every warning and the error come up as
    /// notices and the reply ends with the end position.
    #[test]
    fn checksum_failures_fail_the_backup_unless_tolerated() {
        let page = notice(
            "WARNING",
            "01000",
            "checksum verification failed in file \"./base/5/16384\", block 0: calculated 1 but expected 2",
        );
        let bytes = [
            head("0/2000028"),
            new_archive("base.tar", ""),
            page.clone(),
            copy_data(b"dtar"),
            page,
            msg(b'c', b""),
            recptr_result("0/2000100", "1"),
            notice("WARNING", "01000", "2 total checksum verification failures"),
            error_response("XX001", "checksum verification failure during base backup"),
            ready(),
        ]
        .concat();
        let e = run_backup_reply(&bytes).unwrap_err();
        assert!(
            matches!(&e, ProtoError::Server(s) if s.code == DATA_CORRUPTED),
            "{e:?}"
        );
        let mut tolerant = BaseBackupReply::new();
        tolerant.tolerate_checksum_failures(true);
        let got = run_reply(tolerant, &bytes).unwrap();
        let notices: Vec<&ServerNotice> = got
            .iter()
            .filter_map(|m| match m {
                BackupMessage::Notice(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(notices.len(), 4, "{got:?}");
        assert!(notices[..3].iter().all(|n| n.severity == "WARNING"));
        assert!(!notices[2].is_checksum_failure());
        assert!(notices[3].is_checksum_failure(), "{:?}", notices[3]);
        assert_eq!(notices[3].severity, "ERROR");
        assert_eq!(
            got.last(),
            Some(&BackupMessage::End(BackupEnd {
                end_lsn: Lsn(0x2000100),
                timeline: 1
            }))
        );
        // Only that error is tolerated: any other still fails the backup.
        let other = [
            head("0/2000028"),
            msg(b'c', b""),
            recptr_result("0/2000100", "1"),
            error_response("XX000", "something else"),
            ready(),
        ]
        .concat();
        let mut tolerant = BaseBackupReply::new();
        tolerant.tolerate_checksum_failures(true);
        assert!(run_reply(tolerant, &other).is_err());
    }

    #[test]
    fn base_backup_reply_errors() {
        // Refused before any data (a backup already running, bad options, …).
        let refused = [
            error_response("55000", "a backup is already in progress"),
            ready(),
        ]
        .concat();
        let e = run_backup_reply(&refused).unwrap_err();
        assert!(
            matches!(&e, ProtoError::Server(s) if s.code == "55000"),
            "{e:?}"
        );
        // An error inside the stream ends it; the error comes at ReadyForQuery.
        let mut r = BaseBackupReply::new();
        let msgs = decode_all(
            &[
                head("0/2000028"),
                new_archive("base.tar", ""),
                error_response("58P01", "could not open file"),
                ready(),
            ]
            .concat(),
        );
        let mut last = Ok(None);
        for m in msgs {
            last = r.handle(m);
            if last.is_err() {
                break;
            }
        }
        assert!(
            matches!(&last, Err(ProtoError::Server(s)) if s.code == "58P01"),
            "{last:?}"
        );
        assert!(r.is_done());
        for bad in [
            // No copy stream at all.
            [recptr_result("0/1", "1"), ready()].concat(),
            // Only one result set before the stream.
            [recptr_result("0/1", "1"), copy_out_response()].concat(),
            // No end position.
            [
                head("0/1"),
                msg(b'c', b""),
                command_complete("BASE_BACKUP"),
                ready(),
            ]
            .concat(),
            // Something other than CopyData inside the stream.
            [head("0/1"), data_row(&[])].concat(),
            // Bad tablespace rows, positions and columns.
            [
                recptr_result("0/1", "1"),
                row_description(&["spcoid", "spclocation", "size"]),
                data_row(&[Some(b"x"), None, None]),
                command_complete("SELECT"),
                copy_out_response(),
            ]
            .concat(),
            head("nope"),
            [
                recptr_result("0/1", "1"),
                row_description(&["a"]),
                command_complete("SELECT"),
                copy_out_response(),
            ]
            .concat(),
        ] {
            let mut r = BaseBackupReply::new();
            let mut last = Ok(None);
            for m in decode_all(&bad) {
                last = r.handle(m);
                if last.is_err() {
                    break;
                }
            }
            assert!(matches!(last, Err(ProtoError::Protocol(_))), "{last:?}");
        }
        // Nothing is accepted after the end.
        let mut r = BaseBackupReply::new();
        for m in decode_all(&backup_reply()) {
            r.handle(m).unwrap();
        }
        assert!(r.handle(decode_all(&ready()).pop().unwrap()).is_err());
    }
}
