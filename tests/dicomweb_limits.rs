//! DICOMweb against hostile or careless input: byte ranges that cannot be satisfied, bodies
//! larger than the limits, STOW-RS parts past the instance limit (spilled, refused, nothing
//! kept), requests in flight beyond the cap, malformed Host headers, and QIDO caps.

use crate::support;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use serde_json::Value;
use support::multipart;
use support::{Backend, HttpResponse, Node, NodeOptions};

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

fn ct_small() -> Vec<u8> {
    std::fs::read(support::pydicom_test_files().join("CT_small.dcm")).unwrap()
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
    let _ = ct_small();
}
