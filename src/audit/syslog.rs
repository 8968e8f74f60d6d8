//! Forwarding the audit trail to a syslog collector (issue 13): each audit record as one RFC 5424
//! message, over TLS (RFC 5425, octet-counting framing, optionally with a client certificate as
//! IHE ATNA requires) or over UDP (RFC 5426, one message per datagram). This is how dcm4chee's
//! audit record repository and IHE ATNA repositories receive audit messages (DICOM PS3.15 A.6,
//! IHE ITI TF-2 3.20 "Record Audit Event").
//!
//! The audit records are stored in the index with an increasing sequence number; that table is
//! the durable spool, and the forwarder only keeps a cursor ([`AuditSpool::forwarded_up_to`]):
//! it reads the records after the cursor, sends them in order and moves the cursor on once they
//! are sent. A collector that is down is retried with a capped backoff (nothing is dropped, the
//! audit writer is never blocked); once it is back, the forwarder catches up from the cursor.
//! Delivery is at least once: after a reconnection the records sent on the lost connection since
//! the cursor last moved are sent again, so the collector may see a record twice (see
//! docs/audit-syslog.md).
//!
//! The message ([`format_message`]):
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML`, with PRI facility 10
//! (security/authorization) and severity 5 (notice) for a success, 4 (warning) for any failure
//! (DICOM PS3.15 A.6.1: "most messages ... severity 5 ... may choose 4"), TIMESTAMP the record's
//! time in UTC with milliseconds, MSGID `IHE+RFC-3881` (IHE ITI TF-2 3.20.4.1.2; PS3.15 A.6
//! allows any MSGID and suggests `DICOM+RFC3881`), no structured data, and the audit message XML
//! in UTF-8 after a byte order mark (RFC 5424 6.4 MSG-UTF8).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::index::IndexResult;
use crate::tls::{CertFiles, TlsError};

/// Facility 10, security/authorization messages (DICOM PS3.15 A.6.1, IHE ITI TF-2 3.20.4.1.2).
pub const FACILITY_AUTHPRIV: u8 = 10;
/// Severity of a record whose outcome is success (0): notice, "normal but significant".
pub const SEVERITY_NOTICE: u8 = 5;
/// Severity of a record whose outcome is a failure (4 minor, 8 serious, 12 major): warning.
pub const SEVERITY_WARNING: u8 = 4;
/// The MSGID of every message (IHE ITI TF-2 3.20.4.1.2; DICOM PS3.15 A.6 accepts any).
pub const MSGID: &str = "IHE+RFC-3881";
/// The APP-NAME unless `--audit-syslog-app-name` says otherwise.
pub const DEFAULT_APP_NAME: &str = "pacs";
/// The syslog-over-TLS port (RFC 5425 4.1) when the URL gives none.
pub const TLS_DEFAULT_PORT: u16 = 6514;
/// The syslog-over-UDP port (RFC 5426 3.3) when the URL gives none.
pub const UDP_DEFAULT_PORT: u16 = 514;
/// The largest UDP payload over IPv4 (65535 - 8 - 20): messages up to it are sent whole in one
/// datagram (IP fragments it on the way); a longer one is cut to it (RFC 5426 3.2 lets a
/// transport limit the size; the XML of a cut message is incomplete, which is logged).
pub const UDP_MAX_MESSAGE: usize = 65_507;
/// The UTF-8 byte order mark that starts the MSG (RFC 5424 6.4).
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Field limits of the RFC 5424 header (section 6).
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const PROCID_MAX: usize = 128;

/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one batch may take to be written and flushed; a collector that stops reading for
/// that long is treated as gone (the connection is dropped, the batch sent again later).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One audit record of the spool, as the forwarder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    /// Increasing with every record appended (gaps allowed).
    pub seq: i64,
    /// When the event happened, milliseconds since the Unix epoch (the message's TIMESTAMP).
    pub at_ms: i64,
    /// The event type, e.g. `query` (for the log; not part of the message).
    pub event: String,
    /// The EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure, 12 major.
    pub outcome: u8,
    /// The DICOM audit message (PS3.15 A.5), UTF-8.
    pub xml: String,
}

/// What the forwarder reads: the audit records in sequence order, and its cursor, both durable
/// (the index implements it: the audit table is the spool).
#[async_trait]
pub trait AuditSpool: Send + Sync + 'static {
    /// Up to `limit` records with `seq` greater than `seq`, in increasing `seq` order.
    async fn records_after(&self, seq: i64, limit: usize) -> IndexResult<Vec<SpooledRecord>>;
    /// The cursor: every record up to this `seq` was forwarded (0 when none was).
    async fn forwarded_up_to(&self) -> IndexResult<i64>;
    /// Moves the cursor (always forwards).
    async fn set_forwarded_up_to(&self, seq: i64) -> IndexResult<()>;
}

/// How messages travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RFC 5425: TLS 1.2 or 1.3, octet-counting framing, the server certificate checked.
    Tls,
    /// RFC 5426: one message per datagram, no delivery guarantee.
    Udp,
}

/// The forwarding as configured (`--audit-syslog` and its companions, see src/config.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    pub transport: Transport,
    /// The collector's host name or IP address; over TLS also the name its certificate must
    /// carry.
    pub host: String,
    pub port: u16,
    /// CA bundle (PEM) the collector's certificate must chain to; None: the system's roots.
    pub ca: Option<PathBuf>,
    /// The node's client certificate and key, for collectors that require mutual TLS (IHE
    /// ATNA).
    pub client_cert: Option<CertFiles>,
    /// APP-NAME of every message.
    pub app_name: String,
    /// HOSTNAME of every message; None: this machine's host name.
    pub hostname: Option<String>,
    /// Records read from the spool at a time.
    pub batch: usize,
    /// How often the spool is read when nothing woke the forwarder.
    pub poll_interval: Duration,
    /// The first wait after a failure; doubled after each failure up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// TLS: records count as delivered (the cursor moves past them) once the connection they
    /// were written on stayed open this long afterwards; a connection the collector closes
    /// sooner has them sent again on the next one.
    pub confirm_after: Duration,
}

impl SyslogSettings {
    /// The settings from the options: `url` is `tls://host[:port]` or `udp://host[:port]`;
    /// errors name the option and the value.
    pub fn from_options(
        url: &str,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        app_name: Option<String>,
    ) -> Result<SyslogSettings, String> {
        let (transport, host, port) = parse_url(url)?;
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some(CertFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err("audit_syslog_cert and audit_syslog_key go together".into());
            }
        };
        if transport == Transport::Udp && (ca.is_some() || client_cert.is_some()) {
            return Err(format!(
                "audit_syslog {url:?} is UDP: audit_syslog_ca, audit_syslog_cert and \
                 audit_syslog_key apply to tls:// only"
            ));
        }
        let app_name = app_name.unwrap_or_else(|| DEFAULT_APP_NAME.into());
        if app_name.is_empty()
            || app_name.len() > APP_NAME_MAX
            || !app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(format!(
                "audit_syslog_app_name {app_name:?}: 1 to 48 printable US-ASCII characters, \
                 no space (RFC 5424 APP-NAME)"
            ));
        }
        Ok(SyslogSettings {
            transport,
            host,
            port,
            ca,
            client_cert,
            app_name,
            hostname: None,
            batch: 100,
            poll_interval: Duration::from_secs(5),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            confirm_after: Duration::from_secs(1),
        })
    }
}

