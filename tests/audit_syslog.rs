//! The audit trail forwarded to a syslog collector (issue 13): the library's forwarder
//! (`pacs::audit::syslog`) reading an in-memory spool, received by a real rsyslogd started by
//! the test (RFC 5425 TLS with and without a client certificate, RFC 5426 UDP) and by a strict
//! octet-counting listener; the collector stopped and restarted while records keep coming; an
//! untrusted collector certificate; long messages.

use std::time::Duration;

use pacs::audit::syslog::{start_forwarder, timestamp, SyslogSettings, BOM, MSGID};

use crate::support::certs::TestCa;
use crate::support::syslog::{
    audit_xml, seq_of, FramingListener, MemorySpool, Rsyslog, RsyslogTls,
};

/// Short waits so that the tests do not sit in backoffs.
fn fast(settings: &mut SyslogSettings) {
    settings.poll_interval = Duration::from_millis(200);
    settings.retry_min = Duration::from_millis(100);
    settings.retry_max = Duration::from_millis(500);
    settings.confirm_after = Duration::from_millis(300);
}

async fn wait_cursor(spool: &MemorySpool, seq: i64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while spool.cursor() < seq {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor is at {}, not {seq}, after {timeout:?}",
            spool.cursor()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sequence numbers of the received messages, first occurrences only (at least once:
/// a resent record may come twice).
fn distinct_seqs(xmls: impl Iterator<Item = Option<i64>>) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    xmls.map(|s| s.expect("a message naming its seq"))
        .filter(|s| seen.insert(*s))
        .collect()
}

/// TLS with a client certificate (rsyslog's `x509/certvalid`, as ATNA requires): every header
/// field and the XML as rsyslog parsed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_to_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let server = ca.server(dir.path(), "collector");
    let client = ca.client(dir.path(), "pacs-node");
    let rsyslog = Rsyslog::start(
        dir.path(),
        Some(RsyslogTls {
            ca: &ca_file,
            server: &server,
            auth_mode: "x509/certvalid",
        }),
    );
    let spool = MemorySpool::new();
    for (seq, outcome) in [(1, 0), (2, 4), (3, 0)] {
        assert_eq!(
            spool.push("query", outcome, audit_xml(seq, outcome, 0)),
            seq
        );
    }
    let mut settings = SyslogSettings::from_options(
        &format!("tls://127.0.0.1:{}", rsyslog.tcp_port),
        Some(ca_file.clone()),
        Some(client.cert.clone()),
        Some(client.key.clone()),
        Some("pacs-test".into()),
    )
    .unwrap();
    settings.hostname = Some("node1.example.org".into());
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let received = rsyslog
        .wait_until(Duration::from_secs(20), "3 messages", |r| r.len() >= 3)
        .await;
    assert_eq!(received.len(), 3);
    for (i, message) in received.iter().enumerate() {
        let record = spool.get(i as i64 + 1);
        assert_eq!(message.input, "imtcp");
        let pri = if record.outcome == 0 { "85" } else { "84" };
        assert_eq!(message.pri, pri, "facility 10, notice or warning");
        assert_eq!(message.version, "1");
        assert_eq!(message.timestamp, timestamp(record.at_ms));
        assert_eq!(message.hostname, "node1.example.org");
        assert_eq!(message.app_name, "pacs-test");
        assert_eq!(message.procid, std::process::id().to_string());
        assert_eq!(message.msgid, MSGID);
        assert_eq!(message.msgid, "IHE+RFC-3881");
        assert_eq!(message.structured_data, "-");
        assert!(
            message.msg.starts_with('\u{feff}'),
            "the BOM: {:?}",
            message.msg
        );
        assert_eq!(message.xml(), record.xml);
    }
    wait_cursor(&spool, 3, Duration::from_secs(10)).await;
    let status = forwarder.status();
    assert_eq!(status.connections, 1);
    assert_eq!(status.forwarded_up_to, 3);
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// UDP (RFC 5426): one message per datagram, a message over the 2 KB every receiver should
/// take included; the cursor moves once they are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_to_rsyslog() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), None);
    let spool = MemorySpool::new();
    spool.push("login", 0, audit_xml(1, 0, 0));
    spool.push("security-alert", 8, audit_xml(2, 8, 3000));
    spool.push("query", 0, audit_xml(3, 0, 100));
    let mut settings = SyslogSettings::from_options(
        &format!("udp://127.0.0.1:{}", rsyslog.udp_port),
        None,
        None,
        None,
        None,
    )
    .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let received = rsyslog
        .wait_until(Duration::from_secs(20), "3 datagrams", |r| r.len() >= 3)
        .await;
    assert_eq!(received.len(), 3);
    assert!(spool.get(2).xml.len() > 3000);
    for (i, message) in received.iter().enumerate() {
        let record = spool.get(i as i64 + 1);
        assert_eq!(message.input, "imudp");
        assert_eq!(message.pri, if record.outcome == 0 { "85" } else { "84" });
        assert_eq!(message.msgid, "IHE+RFC-3881");
        assert_eq!(message.app_name, "pacs");
        assert_eq!(message.xml(), record.xml, "record {}", record.seq);
    }
    wait_cursor(&spool, 3, Duration::from_secs(10)).await;
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// The collector stops while records keep coming: nothing is lost and the cursor stays; once
/// it is back every record arrives, in order (a record may come twice: at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_then_back_catches_up_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let server = ca.server(dir.path(), "collector");
    let mut rsyslog = Rsyslog::start(
        dir.path(),
        Some(RsyslogTls {
            ca: &ca_file,
            server: &server,
            auth_mode: "anon",
        }),
    );
    let spool = MemorySpool::new();
    for seq in 1..=5 {
        spool.push("query", 0, audit_xml(seq, 0, 0));
    }
    let mut settings = SyslogSettings::from_options(
        &format!("tls://127.0.0.1:{}", rsyslog.tcp_port),
        Some(ca_file.clone()),
        None,
        None,
        None,
    )
    .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    rsyslog
        .wait_until(Duration::from_secs(20), "the first 5", |r| r.len() >= 5)
        .await;
    wait_cursor(&spool, 5, Duration::from_secs(10)).await;

    rsyslog.stop();
    for seq in 6..=15 {
        spool.push("query", 0, audit_xml(seq, 0, 0));
        forwarder.wake();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        spool.cursor(),
        5,
        "nothing counts as forwarded while the collector is down"
    );
    let status = forwarder.status();
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(status.failures >= 2, "retried: {status:?}");
    assert_eq!(rsyslog.received().len(), 5);

    rsyslog.restart();
    let received = rsyslog
        .wait_until(Duration::from_secs(30), "all 15 records", |r| {
            distinct_seqs(r.iter().map(|m| seq_of(m.xml()))).len() >= 15
        })
        .await;
    let seqs = distinct_seqs(received.iter().map(|m| seq_of(m.xml())));
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>(), "all of them, in order");
    for message in &received {
        let seq = seq_of(message.xml()).unwrap();
        assert_eq!(message.xml(), spool.get(seq).xml);
    }
    wait_cursor(&spool, 15, Duration::from_secs(10)).await;
    assert!(forwarder.status().connections >= 2);

    // and it goes on as usual
    spool.push("query", 0, audit_xml(16, 0, 0));
    forwarder.wake();
    rsyslog
        .wait_until(Duration::from_secs(10), "record 16", |r| {
            r.iter().any(|m| seq_of(m.xml()) == Some(16))
        })
        .await;
    wait_cursor(&spool, 16, Duration::from_secs(10)).await;
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// A collector whose certificate the node does not trust gets nothing, and the cursor stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_collector_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new("the CA the node trusts");
    let trusted_file = trusted.write(dir.path(), "trusted-ca.pem");
    let other = TestCa::new("another CA");
    let other_file = other.write(dir.path(), "other-ca.pem");
    let server = other.server(dir.path(), "impostor");
    let rsyslog = Rsyslog::start(
        dir.path(),
        Some(RsyslogTls {
            ca: &other_file,
            server: &server,
            auth_mode: "anon",
        }),
    );
    let spool = MemorySpool::new();
    spool.push("query", 0, audit_xml(1, 0, 0));
    spool.push("query", 0, audit_xml(2, 0, 0));
    let mut settings = SyslogSettings::from_options(
        &format!("tls://127.0.0.1:{}", rsyslog.tcp_port),
        Some(trusted_file),
        None,
        None,
        None,
    )
    .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let mut status = forwarder.watch_status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.failures >= 3),
    )
    .await
    .expect("three refused handshakes")
    .unwrap();
    let status = forwarder.status();
    let error = status.last_error.clone().unwrap_or_default();
    let squeezed = error.to_lowercase().replace([' ', '_'], "");
    assert!(
        squeezed.contains("certificate") && squeezed.contains("unknownissuer"),
        "{error}"
    );
    assert_eq!(status.connections, 0);
    assert_eq!(status.sent_up_to, 0);
    assert_eq!(spool.cursor(), 0, "the cursor did not move");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rsyslog.received().is_empty(), "{:?}", rsyslog.received());
    forwarder.shutdown(Duration::from_secs(2)).await;
    assert_eq!(spool.cursor(), 0);
}

