//! DIMSE over TLS (PS3.15 B.1, BCP 195) with real peers: DCMTK's echoscu, storescu and findscu
//! with `+tls` (its movescu has no TLS options), pynetdicom through an `ssl.SSLContext`
//! (C-ECHO, C-STORE, C-MOVE), a C-MOVE to an AE marked
//! `tls = true` arriving at a `storescp +tls`, mutual TLS refusing peers without a trusted
//! certificate, and a TLS-only AE refused on the plain port. Certificates are made by the test
//! (tests/support/certs.rs).

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::archive::verify_consistent;
use support::certs::TestCa;
use support::{Backend, Node, NodeOptions, StoreScp};

/// A test CA and a directory for what it issues.
struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new().prefix("pki-").tempdir().unwrap();
        let ca = TestCa::new(name);
        ca.write(dir.path(), "ca.pem");
        Pki { ca, dir }
    }

    /// A certificate (server and client use, 127.0.0.1 and localhost) and its key.
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let issued = self.ca.server_and_client(self.dir.path(), name);
        (issued.cert, issued.key)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// A path as an argument.
fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A node with a certificate `node` signed by `pki`'s CA, trusting that CA when it connects
/// out, with the `config` file (may be empty) and `extra` arguments.
fn tls_node(pki: &Pki, config: &str, extra: &[&str]) -> Node {
    let (cert, key) = pki.issue("node");
    let mut opts = NodeOptions::new(Backend::Sqlite)
        .arg("--tls-cert")
        .arg(arg(&cert))
        .arg("--tls-key")
        .arg(arg(&key))
        .arg("--tls-ca")
        .arg(arg(&pki.ca()));
    if !config.is_empty() {
        opts = opts.config(config);
    }
    for a in extra {
        opts = opts.arg(*a);
    }
    Node::start_with(opts)
}

/// DCMTK's TLS options: `+tls KEY CERT` (or `+tla`, no certificate, for `None`), trusting
/// `ca` (`+cf`).
fn dcmtk_tls(identity: Option<(&Path, &Path)>, ca: &Path) -> Vec<String> {
    let mut args = match identity {
        Some((cert, key)) => vec!["+tls".to_string(), arg(key), arg(cert)],
        None => vec!["+tla".to_string()],
    };
    args.extend(["+cf".to_string(), arg(ca)]);
    args
}

/// Runs a DCMTK tool (`-aec PACS`, then `args`) against 127.0.0.1:`port`, then `files`;
/// returns whether it succeeded and everything it printed.
fn dcmtk(tool: &str, port: u16, args: &[String], files: &[&Path]) -> (bool, String) {
    let mut cmd = support::dcmtk_command(tool);
    cmd.args(["-aec", "PACS"])
        .args(args)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(files);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), log)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// pynetdicom through an `ssl.SSLContext` (tests/peers/pynetdicom_tls.py): its JSON report.
