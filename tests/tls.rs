//! TLS on HTTP and on the index connection, with real peers: curl, Python's ssl and the Python
//! dicomweb-client over HTTPS; client certificates as identities; the certificate replaced
//! while connections stay open; HTTPS only; and the node's index on a PostgreSQL cluster
//! started with `ssl=on`, reached with `sslmode=verify-full`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::auth::{basic, Site};
use crate::support::certs::TestCa;
use crate::support::{http_request, Backend, Node, NodeOptions};

/// `curl -s` with `args`; (exit status success, HTTP status, headers and body).
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `curl` trusting `ca`, presenting `client`'s certificate, for `url`.
fn curl_as(ca: &str, client: &crate::support::certs::Issued, url: &str) -> (bool, String) {
    curl(&[
        "--cacert",
        ca,
        "--cert",
        &client.cert.to_string_lossy(),
        "--key",
        &client.key.to_string_lossy(),
        url,
    ])
}

fn tls_node(site: &Site, dir: &Path, ca: &TestCa, extra: &[&str]) -> Node {
    let server = ca.server(dir, "pacs-node");
    let mut opts = site
        .options()
        .arg("--tls-cert")
        .arg(server.cert.to_string_lossy())
        .arg("--tls-key")
        .arg(server.key.to_string_lossy());
    // (the harness gives every node its own --dimse-tls-port)
    for a in extra {
        opts = opts.arg(*a);
    }
    Node::start_with(opts)
}

/// HTTPS on the HTTP port with HSTS, plain HTTP beside it; a client certificate as an
/// identity (its subject names an API key); an untrusted client certificate refused; the
/// Python dicomweb-client over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pacs test CA");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let clients = TestCa::new("pacs clients CA");
    let clients_file = clients.write(certs.path(), "clients-ca.crt");
    let workstation = clients.client(certs.path(), "ws-7");
    let stranger = TestCa::new("someone else").client(certs.path(), "ws-7-forged");
    let site = Site::new(Backend::Sqlite);
    site.add_user("ada", "admin", "correct horse battery");
    site.cli(&["key", "create", "ws-7", "--roles", "viewer"], "");
    let node = tls_node(
        &site,
        certs.path(),
        &ca,
        &["--tls-client-ca", &clients_file.to_string_lossy()],
    );
    let https = format!("https://127.0.0.1:{}", node.http_port());
    let cafile = ca_file.to_string_lossy().into_owned();
    let (ok, answer) = curl(&["--cacert", &cafile, &format!("{https}/healthz")]);
    assert!(ok, "{answer}");
    assert!(
        answer.starts_with("HTTP/2 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{answer}"
    );
    // not trusted without the CA
    let (ok, answer) = curl(&[&format!("{https}/healthz")]);
    assert!(!ok, "{answer}");
    // plain HTTP on the same port, as configured by default
    assert_eq!(
        http_request(node.http_port(), "GET", "/healthz", &[], &[]).status,
        200
    );

    // the workstation's certificate is its identity
    let (ok, answer) = curl_as(&cafile, &workstation, &format!("{https}/api/whoami"));
    assert!(ok, "{answer}");
    assert!(answer.contains("\"principal\":\"cert:ws-7\""), "{answer}");
    assert!(answer.contains("\"permissions\":[\"read\"]"), "{answer}");
    let (_, answer) = curl_as(&cafile, &workstation, &format!("{https}/dicom-web/studies"));
    assert!(answer.contains(" 200"), "{answer}");
    // a certificate from another CA: the handshake fails
    let (ok, answer) = curl_as(&cafile, &stranger, &format!("{https}/api/whoami"));
    assert!(!ok, "{answer}");
    // no certificate, no credential: 401, as over plain HTTP
    let (_, answer) = curl(&["--cacert", &cafile, &format!("{https}/dicom-web/studies")]);
    assert!(answer.contains(" 401"), "{answer}");
    // Basic over HTTPS
    let (_, answer) = curl(&[
        "--cacert",
        &cafile,
        "-H",
        &format!("Authorization: {}", basic("ada", "correct horse battery")),
        &format!("{https}/api/users"),
    ]);
    assert!(answer.contains(" 200"), "{answer}");

    // the Python dicomweb-client (requests) over HTTPS, trusting the CA
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/https_dicomweb_client.py"
    );
    let out = Command::new(crate::support::python())
        .arg(script)
        .arg(format!("{https}/dicom-web"))
        .arg(basic("ada", "correct horse battery"))
        .env("REQUESTS_CA_BUNDLE", &cafile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "studies: 0");

    // the URLs the node writes say https to an HTTPS client (HTTP/1.1 does not say it)
    let (_dir, synth) = crate::support::synth_ct(1, 7301);
    let file = synth.instances[0].path.clone();
    let stored = crate::support::storescu(&node, "CT1", &[], &[file.as_path()]);
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let (_, answer) = curl(&[
        "--http1.1",
        "--cacert",
        &cafile,
        "-H",
        &format!("Authorization: {}", basic("ada", "correct horse battery")),
        &format!("{https}/dicom-web/studies"),
    ]);
    assert!(
        answer.contains(&format!("\"{https}/dicom-web/studies/")),
        "{answer}"
    );
}