/// Messages far over rsyslog's and RFC 5425's usual sizes arrive whole over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_xml_arrives_intact_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let server = ca.server(dir.path(), "collector");
    let rsyslog = Rsyslog::start(
        dir.path(),
        Some(RsyslogTls {
            ca: &ca_file,
            server: &server,
            auth_mode: "anon",
        }),
    );
    let spool = MemorySpool::new();
    spool.push("instances-transferred", 0, audit_xml(1, 0, 5_000));
    spool.push("query", 0, audit_xml(2, 0, 0));
    spool.push("instances-accessed", 0, audit_xml(3, 0, 60_000));
    let mut settings = SyslogSettings::from_options(
        &format!("tls://localhost:{}", rsyslog.tcp_port),
        Some(ca_file),
        None,
        None,
        None,
    )
    .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let received = rsyslog
        .wait_until(Duration::from_secs(20), "3 messages", |r| r.len() >= 3)
        .await;
    assert!(spool.get(1).xml.len() > 4096 && spool.get(3).xml.len() > 60_000);
    for (i, message) in received.iter().enumerate() {
        let record = spool.get(i as i64 + 1);
        assert_eq!(
            message.xml().len(),
            record.xml.len(),
            "record {}",
            record.seq
        );
        assert_eq!(message.xml(), record.xml, "record {}", record.seq);
    }
    wait_cursor(&spool, 3, Duration::from_secs(10)).await;
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// The exact bytes on the wire, read by a strict RFC 5425 listener requiring a client
/// certificate: `MSG-LEN SP SYSLOG-MSG` exactly, the RFC 5424 header, the BOM, the XML byte for
/// byte; a wake-up sends a new record at once (the poll interval is a minute here); on
/// shutdown the last records are sent and confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_octet_counting_framing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let client = ca.client(dir.path(), "pacs-node");
    let listener = FramingListener::start(&ca, dir.path()).await;
    let spool = MemorySpool::new();
    spool.push("query", 0, audit_xml(1, 0, 0));
    spool.push("instances-accessed", 12, audit_xml(2, 12, 10_000));
    let mut settings = SyslogSettings::from_options(
        &format!("tls://127.0.0.1:{}", listener.port),
        Some(ca_file),
        Some(client.cert.clone()),
        Some(client.key.clone()),
        None,
    )
    .unwrap();
    fast(&mut settings);
    settings.poll_interval = Duration::from_secs(60);
    settings.hostname = Some("node1".into());
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let wait_for = |n: usize| {
        let framed = listener.framed.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while framed.lock().unwrap().messages.len() < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{:?}",
                    framed.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(2).await;
    spool.push("query", 0, audit_xml(3, 0, 10));
    forwarder.wake();
    wait_for(3).await;
    spool.push("query", 4, audit_xml(4, 4, 10));
    forwarder.shutdown(Duration::from_secs(5)).await;
    assert_eq!(spool.cursor(), 4, "sent and confirmed on shutdown");

    assert!(listener.errors().is_empty(), "{:?}", listener.errors());
    let messages = listener.messages();
    assert_eq!(messages.len(), 4);
    assert_eq!(listener.framed.lock().unwrap().connections, 1);
    for (i, message) in messages.iter().enumerate() {
        let record = spool.get(i as i64 + 1);
        let header = format!(
            "<{}>1 {} node1 pacs {} IHE+RFC-3881 - ",
            if record.outcome == 0 { 85 } else { 84 },
            timestamp(record.at_ms),
            std::process::id()
        );
        assert!(
            message.starts_with(header.as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&message[..header.len().min(message.len())])
        );
        let msg = &message[header.len()..];
        assert_eq!(&msg[..3], BOM, "MSG-UTF8 starts with the BOM");
        assert_eq!(&msg[3..], record.xml.as_bytes(), "record {}", record.seq);
    }
}