/// `tls://host[:port]` or `udp://host[:port]` (host a name, an IPv4 address or a bracketed
/// IPv6 address).
fn parse_url(url: &str) -> Result<(Transport, String, u16), String> {
    let bad = |why: &str| {
        format!("audit_syslog {url:?}: {why} (expected tls://host:port or udp://host:port)")
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let (transport, default_port) = match parsed.scheme() {
        "tls" => (Transport::Tls, TLS_DEFAULT_PORT),
        "udp" => (Transport::Udp, UDP_DEFAULT_PORT),
        other => return Err(bad(&format!("unknown scheme {other:?}"))),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("no user name or password"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return Err(bad("no path, query or fragment"));
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(url::Host::Domain(name)) => {
            let name = name.to_string();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(bad(&format!("{name:?} is not a host name")));
            }
            name
        }
        None => return Err(bad("no host")),
    };
    if parsed.port() == Some(0) {
        return Err(bad("port 0"));
    }
    if transport == Transport::Tls && ServerName::try_from(host.clone()).is_err() {
        return Err(bad(&format!(
            "{host:?} cannot be checked against a certificate"
        )));
    }
    Ok((transport, host, parsed.port().unwrap_or(default_port)))
}

/// The errors of [`start_forwarder`]: the TLS files as configured cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("audit syslog: {0}")]
    Tls(#[from] TlsError),
    #[error("audit syslog: {0}")]
    Config(String),
}

/// A header field: printable US-ASCII only (others dropped), at most `max` characters, `-`
/// (NILVALUE) when nothing is left.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| ('!'..='~').contains(c))
        .take(max)
        .collect();
    if field.is_empty() {
        "-".into()
    } else {
        field
    }
}

