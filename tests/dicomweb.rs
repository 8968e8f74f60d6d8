//! DICOMweb against the real node on both index backends: QIDO-RS matching rules, levels,
//! limit/offset, includefield; WADO-RS instances, metadata, frames, bulk data; STOW-RS success,
//! partial failure and rejection.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::uids;
use serde_json::Value;
use support::multipart;
use support::{both_backends, Backend, HttpResponse, Node, NodeOptions};

const CT_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const MR_SMALL_STUDY: &str = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";

/// A node holding CT_small, MR_small and a 10-slice synthetic CT.
struct Fixture {
    node: Node,
    synth: pacs_synth::SynthSummary,
    _synth_dir: tempfile::TempDir,
}

fn fixture(backend: Backend, extra: &[&str]) -> Fixture {
    let node = Node::start_with(NodeOptions {
        backend,
        args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    let dir = support::pydicom_test_files();
    let files = [dir.join("CT_small.dcm"), dir.join("MR_small.dcm")];
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(&node, "MODALITY", &[], &refs)
        .status
        .success());
    let (synth_dir, synth) = support::synth_ct(10, 31);
    let paths: Vec<PathBuf> = synth.instances.iter().map(|i| i.path.clone()).collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(&node, "MODALITY", &[], &refs)
        .status
        .success());
    Fixture {
        node,
        synth,
        _synth_dir: synth_dir,
    }
}

fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    support::http_request(
        node.http_port(),
        "GET",
        &format!("/dicom-web{path}"),
        headers,
        b"",
    )
}

fn json(node: &Node, path: &str) -> Vec<Value> {
    let r = get(node, path, &[("Accept", "application/dicom+json")]);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/dicom+json"));
    serde_json::from_slice(&r.body).unwrap()
}

