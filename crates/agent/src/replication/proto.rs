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
use tidemark_store::pg::{Lsn, SystemId, TimelineId};
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
    pub system_id: SystemId,
    /// The current timeline.
    pub timeline: TimelineId,
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
            system_id: SystemId(sys.parse().map_err(|_| bad("systemid", sys))?),
            timeline: TimelineId(
                tli.parse()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| bad("timeline", tli))?,
            ),
            xlogpos: pos.parse().map_err(|_| bad("xlogpos", pos))?,
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
    pub fn command(tli: TimelineId) -> String {
        format!("TIMELINE_HISTORY {}", tli.0)
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
                system_id: SystemId(7312345678901234567),
                timeline: TimelineId(3),
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
        assert_eq!(
            TimelineHistory::command(TimelineId(2)),
            "TIMELINE_HISTORY 2"
        );
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
}