/// The certificate is replaced on disk while a connection stays open: new connections get the
/// new certificate, the open one keeps working; then HTTPS only (`--plain-http false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_and_https_only() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("pacs test CA");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let server = ca.server(certs.path(), "pacs-node");
    let site = Site::new(Backend::Sqlite);
    let node = Node::start_with(
        site.options()
            .arg("--tls-cert")
            .arg(server.cert.to_string_lossy())
            .arg("--tls-key")
            .arg(server.key.to_string_lossy()),
    );
    let done = certs.path().join("replaced");
    let mut checker = Command::new(crate::support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/https_check.py"
        ))
        .args(["reload", &node.http_port().to_string()])
        .arg(&ca_file)
        .arg(&done)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(checker.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["first_cn"], "pacs-node");
    // a new certificate for the same files (written whole, then renamed into place)
    let renewed = ca.server(certs.path(), "pacs-node-renewed");
    for (from, to) in [(&renewed.cert, &server.cert), (&renewed.key, &server.key)] {
        std::fs::rename(from, to).unwrap();
    }
    std::fs::write(&done, b"").unwrap();
    let last: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(checker.wait().unwrap().success());
    assert_eq!(last["new_cn"], "pacs-node-renewed", "{last}");
    assert_eq!(last["old_connection_status"], 200, "{last}");
    assert!(
        node.log().contains("TLS certificate reloaded"),
        "{}",
        node.log()
    );
    drop(node);

    // HTTPS only: a plain request is told so and the connection closed
    let https_only = tls_node(&site, certs.path(), &ca, &["--plain-http", "false"]);
    let r = http_request(https_only.http_port(), "GET", "/healthz", &[], &[]);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("HTTPS only"), "{}", r.text());
    let (ok, answer) = curl(&[
        "--cacert",
        &ca_file.to_string_lossy(),
        &format!("https://127.0.0.1:{}/healthz", https_only.http_port()),
    ]);
    assert!(ok, "{answer}");
    // a client that never finishes its request head is dropped after the header timeout
    let slow = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--http-header-timeout-secs")
            .arg("1"),
    );
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", slow.http_port())).unwrap();
    use std::io::{Read, Write};
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the connection was kept open"
    );
    // meanwhile, and after, other clients are answered
    assert_eq!(
        http_request(slow.http_port(), "GET", "/healthz", &[], &[]).status,
        200
    );
}

/// The index on a PostgreSQL cluster started with `ssl=on`: `verify-full` against the right CA
/// works (and the connections are encrypted, says pg_stat_ssl); against another CA the node
/// refuses to start; `require` without a CA encrypts without checking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verify_full() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("database CA");
    let ca_file = ca.write(certs.path(), "db-ca.crt");
    let server = ca.server(certs.path(), "db");
    let admin = crate::support::start_tls_postgres(&server.cert_pem, &server.key_pem);
    let url = |query: &str| format!("{admin}?{query}");
    let ca_path = ca_file.to_string_lossy().into_owned();
    let node = Node::start_with(
        NodeOptions::new(Backend::Postgres)
            .database_url(url(&format!("sslmode=verify-full&sslrootcert={ca_path}"))),
    );
    assert_eq!(
        http_request(node.http_port(), "GET", "/dicom-web/studies", &[], &[]).status,
        200
    );
    // the node's sessions are encrypted
    let client = crate::support::pg_try_connect(&admin).await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = 'postgres' AND a.pid <> pg_backend_pid()
               AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        all > 0 && encrypted == all,
        "{encrypted} of {all} sessions encrypted"
    );
    drop(node);

    // another CA: refused at start, saying why
    let other = TestCa::new("not the database CA");
    let other_file = other.write(certs.path(), "other-ca.crt");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pacs"))
        .args(["serve", "--bind", "127.0.0.1"])
        .args(["--dimse-port", &crate::support::free_port().to_string()])
        .args(["--http-port", &crate::support::free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--database-url")
        .arg(url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            other_file.display()
        )))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.to_lowercase().contains("certificate"), "{said}");

    // require, no CA: encrypted, unchecked (libpq's meaning)
    let node =
        Node::start_with(NodeOptions::new(Backend::Postgres).database_url(url("sslmode=require")));
    assert_eq!(
        http_request(node.http_port(), "GET", "/dicom-web/studies", &[], &[]).status,
        200
    );
}

/// A slowloris attack (many connections, each sending its request head a byte at a time):
/// meanwhile QIDO from another client and a C-ECHO answer normally, and the attack's
/// connections are closed by the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_other_clients() {
    use std::io::Write;
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--http-header-timeout-secs")
            .arg("3")
            .arg("--http-max-connections")
            .arg("64"),
    );
    let port = node.http_port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..40)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut closed = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    for b in b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\nX-a: " {
                        if stop.load(std::sync::atomic::Ordering::Relaxed)
                            || s.write_all(&[*b]).is_err()
                        {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    // the head never ends: wait for the node to give up on it
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut sink = [0u8; 64];
                    let _ = std::io::Read::read(&mut s, &mut sink);
                    closed += 1;
                }
                closed
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(
            http_request(port, "GET", "/dicom-web/studies", &[], &[]).status,
            200
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "QIDO took {:?}",
            started.elapsed()
        );
        let echo = crate::support::echoscu(&node, "ECHOER");
        assert!(
            echo.status.success(),
            "{}",
            String::from_utf8_lossy(&echo.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let closed: usize = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(
        closed >= 40,
        "the header timeout closed {closed} slow connections"
    );
}
