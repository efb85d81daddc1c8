//! The IO half of the replication client: [`ReplicationConn`] over a TCP or unix socket,
//! driving [`crate::proto`], and [`ReplError`], errors named for what the user can do.
//!
//! This file only moves bytes and classifies errors: framing, authentication and result
//! parsing live in [`crate::proto`]. TLS follows libpq (see [`crate::tls`] for the modes):
//! over TCP, when the mode asks for it, the client sends an SSLRequest, reads the one-byte
//! answer and, on `S`, runs the TLS handshake on the same socket (the PostgreSQL 15/16 way;
//! no direct TLS). Unix sockets are always plain.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::time::Duration;

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::proto::{
    self, AuthStep, Authenticator, Backend, BackupCopyData, BackupEnd, BackupMessage, BackupStart,
    BaseBackupOptions, BaseBackupReply, IdentifySystem, ProtoError, QueryResult, ServerNotice,
    SimpleQuery, TimelineHistory,
};
use crate::settings::PgTarget;
use crate::tar::{TarEntry, TarError, TarEvent, TarReader};
use crate::tls::TlsError;

/// How long connecting and authenticating may take, as libpq's `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the replication connection failed, named for what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplError {
    /// The server cannot be reached, or the connection broke.
    #[error("replication connection to {place}: {source}")]
    Connect {
        /// `host:port` or the socket's path.
        place: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TLS settings cannot work (a missing or unreadable root certificate file).
    #[error("replication connection: {0}")]
    TlsSetup(#[source] TlsError),
    /// `sslmode` requires TLS and the server answered the SSLRequest with `N`.
    #[error(
        "replication connection to {place}: the server does not accept TLS connections, and \
         pg_sslmode requires TLS (turn ssl on in postgresql.conf, or use pg_sslmode=prefer)"
    )]
    TlsRefused {
        /// `host:port`.
        place: String,
    },
    /// The TLS handshake failed (e.g. the certificate did not verify).
    #[error("replication connection to {place}: TLS handshake failed: {source}")]
    Tls {
        /// `host:port`.
        place: String,
        /// rustls's reason.
        #[source]
        source: io::Error,
    },
    /// The server refused the credentials, or asked for a method tidemark cannot do.
    #[error("replication connection: authentication failed: {message}")]
    Auth {
        /// The server's (or the client's) reason.
        message: String,
    },
    /// The role or the client address may not open replication connections.
    #[error("replication connection refused: {message}; {fix}")]
    NoReplicationAccess {
        /// The server's message.
        message: String,
        /// What to change on the server.
        fix: String,
    },
    /// Any other error the server reported.
    #[error("replication connection: server error {code}: {message}")]
    Server {
        /// SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server's bytes do not follow the protocol.
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// The server cannot do what was asked of this client (e.g. its version is too old).
    #[error("replication connection: {0}")]
    Unsupported(String),
    /// An archive in a base backup is malformed or truncated.
    #[error("base backup archive {archive}: {source}")]
    Archive {
        /// The archive's name (`base.tar`, …).
        archive: String,
        /// What is wrong with it.
        #[source]
        source: TarError,
    },
}

impl ReplError {
    /// Whether the server turned the session down (after which `prefer` retries plain).
    fn is_server_refusal(&self) -> bool {
        matches!(
            self,
            ReplError::Auth { .. }
                | ReplError::NoReplicationAccess { .. }
                | ReplError::Server { .. }
        )
    }

    /// Classifies a protocol-level error for `target` (the role and address in the advice).
    fn from_proto(e: ProtoError, target: &PgTarget) -> ReplError {
        let e = match e {
            ProtoError::Server(e) => e,
            ProtoError::Auth(message) => return ReplError::Auth { message },
            ProtoError::Protocol(m) => return ReplError::Protocol(m),
        };
        let role = quote_ident(&target.user);
        match e.code.as_str() {
            // invalid_authorization_specification: pg_hba.conf has no line (or a reject
            // line) for replication connections from here.
            "28000" if e.message.contains("pg_hba.conf") => {
                let line = if is_socket(&target.host) {
                    format!("local replication {} scram-sha-256", target.user)
                } else {
                    let addr = match target.host.as_str() {
                        "localhost" | "127.0.0.1" => "127.0.0.1/32".to_string(),
                        "::1" => "::1/128".to_string(),
                        _ => "<tidemark's address>/32".to_string(),
                    };
                    format!("host replication {} {addr} scram-sha-256", target.user)
                };
                ReplError::NoReplicationAccess {
                    message: e.message,
                    fix: format!(
                        "add a line like `{line}` to pg_hba.conf (`all` does not match replication \
                         connections) and reload the server"
                    ),
                }
            }
            // insufficient_privilege: "must be superuser or replication role to start
            // walsender" (PostgreSQL 15), "permission denied to start WAL sender" (16+).
            "42501" => ReplError::NoReplicationAccess {
                message: e.message,
                fix: format!(
                    "give the role the REPLICATION attribute: ALTER ROLE {role} REPLICATION"
                ),
            },
            // 28P01 invalid_password, and the rest of class 28.
            code if code.starts_with("28") => ReplError::Auth {
                message: e.to_string(),
            },
            _ => ReplError::Server {
                code: e.code.clone(),
                message: e.to_string(),
            },
        }
    }
}

