//! Syslog collectors for the audit forwarding tests (tests/audit_syslog.rs): a private rsyslogd
//! (Debian's rsyslog and rsyslog-gnutls) on 127.0.0.1 with TLS and UDP inputs writing every
//! message it receives as one JSON line, a strict octet-counting TLS listener in Rust (rsyslog
//! is lenient about framing), and an in-memory audit spool.
//!
//! `RSYSLOGD` names the rsyslogd binary (default: on `PATH`, else /usr/sbin/rsyslogd). A missing
//! or failing rsyslogd is a test failure, never a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pacs::audit::syslog::{AuditSpool, SpooledRecord};
use pacs::index::{IndexError, IndexResult};
use tokio::io::AsyncReadExt;

use super::certs::{Issued, TestCa};

// ---------------------------------------------------------------------------
// In-memory spool
// ---------------------------------------------------------------------------

/// The audit table and the forwarder's cursor, in memory.
#[derive(Default)]
pub struct MemorySpool {
    records: Mutex<Vec<SpooledRecord>>,
    cursor: Mutex<i64>,
    /// While set, every call fails as an unreachable index would.
    failing: std::sync::atomic::AtomicBool,
}

impl MemorySpool {
    pub fn new() -> Arc<MemorySpool> {
        Arc::new(MemorySpool::default())
    }

    /// Appends a record with the next sequence number; returns it.
    pub fn push(&self, event: &str, outcome: u8, xml: String) -> i64 {
        let mut records = self.records.lock().unwrap();
        let seq = records.last().map_or(1, |r| r.seq + 1);
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        records.push(SpooledRecord {
            seq,
            at_ms,
            event: event.into(),
            outcome,
            xml,
        });
        seq
    }

    /// The record with this sequence number.
    pub fn get(&self, seq: i64) -> SpooledRecord {
        let records = self.records.lock().unwrap();
        records.iter().find(|r| r.seq == seq).unwrap().clone()
    }

    pub fn cursor(&self) -> i64 {
        *self.cursor.lock().unwrap()
    }

    /// Makes every call fail (`true`) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    fn check(&self) -> IndexResult<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(IndexError::Unavailable(
                "the test's spool is failing".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl AuditSpool for MemorySpool {
    async fn records_after(&self, seq: i64, limit: usize) -> IndexResult<Vec<SpooledRecord>> {
        self.check()?;
        let records = self.records.lock().unwrap();
        Ok(records
            .iter()
            .filter(|r| r.seq > seq)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn forwarded_up_to(&self) -> IndexResult<i64> {
        self.check()?;
        Ok(self.cursor())
    }

    async fn set_forwarded_up_to(&self, seq: i64) -> IndexResult<()> {
        self.check()?;
        let mut cursor = self.cursor.lock().unwrap();
        assert!(
            seq >= *cursor,
            "the cursor moved back from {} to {seq}",
            *cursor
        );
        *cursor = seq;
        Ok(())
    }
}

/// A DICOM audit message (PS3.15 A.5.3.10 Query, abridged) naming `seq` in its
/// ParticipantObjectID, padded with a ParticipantObjectDetail of `padding` bytes (non-ASCII
/// text included) to make it long.
pub fn audit_xml(seq: i64, outcome: u8, padding: usize) -> String {
    let mut detail = String::new();
    while detail.len() < padding {
        detail.push_str("Zoë Müller 山田 ");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <AuditMessage>\
         <EventIdentification EventActionCode=\"E\" EventDateTime=\"2026-12-01T14:00:00.000Z\" \
         EventOutcomeIndicator=\"{outcome}\">\
         <EventID csd-code=\"110112\" codeSystemName=\"DCM\" originalText=\"Query\"/>\
         </EventIdentification>\
         <ActiveParticipant UserID=\"alice\" UserIsRequestor=\"true\" NetworkAccessPointID=\"127.0.0.1\" \
         NetworkAccessPointTypeCode=\"2\"/>\
         <AuditSourceIdentification AuditSourceID=\"PACS\"/>\
         <ParticipantObjectIdentification ParticipantObjectTypeCode=\"2\" \
         ParticipantObjectTypeCodeRole=\"3\" ParticipantObjectID=\"seq-{seq}\">\
         <ParticipantObjectIDTypeCode csd-code=\"1.2.840.10008.5.1.4.1.2.2.1\" \
         codeSystemName=\"DCM\" originalText=\"Study Root Query/Retrieve - FIND\"/>\
         <ParticipantObjectDetail type=\"padding\" value=\"{detail}\"/>\
         </ParticipantObjectIdentification>\
         </AuditMessage>"
    )
}

/// The `seq` an [`audit_xml`] message names.
pub fn seq_of(xml: &str) -> Option<i64> {
    let start = xml.find("ParticipantObjectID=\"seq-")? + "ParticipantObjectID=\"seq-".len();
    let end = start + xml[start..].find('"')?;
    xml[start..end].parse().ok()
}

// ---------------------------------------------------------------------------
// rsyslogd
// ---------------------------------------------------------------------------

fn rsyslogd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RSYSLOGD") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("rsyslogd"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/rsyslogd"))
}