/// RFC 3339 in UTC with milliseconds (RFC 5424 TIMESTAMP), `-` for a time outside years 0 to
/// 9999.
pub fn timestamp(at_ms: i64) -> String {
    let nanos = i128::from(at_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) if (0..=9999).contains(&t.year()) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        _ => "-".into(),
    }
}

/// The PRI value of a record: facility 10, notice for a success, warning for a failure.
pub fn priority(outcome: u8) -> u8 {
    let severity = if outcome == 0 {
        SEVERITY_NOTICE
    } else {
        SEVERITY_WARNING
    };
    FACILITY_AUTHPRIV * 8 + severity
}

/// The header values every message of a forwarder carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

impl Origin {
    /// Checked and cut to the RFC 5424 limits (HOSTNAME 255, APP-NAME 48, PROCID 128).
    pub fn new(hostname: &str, app_name: &str, procid: &str) -> Origin {
        Origin {
            hostname: header_field(hostname, HOSTNAME_MAX),
            app_name: header_field(app_name, APP_NAME_MAX),
            procid: header_field(procid, PROCID_MAX),
        }
    }
}

/// One RFC 5424 SYSLOG-MSG for `record`.
pub fn format_message(record: &SpooledRecord, origin: &Origin) -> Vec<u8> {
    let header = format!(
        "<{}>1 {} {} {} {} {} - ",
        priority(record.outcome),
        timestamp(record.at_ms),
        origin.hostname,
        origin.app_name,
        origin.procid,
        MSGID
    );
    let mut message = Vec::with_capacity(header.len() + BOM.len() + record.xml.len());
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(BOM);
    message.extend_from_slice(record.xml.as_bytes());
    message
}

/// RFC 5425 4.3 octet-counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message);
    frame
}

