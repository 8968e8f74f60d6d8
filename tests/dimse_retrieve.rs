//! C-MOVE and C-GET SCP, the storage SCU and the AE registry, against DCMTK's movescu, getscu
//! and storescp and against pynetdicom, on both index backends.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use serde_json::Value;
use support::{both_backends, Backend, Node, NodeOptions, StoreScp};

fn open(path: &Path) -> DefaultDicomObject {
    OpenFileOptions::new()
        .open_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// The objects of `files` by SOP Instance UID.
fn by_uid(files: &[PathBuf]) -> BTreeMap<String, DefaultDicomObject> {
    files
        .iter()
        .map(|f| {
            let obj = open(f);
            (text(&obj, tags::SOP_INSTANCE_UID), obj)
        })
        .collect()
}

/// Asserts that `received` holds the same data set as `original`, attribute for attribute
/// (the File Meta group is the receiver's own and is not compared).
fn assert_same_dataset(original: &DefaultDicomObject, received: &DefaultDicomObject) {
    let uid = text(original, tags::SOP_INSTANCE_UID);
    let a: Vec<_> = original.iter().collect();
    let b: Vec<_> = received.iter().collect();
    assert_eq!(
        a.iter().map(|e| e.header().tag).collect::<Vec<_>>(),
        b.iter().map(|e| e.header().tag).collect::<Vec<_>>(),
        "{uid}: the same attributes"
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(
            x.value() == y.value(),
            "{uid}: attribute {} differs",
            x.header().tag
        );
    }
}

/// A node whose registry knows `aes` (TOML `[[ae]]` tables), and the config file's directory.
fn node_with_aes(backend: Backend, aes: &str, extra: &[&str]) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pacs.toml");
    std::fs::write(&config, aes).unwrap();
    let mut opts = NodeOptions::new(backend)
        .data_dir(dir.path().join("data"))
        .arg("--config")
        .arg(config.to_string_lossy().to_string());
    for a in extra {
        opts = opts.arg(*a);
    }
    (Node::start_with(opts), dir)
}

/// `[[ae]]` tables for the requestors that retrieve in these tests (DCMTK's default calling AE
/// titles and pynetdicom's): an unknown AE may not move or get.
fn retrievers() -> String {
    ["MOVESCU", "GETSCU", "PYMOVE", "PYGET"]
        .iter()
        .map(|title| support::ae_entry(title, &["echo", "find", "move", "get"]))
        .collect()
}

fn dest_ae(title: &str, port: u16) -> String {
    format!(
        "[[ae]]\ntitle = \"{title}\"\nhost = \"127.0.0.1\"\nport = {port}\nallow = [\"echo\"]\nmove_destination = true\n"
    )
}

/// movescu or getscu with `-v`; returns its whole output.
fn qr_tool(tool: &str, node: &Node, args: &[&str], keys: &[&str]) -> String {
    let mut cmd = support::dcmtk_command(tool);
    // movescu prints the final response's counts only in its debug output
    let verbosity = if tool == "movescu" { "-d" } else { "-v" };
    cmd.arg(verbosity).args(["-aec", node.aet()]).args(args);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.args(["127.0.0.1", &node.dimse_port().to_string()]);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
}