/// `"name"` when the name needs quoting in SQL, else `name`.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.is_empty();
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// libpq's rule: a host that is an absolute path is a unix socket folder.
fn is_socket(host: &str) -> bool {
    Path::new(host).is_absolute()
}

/// A byte stream to the server: TCP, a unix socket, or (in tests) anything else.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A physical replication connection (`replication=true`) that has authenticated and is
/// ready for replication commands.
pub struct ReplicationConn {
    io: Box<dyn Io>,
    /// Bytes read and not yet decoded.
    read_buf: BytesMut,
    /// Bytes framed and not yet sent.
    write_buf: BytesMut,
    /// `host:port` or the socket's path, for error messages.
    place: String,
    /// The role, for error messages.
    target: PgTarget,
    /// The server's `ParameterStatus` values at startup (`server_version`, …).
    parameters: BTreeMap<String, String>,
}

impl std::fmt::Debug for ReplicationConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConn")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl ReplicationConn {
    /// Connects to `target` (TCP, or the unix socket `{host}/.s.PGSQL.{port}` when the host
    /// is an absolute path), negotiates TLS as `sslmode` says, and authenticates, all within
    /// 10 seconds.
    ///
    /// Under `prefer`, a failed TLS handshake, or a server that turns the TLS session down
    /// (say a `hostnossl` line), is followed by one plain-text attempt, as libpq does.
    pub async fn connect(target: &PgTarget) -> Result<ReplicationConn, ReplError> {
        let tls = crate::tls::for_target(target).map_err(ReplError::TlsSetup)?;
        let place = if is_socket(&target.host) {
            format!("{}/.s.PGSQL.{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let timed_out = || ReplError::Connect {
            place: place.clone(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no answer within {} s (connect and authenticate)",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ),
        };
        let prefer = tls.as_ref().is_some_and(|t| !t.required);
        let setup = async {
            match Self::open(target, &place, tls.as_ref()).await {
                Err(e @ ReplError::Tls { .. }) if prefer => {
                    tracing::debug!("sslmode=prefer: {e}; retrying without TLS");
                }
                Err(e) => return Err(e),
                Ok((io, encrypted)) => match Self::start(io, place.clone(), target).await {
                    Err(e) if prefer && encrypted && e.is_server_refusal() => {
                        tracing::debug!("sslmode=prefer: {e} (over TLS); retrying without TLS");
                    }
                    done => return done,
                },
            }
            let (io, _) = Self::open(target, &place, None).await?;
            Self::start(io, place.clone(), target).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| timed_out())?
    }

    /// Opens the stream: a unix socket (never TLS), or TCP with TLS when `tls` says so.
    /// Returns the stream and whether it is encrypted.
    async fn open(
        target: &PgTarget,
        place: &str,
        tls: Option<&crate::tls::Tls>,
    ) -> Result<(Box<dyn Io>, bool), ReplError> {
        let connect_error = |source| ReplError::Connect {
            place: place.to_string(),
            source,
        };
        if is_socket(&target.host) {
            let unix = UnixStream::connect(place).await.map_err(connect_error)?;
            return Ok((Box::new(unix), false));
        }
        let mut tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(connect_error)?;
        // Replication commands are small request/response exchanges.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok((Box::new(tcp), false));
        };
        let mut request = BytesMut::new();
        proto::ssl_request(&mut request);
        tcp.write_all(&request).await.map_err(connect_error)?;
        // Exactly one byte, read straight from the socket: nothing the server might send
        // after it can end up in a buffer and pass for TLS-protected data (CVE-2021-23222).
        let answer = tcp.read_u8().await.map_err(connect_error)?;
        match answer {
            proto::SSL_ACCEPTED => {}
            proto::SSL_REFUSED if tls.required => {
                return Err(ReplError::TlsRefused {
                    place: place.to_string(),
                })
            }
            proto::SSL_REFUSED => return Ok((Box::new(tcp), false)),
            other => {
                return Err(ReplError::Protocol(format!(
                    "the server answered the SSLRequest with {other:#04x}, not S or N"
                )))
            }
        }
        let name = crate::tls::Tls::server_name(&target.host).map_err(ReplError::TlsSetup)?;
        let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| ReplError::Tls {
                place: place.to_string(),
                source,
            })?;
        tracing::debug!(
            "replication connection to {place}: TLS ({:?} verification)",
            tls.verification
        );
        Ok((Box::new(stream), true))
    }

    /// Sends the startup packet on an open stream and authenticates.
    async fn start(
        io: Box<dyn Io>,
        place: String,
        target: &PgTarget,
    ) -> Result<ReplicationConn, ReplError> {
        let mut conn = ReplicationConn {
            io,
            read_buf: BytesMut::with_capacity(8192),
            write_buf: BytesMut::new(),
            place,
            target: target.clone(),
            parameters: BTreeMap::new(),
        };
        proto::startup_message(&target.user, None, &mut conn.write_buf)
            .map_err(|e| conn.error(e))?;
        conn.flush().await?;
        let password = target.password.as_ref().map(|p| p.expose().as_bytes());
        let mut auth = Authenticator::new(&target.user, password);
        loop {
            let msg = conn.read_message().await?;
            let mut out = std::mem::take(&mut conn.write_buf);
            let step = auth.handle(msg, &mut out);
            conn.write_buf = out;
            match step.map_err(|e| conn.error(e))? {
                AuthStep::Continue => conn.flush().await?,
                AuthStep::Ready(session) => {
                    tracing::debug!(
                        "replication connection to {} ready: server_version {:?}, backend {:?}",
                        conn.place,
                        session.parameters.get("server_version"),
                        session.backend_key.map(|(pid, _)| pid),
                    );
                    conn.parameters = session.parameters;
                    return Ok(conn);
                }
            }
        }
    }

    fn error(&self, e: ProtoError) -> ReplError {
        ReplError::from_proto(e, &self.target)
    }

    fn io_error(&self, source: io::Error) -> ReplError {
        ReplError::Connect {
            place: self.place.clone(),
            source,
        }
    }

    /// Sends everything framed so far.
    async fn flush(&mut self) -> Result<(), ReplError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let bytes = self.write_buf.split();
        self.io
            .write_all(&bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        self.io.flush().await.map_err(|e| self.io_error(e))
    }

    /// Reads until one whole backend message is there.
    async fn read_message(&mut self) -> Result<Backend, ReplError> {
        loop {
            if let Some(m) = proto::decode(&mut self.read_buf).map_err(|e| self.error(e))? {
                return Ok(m);
            }
            let n = self
                .io
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }

    /// Runs one simple query (a replication command) and collects its result sets.
    async fn query(&mut self, sql: &str) -> Result<Vec<QueryResult>, ReplError> {
        proto::query(sql, &mut self.write_buf).map_err(|e| self.error(e))?;
        self.flush().await?;
        let mut q = SimpleQuery::new();
        loop {
            let msg = self.read_message().await?;
            if let Some(results) = q.handle(msg).map_err(|e| self.error(e))? {
                return Ok(results);
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: the system identifier, timeline and WAL position.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem, ReplError> {
        let results = self.query(IdentifySystem::COMMAND).await?;
        IdentifySystem::from_results(&results).map_err(|e| self.error(e))
    }

    /// `TIMELINE_HISTORY tli`: the history file of timeline `tli` (2 or more).
    pub async fn timeline_history(&mut self, tli: u32) -> Result<TimelineHistory, ReplError> {
        let results = self.query(&TimelineHistory::command(tli)).await?;
        TimelineHistory::from_results(&results).map_err(|e| self.error(e))
    }

    /// Any simple query, rows as text (`None` for NULL; non-UTF-8 bytes replaced).
    /// Base backups will use it for `SHOW`; today only the tests do.
    #[cfg(test)]
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ReplError> {
        let results = self.query(sql).await?;
        Ok(results
            .into_iter()
            .flat_map(|r| r.rows)
            .map(|row| {
                row.into_iter()
                    .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()))
                    .collect()
            })
            .collect())
    }

    /// The `server_version` the server reported at startup (`15.8`, `16.4 (Debian …)`).
    pub fn server_version(&self) -> Option<&str> {
        self.parameters.get("server_version").map(String::as_str)
    }

    /// The server's major version (15, 16, …), from [`server_version`](Self::server_version).
    pub fn server_major(&self) -> Option<u32> {
        self.server_version().and_then(proto::server_major)
    }

    /// Starts `BASE_BACKUP` and returns the stream of its events; pull them with
    /// [`BaseBackupStream::next_event`] until it returns `None`.
    ///
    /// PostgreSQL 15 or later send one CopyOut stream with typed messages; 13 and 14 one
    /// CopyOut per tablespace and one for the manifest, which this turns into the same
    /// events. Older servers get [`ReplError::Unsupported`] before anything is sent. `opts.server_major` is
    /// replaced by the connected server's. Memory stays bounded whatever the cluster's
    /// size: the archives are never collected, their bytes are handed on as they arrive.
    /// After an error, or a stream dropped before its end, the connection is unusable.
    pub async fn base_backup(
        &mut self,
        opts: &BaseBackupOptions,
    ) -> Result<BaseBackupStream<'_>, ReplError> {
        let version = self.server_version().unwrap_or("unknown").to_string();
        let major = self.server_major().ok_or_else(|| {
            ReplError::Protocol(format!(
                "the server reported no usable server_version ({version:?})"
            ))
        })?;
        let legacy = match major {
            15.. => false,
            13 | 14 => true,
            _ => {
                return Err(ReplError::Unsupported(format!(
                    "base backups need PostgreSQL 13 or later (the server is {version})"
                )))
            }
        };
        let command = proto::base_backup_command(&BaseBackupOptions {
            server_major: major,
            ..opts.clone()
        })
        .map_err(|e| self.error(e))?;
        proto::query(&command, &mut self.write_buf).map_err(|e| self.error(e))?;
        self.flush().await?;
        Ok(BaseBackupStream {
            conn: self,
            reply: if legacy {
                BaseBackupReply::new_legacy()
            } else {
                BaseBackupReply::new()
            },
            archive: None,
            in_manifest: false,
            done: false,
            legacy_archives: legacy.then(VecDeque::new),
            pending: None,
        })
    }

    /// Says goodbye (`Terminate`) and closes the stream.
    pub async fn close(mut self) -> Result<(), ReplError> {
        proto::terminate(&mut self.write_buf);
        self.flush().await?;
        self.io.shutdown().await.map_err(|e| self.io_error(e))
    }
}

