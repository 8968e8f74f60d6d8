//! DICOMweb against hostile or careless input: byte ranges that cannot be satisfied, bodies
//! larger than the limits, STOW-RS parts past the instance limit (spilled, refused, nothing
//! kept), requests in flight beyond the cap, malformed Host headers, and QIDO caps.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use serde_json::Value;
use support::multipart;
use support::{both_backends, Backend, HttpConnection, HttpResponse, Node, NodeOptions};

const MIB: usize = 1024 * 1024;
const MR_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";

const CT_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const CT_SMALL_SERIES: &str = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322";
const CT_SMALL_SOP: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

fn node(args: &[&str]) -> Node {
    Node::start_with(NodeOptions {
        backend: Backend::Sqlite,
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn test_file(name: &str) -> Vec<u8> {
    std::fs::read(support::pydicom_test_files().join(name)).unwrap()
}

/// CT_small grown past the STOW-RS spill threshold (32 MiB) by a private OB element of
/// `extra` bytes, as a Part 10 file.
fn large_ct_small(extra: usize) -> Vec<u8> {
    let mut obj =
        dicom_object::open_file(support::pydicom_test_files().join("CT_small.dcm")).unwrap();
    obj.put(DataElement::new(
        Tag(0x0011, 0x0010),
        VR::LO,
        PrimitiveValue::from("PACS TEST"),
    ));
    obj.put(DataElement::new(
        Tag(0x0011, 0x1010),
        VR::OB,
        PrimitiveValue::from(vec![0x5Au8; extra]),
    ));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

/// What is left in the node's temporary directory (spilled parts and data sets).
fn spill_files(node: &Node) -> Vec<PathBuf> {
    match std::fs::read_dir(node.data_dir().join("tmp")) {
        Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The body of one STOW-RS part of `len` bytes, cut into 1 MiB chunks: the multipart header,
/// the part's bytes (`fill`, or `object` first), and unless `open`, the closing delimiter.
fn stow_chunks(object: Vec<u8>, len: u64, open: bool) -> impl Iterator<Item = Vec<u8>> {
    let head = b"--stream-boundary\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    let tail = b"\r\n--stream-boundary--\r\n".to_vec();
    let mut object = object.into_iter();
    let mut left = len;
    std::iter::once(head)
        .chain(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let n = left.min(MIB as u64) as usize;
            left -= n as u64;
            let mut chunk: Vec<u8> = object.by_ref().take(n).collect();
            chunk.resize(n, 0);
            Some(chunk)
        }))
        .chain((!open).then_some(tail))
}

const STREAM_CONTENT_TYPE: &str =
    "multipart/related; type=\"application/dicom\"; boundary=stream-boundary";

/// `chunks`, at most one every `pause`.
fn throttled(
    chunks: impl Iterator<Item = Vec<u8>>,
    pause: Duration,
) -> impl Iterator<Item = Vec<u8>> {
    chunks.inspect(move |_| std::thread::sleep(pause))
}

/// CT_small with an empty Accession Number (0008,0050), as a Part 10 file.
fn ct_small_with_empty_element() -> Vec<u8> {
    let mut obj =
        dicom_object::open_file(support::pydicom_test_files().join("CT_small.dcm")).unwrap();
    obj.put(DataElement::new(
        tags::ACCESSION_NUMBER,
        VR::SH,
        PrimitiveValue::Empty,
    ));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

fn stow(node: &Node, parts: &[(&str, &[u8])]) -> (u16, Value) {
    let (ctype, body) = multipart::build(parts);
    let r = support::http_request(
        node.http_port(),
        "POST",
        "/dicom-web/studies",
        &[
            ("Content-Type", &ctype),
            ("Accept", "application/dicom+json"),
        ],
        &body,
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    support::http_request(node.http_port(), "GET", path, headers, b"")
}

/// RFC 9110 14.1.2 and 15.5.17: a range that starts at or past the end of the value (every
/// range of an empty value) is answered 416 with `Content-Range: bytes */LEN`. It used to
/// panic the connection task (`Bytes::slice(1..0)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_bulk_data_ranges_are_416() {
    let node = node(&[]);
    let (status, response) = stow(
        &node,
        &[("application/dicom", &ct_small_with_empty_element())],
    );
    assert_eq!(status, 200, "{response}");
    let instance = format!(
        "/dicom-web/studies/{CT_SMALL_STUDY}/series/{CT_SMALL_SERIES}/instances/{CT_SMALL_SOP}"
    );
    let empty = format!("{instance}/bulkdata/00080050");
    let octets = ("Accept", "application/octet-stream");
    for range in ["bytes=1-", "bytes=0-", "bytes=0-0", "bytes=5-9"] {
        let r = get(&node, &empty, &[octets, ("Range", range)]);
        assert_eq!(r.status, 416, "{range}: {}", r.text());
        assert_eq!(r.header("content-range"), Some("bytes */0"), "{range}");
    }
    // the whole empty value is fine
    let r = get(&node, &empty, &[octets]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    // a non-empty value: a range past its end is 416 too, with its length
    let value = format!("{instance}/bulkdata/00100010");
    let whole = get(&node, &value, &[octets]);
    assert_eq!(whole.status, 200);
    let len = whole.body.len();
    let r = get(
        &node,
        &value,
        &[octets, ("Range", &format!("bytes={len}-"))],
    );
    assert_eq!(r.status, 416, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let r = get(&node, &value, &[octets, ("Range", "bytes=1-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &whole.body[1..]);
    // and pixel data (read by ranges of the stored object)
    let pixels = format!("{instance}/bulkdata/7FE00010");
    let whole = get(&node, &pixels, &[octets]);
    assert_eq!(whole.status, 200);
    let len = whole.body.len();
    let r = get(
        &node,
        &pixels,
        &[octets, ("Range", &format!("bytes={len}-"))],
    );
    assert_eq!(r.status, 416, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // the node is still there
    assert_eq!(get(&node, "/healthz", &[]).status, 200);
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

/// PS3.18 10.5.3: a part larger than the instance limit fails alone (Failure Reason A700, the
/// reason in a Warning header), the parts around it are stored (202), nothing of it is kept,
/// and the connection stays usable.
async fn stow_parts_beyond_the_instance_limit_fail_alone(backend: Backend) {
    let node = Node::start_with(NodeOptions::new(backend).arg("--max-instance-mb").arg("1"));
    let (ct, mr) = (test_file("CT_small.dcm"), test_file("MR_small.dcm"));
    let big = vec![0u8; MIB + MIB / 2];
    let (ctype, body) = multipart::build(&[
        ("application/dicom", &ct),
        ("application/dicom", &big),
        ("application/dicom", &mr),
    ]);
    let mut connection = HttpConnection::open(node.http_port()).unwrap();
    let r = connection
        .request(
            "POST",
            "/dicom-web/studies",
            &[
                ("Content-Type", &ctype),
                ("Accept", "application/dicom+json"),
            ],
            &body,
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let response: Value = serde_json::from_slice(&r.body).unwrap();
    let failed = response["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{response}");
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xA700);
    assert_eq!(response["00081199"]["Value"].as_array().unwrap().len(), 2);
    let warning = r.header("warning").unwrap_or_default();
    assert!(
        warning.starts_with("299 pacs \"part 2: instance larger than the limit of 1048576 bytes"),
        "{warning}"
    );
    // the same connection serves the next request
    let r = connection
        .request(
            "GET",
            "/dicom-web/studies",
            &[("Accept", "application/dicom+json")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let studies: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(studies.len(), 2);
    // only the large part: 409, nothing stored
    let (status, response) = stow(&node, &[("application/dicom", &big)]);
    assert_eq!(status, 409, "{response}");
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA700
    );
    let stored =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(stored.len(), 2);
    assert!(stored
        .iter()
        .any(|s| s.study_instance_uid == MR_SMALL_STUDY));
    assert!(spill_files(&node).is_empty(), "{:?}", spill_files(&node));
}
both_backends!(stow_parts_beyond_the_instance_limit_fail_alone);

/// A part past the spill threshold goes through a temporary file in <data-dir>/tmp, is stored
/// byte for byte, and its file is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stow_parts_are_received_through_a_spill_file() {
    let node = node(&[]);
    let object = large_ct_small(40 * MIB);
    let len = object.len() as u64;
    let port = node.http_port();
    let sent = object.clone();
    let upload = std::thread::spawn(move || {
        support::streamed_request(
            port,
            "POST",
            "/dicom-web/studies",
            &[
                ("Content-Type", STREAM_CONTENT_TYPE),
                ("Accept", "application/dicom+json"),
            ],
            throttled(stow_chunks(sent, len, false), Duration::from_millis(20)),
        )
    });
    // the part is in a spill file while it arrives
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut spilled = false;
    while !upload.is_finished() && Instant::now() < deadline {
        spilled |= spill_files(&node).iter().any(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("stow-")
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    let streamed = upload.join().unwrap();
    let r = streamed.response.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        spilled,
        "no spill file seen in {:?}",
        node.data_dir().join("tmp")
    );
    let stored =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(stored.len(), 1);
    let bytes = std::fs::read(node.data_dir().join("objects").join(&stored[0].object_key)).unwrap();
    assert!(
        bytes == object,
        "the stored object differs from the one sent"
    );
    assert!(spill_files(&node).is_empty(), "{:?}", spill_files(&node));
}

/// With less free disk than `--min-free-disk-mb` keeps in reserve, a part past the spill
/// threshold fails alone (A700, "no room"), a small part beside it is stored, nothing is left
/// in <data-dir>/tmp; a spill file a killed run left there is removed at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_files_leave_the_disk_reserve_free() {
    let data = tempfile::tempdir().unwrap();
    let leftover = data.path().join("tmp").join("stow-left-by-a-killed-run");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"partial").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // no file system has 2^40 MiB free
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .data_dir(data.path())
            .arg("--min-free-disk-mb")
            .arg((1u64 << 40).to_string()),
    );
    assert!(!leftover.exists(), "the stale spill file was not removed");
    let ct = test_file("CT_small.dcm");
    let big = large_ct_small(40 * MIB);
    let (status, response) = stow(
        &node,
        &[("application/dicom", &big), ("application/dicom", &ct)],
    );
    assert_eq!(status, 202, "{response}");
    let failed = response["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{response}");
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xA700);
    assert_eq!(response["00081199"]["Value"].as_array().unwrap().len(), 1);
    let stored =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(stored.len(), 1);
    assert!(spill_files(&node).is_empty(), "{:?}", spill_files(&node));
}

/// The node stays responsive during a multi-gigabyte STOW-RS attempt (generated as it is sent,
/// never stored anywhere): QIDO and C-ECHO from other connections answer normally, the part is
/// refused at the instance limit and the request at the request limit, and afterwards nothing
/// of it is stored and no spill file remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_answers_during_a_multi_gigabyte_stow_attempt() {
    let node = node(&["--max-instance-mb", "48", "--stow-max-request-mb", "256"]);
    let (status, response) = stow(&node, &[("application/dicom", &test_file("MR_small.dcm"))]);
    assert_eq!(status, 200, "{response}");
    const SIZE: u64 = 4 * 1024 * 1024 * 1024;
    let port = node.http_port();
    // chunked, one part of 4 GiB, at most about 100 MiB/s
    let upload = std::thread::spawn(move || {
        support::streamed_request(
            port,
            "POST",
            "/dicom-web/studies",
            &[("Content-Type", STREAM_CONTENT_TYPE)],
            throttled(
                stow_chunks(Vec::new(), SIZE, true),
                Duration::from_millis(10),
            ),
        )
    });
    let mut queries = 0;
    let mut slowest = Duration::ZERO;
    let mut spilled = false;
    let mut echoed = false;
    while !upload.is_finished() {
        let started = Instant::now();
        let r = get(
            &node,
            "/dicom-web/studies",
            &[("Accept", "application/dicom+json")],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        slowest = slowest.max(started.elapsed());
        queries += 1;
        spilled |= !spill_files(&node).is_empty();
        if !echoed {
            assert!(support::echoscu(&node, "ECHOER").status.success());
            echoed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let streamed = upload.join().unwrap();
    // the node stopped reading at the request limit: 413, or a connection it closed
    match &streamed.response {
        Ok(r) => assert_eq!(r.status, 413, "{}", r.text()),
        Err(e) => eprintln!("upload ended without an answer: {e}"),
    }
    assert!(
        streamed.written < 1024 * 1024 * 1024,
        "{} bytes written",
        streamed.written
    );
    eprintln!(
        "{queries} QIDO during the upload (slowest {slowest:?}), {} bytes sent",
        streamed.written
    );
    assert!(queries >= 3, "{queries} queries during the upload");
    assert!(slowest < Duration::from_secs(2), "slowest QIDO {slowest:?}");
    assert!(spilled, "the part never reached a spill file");
    // a body declared far too large is refused after a bounded drain, with a readable 413
    let declared = support::streamed_request(
        port,
        "POST",
        "/dicom-web/studies",
        &[
            ("Content-Type", STREAM_CONTENT_TYPE),
            ("Content-Length", &(10 * 1024 * 1024 * 1024u64).to_string()),
        ],
        stow_chunks(Vec::new(), 10 * 1024 * 1024 * 1024, true),
    );
    let r = declared.response.unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(declared.written < 1024 * 1024 * 1024);
    // nothing of either is kept
    let stored =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(stored.len(), 1);
    assert!(spill_files(&node).is_empty(), "{:?}", spill_files(&node));
    assert!(!node.log().contains("panicked"));
}

/// Every route but DICOMweb has a 2 MiB body limit, the login and users routes included, with
/// or without a Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_users_bodies_are_limited() {
    let node = node(&["--admin-token", "limits-admin-secret"]);
    let port = node.http_port();
    let big = format!("{{\"username\": \"{}\"}}", "x".repeat(3 * MIB));
    let admin = ("Authorization", "Bearer limits-admin-secret");
    let json = ("Content-Type", "application/json");
    for (path, auth) in [
        ("/api/login", None),
        ("/api/users", Some(admin)),
        ("/api/keys", Some(admin)),
    ] {
        let headers: Vec<(&str, &str)> = std::iter::once(json).chain(auth).collect();
        let r = support::http_request(port, "POST", path, &headers, big.as_bytes());
        assert_eq!(r.status, 413, "{path}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("limit"),
            "{path}: {v}"
        );
        // chunked: cut at the limit
        let chunks = big.clone().into_bytes();
        let streamed = support::streamed_request(
            port,
            "POST",
            path,
            &headers,
            chunks
                .chunks(64 * 1024)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
                .into_iter(),
        );
        let r = streamed.response.unwrap();
        assert_eq!(r.status, 413, "{path} (chunked): {}", r.text());
    }
    // a body within the limit still works
    let r = support::http_request(
        port,
        "POST",
        "/api/users",
        &[json, admin],
        br#"{"name": "ada", "roles": ["viewer"], "password": "correct horse battery"}"#,
    );
    assert!(r.status < 300, "{}", r.text());
}

/// --http-max-in-flight: requests beyond it are 503 with Retry-After while the others run
/// (an upload holds its place until it ends); then the node answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_cap_are_503() {
    let node = node(&["--http-max-in-flight", "2"]);
    let port = node.http_port();
    let mr = test_file("MR_small.dcm");
    let len = mr.len();
    let slow_upload = |object: Vec<u8>| {
        std::thread::spawn(move || {
            let head = b"--stream-boundary\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
            let tail = b"\r\n--stream-boundary--\r\n".to_vec();
            let pieces: Vec<Vec<u8>> = object.chunks(len / 20 + 1).map(<[u8]>::to_vec).collect();
            let body = std::iter::once(head)
                .chain(throttled(pieces.into_iter(), Duration::from_millis(100)))
                .chain(std::iter::once(tail));
            support::streamed_request(
                port,
                "POST",
                "/dicom-web/studies",
                &[("Content-Type", STREAM_CONTENT_TYPE)],
                body,
            )
        })
    };
    let uploads = [slow_upload(mr.clone()), slow_upload(mr.clone())];
    std::thread::sleep(Duration::from_millis(500));
    let r = get(&node, "/dicom-web/studies", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("in flight"), "{v}");
    for upload in uploads {
        let r = upload.join().unwrap().response.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = get(&node, "/dicom-web/studies", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(node.log().contains("too many requests in flight"));
}

/// Sends `head` (a request line and headers, no body) as is and reads the answer.
fn raw_request(node: &Node, head: &str) -> HttpResponse {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.http_port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    support::read_response(&mut reader, "GET").unwrap()
}

/// URLs the node writes (Retrieve URL, BulkDataURI) come from the Host header only when it is
/// host[:port]; a malformed one is 400, and a request without one gets the loopback address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_come_only_from_a_well_formed_host() {
    let node = node(&[]);
    let (status, _) = stow(&node, &[("application/dicom", &test_file("CT_small.dcm"))]);
    assert_eq!(status, 200);
    let port = node.http_port();
    for host in [
        "evil.example/x?",
        "a\"b",
        "x:99999",
        "[::1]80",
        "user@evil.example",
    ] {
        for path in [
            "/dicom-web/studies".to_string(),
            format!("/dicom-web/studies/{CT_SMALL_STUDY}/metadata"),
        ] {
            let r = raw_request(
                &node,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            );
            assert_eq!(r.status, 400, "{host} {path}: {}", r.text());
        }
    }
    // HTTP/1.0 without Host: the loopback address and the listening port
    let r = raw_request(&node, "GET /dicom-web/studies HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let studies: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        studies[0]["00081190"]["Value"][0],
        format!("http://127.0.0.1:{port}/dicom-web/studies/{CT_SMALL_STUDY}")
    );
    // a well-formed Host is used as given
    let r = raw_request(
        &node,
        "GET /dicom-web/studies HTTP/1.1\r\nHost: pacs.example.org:9443\r\nConnection: close\r\n\r\n",
    );
    let studies: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        studies[0]["00081190"]["Value"][0],
        format!("http://pacs.example.org:9443/dicom-web/studies/{CT_SMALL_STUDY}")
    );
}

fn qido_error(node: &Node, query: &str) -> String {
    let r = get(
        node,
        &format!("/dicom-web/studies?{query}"),
        &[("Accept", "application/dicom+json")],
    );
    assert_eq!(r.status, 400, "{query:.80}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["error"].as_str().unwrap().to_string()
}

/// QIDO-RS caps: matching keys, includefield attributes, list values and value lengths are
/// 400 with a reason; limit and offset are bound parameters, and pages still page (both
/// index backends). C-FIND is held to the same caps (C000 with an Error Comment).
async fn queries_are_capped_and_paged_with_bound_parameters(backend: Backend) {
    let node = Node::start_with(
        NodeOptions::new(backend).config(&support::ae_entry("FINDSCU", &["echo", "find"])),
    );
    for file in ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"] {
        let (status, response) = stow(&node, &[("application/dicom", &test_file(file))]);
        assert_eq!(status, 200, "{file}: {response}");
    }
    let keys = vec!["PatientName=*"; 65].join("&");
    assert!(qido_error(&node, &keys).contains("matching keys: at most 64"));
    let include = vec!["includefield=PatientAge"; 257].join("&");
    assert!(qido_error(&node, &include).contains("includefield attributes: at most 256"));
    let uids: Vec<String> = (0..1001).map(|n| format!("1.2.3.{n}")).collect();
    let list = format!("StudyInstanceUID={}", uids.join("%5C"));
    assert!(qido_error(&node, &list).contains("more than 1000 values"));
    let long = format!("PatientID={}", "P".repeat(65));
    assert!(qido_error(&node, &long).contains("longer than 64 characters"));
    let long = format!("AccessionNumber={}", "A".repeat(17));
    assert!(qido_error(&node, &long).contains("longer than 16 characters"));
    // the caps are not in the way of ordinary queries
    let uids = format!(
        "StudyInstanceUID={CT_SMALL_STUDY}%5C{MR_SMALL_STUDY}&{}",
        ["PatientName=*"; 10].join("&")
    );
    let r = get(
        &node,
        &format!("/dicom-web/studies?{uids}"),
        &[("Accept", "application/dicom+json")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len(),
        2
    );
    // pages of one statement: every offset, and one past the end
    let mut seen = std::collections::BTreeSet::new();
    for offset in 0..3 {
        let r = get(
            &node,
            &format!("/dicom-web/studies?limit=1&offset={offset}"),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let page: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(page.len(), 1, "offset {offset}");
        assert_eq!(r.header("warning").is_some(), offset < 2, "offset {offset}");
        seen.insert(
            page[0]["0020000D"]["Value"][0]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 3);
    let r = get(&node, "/dicom-web/studies?limit=5&offset=3", &[]);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len(),
        0
    );
    let r = get(
        &node,
        &format!("/dicom-web/studies?offset={}", u64::MAX),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len(),
        0
    );
    // C-FIND: the same caps, refused with Unable to Process and a comment
    let mut cmd = support::dcmtk_command("findscu");
    cmd.args(["-S", "-d", "-aet", "FINDSCU", "-aec", "PACS"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyDescription={}", "D".repeat(65))])
        .args(["127.0.0.1", &node.dimse_port().to_string()]);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("0xc000") || log.contains("Unable to Process"),
        "{log}"
    );
    assert!(log.contains("longer than 64 characters"), "{log}");
    assert!(!node.log().contains("panicked"));
}
both_backends!(queries_are_capped_and_paged_with_bound_parameters);

/// WADO-RS parameters from the network that reached an index, a slice or an unchecked parse:
/// each is answered (400, 404, 416), none panics a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wado_parameters_are_answered() {
    let node = node(&[]);
    let (status, _) = stow(&node, &[("application/dicom", &test_file("CT_small.dcm"))]);
    assert_eq!(status, 200);
    let instance = format!(
        "/dicom-web/studies/{CT_SMALL_STUDY}/series/{CT_SMALL_SERIES}/instances/{CT_SMALL_SOP}"
    );
    let many = vec!["1"; 4097].join(",");
    let octets = ("Accept", "application/octet-stream");
    let any = ("Accept", "*/*");
    for (path, header, status) in [
        (format!("{instance}/frames/0"), any, 400),
        (format!("{instance}/frames/1,,2"), any, 400),
        (format!("{instance}/frames/4294967296"), any, 400),
        (format!("{instance}/frames/99"), any, 404),
        (format!("{instance}/frames/{many}"), any, 400),
        (format!("{instance}/frames/0/rendered"), any, 400),
        (format!("{instance}/rendered?window=nan,100"), any, 400),
        (format!("{instance}/rendered?window=40,inf"), any, 400),
        (format!("{instance}/rendered?viewport=0,0"), any, 400),
        (format!("{instance}/rendered?quality=0"), any, 400),
        (format!("{instance}/bulkdata/zz"), octets, 404),
        (
            format!("{instance}/bulkdata/00100010/0/00100010"),
            octets,
            404,
        ),
        (
            format!("{instance}/bulkdata/00081140/99999999999999999999/00081150"),
            octets,
            404,
        ),
        (
            format!("/dicom-web/studies/{CT_SMALL_STUDY}%ff/metadata"),
            any,
            400,
        ),
        (
            "/dicom-web/studies?PatientName=%ff%fe%".to_string(),
            any,
            200,
        ),
        ("/dicom-web/studies?%ZZ=%&=&&".to_string(), any, 400),
    ] {
        let r = get(&node, &path, &[header]);
        assert_eq!(r.status, status, "{path:.120}: {}", r.text());
    }
    let pixels = format!("{instance}/bulkdata/7FE00010");
    for range in [
        "bytes=-5",
        "bytes=5-2",
        "bytes=99999999999999999999-",
        "bytes=1-2,4-5",
        "items=0-1",
    ] {
        let r = get(&node, &pixels, &[octets, ("Range", range)]);
        assert_eq!(r.status, 416, "{range}: {}", r.text());
    }
    assert_eq!(get(&node, "/healthz", &[]).status, 200);
    assert!(!node.log().contains("panicked"), "{}", node.log());
}