/// This machine's host name (Linux: the kernel's), `-` when unknown.
pub fn local_hostname() -> String {
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(name) = std::fs::read_to_string(path) {
            let name = name.trim();
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    "-".into()
}

/// The TLS client configuration: TLS 1.2/1.3 on the node's provider, the collector checked
/// against `ca` (else the system roots) and its name, the client certificate when configured.
pub fn client_config(settings: &SyslogSettings) -> Result<Arc<rustls::ClientConfig>, SyslogError> {
    let roots = crate::tls::outgoing_roots(settings.ca.as_deref()).map_err(|e| match e {
        TlsError::Config(_) if settings.ca.is_none() => SyslogError::Config(
            "no system root certificates found: give the collector's CA (--audit-syslog-ca)".into(),
        ),
        other => SyslogError::Tls(other),
    })?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)
        .map_err(|e| SyslogError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &settings.client_cert {
        Some(files) => {
            let chain = crate::tls::load_certs(&files.cert)?;
            let key = crate::tls::load_key(&files.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SyslogError::Config(format!("{}: {e}", files.key.display())))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What the forwarder is doing, for the log, the admin API and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwarderStatus {
    /// A connection to the collector is open (UDP: a socket is bound).
    pub connected: bool,
    /// Every record up to this `seq` was written to the collector.
    pub sent_up_to: i64,
    /// The spool's cursor as the forwarder last set it.
    pub forwarded_up_to: i64,
    /// Successful connections (TLS handshakes) so far.
    pub connections: u64,
    /// Failures (connect, handshake, write, spool) so far.
    pub failures: u64,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// A running forwarder: wake it when records are appended, watch its status, stop it.
pub struct SyslogForwarder {
    wake: Arc<Notify>,
    status: watch::Receiver<ForwarderStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SyslogForwarder {
    /// Tells the forwarder a record was appended (it also reads the spool every
    /// `poll_interval`). Cheap, never blocks: call it after each append.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The notifier [`SyslogForwarder::wake`] pokes, for a recorder that holds it.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn status(&self) -> ForwarderStatus {
        self.status.borrow().clone()
    }

    /// A receiver of every status change.
    pub fn watch_status(&self) -> watch::Receiver<ForwarderStatus> {
        self.status.clone()
    }

    /// Stops the forwarder: what is in the spool is still sent (and confirmed) if the collector
    /// takes it within `grace`; the rest stays in the spool for the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for SyslogForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts forwarding `spool` as `settings` say (inside a tokio runtime). Fails when the TLS
/// files cannot be used; an unreachable collector is not an error here (it is retried).
pub fn start_forwarder(
    settings: SyslogSettings,
    spool: Arc<dyn AuditSpool>,
) -> Result<SyslogForwarder, SyslogError> {
    let tls = match settings.transport {
        Transport::Tls => {
            let name = ServerName::try_from(settings.host.clone())
                .map_err(|e| SyslogError::Config(format!("{}: {e}", settings.host)))?;
            Some((
                tokio_rustls::TlsConnector::from(client_config(&settings)?),
                name,
            ))
        }
        Transport::Udp => None,
    };
    let hostname = settings.hostname.clone().unwrap_or_else(local_hostname);
    let origin = Origin::new(
        &hostname,
        &settings.app_name,
        &std::process::id().to_string(),
    );
    let wake = Arc::new(Notify::new());
    let (status_tx, status) = watch::channel(ForwarderStatus::default());
    let (stop, stop_rx) = watch::channel(false);
    let worker = Worker {
        backoff: settings.retry_min,
        settings,
        spool,
        tls,
        origin,
        wake: wake.clone(),
        stop: stop_rx,
        status: status_tx,
        cursor: 0,
        sent: 0,
        pending: VecDeque::new(),
        conn: None,
    };
    let task = tokio::spawn(worker.run());
    Ok(SyslogForwarder {
        wake,
        status,
        stop,
        task,
    })
}

/// An open way to the collector.
enum Conn {
    Tls {
        writer: WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
        /// Set by `reader` when the collector closes the connection (it never sends data).
        closed: watch::Receiver<bool>,
        reader: JoinHandle<()>,
    },
    Udp(UdpSocket),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::Tls { closed, .. } => *closed.borrow(),
            Conn::Udp(_) => false,
        }
    }

    /// Resolves when the collector closes the connection (never for UDP).
    async fn closed(&mut self) {
        match self {
            Conn::Tls { closed, .. } => {
                let _ = closed.wait_for(|c| *c).await;
            }
            Conn::Udp(_) => std::future::pending().await,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Conn::Tls { reader, .. } = self {
            reader.abort();
        }
    }
}

/// Reads the collector's side of the connection until it ends, then says so.
async fn watch_for_close<R: AsyncRead + Unpin>(mut reader: R, closed: watch::Sender<bool>) {
    let mut buf = [0u8; 512];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tracing::debug!(bytes = n, "audit syslog: the collector sent data (ignored)"),
        }
    }
    let _ = closed.send(true);
}

/// Why a step failed: the spool (the connection stays) or the collector (it is dropped).
enum Failure {
    Spool(String),
    Collector(String),
}

enum Step {
    Sent,
    Idle,
}

struct Worker {
    settings: SyslogSettings,
    spool: Arc<dyn AuditSpool>,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    origin: Origin,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    status: watch::Sender<ForwarderStatus>,
    /// The spool's cursor.
    cursor: i64,
    /// The last record written to the collector (at least `cursor`).
    sent: i64,
    /// Records written on the current TLS connection and not yet confirmed: (seq, when).
    pending: VecDeque<(i64, Instant)>,
    conn: Option<Conn>,
    backoff: Duration,
}

impl Worker {
    async fn run(mut self) {
        loop {
            match self.spool.forwarded_up_to().await {
                Ok(cursor) => {
                    self.cursor = cursor;
                    self.sent = cursor;
                    self.status.send_modify(|s| {
                        s.forwarded_up_to = cursor;
                        s.sent_up_to = cursor;
                    });
                    break;
                }
                Err(e) => {
                    self.failed(Failure::Spool(e.to_string()));
                    if self.pause().await {
                        return;
                    }
                }
            }
        }
        loop {
            if *self.stop.borrow() {
                self.finish().await;
                return;
            }
            match self.step().await {
                Ok(Step::Sent) => {}
                Ok(Step::Idle) => {
                    if self.idle().await {
                        self.finish().await;
                        return;
                    }
                }
                Err(failure) => {
                    self.failed(failure);
                    if self.pause().await {
                        return;
                    }
                }
            }
        }
    }

    /// Confirms what can be, then sends the next batch if there is one.
    async fn step(&mut self) -> Result<Step, Failure> {
        if self.conn.as_ref().is_some_and(Conn::is_closed) {
            return Err(Failure::Collector(
                "the collector closed the connection".into(),
            ));
        }
        self.confirm(false).await?;
        let batch = self
            .spool
            .records_after(self.sent, self.settings.batch.max(1))
            .await
            .map_err(|e| Failure::Spool(e.to_string()))?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            return Ok(Step::Idle);
        };
        if self.conn.is_none() {
            self.connect().await.map_err(Failure::Collector)?;
        }
        self.send(&batch).await.map_err(Failure::Collector)?;
        self.sent = last;
        self.status.send_modify(|s| {
            s.sent_up_to = last;
            s.last_error = None;
        });
        self.backoff = self.settings.retry_min;
        self.pending.push_back((last, Instant::now()));
        if matches!(self.conn, Some(Conn::Udp(_))) {
            // no delivery signal over UDP: sent is as good as it gets
            self.confirm(true).await?;
        }
        Ok(Step::Sent)
    }

    async fn connect(&mut self) -> Result<(), String> {
        let (host, port) = (self.settings.host.as_str(), self.settings.port);
        let conn = match &self.tls {
            Some((connector, name)) => {
                let handshake = async {
                    let tcp = TcpStream::connect((host, port))
                        .await
                        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
                    let _ = tcp.set_nodelay(true);
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))
                };
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                    .await
                    .map_err(|_| format!("connect to {host}:{port}: timed out"))??;
                let (reader, writer) = tokio::io::split(stream);
                let (closed_tx, closed) = watch::channel(false);
                let reader = tokio::spawn(watch_for_close(reader, closed_tx));
                Conn::Tls {
                    writer,
                    closed,
                    reader,
                }
            }
            None => {
                let addr: SocketAddr = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| format!("resolve {host}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("resolve {host}: no address"))?;
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local)
                    .await
                    .map_err(|e| format!("bind a UDP socket: {e}"))?;
                socket
                    .connect(addr)
                    .await
                    .map_err(|e| format!("UDP to {addr}: {e}"))?;
                Conn::Udp(socket)
            }
        };
        tracing::info!(host, port, "audit syslog: connected to the collector");
        self.conn = Some(conn);
        self.status.send_modify(|s| {
            s.connected = true;
            s.connections += 1;
        });
        Ok(())
    }

    async fn send(&mut self, batch: &[SpooledRecord]) -> Result<(), String> {
        let origin = &self.origin;
        match self.conn.as_mut().expect("connected") {
            Conn::Tls { writer, .. } => {
                let mut frames = Vec::new();
                for record in batch {
                    frames.extend_from_slice(&octet_counted(&format_message(record, origin)));
                }
                let write = async {
                    writer.write_all(&frames).await?;
                    writer.flush().await
                };
                tokio::time::timeout(WRITE_TIMEOUT, write)
                    .await
                    .map_err(|_| "write to the collector: timed out".to_string())?
                    .map_err(|e| format!("write to the collector: {e}"))
            }
            Conn::Udp(socket) => {
                for record in batch {
                    let mut message = format_message(record, origin);
                    if message.len() > UDP_MAX_MESSAGE {
                        tracing::warn!(
                            seq = record.seq,
                            event = %record.event,
                            bytes = message.len(),
                            "audit syslog: message longer than a UDP datagram, cut to \
                             {UDP_MAX_MESSAGE} bytes (use tls:// for long messages)"
                        );
                        message.truncate(UDP_MAX_MESSAGE);
                    }
                    socket
                        .send(&message)
                        .await
                        .map_err(|e| format!("UDP send: {e}"))?;
                }
                Ok(())
            }
        }
    }

    /// Moves the cursor past the records whose connection stayed open `confirm_after` after
    /// they were written (all of them when `all`).
    /// (The entries leave `pending` only once the spool took the cursor: a failure to store it
    /// is retried with the next confirmation.)
    async fn confirm(&mut self, all: bool) -> Result<(), Failure> {
        let now = Instant::now();
        let confirmed = self
            .pending
            .iter()
            .take_while(|&&(_, at)| all || now.duration_since(at) >= self.settings.confirm_after)
            .count();
        let Some(&(seq, _)) = confirmed.checked_sub(1).and_then(|i| self.pending.get(i)) else {
            return Ok(());
        };
        self.set_cursor(seq).await?;
        self.pending.drain(..confirmed);
        Ok(())
    }

    async fn set_cursor(&mut self, seq: i64) -> Result<(), Failure> {
        if seq <= self.cursor {
            return Ok(());
        }
        self.spool
            .set_forwarded_up_to(seq)
            .await
            .map_err(|e| Failure::Spool(e.to_string()))?;
        self.cursor = seq;
        self.status.send_modify(|s| s.forwarded_up_to = seq);
        Ok(())
    }

    /// Waits for a wake-up, the poll interval, the next confirmation, a closed connection or
    /// the stop; true when stopped.
    async fn idle(&mut self) -> bool {
        let confirm_at = self
            .pending
            .front()
            .map(|&(_, at)| at + self.settings.confirm_after);
        let poll = tokio::time::sleep(self.settings.poll_interval);
        let confirm = async {
            match confirm_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let conn = self.conn.as_mut();
        let closed = async move {
            match conn {
                Some(conn) => conn.closed().await,
                None => std::future::pending().await,
            }
        };
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = self.wake.notified() => false,
            _ = poll => false,
            _ = confirm => false,
            _ = closed => false,
            _ = stop.wait_for(|s| *s) => true,
        }
    }

    /// After a failure: the collector's connection is dropped (what it did not confirm will be
    /// sent again), the failure recorded.
    fn failed(&mut self, failure: Failure) {
        let message = match failure {
            Failure::Spool(e) => format!("audit spool: {e}"),
            Failure::Collector(e) => {
                self.conn = None;
                self.pending.clear();
                self.sent = self.cursor;
                e
            }
        };
        tracing::warn!(error = %message, retry_in = ?self.backoff, "audit syslog: forwarding failed");
        let (connected, sent) = (self.conn.is_some(), self.sent);
        self.status.send_modify(|s| {
            s.connected = connected;
            s.sent_up_to = sent;
            s.failures += 1;
            s.last_error = Some(message);
        });
    }

    /// Waits the backoff (doubling it up to `retry_max`); true when stopped meanwhile.
    async fn pause(&mut self) -> bool {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.settings.retry_max);
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stop.wait_for(|s| *s) => true,
        }
    }

    /// On stop: sends what the spool holds while the collector takes it, waits for the last
    /// records' confirmation, closes the connection. The caller bounds the time.
    async fn finish(&mut self) {
        loop {
            match self.step().await {
                Ok(Step::Sent) => continue,
                Ok(Step::Idle) => break,
                Err(failure) => {
                    self.failed(failure);
                    return;
                }
            }
        }
        if let Some(&(_, at)) = self.pending.back() {
            let until = at + self.settings.confirm_after;
            let conn = self.conn.as_mut();
            let closed = async move {
                match conn {
                    Some(conn) => conn.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = closed => {}
            }
            if self.conn.as_ref().is_some_and(Conn::is_closed) {
                return;
            }
            if let Err(failure) = self.confirm(true).await {
                self.failed(failure);
            }
        }
        if let Some(Conn::Tls { writer, .. }) = self.conn.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer.shutdown()).await;
        }
        self.conn = None;
        self.status.send_modify(|s| s.connected = false);
    }
}