/// One event of a base backup, in the order the server sends them: `Started`; per
/// archive `ArchiveStart`, its members (`Entry`, `Data`…, `EntryEnd`) and `ArchiveEnd`;
/// `Manifest` pieces; `Progress` anywhere in between; `Finished` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    /// Where the backup starts, and its tablespaces.
    Started(BackupStart),
    /// A new archive (one per tablespace): `base.tar` for the data directory.
    ArchiveStart {
        /// The archive's name.
        name: String,
        /// The tablespace's location; `None` for the data directory.
        tablespace_location: Option<String>,
    },
    /// A member of the current archive.
    Entry(TarEntry),
    /// A piece of the current member's data.
    Data(Bytes),
    /// The current member is complete.
    EntryEnd,
    /// The current archive is complete (its two zero blocks arrived).
    ArchiveEnd,
    /// A piece of the backup manifest (`backup_manifest`).
    Manifest(Bytes),
    /// Bytes of the backup sent so far.
    Progress(u64),
    /// Where the backup ends: the WAL up to here makes it consistent.
    Finished(BackupEnd),
    /// A warning the server sent (a file it skipped, a page whose data checksum failed),
    /// or, when checksum failures are tolerated, its closing error about them.
    Notice(ServerNotice),
}

/// A base backup in progress, from [`ReplicationConn::base_backup`].
pub struct BaseBackupStream<'a> {
    conn: &'a mut ReplicationConn,
    reply: BaseBackupReply,
    /// The current archive's name and reader.
    archive: Option<(String, TarReader)>,
    in_manifest: bool,
    done: bool,
    /// PostgreSQL 13–14: the archives still to come, in the tablespace list's order,
    /// as (name, location); their CopyOut streams carry no names of their own.
    legacy_archives: Option<VecDeque<(String, Option<String>)>>,
    /// An event decided while returning another one.
    pending: Option<BackupEvent>,
}