/// The TLS input of a private rsyslogd.
pub struct RsyslogTls<'a> {
    /// The CA rsyslog trusts for client certificates.
    pub ca: &'a Path,
    /// rsyslog's own certificate and key.
    pub server: &'a Issued,
    /// `anon` (no client certificate asked) or `x509/certvalid` (one signed by `ca` required).
    pub auth_mode: &'a str,
}

/// One message as rsyslog received and parsed it (RFC 5424 fields as rsyslog names them).
#[derive(Debug, Clone)]
pub struct Received {
    /// `imtcp` or `imudp`.
    pub input: String,
    pub pri: String,
    pub version: String,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: String,
    /// The MSG (rsyslog keeps a leading BOM or not depending on its version: see `xml`).
    pub msg: String,
}

impl Received {
    /// The MSG without its BOM.
    pub fn xml(&self) -> &str {
        self.msg.strip_prefix('\u{feff}').unwrap_or(&self.msg)
    }
}

/// A private rsyslogd on 127.0.0.1: a TLS input (imtcp with the gtls driver) and a UDP input
/// (imudp), each on its own free port, writing what they receive to `received.jsonl`.
pub struct Rsyslog {
    dir: PathBuf,
    conf: PathBuf,
    pub tcp_port: u16,
    pub udp_port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    /// Writes the configuration into `dir` and starts rsyslogd; panics (the test fails) when it
    /// does not start or its TLS input does not listen within 20 s.
    pub fn start(dir: &Path, tls: Option<RsyslogTls<'_>>) -> Rsyslog {
        let tcp_port = super::free_port();
        let udp_port = super::free_port();
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let received = dir.join("received.jsonl");
        let internal = dir.join("rsyslog-internal.log");
        let mut global = format!(
            "global(\n  workDirectory=\"{}\"\n  maxMessageSize=\"256k\"\n  \
             parser.escapeControlCharactersOnReceive=\"off\"\n  net.enableDNS=\"off\"\n",
            work.display()
        );
        // Without TLS, a plain TCP input: the readiness probe (imudp cannot be probed; its
        // socket is bound when the configuration is activated, before the TCP one listens).
        let mut tcp_input = format!(
            "module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\")\n"
        );
        if let Some(tls) = &tls {
            global.push_str(&format!(
                "  defaultNetstreamDriverCAFile=\"{}\"\n  defaultNetstreamDriverCertFile=\"{}\"\n  \
                 defaultNetstreamDriverKeyFile=\"{}\"\n",
                tls.ca.display(),
                tls.server.cert.display(),
                tls.server.key.display()
            ));
            tcp_input = format!(
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" \
                 StreamDriver.AuthMode=\"{}\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\")\n",
                tls.auth_mode
            );
        }
        global.push_str(")\n");
        let conf = format!(
            "{global}\
             {tcp_input}\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\")\n\
             template(name=\"pacs_json\" type=\"list\") {{\n\
             \x20 constant(value=\"{{\")\n\
             \x20 property(outname=\"input\" name=\"inputname\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"pri\" name=\"pri\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"version\" name=\"protocol-version\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"timestamp\" name=\"timereported\" dateFormat=\"rfc3339\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"hostname\" name=\"hostname\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"app\" name=\"app-name\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"procid\" name=\"procid\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"msgid\" name=\"msgid\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"sd\" name=\"structured-data\" format=\"jsonf\")\n\
             \x20 constant(value=\",\")\n\
             \x20 property(outname=\"msg\" name=\"msg\" format=\"jsonf\")\n\
             \x20 constant(value=\"}}\\n\")\n\
             }}\n\
             if $inputname == \"imtcp\" or $inputname == \"imudp\" then {{\n\
             \x20 action(type=\"omfile\" file=\"{}\" template=\"pacs_json\")\n\
             \x20 stop\n\
             }}\n\
             action(type=\"omfile\" file=\"{}\")\n",
            received.display(),
            internal.display()
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let check = super::run_with_timeout(
            Command::new(rsyslogd_binary())
                .args(["-N1", "-f"])
                .arg(&conf_path),
            Duration::from_secs(30),
        );
        assert!(
            check.status.success(),
            "rsyslogd -N1 refused the configuration:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut rsyslog = Rsyslog {
            dir: dir.to_path_buf(),
            conf: conf_path,
            tcp_port,
            udp_port,
            child: None,
        };
        rsyslog.run();
        rsyslog
    }

    fn run(&mut self) {
        let stderr = std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(rsyslogd_binary())
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", rsyslogd_binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rsyslogd exited at start ({status}):\n{}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.tcp_port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd not listening on 127.0.0.1:{} after 20 s:\n{}",
                self.tcp_port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// rsyslogd's standard error and internal messages.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "stderr:\n{}\ninternal:\n{}",
            read("rsyslogd.stderr"),
            read("rsyslog-internal.log")
        )
    }