fn pynetdicom_tls(port: u16, args: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pynetdicom_tls.py");
    let mut argv = vec![arg(&script), port.to_string()];
    argv.extend(args.iter().cloned());
    let out = support::python_stdout(&argv);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

fn ct_small() -> std::path::PathBuf {
    support::pydicom_test_files().join("CT_small.dcm")
}

/// The AE registry entry of a C-MOVE destination reached over TLS.
fn tls_destination(title: &str, port: u16) -> String {
    format!(
        "[[ae]]\ntitle = \"{title}\"\nhost = \"127.0.0.1\"\nport = {port}\nallow = [\"echo\"]\n\
         move_destination = true\ntls = true\n"
    )
}

/// echoscu, storescu and findscu over TLS, and a C-MOVE (pynetdicom's: DCMTK 3.6.7's movescu
/// has no TLS options) to an AE marked
/// `tls = true`, a `storescp +tls` that requires the node's (client) certificate; the admin
/// API's C-ECHO reaches it over TLS too. The plain port keeps working beside the TLS one, and
/// plain DIMSE on the TLS port gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_echo_store_find_and_move_over_tls() {
    let pki = Pki::new("Test DIMSE CA");
    let (modality_cert, modality_key) = pki.issue("modality");
    let (scp_cert, scp_key) = pki.issue("storescp");
    let scp = StoreScp::start(
        "TLSDEST",
        &[
            "+tls",
            &arg(&scp_key),
            &arg(&scp_cert),
            "+cf",
            &arg(&pki.ca()),
        ],
    );
    let config = support::ae_entry("MOVER", &["echo", "store", "find", "move"])
        + &tls_destination("TLSDEST", scp.port);
    let node = tls_node(&pki, &config, &[]);
    let tls = dcmtk_tls(Some((&modality_cert, &modality_key)), &pki.ca());
    let port = node.dimse_tls_port();

    let (ok, log) = dcmtk("echoscu", port, &tls, &[]);
    assert!(ok, "echoscu +tls: {log}\n{}", node.log());
    let (ok, log) = dcmtk(
        "storescu",
        port,
        &[tls.clone(), strings(&["-aet", "MOVER"])].concat(),
        &[&ct_small()],
    );
    assert!(ok, "storescu +tls: {log}\n{}", node.log());
    let stored = verify_consistent(node.data_dir(), None).await;
    assert_eq!(stored.len(), 1);
    let study = stored[0].study_instance_uid.clone();

    let keys = strings(&[
        "-S",
        "-v",
        "-aet",
        "MOVER",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={study}"),
        "-k",
        "PatientID",
    ]);
    let (ok, log) = dcmtk("findscu", port, &[tls.clone(), keys.clone()].concat(), &[]);
    assert!(ok, "findscu +tls: {log}");
    assert!(log.contains("Find Response: 1 (Pending)"), "{log}");
    assert!(log.contains("1CT1"), "the match's Patient ID: {log}");

    // a C-MOVE over TLS (DCMTK 3.6.7's movescu has no TLS options: pynetdicom asks)
    let report = pynetdicom_tls(
        port,
        &strings(&[
            "--ca",
            &arg(&pki.ca()),
            "--cert",
            &arg(&modality_cert),
            "--key",
            &arg(&modality_key),
            "--calling",
            "MOVER",
            "--move",
            "TLSDEST",
            "--study",
            &study,
        ]),
    );
    assert_eq!(report["move"], 0, "{report}\n{}", node.log());
    assert_eq!(report["completed"], 1, "{report}");
    assert_eq!(scp.files().len(), 1, "{report}\n{}", node.log());

    // the admin API's C-ECHO to the TLS AE
    let rsp = support::http_request(node.http_port(), "POST", "/api/aes/TLSDEST/echo", &[], &[]);
    assert_eq!(rsp.status, 200, "{}\n{}", rsp.text(), node.log());

    // the plain port beside it; plain DIMSE to the TLS port gets no association
    assert!(support::echoscu(&node, "PLAIN").status.success());
    let (ok, log) = dcmtk("echoscu", port, &[], &[]);
    assert!(!ok, "plain DIMSE on the TLS port: {log}");
    assert!(node.is_alive());
}