/// The value of a count line in movescu's (debug) or getscu's (verbose) dump of the final
/// response: "Completed Suboperations : 10" or "Number of Completed Suboperations : 10".
fn final_count(log: &str, what: &str) -> Option<u32> {
    let final_part = log.rsplit("Final").next()?;
    final_part
        .lines()
        .find(|l| l.contains(&format!("{what} Suboperations")))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the final response of movescu (debug dump) or getscu/findscu says Success.
fn final_success(log: &str) -> bool {
    let last = log.rsplit("Final").next().unwrap_or_default();
    last.contains("(Success)") || last.contains("DIMSE Status                  : 0x0000")
}

fn store(node: &Node, files: &[PathBuf], args: &[&str]) {
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(node, "MODALITY", args, &refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn dcmtk_move_and_get_return_what_was_stored(backend: Backend) {
    let scp = StoreScp::start("DEST", &[]);
    let aes = dest_ae("DEST", scp.port) + &retrievers();
    let (node, _conf) = node_with_aes(backend, &aes, &[]);
    let (_synth_dir, synth) = support::synth_ct(10, 7);
    let synth_files = support::synth_paths(&synth);
    let samples = support::pydicom_test_files();
    // JPEG 2000: storescp accepts only uncompressed syntaxes, so the node must decode it
    let others = [samples.join("CT_small.dcm"), samples.join("JPEG2000.dcm")];
    store(&node, &synth_files, &[]);
    store(&node, &others[..1], &[]);
    // propose JPEG 2000 so that it is stored as it is
    store(&node, &others[1..], &["-xw"]);
    let originals = by_uid(&synth_files);
    let study = &synth.instances[0].study_instance_uid;
    let series = &synth.instances[0].series_instance_uid;

    // Study Root, STUDY level
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aem", "DEST"],
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={study}"),
        ],
    );
    assert!(final_success(&log), "{log}");
    assert_eq!(final_count(&log, "Completed"), Some(10), "{log}");
    assert_eq!(final_count(&log, "Failed"), Some(0), "{log}");
    let received = by_uid(&scp.files());
    assert_eq!(
        received.keys().collect::<BTreeSet<_>>(),
        originals.keys().collect::<BTreeSet<_>>()
    );
    for (uid, original) in &originals {
        assert_same_dataset(original, &received[uid]);
    }

    // Patient Root, PATIENT level: CT_small's patient has one instance
    let log = qr_tool(
        "movescu",
        &node,
        &["-P", "-aem", "DEST"],
        &["QueryRetrieveLevel=PATIENT", "PatientID=1CT1"],
    );
    assert_eq!(final_count(&log, "Completed"), Some(1), "{log}");
    // SERIES and IMAGE levels
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aem", "DEST"],
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("SeriesInstanceUID={series}"),
        ],
    );
    assert_eq!(final_count(&log, "Completed"), Some(10), "{log}");
    let two = format!(
        "SOPInstanceUID={}\\{}",
        synth.instances[2].sop_instance_uid, synth.instances[5].sop_instance_uid
    );
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aem", "DEST"],
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={study}"),
            &format!("SeriesInstanceUID={series}"),
            &two,
        ],
    );
    assert_eq!(final_count(&log, "Completed"), Some(2), "{log}");

    // the JPEG 2000 object arrives decoded, in an uncompressed syntax, with its attributes
    let j2k = open(&samples.join("JPEG2000.dcm"));
    let j2k_uid = text(&j2k, tags::SOP_INSTANCE_UID);
    let log = qr_tool(
        "movescu",
        &node,
        &["-P", "-aem", "DEST"],
        &["QueryRetrieveLevel=PATIENT", "PatientID=8NM1"],
    );
    assert!(final_success(&log), "{log}");
    let received = by_uid(&scp.files());
    let moved = &received[&j2k_uid];
    let ts = moved
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    assert!(
        ts == uids::EXPLICIT_VR_LITTLE_ENDIAN || ts == uids::IMPLICIT_VR_LITTLE_ENDIAN,
        "received in {ts}"
    );
    let pixels = moved.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let rows: usize = text(&j2k, tags::ROWS).parse().unwrap();
    let cols: usize = text(&j2k, tags::COLUMNS).parse().unwrap();
    let bits: usize = text(&j2k, tags::BITS_ALLOCATED).parse().unwrap();
    assert_eq!(pixels.len(), rows * cols * bits / 8);
    for tag in [
        tags::PATIENT_NAME,
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
    ] {
        assert_eq!(text(moved, tag), text(&j2k, tag));
    }

    // C-GET: the same study back on the requesting association
    let get_dir = tempfile::tempdir().unwrap();
    let log = qr_tool(
        "getscu",
        &node,
        &["-S", "-od", &get_dir.path().to_string_lossy()],
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={study}"),
        ],
    );
    assert_eq!(final_count(&log, "Completed"), Some(10), "{log}");
    let got: Vec<PathBuf> = std::fs::read_dir(get_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let got = by_uid(&got);
    assert_eq!(got.len(), 10);
    for (uid, original) in &originals {
        assert_same_dataset(original, &got[uid]);
    }
}
both_backends!(dcmtk_move_and_get_return_what_was_stored);