    /// SIGTERM (rsyslog writes out what it received), then waits for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rsyslogd did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again, on the same ports with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let Ok(file) = std::fs::File::open(self.dir.join("received.jsonl")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.unwrap();
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                // a line being written right now
                continue;
            };
            let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
            out.push(Received {
                input: field("input"),
                pri: field("pri"),
                version: field("version"),
                timestamp: field("timestamp"),
                hostname: field("hostname"),
                app_name: field("app"),
                procid: field("procid"),
                msgid: field("msgid"),
                structured_data: field("sd"),
                msg: field("msg"),
            });
        }
        out
    }

    /// Waits until `ok` holds for what was received (checked every 100 ms), else panics after
    /// `timeout` showing what came.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if ok(&received) {
                return received;
            }
            if Instant::now() > deadline {
                let seqs: Vec<Option<i64>> = received.iter().map(|r| seq_of(r.xml())).collect();
                panic!(
                    "rsyslog: {what} not within {timeout:?}; received seqs {seqs:?}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// A strict RFC 5425 listener
// ---------------------------------------------------------------------------

/// What a [`FramingListener`] received: the SYSLOG-MSGs of well-formed frames, and every
/// framing error.
#[derive(Debug, Default)]
pub struct Framed {
    pub messages: Vec<Vec<u8>>,
    pub errors: Vec<String>,
    /// Connections accepted (TLS handshakes completed).
    pub connections: usize,
}

/// A TLS listener on 127.0.0.1 that requires a client certificate signed by the test's CA and
/// reads RFC 5425 octet-counting frames exactly: MSG-LEN is NONZERO-DIGIT *DIGIT, then one SP,
/// then exactly MSG-LEN octets; anything else is a framing error.
pub struct FramingListener {
    pub port: u16,
    pub framed: Arc<Mutex<Framed>>,
    task: tokio::task::JoinHandle<()>,
}

impl FramingListener {
    pub async fn start(ca: &TestCa, dir: &Path) -> FramingListener {
        FramingListener::start_dropping(ca, dir, None).await
    }

    /// With `drop_first_after: Some(n)`, the first connection is cut (without a TLS
    /// close_notify) once `n` messages were read on it, whatever else was already sent on it
    /// being thrown away: a collector that dies with records in flight.
    pub async fn start_dropping(
        ca: &TestCa,
        dir: &Path,
        drop_first_after: Option<usize>,
    ) -> FramingListener {
        let server = ca.server(dir, "framing-listener");
        let ca_file = ca.write(dir, "framing-ca.pem");
        let cert = pacs::tls::ReloadingCert::open(pacs::tls::CertFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
        })
        .unwrap();
        let config =
            pacs::tls::server_config(cert, Some(&ca_file), pacs::tls::ClientAuth::Required, &[])
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let framed = Arc::new(Mutex::new(Framed::default()));
        let shared = framed.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let framed = shared.clone();
                tokio::spawn(async move {
                    let stream = match acceptor.accept(tcp).await {
                        Ok(s) => s,
                        Err(e) => {
                            framed
                                .lock()
                                .unwrap()
                                .errors
                                .push(format!("handshake: {e}"));
                            return;
                        }
                    };
                    let limit = {
                        let mut framed = framed.lock().unwrap();
                        framed.connections += 1;
                        drop_first_after.filter(|_| framed.connections == 1)
                    };
                    read_frames(stream, &framed, limit).await;
                });
            }
        });
        FramingListener { port, framed, task }
    }

    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.framed.lock().unwrap().messages.clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.framed.lock().unwrap().errors.clone()
    }
}

impl Drop for FramingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_frames<S: tokio::io::AsyncRead + Unpin>(
    mut stream: S,
    framed: &Mutex<Framed>,
    limit: Option<usize>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut read = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // parse every complete frame in `buf`
        loop {
            let Some(space) = buf.iter().position(|&b| b == b' ') else {
                if buf.len() > 10 || buf.iter().any(|b| !b.is_ascii_digit()) {
                    framed.lock().unwrap().errors.push(format!(
                        "no MSG-LEN SP at {:?}",
                        String::from_utf8_lossy(&buf)
                    ));
                    return;
                }
                break;
            };
            let len_text = &buf[..space];
            let well_formed = !len_text.is_empty()
                && len_text.len() <= 10
                && len_text[0] != b'0'
                && len_text.iter().all(u8::is_ascii_digit);
            if !well_formed {
                framed.lock().unwrap().errors.push(format!(
                    "bad MSG-LEN {:?}",
                    String::from_utf8_lossy(len_text)
                ));
                return;
            }
            let len: usize = std::str::from_utf8(len_text).unwrap().parse().unwrap();
            if buf.len() < space + 1 + len {
                break;
            }
            let message = buf[space + 1..space + 1 + len].to_vec();
            buf.drain(..space + 1 + len);
            framed.lock().unwrap().messages.push(message);
            read += 1;
            if limit == Some(read) {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    framed.lock().unwrap().errors.push(format!(
                        "connection ended inside a frame ({} octets left)",
                        buf.len()
                    ));
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