/// The node's spool: the audit trail in the index (`audit_log`) and the cursor in
/// `node_settings` (`audit.cursor.syslog`), so a restarted node goes on where it stopped. Nodes
/// sharing one index share the cursor (it only moves forward): each record reaches the
/// collector at least once, and twice when two nodes read it at the same moment.
pub struct IndexSpool(pub std::sync::Arc<dyn crate::index::Index>);

#[async_trait]
impl AuditSpool for IndexSpool {
    async fn records_after(&self, seq: i64, limit: usize) -> IndexResult<Vec<SpooledRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.0.audit_records_after(seq, limit).await
    }

    async fn forwarded_up_to(&self) -> IndexResult<i64> {
        self.0.audit_cursor("syslog").await
    }

    async fn set_forwarded_up_to(&self, seq: i64) -> IndexResult<()> {
        self.0.set_audit_cursor("syslog", seq).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, outcome: u8, xml: &str) -> SpooledRecord {
        SpooledRecord {
            seq,
            at_ms: 1_764_600_000_123,
            event: "query".into(),
            outcome,
            xml: xml.into(),
        }
    }

    #[test]
    fn urls() {
        let ok = |url: &str| parse_url(url).unwrap();
        assert_eq!(
            ok("tls://audit.example.org:6514"),
            (Transport::Tls, "audit.example.org".into(), 6514)
        );
        assert_eq!(
            ok("tls://audit.example.org"),
            (Transport::Tls, "audit.example.org".into(), 6514)
        );
        assert_eq!(
            ok("udp://10.0.0.5"),
            (Transport::Udp, "10.0.0.5".into(), 514)
        );
        assert_eq!(ok("udp://[::1]:5514"), (Transport::Udp, "::1".into(), 5514));
        assert_eq!(
            ok("tls://127.0.0.1:7000/"),
            (Transport::Tls, "127.0.0.1".into(), 7000)
        );
        for bad in [
            "tcp://host:514",
            "host:514",
            "tls://",
            "tls://host:0",
            "tls://host:99999",
            "tls://user@host:6514",
            "tls://host:6514/path",
            "udp://host:514?x=1",
            "tls://ho_st:6514",
        ] {
            let error = parse_url(bad).unwrap_err();
            assert!(
                error.contains("audit_syslog") && error.contains(bad),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn options_are_checked() {
        let s = SyslogSettings::from_options("tls://h:1", None, None, None, None).unwrap();
        assert_eq!(s.app_name, "pacs");
        assert!(s.client_cert.is_none());
        let e = SyslogSettings::from_options("tls://h:1", None, Some("c".into()), None, None)
            .unwrap_err();
        assert!(e.contains("audit_syslog_key"), "{e}");
        let e = SyslogSettings::from_options("udp://h:1", Some("ca.pem".into()), None, None, None)
            .unwrap_err();
        assert!(e.contains("tls://"), "{e}");
        for bad in ["", "has space", &"x".repeat(49), "é"] {
            let e = SyslogSettings::from_options("udp://h", None, None, None, Some(bad.into()))
                .unwrap_err();
            assert!(e.contains("audit_syslog_app_name"), "{e}");
        }
    }

    #[test]
    fn the_message() {
        let origin = Origin::new("node1.example.org", "pacs", "4242");
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>Müller</AuditMessage>";
        let message = format_message(&record(7, 0, xml), &origin);
        let expected_header =
            "<85>1 2025-12-01T14:40:00.123Z node1.example.org pacs 4242 IHE+RFC-3881 - ";
        assert!(message.starts_with(expected_header.as_bytes()));
        let rest = &message[expected_header.len()..];
        assert_eq!(&rest[..3], BOM);
        assert_eq!(&rest[3..], xml.as_bytes());
        let failure = format_message(&record(8, 4, xml), &origin);
        assert!(failure.starts_with(b"<84>1 "));
        for outcome in [4, 8, 12] {
            assert_eq!(priority(outcome), 84);
        }
        let frame = octet_counted(&message);
        let text = format!("{} ", message.len());
        assert!(frame.starts_with(text.as_bytes()));
        assert_eq!(&frame[text.len()..], &message[..]);
    }

    #[test]
    fn header_fields_respect_rfc_5424() {
        let origin = Origin::new(&"h".repeat(300), &"a".repeat(60), "");
        assert_eq!(origin.hostname.len(), 255);
        assert_eq!(origin.app_name.len(), 48);
        assert_eq!(origin.procid, "-");
        assert_eq!(
            Origin::new("my host\tname", "pä cs", "1").hostname,
            "myhostname"
        );
        assert_eq!(Origin::new("", "pä cs", "1").app_name, "pcs");
        assert_eq!(Origin::new("", "x", "1").hostname, "-");
        assert_eq!(MSGID.len(), 12);
        assert!(MSGID.len() <= 32);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_764_600_000_123), "2025-12-01T14:40:00.123Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(timestamp(i64::MAX), "-");
    }
}