/// Runs tests/peers/qr_retrieve.py and parses its JSON.
fn pynetdicom(args: &[String]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/qr_retrieve.py");
    let mut all = vec![script.to_string()];
    all.extend(args.iter().cloned());
    serde_json::from_slice(&support::python_stdout(all)).unwrap()
}

/// A JSON array of UID strings as a set.
fn uids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn last(v: &Value) -> &Value {
    v["responses"].as_array().unwrap().last().unwrap()
}

async fn pynetdicom_counts_failures_and_cancel(backend: Backend) {
    let dest_port = support::free_port();
    let aes = dest_ae("PYDEST", dest_port) + &retrievers();
    let (node, _conf) = node_with_aes(backend, &aes, &[]);
    let (_dir, synth) = support::synth_ct(12, 9);
    store(&node, &support::synth_paths(&synth), &[]);
    let study = synth.instances[0].study_instance_uid.clone();
    let port = node.dimse_port().to_string();
    let all: BTreeSet<String> = synth
        .instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();

    // a clean move: a Pending response per sub-operation with falling Remaining counts
    let v = pynetdicom(&[
        "move".into(),
        port.clone(),
        dest_port.to_string(),
        study.clone(),
    ]);
    let responses = v["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 12, "{v}");
    for (i, r) in responses[..11].iter().enumerate() {
        assert_eq!(r["status"], 0xFF00);
        assert_eq!(r["NumberOfRemainingSuboperations"], 11 - i as u64);
    }
    assert_eq!(last(&v)["status"], 0);
    assert_eq!(last(&v)["NumberOfCompletedSuboperations"], 12);
    assert_eq!(uids(&v["received"]), all);

    // the destination refuses every third instance: B000 with exactly those in the list
    let v = pynetdicom(&[
        "move".into(),
        port.clone(),
        dest_port.to_string(),
        study.clone(),
        "--fail-every".into(),
        "3".into(),
    ]);
    let fin = last(&v);
    assert_eq!(fin["status"], 0xB000, "{v}");
    assert_eq!(fin["NumberOfCompletedSuboperations"], 8);
    assert_eq!(fin["NumberOfFailedSuboperations"], 4);
    let refused: BTreeSet<String> = v["received"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % 3 == 0)
        .map(|(_, s)| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(uids(&fin["failed_uids"]), refused);

    // C-CANCEL stops a move: final status Cancel, the rest counted as remaining, not sent
    let v = pynetdicom(&[
        "move".into(),
        port.clone(),
        dest_port.to_string(),
        study.clone(),
        "--cancel-after".into(),
        "2".into(),
        "--delay".into(),
        "0.2".into(),
    ]);
    let fin = last(&v);
    assert_eq!(fin["status"], 0xFE00, "{v}");
    let completed = fin["NumberOfCompletedSuboperations"].as_u64().unwrap();
    let remaining = fin["NumberOfRemainingSuboperations"].as_u64().unwrap();
    assert!(completed < 12 && remaining > 0, "{v}");
    assert_eq!(completed + remaining, 12, "{v}");
    assert_eq!(v["received"].as_array().unwrap().len() as u64, completed);

    // C-GET, whole and cancelled
    let v = pynetdicom(&["get".into(), port.clone(), study.clone()]);
    assert_eq!(last(&v)["status"], 0, "{v}");
    assert_eq!(last(&v)["NumberOfCompletedSuboperations"], 12);
    assert_eq!(v["received"].as_array().unwrap().len(), 12);
    let v = pynetdicom(&[
        "get".into(),
        port.clone(),
        study.clone(),
        "--cancel-after".into(),
        "2".into(),
        "--delay".into(),
        "0.2".into(),
    ]);
    let fin = last(&v);
    assert_eq!(fin["status"], 0xFE00, "{v}");
    assert!(
        fin["NumberOfRemainingSuboperations"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["received"].as_array().unwrap().len() < 12);
    // the node is fine afterwards
    let v = pynetdicom(&["get".into(), port, study]);
    assert_eq!(last(&v)["status"], 0, "{v}");
}
both_backends!(pynetdicom_counts_failures_and_cancel);

/// An admin API call from loopback; returns (status, JSON body).
fn admin(node: &Node, method: &str, path: &str, body: &str) -> (u16, Value) {
    let rsp = support::http_request(
        node.http_port(),
        method,
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    let json = serde_json::from_slice(&rsp.body).unwrap_or(Value::Null);
    (rsp.status, json)
}

fn findscu_as(node: &Node, calling: &str) -> String {
    qr_tool(
        "findscu",
        node,
        &["-S", "-aet", calling],
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
    )
}

async fn ae_administration_end_to_end(backend: Backend) {
    let scp = StoreScp::start("ARCHIVE2", &[]);
    let (node, _conf) = node_with_aes(
        backend,
        &dest_ae("ARCHIVE2", scp.port),
        &["--require-known-ae", "true"],
    );
    let (_dir, synth) = support::synth_ct(3, 11);
    // MODALITY is not registered: its association is refused
    let refs: Vec<PathBuf> = support::synth_paths(&synth);
    let paths: Vec<&Path> = refs.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "MODALITY", &[], &paths);
    assert!(!out.status.success());
    // the seeded AE is listed
    let (status, list) = admin(&node, "GET", "/api/aes", "");
    assert_eq!(status, 200);
    assert_eq!(list[0]["title"], "ARCHIVE2");
    assert_eq!(list[0]["move_destination"], true);

    // an unknown workstation is refused at association time
    let log = findscu_as(&node, "NEWWS");
    assert!(log.contains("Calling AE Title Not Recognized"), "{log}");
    // add it: it may query at once, no restart
    let (status, body) = admin(
        &node,
        "POST",
        "/api/aes",
        r#"{"title": "NEWWS", "host": "127.0.0.1", "port": 4006, "allow": ["echo", "find"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = admin(
        &node,
        "POST",
        "/api/aes",
        r#"{"title": "NEWWS", "allow": []}"#,
    );
    assert_eq!(status, 409);
    let log = findscu_as(&node, "NEWWS");
    assert!(log.contains("Final Find Response (Success)"), "{log}");
    // a forbidden operation gets the refusal status, on an accepted association
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aet", "NEWWS", "-aem", "ARCHIVE2"],
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3"],
    );
    assert!(log.contains("0x0124") || log.contains("0x124"), "{log}");
    // change it: store allowed, find no longer
    let (status, body) = admin(
        &node,
        "PUT",
        "/api/aes/NEWWS",
        r#"{"title": "NEWWS", "host": "127.0.0.1", "port": 4006, "allow": ["store", "move"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (_, got) = admin(&node, "GET", "/api/aes/NEWWS", "");
    assert_eq!(got["allow"], serde_json::json!(["store", "move"]));
    let out = support::storescu(&node, "NEWWS", &[], &paths);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = findscu_as(&node, "NEWWS");
    assert!(log.contains("0x0124") || log.contains("0x124"), "{log}");
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aet", "NEWWS", "-aem", "ARCHIVE2"],
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={}", synth.instances[0].study_instance_uid),
        ],
    );
    assert_eq!(final_count(&log, "Completed"), Some(3), "{log}");
    // negative cases on an accepted association
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aet", "NEWWS", "-aem", "NOWHERE"],
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3"],
    );
    assert!(log.contains("MoveDestinationUnknown"), "{log}");
    // NEWWS is not a move destination either, though it is known
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aet", "NEWWS", "-aem", "NEWWS"],
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3"],
    );
    assert!(log.contains("MoveDestinationUnknown"), "{log}");
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aet", "NEWWS", "-aem", "ARCHIVE2"],
        &["StudyInstanceUID=1.2.3"],
    );
    assert!(log.contains("DataSetDoesNotMatchSOPClass"), "{log}");
    // remove it: refused at once
    let (status, _) = admin(&node, "DELETE", "/api/aes/NEWWS", "");
    assert_eq!(status, 204);
    let (status, _) = admin(&node, "DELETE", "/api/aes/NEWWS", "");
    assert_eq!(status, 404);
    let log = findscu_as(&node, "NEWWS");
    assert!(log.contains("Calling AE Title Not Recognized"), "{log}");
    assert!(node.log().contains("association rejected"));

    // validation
    for bad in [
        r#"{"title": "A\\B"}"#,
        r#"{"title": "SEVENTEEN_CHARS_X"}"#,
        r#"{"title": "   "}"#,
        r#"{"title": "X", "allow": ["delete"]}"#,
        r#"{"title": "X", "move_destination": true}"#,
        r#"{"title": "X", "colour": "red"}"#,
    ] {
        let (status, body) = admin(&node, "POST", "/api/aes", bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // C-ECHO from the node, with the round-trip time; a dead AE is a 502
    let (status, body) = admin(&node, "POST", "/api/aes/ARCHIVE2/echo", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["round_trip_ms"].as_f64().unwrap() > 0.0);
    let dead = support::free_port();
    let (status, _) = admin(
        &node,
        "POST",
        "/api/aes",
        &format!(r#"{{"title": "DEAD", "host": "127.0.0.1", "port": {dead}}}"#),
    );
    assert_eq!(status, 201);
    let (status, body) = admin(&node, "POST", "/api/aes/DEAD/echo", "");
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["success"], false);

    // "send this series to AE X": one result per instance
    let series = &synth.instances[0].series_instance_uid;
    let (status, body) = admin(
        &node,
        "POST",
        "/api/aes/ARCHIVE2/send",
        &format!(r#"{{"series": "{series}", "associations": 2}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["completed"], 3);
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert!(body["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["result"] == "completed"));
    let (status, body) = admin(
        &node,
        "POST",
        "/api/aes/DEAD/send",
        &format!(r#"{{"series": "{series}", "retries": 1}}"#),
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["failed"], 3);
    assert!(
        body["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("DEAD"),
        "{body}"
    );

    // the command line does the same against the running node
    let pacs = |args: &[&str]| {
        let out = support::run_with_timeout(
            std::process::Command::new(env!("CARGO_BIN_EXE_pacs"))
                .arg("ae")
                .arg("--node")
                .arg(format!("http://127.0.0.1:{}", node.http_port()))
                .args(args)
                .env_remove("PACS_ADMIN_TOKEN"),
            support::TOOL_TIMEOUT,
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = pacs(&[
        "add",
        "CLIWS",
        "--host",
        "127.0.0.1",
        "--port",
        "104",
        "--allow",
        "echo,find",
    ]);
    assert!(ok, "{out}");
    let log = findscu_as(&node, "CLIWS");
    assert!(log.contains("Final Find Response (Success)"), "{log}");
    let (ok, out) = pacs(&["list"]);
    assert!(
        ok && out.contains("CLIWS") && out.contains("ARCHIVE2"),
        "{out}"
    );
    let (ok, out) = pacs(&["echo", "ARCHIVE2"]);
    assert!(ok && out.contains("success"), "{out}");
    let (ok, out) = pacs(&["echo", "DEAD"]);
    assert!(!ok, "{out}");
    let (ok, out) = pacs(&["remove", "CLIWS"]);
    assert!(ok, "{out}");
    let log = findscu_as(&node, "CLIWS");
    assert!(log.contains("Calling AE Title Not Recognized"), "{log}");

    // the registry is in the index: a restarted node has the API's changes
    let (status, _) = admin(
        &node,
        "POST",
        "/api/aes",
        r#"{"title": "KEPT", "allow": ["find"]}"#,
    );
    assert_eq!(status, 201);
    let options = node.restart_options();
    node.terminate();
    drop(node);
    let node = Node::start_with(options);
    let (_, list) = admin(&node, "GET", "/api/aes", "");
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.contains(&"KEPT") && titles.contains(&"ARCHIVE2"),
        "{titles:?}"
    );
}
both_backends!(ae_administration_end_to_end);

/// Secure by default: an AE title the registry does not know (without `--require-known-ae`) may
/// verify and send, never query or retrieve; its C-FIND, C-MOVE and C-GET get 0124 (Refused: Not
/// Authorized) on an accepted association.
#[test]
fn an_unknown_ae_may_only_echo_and_store() {
    let scp = StoreScp::start("DEST", &[]);
    let (node, _conf) = node_with_aes(Backend::Sqlite, &dest_ae("DEST", scp.port), &[]);
    let (_dir, synth) = support::synth_ct(2, 13);
    let refs: Vec<PathBuf> = support::synth_paths(&synth);
    let paths: Vec<&Path> = refs.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "STRANGER", &[], &paths);
    assert!(
        out.status.success(),
        "C-STORE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = support::echoscu(&node, "STRANGER");
    assert!(
        out.status.success(),
        "C-ECHO: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let study = format!("StudyInstanceUID={}", synth.instances[0].study_instance_uid);
    let log = findscu_as(&node, "STRANGER");
    assert!(log.contains("0x0124") || log.contains("0x124"), "{log}");
    assert!(!log.contains("Find Response (Success)"), "{log}");
    let log = qr_tool(
        "movescu",
        &node,
        &["-S", "-aet", "STRANGER", "-aem", "DEST"],
        &["QueryRetrieveLevel=STUDY", &study],
    );
    assert!(log.contains("0x0124") || log.contains("0x124"), "{log}");
    let get_dir = tempfile::tempdir().unwrap();
    let log = qr_tool(
        "getscu",
        &node,
        &[
            "-S",
            "-aet",
            "STRANGER",
            "-od",
            &get_dir.path().to_string_lossy(),
        ],
        &["QueryRetrieveLevel=STUDY", &study],
    );
    assert!(log.contains("0x0124") || log.contains("0x124"), "{log}");
    assert!(scp.files().is_empty(), "nothing was moved");
    assert_eq!(std::fs::read_dir(get_dir.path()).unwrap().count(), 0);
    assert!(node.log().contains("C-FIND not permitted"));
}

/// A non-loopback address of this machine, to reach the node as a remote client would.
fn outside_address() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // no packet is sent: connecting a UDP socket only picks the route and source address
    socket
        .connect("192.0.2.1:9")
        .or_else(|_| socket.connect("10.255.255.255:9"))
        .expect("this machine has no non-loopback IPv4 route");
    let ip = socket.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no outside address: {ip}"
    );
    ip.to_string()
}

fn get_from(address: &str, port: u16, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((address, port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[test]
fn admin_api_needs_authentication_from_outside() {
    let outside = outside_address();
    // nothing configured but anonymous access insisted on: local callers administer, callers
    // from outside read DICOMweb but never the admin API
    let mut opts = NodeOptions::new(Backend::Sqlite).arg("--insecure-allow-anonymous");
    opts.bind = Some("0.0.0.0".into());
    let node = Node::start_with(opts);
    let port = node.http_port();
    assert_eq!(get_from("127.0.0.1", port, "/api/aes", None), 200);
    assert_eq!(get_from(&outside, port, "/api/aes", None), 401);
    assert_eq!(get_from(&outside, port, "/dicom-web/studies", None), 200);
    assert!(node.log().contains("refused: not authenticated"));
    drop(node);

    let mut opts = NodeOptions::new(Backend::Sqlite).env("PACS_ADMIN_TOKEN", "s3cret");
    opts.bind = Some("0.0.0.0".into());
    let node = Node::start_with(opts);
    let port = node.http_port();
    assert_eq!(get_from("127.0.0.1", port, "/api/aes", None), 401);
    assert_eq!(get_from(&outside, port, "/api/aes", Some("wrong")), 401);
    assert_eq!(get_from(&outside, port, "/api/aes", Some("s3cret")), 200);
    assert_eq!(get_from("127.0.0.1", port, "/api/aes", Some("s3cret")), 200);
    // an admin token configures authentication: anonymous DICOMweb is refused too
    assert_eq!(get_from(&outside, port, "/dicom-web/studies", None), 401);
    // the command line passes the token
    let out = support::run_with_timeout(
        std::process::Command::new(env!("CARGO_BIN_EXE_pacs"))
            .args(["ae", "--node", &format!("http://127.0.0.1:{port}"), "list"])
            .env("PACS_ADMIN_TOKEN", "s3cret"),
        support::TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