impl std::fmt::Debug for BaseBackupStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackupStream")
            .field("place", &self.conn.place)
            .field("archive", &self.archive.as_ref().map(|(name, _)| name))
            .field("in_manifest", &self.in_manifest)
            .field("done", &self.done)
            .finish()
    }
}

impl BaseBackupStream<'_> {
    /// Carries on after the server's closing "checksum verification failure" error
    /// (reported as a [`BackupEvent::Notice`]) instead of failing: the backup is whole,
    /// but holds the damaged pages as they are on disk.
    pub fn tolerate_checksum_failures(&mut self, tolerate: bool) {
        self.reply.tolerate_checksum_failures(tolerate);
    }

    /// The next event, or `None` once [`BackupEvent::Finished`] has been returned and the
    /// server is ready for the next command.
    pub async fn next_event(&mut self) -> Result<Option<BackupEvent>, ReplError> {
        if let Some(event) = self.pending.take() {
            return Ok(Some(event));
        }
        loop {
            // Drain what the current archive's bytes hold before reading more.
            if let Some((name, tar)) = &mut self.archive {
                let event = tar.next_event().map_err(|source| ReplError::Archive {
                    archive: name.clone(),
                    source,
                })?;
                match event {
                    Some(TarEvent::Entry(e)) => return Ok(Some(BackupEvent::Entry(e))),
                    Some(TarEvent::Data(d)) => return Ok(Some(BackupEvent::Data(d))),
                    Some(TarEvent::EntryEnd) => return Ok(Some(BackupEvent::EntryEnd)),
                    Some(TarEvent::End) => return Ok(Some(BackupEvent::ArchiveEnd)),
                    None => {}
                }
            }
            if self.done {
                return Ok(None);
            }
            let msg = self.conn.read_message().await?;
            let Some(msg) = self.reply.handle(msg).map_err(|e| self.conn.error(e))? else {
                continue;
            };
            match msg {
                BackupMessage::Start(start) => {
                    if let Some(queue) = &mut self.legacy_archives {
                        // The data directory's archive is `base.tar`, the others `<oid>.tar`,
                        // as PostgreSQL 15+ names them.
                        queue.extend(start.tablespaces.iter().map(|t| {
                            let name = t.oid.map_or("base.tar".into(), |oid| format!("{oid}.tar"));
                            (name, t.location.clone())
                        }));
                        self.pending = self.open_legacy_archive()?;
                    }
                    return Ok(Some(BackupEvent::Started(start)));
                }
                BackupMessage::NextCopy => {
                    self.close_archive()?;
                    if let Some(event) = self.open_legacy_archive()? {
                        return Ok(Some(event));
                    }
                }
                BackupMessage::Copy(BackupCopyData::NewArchive {
                    name,
                    tablespace_location,
                }) => {
                    self.close_archive()?;
                    if self.in_manifest {
                        return Err(ReplError::Protocol(
                            "BASE_BACKUP: an archive after the manifest".into(),
                        ));
                    }
                    self.archive = Some((name.clone(), TarReader::new()));
                    return Ok(Some(BackupEvent::ArchiveStart {
                        name,
                        tablespace_location,
                    }));
                }
                BackupMessage::Copy(BackupCopyData::Data(bytes)) => {
                    if self.in_manifest {
                        return Ok(Some(BackupEvent::Manifest(bytes)));
                    }
                    let Some((_, tar)) = &mut self.archive else {
                        return Err(ReplError::Protocol(
                            "BASE_BACKUP: data before the first archive".into(),
                        ));
                    };
                    tar.push(bytes);
                }
                BackupMessage::Copy(BackupCopyData::Progress(done)) => {
                    return Ok(Some(BackupEvent::Progress(done)))
                }
                BackupMessage::Copy(BackupCopyData::ManifestStart) => {
                    self.close_archive()?;
                    self.in_manifest = true;
                }
                BackupMessage::CopyDone => match (&self.legacy_archives, &mut self.archive) {
                    // PostgreSQL 13–14 leave the two zero blocks that end a tar archive
                    // to the client (pg_basebackup adds them): add them, and let the
                    // reader end the archive as usual.
                    (Some(_), Some((_, tar))) => tar.push(Bytes::from_static(&[0; 1024])),
                    _ => self.close_archive()?,
                },
                BackupMessage::End(end) => {
                    self.done = true;
                    return Ok(Some(BackupEvent::Finished(end)));
                }
                BackupMessage::Notice(notice) => return Ok(Some(BackupEvent::Notice(notice))),
            }
        }
    }

    /// PostgreSQL 13–14: the next CopyOut is the next tablespace's archive, or, once they
    /// are all done, the manifest.
    fn open_legacy_archive(&mut self) -> Result<Option<BackupEvent>, ReplError> {
        let Some(queue) = &mut self.legacy_archives else {
            return Err(ReplError::Protocol(
                "BASE_BACKUP: an unexpected CopyOut".into(),
            ));
        };
        match queue.pop_front() {
            Some((name, tablespace_location)) => {
                self.archive = Some((name.clone(), TarReader::new()));
                Ok(Some(BackupEvent::ArchiveStart {
                    name,
                    tablespace_location,
                }))
            }
            None if !self.in_manifest => {
                self.in_manifest = true;
                Ok(None)
            }
            None => Err(ReplError::Protocol(
                "BASE_BACKUP: more CopyOut streams than tablespaces and a manifest".into(),
            )),
        }
    }

    /// Ends the current archive: it must have been complete.
    fn close_archive(&mut self) -> Result<(), ReplError> {
        match self.archive.take() {
            Some((name, tar)) => tar.finish().map_err(|source| ReplError::Archive {
                archive: name,
                source,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Secret, SslMode};
    use tokio::net::TcpListener;

    fn target(host: &str, port: u16, password: Option<&str>) -> PgTarget {
        PgTarget {
            host: host.into(),
            port,
            user: "repl".into(),
            dbname: "postgres".into(),
            password: password.map(Secret::new),
            // The scripted servers expect the startup packet first: no SSLRequest.
            sslmode: SslMode::Disable,
            sslrootcert: None,
        }
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn server_error(code: &str, message: &str) -> ProtoError {
        ProtoError::Server(proto::ServerError {
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        })
    }

    /// Reads one frontend message (tag, body) from a fake server's socket.
    async fn read_frontend(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let tag = s.read_u8().await.unwrap();
        let len = s.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.unwrap();
        (tag, body)
    }

    /// A one-connection fake server: md5 authentication, then scripted replies.
    async fn fake_server(
        replies: Vec<Vec<u8>>,
    ) -> (u16, tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>) {
        fake_server_version("15.8", replies).await
    }

    /// [`fake_server`] reporting `server_version` `version`.
    async fn fake_server_version(
        version: &'static str,
        replies: Vec<Vec<u8>>,
    ) -> (u16, tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let len = s.read_i32().await.unwrap() as usize;
            let mut startup = vec![0; len - 4];
            s.read_exact(&mut startup).await.unwrap();
            assert!(startup.windows(17).any(|w| w == b"replication\0true\0"));
            let mut auth = 5i32.to_be_bytes().to_vec();
            auth.extend_from_slice(&[1, 2, 3, 4]);
            s.write_all(&msg(b'R', &auth)).await.unwrap();
            let mut received = vec![read_frontend(&mut s).await];
            s.write_all(&msg(b'R', &0i32.to_be_bytes())).await.unwrap();
            let status = [&b"server_version\0"[..], version.as_bytes(), b"\0"].concat();
            s.write_all(&msg(b'S', &status)).await.unwrap();
            s.write_all(&msg(b'Z', b"I")).await.unwrap();
            for reply in replies {
                received.push(read_frontend(&mut s).await);
                // Dribble the reply out in small pieces: frames arrive split.
                for chunk in reply.chunks(3) {
                    s.write_all(chunk).await.unwrap();
                    s.flush().await.unwrap();
                }
            }
            received.push(read_frontend(&mut s).await);
            received
        });
        (port, task)
    }

    /// RowDescription, one DataRow (`None` for NULL), CommandComplete, ReadyForQuery.
    fn result_set(columns: &[&str], row: &[Option<&[u8]>], tag: &str) -> Vec<u8> {
        let mut t = (columns.len() as i16).to_be_bytes().to_vec();
        for c in columns {
            t.extend_from_slice(c.as_bytes());
            t.extend_from_slice(&[0; 19]);
        }
        let mut d = (row.len() as i16).to_be_bytes().to_vec();
        for cell in row {
            match cell {
                Some(v) => {
                    d.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    d.extend_from_slice(v);
                }
                None => d.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut tag_body = tag.as_bytes().to_vec();
        tag_body.push(0);
        [
            msg(b'T', &t),
            msg(b'D', &d),
            msg(b'C', &tag_body),
            msg(b'Z', b"I"),
        ]
        .concat()
    }

    #[tokio::test]
    async fn commands_against_a_scripted_server() {
        let identify = result_set(
            &["systemid", "timeline", "xlogpos", "dbname"],
            &[
                Some(b"7000000000000000001"),
                Some(b"2"),
                Some(b"0/3000148"),
                None,
            ],
            "IDENTIFY_SYSTEM",
        );
        let history = result_set(
            &["filename", "content"],
            &[
                Some(b"00000002.history"),
                Some(b"1\t0/3000000\tno recovery target specified\n"),
            ],
            "TIMELINE_HISTORY",
        );
        let show = result_set(&["wal_segment_size"], &[Some(b"16MB")], "SHOW");
        let failing = [
            msg(b'E', b"SERROR\0C58P01\0Mno such file\0\0"),
            msg(b'Z', b"I"),
        ]
        .concat();
        let (port, server) = fake_server(vec![identify, history, show, failing]).await;

        let mut conn = ReplicationConn::connect(&target("127.0.0.1", port, Some("pw")))
            .await
            .unwrap();
        let id = conn.identify_system().await.unwrap();
        assert_eq!(id.system_id, 7000000000000000001);
        assert_eq!(id.timeline, 2);
        assert_eq!(id.xlogpos.to_string(), "0/3000148");
        assert_eq!(id.dbname, None);
        let h = conn.timeline_history(2).await.unwrap();
        assert_eq!(h.filename, "00000002.history");
        assert!(h.content.starts_with(b"1\t0/3000000"));
        assert_eq!(
            conn.simple_query("SHOW wal_segment_size").await.unwrap(),
            vec![vec![Some("16MB".to_string())]]
        );
        let err = conn.simple_query("TIMELINE_HISTORY 9").await.unwrap_err();
        assert!(
            matches!(&err, ReplError::Server { code, .. } if code == "58P01"),
            "{err:?}"
        );
        conn.close().await.unwrap();

        let received = server.await.unwrap();
        let tags: Vec<u8> = received.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"pQQQQX");
        assert!(received[0].1.starts_with(b"md5"), "md5 password sent");
        assert_eq!(received[1].1, b"IDENTIFY_SYSTEM\0");
        assert_eq!(received[2].1, b"TIMELINE_HISTORY 2\0");
    }

    #[tokio::test]
    async fn connect_failures_name_the_place() {
        // A port nobody listens on (bound, then released).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = ReplicationConn::connect(&target("127.0.0.1", port, None))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display().to_string();
        let err = ReplicationConn::connect(&target(&host, 5432, None))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("{host}/.s.PGSQL.5432")),
            "{err}"
        );
        let mut tls = target("127.0.0.1", port, None);
        tls.sslmode = SslMode::VerifyFull;
        tls.sslrootcert = Some(dir.path().join("root.crt"));
        let err = ReplicationConn::connect(&tls).await.unwrap_err();
        assert!(matches!(err, ReplError::TlsSetup(_)), "{err}");
        assert!(err.to_string().contains("root.crt"), "{err}");
    }

    /// A server that answers the SSLRequest with `answer`, then returns the next
    /// 8 bytes it gets (the start of the startup packet), if any.
    async fn ssl_answering_server(answer: u8) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            s.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "SSLRequest");
            s.write_all(&[answer]).await.unwrap();
            let mut next = vec![0u8; 8];
            match s.read_exact(&mut next).await {
                Ok(_) => next,
                Err(_) => Vec::new(),
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn sslrequest_answers_follow_the_mode() {
        // require + `N`: a clear error, and no startup packet in plain text.
        let (port, server) = ssl_answering_server(b'N').await;
        let mut t = target("127.0.0.1", port, None);
        t.sslmode = SslMode::Require;
        let err = ReplicationConn::connect(&t).await.unwrap_err();
        assert!(matches!(err, ReplError::TlsRefused { .. }), "{err:?}");
        assert!(err.to_string().contains("does not accept TLS"), "{err}");
        assert!(server.await.unwrap().is_empty(), "nothing sent after N");
        // prefer + `N`: the startup packet follows on the same socket, in plain text.
        let (port, server) = ssl_answering_server(b'N').await;
        let mut t = target("127.0.0.1", port, None);
        t.sslmode = SslMode::Prefer;
        let err = ReplicationConn::connect(&t).await.unwrap_err();
        assert!(matches!(err, ReplError::Connect { .. }), "{err:?}");
        let startup = server.await.unwrap();
        assert_eq!(
            &startup[4..8],
            &196608i32.to_be_bytes(),
            "protocol 3.0 startup"
        );
        // Anything but S or N is a protocol error.
        let (port, _server) = ssl_answering_server(b'E').await;
        t.port = port;
        let err = ReplicationConn::connect(&t).await.unwrap_err();
        assert!(matches!(err, ReplError::Protocol(_)), "{err:?}");
        // disable sends no SSLRequest at all: commands_against_a_scripted_server.
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let err = ReplicationConn::connect(&target("127.0.0.1", port, None))
            .await
            .unwrap_err();
        assert!(matches!(err, ReplError::Connect { .. }), "{err:?}");
    }

    #[test]
    fn server_errors_become_advice() {
        let tcp = target("127.0.0.1", 5432, None);
        let e = ReplError::from_proto(
            server_error(
                "28000",
                "no pg_hba.conf entry for replication connection from host \"127.0.0.1\", user \"repl\", no encryption",
            ),
            &tcp,
        );
        assert!(matches!(e, ReplError::NoReplicationAccess { .. }));
        assert!(
            e.to_string()
                .contains("`host replication repl 127.0.0.1/32 scram-sha-256`"),
            "{e}"
        );
        let sock = target("/run/postgresql", 5432, None);
        let e = ReplError::from_proto(
            server_error(
                "28000",
                "no pg_hba.conf entry for replication connection from host \"[local]\"",
            ),
            &sock,
        );
        assert!(
            e.to_string()
                .contains("`local replication repl scram-sha-256`"),
            "{e}"
        );
        let mut odd = target("db.example", 5432, None);
        odd.user = "Backup User".into();
        let e = ReplError::from_proto(
            server_error(
                "42501",
                "must be superuser or replication role to start walsender",
            ),
            &odd,
        );
        assert!(matches!(e, ReplError::NoReplicationAccess { .. }));
        assert!(
            e.to_string()
                .contains("ALTER ROLE \"Backup User\" REPLICATION"),
            "{e}"
        );
        let e = ReplError::from_proto(
            server_error("28P01", "password authentication failed for user \"repl\""),
            &tcp,
        );
        assert!(matches!(e, ReplError::Auth { .. }));
        assert!(
            e.to_string().contains("password authentication failed"),
            "{e}"
        );
        let e = ReplError::from_proto(server_error("53300", "too many connections"), &tcp);
        assert!(
            matches!(&e, ReplError::Server { code, .. } if code == "53300"),
            "{e:?}"
        );
        assert!(matches!(
            ReplError::from_proto(ProtoError::Auth("no password".into()), &tcp),
            ReplError::Auth { .. }
        ));
        assert!(matches!(
            ReplError::from_proto(ProtoError::Protocol("junk".into()), &tcp),
            ReplError::Protocol(_)
        ));
        assert_eq!(quote_ident("repl_1"), "repl_1");
        assert_eq!(quote_ident("1x"), "\"1x\"");
    }

    fn copy_data(payload: &[u8]) -> Vec<u8> {
        msg(b'd', payload)
    }

    /// A BASE_BACKUP reply with `archive` as `base.tar`, cut into CopyData messages of
    /// `chunk` bytes, then a manifest.
    fn backup_reply(archive: &[u8], chunk: usize) -> Vec<u8> {
        // result_set ends with ReadyForQuery (6 bytes), which the head has not.
        let mut head = result_set(
            &["recptr", "tli"],
            &[Some(b"0/2000028"), Some(b"1")],
            "SELECT",
        );
        head.truncate(head.len() - 6);
        let mut m = vec![head];
        m.push(msg(b'T', &{
            let mut t = 3i16.to_be_bytes().to_vec();
            for c in ["spcoid", "spclocation", "size"] {
                t.extend_from_slice(c.as_bytes());
                t.extend_from_slice(&[0; 19]);
            }
            t
        }));
        m.push(msg(
            b'D',
            &[
                0, 3, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 1, b'8',
            ],
        ));
        m.push(msg(b'C', b"SELECT\0"));
        m.push(msg(b'H', &[0, 0, 0]));
        m.push(copy_data(b"nbase.tar\0\0"));
        for piece in archive.chunks(chunk) {
            m.push(copy_data(&[&b"d"[..], piece].concat()));
        }
        m.push(copy_data(
            &[&b"p"[..], &(archive.len() as i64).to_be_bytes()].concat(),
        ));
        m.push(copy_data(b"m"));
        m.push(copy_data(b"d{\"manifest\""));
        m.push(copy_data(b"d: 1}"));
        m.push(msg(b'c', b""));
        let mut end = result_set(
            &["recptr", "tli"],
            &[Some(b"0/2000100"), Some(b"1")],
            "SELECT",
        );
        end.truncate(end.len() - 6);
        m.push(end);
        m.push(msg(b'C', b"BASE_BACKUP\0"));
        m.push(msg(b'Z', b"I"));
        m.concat()
    }

    #[tokio::test]
    async fn base_backup_against_a_scripted_server() {
        let mut tar = crate::tar::builder::Builder::default();
        let big: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        tar.file("PG_VERSION", b"15\n").file("base/1/1259", &big);
        let archive = tar.end();
        let (port, server) = fake_server(vec![backup_reply(&archive, 700)]).await;
        let mut conn = ReplicationConn::connect(&target("127.0.0.1", port, Some("pw")))
            .await
            .unwrap();
        assert_eq!(conn.server_version(), Some("15.8"));
        let opts = BaseBackupOptions {
            label: "l".into(),
            fast_checkpoint: true,
            manifest: true,
            server_major: 0,
        };
        let mut stream = conn.base_backup(&opts).await.unwrap();
        let mut events = Vec::new();
        let mut data = Vec::new();
        let mut manifest = Vec::new();
        while let Some(ev) = stream.next_event().await.unwrap() {
            match ev {
                BackupEvent::Data(d) => data.extend_from_slice(&d),
                BackupEvent::Manifest(d) => manifest.extend_from_slice(&d),
                BackupEvent::Entry(e) => events.push(format!("entry {} {}", e.path, e.size)),
                BackupEvent::Started(s) => events.push(format!("start {}", s.start_lsn)),
                BackupEvent::Finished(e) => events.push(format!("end {}", e.end_lsn)),
                BackupEvent::ArchiveStart { name, .. } => events.push(format!("archive {name}")),
                other => events.push(format!("{other:?}")),
            }
        }
        assert!(stream.next_event().await.unwrap().is_none());
        assert_eq!(
            events,
            [
                "start 0/2000028",
                "archive base.tar",
                "entry PG_VERSION 3",
                "EntryEnd",
                "entry base/1/1259 3000",
                "EntryEnd",
                "ArchiveEnd",
                &format!("Progress({})", archive.len()),
                "end 0/2000100",
            ]
        );
        assert_eq!(data, [&b"15\n"[..], &big].concat());
        assert_eq!(manifest, b"{\"manifest\": 1}");
        conn.close().await.unwrap();
        let received = server.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&received[1].1),
            "BASE_BACKUP ( LABEL 'l', PROGRESS, CHECKPOINT 'fast', WAIT false, MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'CRC32C' )\0"
        );
    }

    #[tokio::test]
    async fn a_truncated_archive_is_an_error() {
        let mut tar = crate::tar::builder::Builder::default();
        tar.file("PG_VERSION", b"15\n");
        let mut archive = tar.end();
        archive.truncate(archive.len() - 512);
        let (port, _server) = fake_server(vec![backup_reply(&archive, 100)]).await;
        let mut conn = ReplicationConn::connect(&target("127.0.0.1", port, Some("pw")))
            .await
            .unwrap();
        let opts = BaseBackupOptions {
            label: "l".into(),
            fast_checkpoint: false,
            manifest: true,
            server_major: 15,
        };
        let mut stream = conn.base_backup(&opts).await.unwrap();
        let err = loop {
            match stream.next_event().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a truncated archive went unnoticed"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(&err, ReplError::Archive { archive, .. } if archive == "base.tar"),
            "{err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[tokio::test]
    async fn base_backups_from_older_servers_are_refused_before_sending() {
        for (version, words) in [("12.20", "13 or later"), ("9.6.24", "13 or later")] {
            let (port, server) = fake_server_version(version, vec![]).await;
            let mut conn = ReplicationConn::connect(&target("127.0.0.1", port, Some("pw")))
                .await
                .unwrap();
            let major: u32 = version.split('.').next().unwrap().parse().unwrap();
            assert_eq!(conn.server_major(), Some(major));
            let opts = BaseBackupOptions {
                label: "l".into(),
                fast_checkpoint: true,
                manifest: true,
                server_major: 15,
            };
            let err = conn.base_backup(&opts).await.unwrap_err();
            assert!(matches!(err, ReplError::Unsupported(_)), "{err:?}");
            assert!(err.to_string().contains(words), "{err}");
            conn.close().await.unwrap();
            let tags: Vec<u8> = server.await.unwrap().iter().map(|(t, _)| *t).collect();
            assert_eq!(tags, b"pX", "no query sent");
        }
    }
}