/// With `--tls-client-ca`, a peer must present a certificate that CA signed: none, or one from
/// another CA, is refused in the handshake (DCMTK and pynetdicom alike); a good one works,
/// over TLS 1.3 and 1.2. `--plain-dimse false` leaves no plain listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_peers_without_a_trusted_certificate() {
    let pki = Pki::new("Test DIMSE CA");
    let stranger_ca = Pki::new("Someone else's CA");
    let (good_cert, good_key) = pki.issue("modality");
    let (bad_cert, bad_key) = stranger_ca.issue("intruder");
    let node = tls_node(
        &pki,
        "",
        &["--tls-client-ca", &arg(&pki.ca()), "--plain-dimse", "false"],
    );
    let port = node.dimse_tls_port();
    let (ok, log) = dcmtk(
        "echoscu",
        port,
        &dcmtk_tls(Some((&good_cert, &good_key)), &pki.ca()),
        &[],
    );
    assert!(ok, "a trusted client certificate: {log}\n{}", node.log());
    let (ok, log) = dcmtk("echoscu", port, &dcmtk_tls(None, &pki.ca()), &[]);
    assert!(!ok, "no client certificate was accepted: {log}");
    let (ok, log) = dcmtk(
        "echoscu",
        port,
        &dcmtk_tls(Some((&bad_cert, &bad_key)), &pki.ca()),
        &[],
    );
    assert!(!ok, "an untrusted client certificate was accepted: {log}");

    let ca = arg(&pki.ca());
    let good = [
        "--ca".to_string(),
        ca.clone(),
        "--cert".into(),
        arg(&good_cert),
        "--key".into(),
        arg(&good_key),
        "--file".into(),
        arg(&ct_small()),
    ];
    let report = pynetdicom_tls(port, &good);
    assert_eq!(report["established"], true, "{report}\n{}", node.log());
    assert_eq!(report["echo"], 0, "{report}");
    assert_eq!(report["store"], 0, "{report}");
    assert_eq!(report["version"], "TLSv1.3", "{report}");
    let report = pynetdicom_tls(port, &[&good[..6], &["--tls12".to_string()]].concat());
    assert_eq!(report["echo"], 0, "{report}");
    assert_eq!(report["version"], "TLSv1.2", "{report}");
    let report = pynetdicom_tls(port, &["--ca".to_string(), ca.clone()]);
    assert_eq!(report["established"], false, "no certificate: {report}");
    let untrusted = [
        "--ca".to_string(),
        ca,
        "--cert".into(),
        arg(&bad_cert),
        "--key".into(),
        arg(&bad_key),
    ];
    let report = pynetdicom_tls(port, &untrusted);
    assert_eq!(report["established"], false, "untrusted: {report}");
    assert!(
        node.log().contains("TLS handshake failed"),
        "{}",
        node.log()
    );

    assert_eq!(verify_consistent(node.data_dir(), None).await.len(), 1);
    // no plain listener
    assert!(std::net::TcpStream::connect(("127.0.0.1", node.dimse_port())).is_err());
    assert!(node.is_alive());
}

/// An AE registered with `tls = true` calling the plain port is refused (A-ASSOCIATE-RJ,
/// calling AE title not recognized, and a warning), though unknown AEs may echo there; over
/// TLS it gets what its entry allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ae_marked_tls_is_refused_on_the_plain_port() {
    let pki = Pki::new("Test DIMSE CA");
    let (cert, key) = pki.issue("modality");
    let config = "[[ae]]\ntitle = \"SECURE\"\nallow = [\"echo\", \"store\"]\ntls = true\n";
    let node = tls_node(&pki, config, &[]);
    let out = support::echoscu(&node, "SECURE");
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        log.contains("Calling AE Title Not Recognized"),
        "{log}\n{}",
        node.log()
    );
    assert!(
        node.log()
            .contains("AE registered for TLS only called the plain DIMSE port"),
        "{}",
        node.log()
    );
    // another AE on the plain port, and SECURE over TLS
    assert!(support::echoscu(&node, "OTHER").status.success());
    let tls = [
        dcmtk_tls(Some((&cert, &key)), &pki.ca()),
        strings(&["-aet", "SECURE"]),
    ]
    .concat();
    let (ok, log) = dcmtk("storescu", node.dimse_tls_port(), &tls, &[&ct_small()]);
    assert!(ok, "{log}\n{}", node.log());
    assert_eq!(verify_consistent(node.data_dir(), None).await.len(), 1);
}

/// The TLS handshake counts against the ARTIM timeout: a peer that connects to the TLS port and
/// says nothing is closed when it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_on_the_tls_port_is_closed_after_artim() {
    use std::io::Read;
    let pki = Pki::new("Test DIMSE CA");
    let node = tls_node(&pki, "", &["--artim-timeout-secs", "1"]);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", node.dimse_tls_port())).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = socket.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the node closes the connection");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // the warning comes just after the connection is dropped
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node
        .log()
        .contains("no TLS handshake within the ARTIM timeout")
    {
        assert!(Instant::now() < deadline, "{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