/// Bad TLS files are refused when the forwarder starts, naming the file.
#[tokio::test]
async fn unusable_tls_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let settings =
        SyslogSettings::from_options("tls://127.0.0.1:6514", Some(missing), None, None, None)
            .unwrap();
    let error = start_forwarder(settings, MemorySpool::new())
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("missing-ca.pem"), "{error}");
}

/// A collector that dies with records in flight (it read 3 of the 5 records written on the
/// connection, then the connection broke): the cursor does not move past what it may not have
/// kept, and the 5 records are sent again on the next connection, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_flight_when_the_connection_breaks_are_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let client = ca.client(dir.path(), "pacs-node");
    let listener = FramingListener::start_dropping(&ca, dir.path(), Some(3)).await;
    let spool = MemorySpool::new();
    for seq in 1..=5 {
        spool.push("query", 0, audit_xml(seq, 0, 0));
    }
    let mut settings = SyslogSettings::from_options(
        &format!("tls://127.0.0.1:{}", listener.port),
        Some(ca_file),
        Some(client.cert.clone()),
        Some(client.key.clone()),
        None,
    )
    .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seqs = distinct_seqs(
            listener
                .messages()
                .iter()
                .map(|m| seq_of(&String::from_utf8_lossy(m))),
        );
        if seqs.len() >= 5 {
            assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {seqs:?}, cursor {}",
            spool.cursor()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_cursor(&spool, 5, Duration::from_secs(10)).await;
    {
        let framed = listener.framed.lock().unwrap();
        assert_eq!(framed.connections, 2, "{framed:?}");
        // 3 kept on the first connection, all 5 again on the second
        assert_eq!(framed.messages.len(), 8, "{:?}", framed.errors);
    }
    assert!(forwarder.status().failures >= 1);
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// The spool (the index) failing: retried like a collector, nothing sent meanwhile, and every
/// record forwarded once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_spool_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let client = ca.client(dir.path(), "pacs-node");
    let listener = FramingListener::start(&ca, dir.path()).await;
    let spool = MemorySpool::new();
    spool.push("query", 0, audit_xml(1, 0, 0));
    spool.push("query", 0, audit_xml(2, 0, 0));
    spool.set_failing(true);
    let mut settings = SyslogSettings::from_options(
        &format!("tls://127.0.0.1:{}", listener.port),
        Some(ca_file),
        Some(client.cert.clone()),
        Some(client.key.clone()),
        None,
    )
    .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let mut status = forwarder.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.failures >= 2),
    )
    .await
    .expect("the spool's failures are counted")
    .unwrap();
    let error = forwarder.status().last_error.unwrap_or_default();
    assert!(error.contains("audit spool"), "{error}");
    assert!(listener.messages().is_empty());
    spool.set_failing(false);
    wait_cursor(&spool, 2, Duration::from_secs(10)).await;
    let seqs: Vec<_> = listener
        .messages()
        .iter()
        .map(|m| seq_of(&String::from_utf8_lossy(m)))
        .collect();
    assert_eq!(seqs, vec![Some(1), Some(2)]);
    assert_eq!(forwarder.status().last_error, None);
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// UDP: a message up to 65507 octets goes whole in one datagram; a longer one is cut to 65507
/// octets (docs/audit-syslog.md), and the next one is sent as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagram_sizes() {
    use pacs::audit::syslog::UDP_MAX_MESSAGE;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let spool = MemorySpool::new();
    spool.push("query", 0, audit_xml(1, 0, 50_000));
    spool.push("query", 0, audit_xml(2, 0, 70_000));
    spool.push("query", 0, audit_xml(3, 0, 0));
    let mut settings =
        SyslogSettings::from_options(&format!("udp://127.0.0.1:{port}"), None, None, None, None)
            .unwrap();
    fast(&mut settings);
    let forwarder = start_forwarder(settings, spool.clone()).unwrap();
    let mut datagrams = Vec::new();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .expect("a datagram")
            .unwrap();
        datagrams.push(buf[..n].to_vec());
    }
    let xml_of = |d: &[u8]| {
        let start = d.windows(3).position(|w| w == BOM).expect("the BOM") + 3;
        d[start..].to_vec()
    };
    assert!(datagrams[0].len() < UDP_MAX_MESSAGE);
    assert_eq!(xml_of(&datagrams[0]), spool.get(1).xml.as_bytes());
    assert_eq!(
        datagrams[1].len(),
        UDP_MAX_MESSAGE,
        "cut to the largest datagram"
    );
    let whole = spool.get(2).xml;
    let cut = xml_of(&datagrams[1]);
    assert!(cut.len() < whole.len() && whole.as_bytes().starts_with(&cut));
    assert_eq!(xml_of(&datagrams[2]), spool.get(3).xml.as_bytes());
    wait_cursor(&spool, 3, Duration::from_secs(10)).await;
    forwarder.shutdown(Duration::from_secs(5)).await;
}