fn values(datasets: &[Value], tag: &str) -> BTreeSet<String> {
    datasets
        .iter()
        .map(|d| match &d[tag]["Value"][0] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o["Alphabetic"].as_str().unwrap_or_default().to_string(),
            other => other.to_string(),
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn qido_matching_rules(backend: Backend) {
    let f = fixture(backend, &[]);
    let node = &f.node;
    let synth_study = f.synth.instances[0].study_instance_uid.clone();
    let all = set(&[CT_SMALL_STUDY, MR_SMALL_STUDY, &synth_study]);
    assert_eq!(values(&json(node, "/studies"), "0020000D"), all);
    // single value, case-insensitive person names, by keyword and by tag
    assert_eq!(
        values(
            &json(node, "/studies?PatientName=compressedsamples%5Ect1"),
            "0020000D"
        ),
        set(&[CT_SMALL_STUDY])
    );
    assert_eq!(
        values(
            &json(node, "/studies?00100010=CompressedSamples%5EMR1"),
            "0020000D"
        ),
        set(&[MR_SMALL_STUDY])
    );
    // wildcards
    assert_eq!(
        values(&json(node, "/studies?PatientName=Compressed*"), "0020000D"),
        set(&[CT_SMALL_STUDY, MR_SMALL_STUDY])
    );
    assert_eq!(
        values(
            &json(node, "/studies?PatientName=*samples%5E?T1"),
            "0020000D"
        ),
        set(&[CT_SMALL_STUDY])
    );
    assert!(json(node, "/studies?PatientID=1CT*X").is_empty());
    // universal matching
    assert_eq!(
        values(
            &json(node, "/studies?PatientName=*&AccessionNumber="),
            "0020000D"
        ),
        all
    );
    // UID list
    let list = format!("/studies?StudyInstanceUID={CT_SMALL_STUDY}%5C{MR_SMALL_STUDY}");
    assert_eq!(values(&json(node, &list), "0020000D").len(), 2);
    // date ranges, closed and open-ended both ways (CT_small 20040119, MR_small 20040826)
    assert_eq!(
        values(
            &json(node, "/studies?StudyDate=20040101-20040131"),
            "0020000D"
        ),
        set(&[CT_SMALL_STUDY])
    );
    assert_eq!(
        values(&json(node, "/studies?StudyDate=-20040201"), "0020000D"),
        set(&[CT_SMALL_STUDY])
    );
    let later = values(&json(node, "/studies?StudyDate=20040201-"), "0020000D");
    assert!(later.contains(MR_SMALL_STUDY) && !later.contains(CT_SMALL_STUDY));
    assert_eq!(
        values(&json(node, "/studies?StudyDate=20040826"), "0020000D"),
        set(&[MR_SMALL_STUDY])
    );
    // modalities in study, multi-valued
    assert_eq!(
        values(&json(node, "/studies?ModalitiesInStudy=MR"), "0020000D"),
        set(&[MR_SMALL_STUDY])
    );
    assert_eq!(
        values(
            &json(node, "/studies?ModalitiesInStudy=MR%5CCT"),
            "0020000D"
        ),
        all
    );
    // fuzzy matching is accepted: a name component prefix matches
    assert_eq!(
        values(
            &json(node, "/studies?PatientName=mr1&fuzzymatching=true"),
            "0020000D"
        ),
        set(&[MR_SMALL_STUDY])
    );
    // study-level attributes in series and instance searches
    let series = json(node, "/series?PatientName=CompressedSamples%5ECT1");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["00080060"]["Value"][0], "CT");
    let synth_instances = json(
        node,
        &format!("/instances?StudyInstanceUID={synth_study}&Modality=CT"),
    );
    assert_eq!(synth_instances.len(), 10);
    // empty results are 200 []
    assert!(json(node, "/studies?PatientID=NOBODY").is_empty());
    // errors: unknown attribute, malformed date range, bad UID
    for bad in [
        "/studies?NoSuchAttribute=1",
        "/studies?StudyDate=2004-01",
        "/studies?StudyInstanceUID=1.2.abc",
        "/studies?limit=x",
        "/studies?Rows=512",
    ] {
        let r = get(node, bad, &[]);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(!r.text().trim().is_empty());
    }
}
both_backends!(qido_matching_rules);

async fn qido_returns_the_standard_attributes(backend: Backend) {
    let f = fixture(backend, &[]);
    let node = &f.node;
    let study = &f.synth.instances[0].study_instance_uid;
    let series_uid = &f.synth.instances[0].series_instance_uid;
    let studies = json(node, &format!("/studies?StudyInstanceUID={study}"));
    let s = &studies[0];
    // PS3.18 Table 6.7.1-2
    for tag in [
        "00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190",
        "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206",
        "00201208",
    ] {
        assert!(s.get(tag).is_some(), "study attribute {tag} missing: {s}");
    }
    assert_eq!(s["00201206"]["Value"][0], 1);
    assert_eq!(s["00201208"]["Value"][0], 10);
    assert_eq!(s["00080061"]["Value"], serde_json::json!(["CT"]));
    assert!(s["00081190"]["Value"][0]
        .as_str()
        .unwrap()
        .ends_with(&format!("/dicom-web/studies/{study}")));
    assert_eq!(s["00100010"]["vr"], "PN");
    // Table 6.7.1-2a
    let series = json(node, &format!("/studies/{study}/series"));
    assert_eq!(series.len(), 1);
    for tag in [
        "00080060", "0008103E", "0020000E", "00200011", "00201209", "00081190",
    ] {
        assert!(
            series[0].get(tag).is_some(),
            "series attribute {tag} missing"
        );
    }
    assert_eq!(series[0]["00201209"]["Value"][0], 10);
    // Table 6.7.1-2b
    let instances = json(
        node,
        &format!("/studies/{study}/series/{series_uid}/instances"),
    );
    assert_eq!(instances.len(), 10);
    for tag in [
        "00080016", "00080018", "00080056", "00081190", "00200013", "00280010", "00280011",
        "00280100",
    ] {
        assert!(
            instances[0].get(tag).is_some(),
            "instance attribute {tag} missing"
        );
    }
    assert_eq!(instances[0]["00280010"]["Value"][0], 512);
    let numbers: Vec<i64> = instances
        .iter()
        .map(|i| i["00200013"]["Value"][0].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=10).collect::<Vec<_>>(),
        "instances in instance-number order"
    );
    assert_eq!(json(node, &format!("/studies/{study}/instances")).len(), 10);
    // includefield: a keyword, a tag, a comma list, repeated, and all
    let r = json(node, &format!("/studies/{study}/series/{series_uid}/instances?includefield=SliceThickness&includefield=00200032,00280030"));
    assert!(
        r[0].get("00180050").is_some()
            && r[0].get("00200032").is_some()
            && r[0].get("00280030").is_some(),
        "{}",
        r[0]
    );
    let r = json(
        node,
        &format!("/studies/{study}/series?includefield=00180050"),
    );
    assert!(r[0].get("00180050").is_some());
    let r = json(
        node,
        &format!("/studies/{study}/series/{series_uid}/instances?includefield=all&limit=1"),
    );
    assert!(r[0].get("00280030").is_some() && r[0].get("00281050").is_some());
    assert!(
        r[0].get("7FE00010")
            .is_some_and(|p| p.get("BulkDataURI").is_some())
            || r[0].get("7FE00010").is_none()
    );
    // limit and offset, with the Warning header when results were cut
    let r = get(node, "/studies?limit=2", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("warning").is_some_and(|w| w.starts_with("299")),
        "{:?}",
        r.headers
    );
    let first: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(first.len(), 2);
    let r = get(node, "/studies?limit=2&offset=2", &[]);
    assert!(r.header("warning").is_none());
    let rest: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(rest.len(), 1);
    let mut seen = values(&first, "0020000D");
    seen.extend(values(&rest, "0020000D"));
    assert_eq!(seen.len(), 3, "paging covers every study once");
    // gzip when asked
    let r = get(node, "/studies", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // CORS: no other origin is allowed by default (configured origins: auth::secure_defaults)
    let r = support::http_request(
        node.http_port(),
        "OPTIONS",
        "/dicom-web/studies",
        &[
            ("Origin", "http://viewer.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}
both_backends!(qido_returns_the_standard_attributes);

async fn wado_metadata_frames_bulkdata_and_instances(backend: Backend) {
    let f = fixture(backend, &[]);
    let node = &f.node;
    let first = &f.synth.instances[0];
    let (study, series, sop) = (
        &first.study_instance_uid,
        &first.series_instance_uid,
        &first.sop_instance_uid,
    );
    // series metadata: 10 instances, BulkDataURI absolute, ETag and revalidation
    let r = get(
        node,
        &format!("/studies/{study}/series/{series}/metadata"),
        &[],
    );
    assert_eq!(r.status, 200);
    let etag = r.header("etag").expect("etag").to_string();
    assert!(r.header("cache-control").is_some());
    let md: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(md.len(), 10);
    let uri = md[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        uri.starts_with("http://127.0.0.1:")
            && uri.contains("/dicom-web/studies/")
            && uri.ends_with("/bulkdata/7FE00010"),
        "{uri}"
    );
    assert_eq!(md[0]["00280010"]["Value"][0], 512);
    let r = get(
        node,
        &format!("/studies/{study}/series/{series}/metadata"),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    assert_eq!(json(node, &format!("/studies/{study}/metadata")).len(), 10);
    assert_eq!(
        json(
            node,
            &format!("/studies/{study}/series/{series}/instances/{sop}/metadata")
        )
        .len(),
        1
    );
    // frames: native pixel data, by ranged reads
    let original = dicom_object::open_file(&first.path).unwrap();
    let pixels = original
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let r = get(
        node,
        &format!("/studies/{study}/series/{series}/instances/{sop}/frames/1"),
        &[(
            "Accept",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
        )],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].body, pixels);
    assert!(parts[0]
        .content_type()
        .unwrap()
        .starts_with("application/octet-stream"));
    // no Accept at all: the default (octet-stream, Explicit VR Little Endian) is the same
    let r = get(
        node,
        &format!("/studies/{study}/series/{series}/instances/{sop}/frames/1,1"),
        &[],
    );
    assert_eq!(
        multipart::parse(r.header("content-type").unwrap(), &r.body).len(),
        2
    );
    let r = get(
        node,
        &format!("/studies/{study}/series/{series}/instances/{sop}/frames/2"),
        &[],
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        get(
            node,
            &format!("/studies/{study}/series/{series}/instances/{sop}/frames/x"),
            &[]
        )
        .status,
        400
    );
    // bulk data: whole value as multipart, a byte range as 206
    let path = uri.split("/dicom-web").nth(1).unwrap().to_string();
    let r = get(
        node,
        &path,
        &[(
            "Accept",
            "multipart/related; type=\"application/octet-stream\"",
        )],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        multipart::parse(r.header("content-type").unwrap(), &r.body)[0].body,
        pixels
    );
    let r = get(
        node,
        &path,
        &[
            ("Accept", "application/octet-stream"),
            ("Range", "bytes=100-199"),
        ],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &pixels[100..200]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{}", pixels.len()).as_str())
    );
    // instance retrieval: as stored (Explicit VR LE) is the stored object byte for byte
    let stored =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    let object = stored.iter().find(|s| &s.sop_instance_uid == sop).unwrap();
    let bytes = std::fs::read(node.data_dir().join("objects").join(&object.object_key)).unwrap();
    for accept in [
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        "multipart/related; type=\"application/dicom\"",
        "*/*",
    ] {
        let r = get(
            node,
            &format!("/studies/{study}/series/{series}/instances/{sop}"),
            &[("Accept", accept)],
        );
        assert_eq!(r.status, 200, "{accept}");
        let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].body, bytes, "{accept}");
    }
    let r = get(
        node,
        &format!("/studies/{study}"),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
    );
    assert_eq!(
        multipart::parse(r.header("content-type").unwrap(), &r.body).len(),
        10
    );
    let r = get(node, &format!("/studies/{study}/series/{series}"), &[]);
    assert_eq!(
        multipart::parse(r.header("content-type").unwrap(), &r.body).len(),
        10
    );
    // what cannot be served is said clearly
    assert_eq!(
        get(
            node,
            &format!("/studies/{study}"),
            &[("Accept", "application/dicom+xml")]
        )
        .status,
        406
    );
    assert_eq!(
        get(
            node,
            &format!("/studies/{study}/metadata"),
            &[("Accept", "application/dicom+xml")]
        )
        .status,
        406
    );
    assert_eq!(get(node, "/studies/1.2.3.4.5/metadata", &[]).status, 404);
    assert_eq!(get(node, "/studies/1.2.3.4.5", &[]).status, 404);
    assert_eq!(get(node, "/studies/not-a-uid/metadata", &[]).status, 400);
}
both_backends!(wado_metadata_frames_bulkdata_and_instances);

fn stow(node: &Node, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let r = support::http_request(
        node.http_port(),
        "POST",
        &format!("/dicom-web{path}"),
        &[
            ("Content-Type", content_type),
            ("Accept", "application/dicom+json"),
        ],
        body,
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

async fn stow_success_partial_failure_and_rejection(backend: Backend) {
    let node = Node::start_with(NodeOptions {
        backend,
        args: vec!["--stow-max-request-mb".into(), "2".into()],
        ..Default::default()
    });
    let dir = support::pydicom_test_files();
    let ct = std::fs::read(dir.join("CT_small.dcm")).unwrap();
    let mr = std::fs::read(dir.join("MR_small.dcm")).unwrap();
    // two instances: 200, both referenced
    let (ctype, body) = multipart::build(&[("application/dicom", &ct), ("application/dicom", &mr)]);
    let (status, response) = stow(&node, "/studies", &ctype, &body);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["00081199"]["Value"].as_array().unwrap().len(), 2);
    assert!(response.get("00081198").is_none());
    // stored exactly as received, and found by QIDO
    let stored =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    let ct_row = stored
        .iter()
        .find(|s| s.study_instance_uid == CT_SMALL_STUDY)
        .unwrap();
    assert_eq!(
        std::fs::read(node.data_dir().join("objects").join(&ct_row.object_key)).unwrap(),
        ct
    );
    assert_eq!(json(&node, "/studies").len(), 2);
    // the same again: identical duplicates succeed
    let (status, _) = stow(&node, "/studies", &ctype, &body);
    assert_eq!(status, 200);
    // one good part, one malformed: 202, the good one stored
    let j2k = std::fs::read(dir.join("JPEG2000.dcm")).unwrap();
    let (ctype, body) = multipart::build(&[
        ("application/dicom", b"this is not DICOM"),
        ("application/dicom", &j2k),
    ]);
    let (status, response) = stow(&node, "/studies", &ctype, &body);
    assert_eq!(status, 202, "{response}");
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    assert_eq!(response["00081199"]["Value"].as_array().unwrap().len(), 1);
    // an instance posted to another study's URL: refused, 409
    let (ctype, body) = multipart::build(&[("application/dicom", &ct)]);
    let (status, response) = stow(&node, &format!("/studies/{MR_SMALL_STUDY}"), &ctype, &body);
    assert_eq!(status, 409, "{response}");
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );
    // wrong media type: 415
    let (status, _) = stow(&node, "/studies", "application/json", b"{}");
    assert_eq!(status, 415);
    let (status, _) = stow(
        &node,
        "/studies",
        "multipart/related; type=\"application/dicom+json\"; boundary=x",
        b"--x--",
    );
    assert_eq!(status, 415);
    // larger than the request limit: 413
    let big = vec![0u8; 3 * 1024 * 1024];
    let (ctype, body) = multipart::build(&[("application/dicom", &big)]);
    let (status, _) = stow(&node, "/studies", &ctype, &body);
    assert_eq!(status, 413);
    // a file whose file meta names another instance than its data set: A900
    let rtdose = std::fs::read(dir.join("rtdose.dcm")).unwrap();
    let (ctype, body) = multipart::build(&[("application/dicom", &rtdose)]);
    let (status, response) = stow(&node, "/studies", &ctype, &body);
    assert_eq!(status, 409);
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );
    // nothing of the refused requests was stored
    let after =
        support::archive::verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(after.len(), 3);
}
both_backends!(stow_success_partial_failure_and_rejection);

async fn python_dicomweb_client_works(backend: Backend) {
    let f = fixture(backend, &[]);
    let first = &f.synth.instances[0];
    // an instance the fixture does not hold yet
    let stow_file = support::pydicom_test_files().join("liver_1frame.dcm");
    let out = std::process::Command::new(support::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dicomweb_client_check.py"))
        .arg(format!("http://127.0.0.1:{}/dicom-web", f.node.http_port()))
        .args([
            &first.study_instance_uid,
            &first.series_instance_uid,
            &first.sop_instance_uid,
        ])
        .args(["512", "512"])
        .arg(&stow_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dicomweb-client check failed:\n{}\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        f.node.log()
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["instances"], 10);
    assert_eq!(summary["metadata"], 10);
    assert_eq!(summary["frame_bytes"], 512 * 512 * 2);
}
both_backends!(python_dicomweb_client_works);

/// Stores a pydicom file in its own transfer syntax and returns (study, series, instance).
fn store_as_is(node: &Node, file: &str, flag: &str) -> (String, String, String) {
    let path = support::pydicom_test_files().join(file);
    let out = support::storescu(node, "MODALITY", &["-R", flag], &[path.as_path()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ds = dicom_object::open_file(&path).unwrap();
    let s = |tag| {
        ds.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    use dicom_dictionary_std::tags;
    (
        s(tags::STUDY_INSTANCE_UID),
        s(tags::SERIES_INSTANCE_UID),
        s(tags::SOP_INSTANCE_UID),
    )
}

async fn compressed_frames_transcoding_and_rendering(backend: Backend) {
    let node = Node::start(backend);
    // JPEG 2000 (lossless), stored as received
    let (study, series, sop) = store_as_is(&node, "examples_jpeg2k.dcm", "-xv");
    let base = format!("/studies/{study}/series/{series}/instances/{sop}");
    let original =
        dicom_object::open_file(support::pydicom_test_files().join("examples_jpeg2k.dcm")).unwrap();
    // a single frame split over three fragments: the frame is their concatenation (as pydicom,
    // an independent reader, sees it)
    let stdout = support::python_stdout::<_, std::ffi::OsString>([
        "-c".into(),
        "import sys; from pydicom import dcmread; from pydicom.encaps import generate_frames\n\
             ds = dcmread(sys.argv[1]); sys.stdout.buffer.write(next(generate_frames(ds.PixelData, number_of_frames=1)))".into(),
        support::pydicom_test_files().join("examples_jpeg2k.dcm").into(),
    ]);
    let fragment = stdout;
    assert_eq!(fragment.len(), 152294);
    // as stored, in its own media type and as octet-stream with transfer-syntax=*
    for accept in [
        "multipart/related; type=\"image/jp2\"",
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
    ] {
        let r = get(&node, &format!("{base}/frames/1"), &[("Accept", accept)]);
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
        assert!(
            parts[0].body == fragment,
            "{accept}: {} bytes served, fragment has {}",
            parts[0].body.len(),
            fragment.len()
        );
        assert!(parts[0]
            .content_type()
            .unwrap()
            .contains(&format!("transfer-syntax={}", uids::JPEG2000_LOSSLESS)));
    }
    // decoded to native when the client wants uncompressed pixels
    let int = |tag| original.element(tag).unwrap().to_int::<usize>().unwrap();
    use dicom_dictionary_std::tags;
    let (rows, cols) = (int(tags::ROWS), int(tags::COLUMNS));
    let (spp, bits) = (int(tags::SAMPLES_PER_PIXEL), int(tags::BITS_ALLOCATED));
    let r = get(
        &node,
        &format!("{base}/frames/1"),
        &[(
            "Accept",
            "multipart/related; type=\"application/octet-stream\"",
        )],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts[0].body.len(), rows * cols * spp * bits / 8);
    // instance retrieval: as stored, or transcoded to Explicit VR Little Endian (the default)
    let r = get(
        &node,
        &base,
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
    );
    let part = &multipart::parse(r.header("content-type").unwrap(), &r.body)[0];
    assert!(part
        .content_type()
        .unwrap()
        .contains(uids::JPEG2000_LOSSLESS));
    let r = get(
        &node,
        &base,
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let part = &multipart::parse(r.header("content-type").unwrap(), &r.body)[0];
    assert!(part.content_type().unwrap().contains(&format!(
        "transfer-syntax={}",
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    )));
    let transcoded = dicom_object::from_reader(std::io::Cursor::new(&part.body[128..])).unwrap();
    assert_eq!(
        transcoded.meta().transfer_syntax().trim_end_matches('\0'),
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    );
    let pixels = transcoded
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(pixels.len(), rows * cols * spp * bits / 8);
    // a syntax that cannot be produced: 406 with an explanation
    let accept = format!(
        "multipart/related; type=\"application/dicom\"; transfer-syntax={}",
        uids::JPEG_BASELINE8_BIT
    );
    let r = get(&node, &base, &[("Accept", accept.as_str())]);
    assert_eq!(r.status, 406);
    assert!(r.text().contains("transfer-syntax=*"), "{}", r.text());
    // rendered and thumbnails, JPEG and PNG, at every level
    let jpeg = |r: &HttpResponse| {
        r.status == 200
            && r.body.starts_with(&[0xFF, 0xD8])
            && r.header("content-type") == Some("image/jpeg")
    };
    for path in [
        format!("{base}/rendered"),
        format!("{base}/frames/1/rendered"),
        format!("/studies/{study}/series/{series}/rendered"),
        format!("/studies/{study}/rendered"),
        format!("{base}/thumbnail"),
        format!("/studies/{study}/series/{series}/thumbnail"),
        format!("/studies/{study}/thumbnail"),
        format!("{base}/frames/1/thumbnail"),
    ] {
        let r = get(&node, &path, &[("Accept", "image/jpeg")]);
        assert!(jpeg(&r), "{path}: {} {}", r.status, r.text());
    }
    let r = get(
        &node,
        &format!("{base}/rendered?window=100,50"),
        &[("Accept", "image/png")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.starts_with(b"\x89PNG"));
    let png = image_size(&r.body);
    assert_eq!(png, (cols as u32, rows as u32));
    let r = get(
        &node,
        &format!("{base}/thumbnail?viewport=64,64"),
        &[("Accept", "image/png")],
    );
    let (w, h) = image_size(&r.body);
    assert!(w <= 64 && h <= 64 && (w == 64 || h == 64), "{w}x{h}");
    assert_eq!(
        get(&node, &format!("{base}/rendered?window=abc"), &[]).status,
        400
    );
    assert_eq!(
        get(
            &node,
            &format!("{base}/rendered"),
            &[("Accept", "image/gif")]
        )
        .status,
        406
    );
}
both_backends!(compressed_frames_transcoding_and_rendering);

/// Width and height of a PNG (IHDR).
fn image_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_is_served_beside_the_api() {
    let viewer = tempfile::tempdir().unwrap();
    std::fs::write(viewer.path().join("index.html"), "<html>viewer</html>").unwrap();
    std::fs::write(viewer.path().join("app-config.js"), "window.config = {};").unwrap();
    let node = Node::start_with(NodeOptions {
        backend: Backend::Sqlite,
        args: vec![
            "--viewer-dir".into(),
            viewer.path().to_string_lossy().into_owned(),
        ],
        ..Default::default()
    });
    let get_root = |path: &str| support::http_request(node.http_port(), "GET", path, &[], b"");
    assert!(get_root("/").text().contains("viewer"));
    assert!(get_root("/app-config.js").text().contains("window.config"));
    // the single-page application's own routes fall back to index.html
    let r = get_root("/viewer?StudyInstanceUIDs=1.2.3");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("viewer"));
    // but DICOMweb paths never do
    assert_eq!(get_root("/dicom-web/no-such-resource").status, 404);
    assert_eq!(get_root("/dicom-web/studies").status, 200);
}

/// Frame `n` (1-based) of a pydicom test file as pydicom (an independent reader) sees it:
/// encapsulated frames as stored, native frames sliced from Pixel Data.
fn pydicom_frame(file: &str, n: usize) -> Vec<u8> {
    support::python_stdout::<_, std::ffi::OsString>([
        "-c".into(),
        "import sys\nfrom pydicom import dcmread\nfrom pydicom.encaps import generate_frames\n\
             ds = dcmread(sys.argv[1]); n = int(sys.argv[2]); frames = int(ds.get('NumberOfFrames', 1))\n\
             if ds.file_meta.TransferSyntaxUID.is_compressed:\n    f = list(generate_frames(ds.PixelData, number_of_frames=frames))[n - 1]\n\
             else:\n    size = len(ds.PixelData) // frames; f = ds.PixelData[(n - 1) * size:n * size]\n\
             sys.stdout.buffer.write(f)".into(),
        support::pydicom_test_files().join(file).into(),
        n.to_string().into(),
    ])
}

async fn multi_frame_objects_and_frame_lists(backend: Backend) {
    let node = Node::start(backend);
    // native multi-frame (RT Dose, 15 frames, implicit VR little endian)
    let (study, series, sop) = store_as_is(&node, "rtdose.dcm", "-xi");
    let base = format!("/studies/{study}/series/{series}/instances/{sop}");
    let r = get(&node, &format!("{base}/frames/3,1,15"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].body, pydicom_frame("rtdose.dcm", 3));
    assert_eq!(parts[1].body, pydicom_frame("rtdose.dcm", 1));
    assert_eq!(parts[2].body, pydicom_frame("rtdose.dcm", 15));
    assert_eq!(get(&node, &format!("{base}/frames/16"), &[]).status, 404);
    // encapsulated multi-frame (RLE, 2 frames): as stored, and decoded
    let (study, series, sop) = store_as_is(&node, "SC_rgb_rle_2frame.dcm", "-xr");
    let base = format!("/studies/{study}/series/{series}/instances/{sop}");
    let r = get(
        &node,
        &format!("{base}/frames/2,1"),
        &[("Accept", "multipart/related; type=\"image/dicom-rle\"")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts[0].body, pydicom_frame("SC_rgb_rle_2frame.dcm", 2));
    assert_eq!(parts[1].body, pydicom_frame("SC_rgb_rle_2frame.dcm", 1));
    let r = get(
        &node,
        &format!("{base}/frames/1,2"),
        &[(
            "Accept",
            "multipart/related; type=\"application/octet-stream\"",
        )],
    );
    let parts = multipart::parse(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].body.len(), 100 * 100 * 3);
    assert_ne!(parts[0].body, parts[1].body);
}
both_backends!(multi_frame_objects_and_frame_lists);