/// The node forwards its own trail: started with `--audit-syslog tls://...` and the collector's
/// CA, it sends every record of its trail (Application Activity start, the Instances
/// Transferred of a storescu push, and after SIGTERM the Application Activity stop) to rsyslog,
/// each message's XML exactly the record's in the index, and the cursor in the index reaches
/// the last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_forwards_its_trail_to_rsyslog() {
    use crate::support::{ae_entry, Backend, Node};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("syslog test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let server = ca.server(dir.path(), "collector");
    let rsyslog = Rsyslog::start(
        dir.path(),
        Some(RsyslogTls {
            ca: &ca_file,
            server: &server,
            auth_mode: "anon",
        }),
    );
    let site = crate::auth::Site::new(Backend::Sqlite);
    let node = Node::start_with(
        site.options()
            .config(&ae_entry("MODALITY", &["echo", "store"]))
            .arg("--audit-syslog")
            .arg(format!("tls://127.0.0.1:{}", rsyslog.tcp_port))
            .arg("--audit-syslog-ca")
            .arg(ca_file.display().to_string()),
    );
    let (_synth, summary) = crate::support::synth_ct(3, 21);
    let study = summary.instances[0].study_instance_uid.clone();
    let files = crate::support::synth_paths(&summary);
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let out = crate::support::storescu(&node, "MODALITY", &[], &paths);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rsyslog
        .wait_until(
            Duration::from_secs(30),
            "the push's Instances Transferred",
            |r| {
                r.iter()
                    .any(|m| m.xml().contains("csd-code=\"110104\"") && m.xml().contains(&study))
            },
        )
        .await;
    node.terminate();
    let received = rsyslog
        .wait_until(
            Duration::from_secs(30),
            "the Application Activity stop",
            |r| r.iter().any(|m| m.xml().contains("csd-code=\"110121\"")),
        )
        .await;
    // every record of the trail arrived, byte for byte (at least once)
    let records: Vec<serde_json::Value> = site
        .cli(&["audit", "search", "--json", "--limit", "1000"], "")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 3, "{records:?}");
    let arrived: std::collections::HashSet<&str> = received.iter().map(|m| m.xml()).collect();
    for record in &records {
        let xml = record["xml"].as_str().unwrap();
        assert!(arrived.contains(xml), "not forwarded: {xml}");
    }
    assert!(received
        .iter()
        .all(|m| m.msgid == MSGID && m.app_name == "pacs"));
}
