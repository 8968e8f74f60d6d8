//! The audit trail (docs/audit.md) against the real node, on both index backends: DCMTK
//! storescu, findscu, getscu and echoscu and HTTP clients do what users do; the records of
//! `GET /api/audit` must name the right user or AE, address, patient, study, counts and
//! outcome; every message must validate against the DICOM audit message schema (PS3.15 A.5.1,
//! tests/schemas/dicom-audit-message.rnc) with xmllint; and an altered or deleted row must make
//! `pacs audit verify` fail, naming the record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use dicom_dictionary_std::tags;
use serde_json::Value;

use crate::auth::{basic, bearer, Site};
use crate::support::{self, ae_entry, both_backends, http_request, Backend, HttpResponse, Node};

const PASSWORD: &str = "correct horse battery";

fn get(node: &Node, path: &str, auth: &str) -> HttpResponse {
    http_request(
        node.http_port(),
        "GET",
        path,
        &[("Authorization", auth)],
        &[],
    )
}

fn json(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// The records `GET /api/audit?query` answers (as the auditor), asserting 200.
fn audit_records(node: &Node, auth: &str, query: &str) -> Vec<Value> {
    let r = get(node, &format!("/api/audit?{query}"), auth);
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)["records"].as_array().unwrap().clone()
}

/// Waits until a record matching `pred` is in the trail (the writer flushes every 500 ms).
fn wait_for(node: &Node, auth: &str, query: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = audit_records(node, auth, query);
        if let Some(r) = records.iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching record for {query}; have:\n{}",
            serde_json::to_string_pretty(&records).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// The RELAX NG (XML syntax) of the committed schema, made by rnc2rng. The standard's text
/// puts `##` documentation comments after the last alternative of a choice, which RELAX NG
/// Compact parsers refuse; they are made plain comments (`#`) first, nothing else changes.
/// Missing xmllint or rnc2rng fails the test: it never skips.
fn schema_rng(dir: &Path) -> PathBuf {
    let rnc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/dicom-audit-message.rnc");
    let source = std::fs::read_to_string(&rnc).expect("the committed schema");
    let plain = dir.join("dicom-audit-message.rnc");
    std::fs::write(&plain, source.replace("##", "#")).unwrap();
    let rng = dir.join("dicom-audit-message.rng");
    let out = std::process::Command::new("rnc2rng")
        .arg(&plain)
        .arg(&rng)
        .output()
        .expect("rnc2rng must be installed (pip install -r tests/requirements.txt)");
    assert!(
        out.status.success(),
        "rnc2rng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rng
}

/// Validates each message with `xmllint --noout --relaxng`.
fn validate_all(messages: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let rng = schema_rng(dir.path());
    let mut files = Vec::new();
    for (n, (event, xml)) in messages.iter().enumerate() {
        let path = dir.path().join(format!("{n:04}-{event}.xml"));
        std::fs::write(&path, xml).unwrap();
        files.push(path);
    }
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--relaxng")
        .arg(&rng)
        .args(&files)
        .output()
        .expect("xmllint must be installed (libxml2-utils)");
    assert!(
        out.status.success(),
        "audit messages do not validate against PS3.15 A.5.1:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn login(node: &Node, user: &str, password: &str) -> HttpResponse {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    http_request(
        node.http_port(),
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

fn sop_class_count(record: &Value, class: &str) -> Option<u64> {
    let xml = record["xml"].as_str()?;
    let at = xml.find(&format!("<SOPClass UID=\"{class}\" NumberOfInstances=\""))?;
    let rest = &xml[at..];
    let start = rest.find("NumberOfInstances=\"")? + "NumberOfInstances=\"".len();
    rest[start..].split('"').next()?.parse().ok()
}

/// Every event the node emits, with the participants, patient, study, counts and outcomes
/// the trail must record; the schema; the filters and paging of `/api/audit`; who may read it.
async fn trail_of_a_working_day(backend: Backend) {
    let site = Site::new(backend);
    site.add_user("ada", "admin", PASSWORD);
    site.add_user("audrey", "auditor", PASSWORD);
    site.add_user("vera", "viewer", PASSWORD);
    let scp = support::StoreScp::start("ARCHIVE2", &[]);
    let config = format!(
        "require_known_ae = true\n{}{}[[ae]]\ntitle = \"ARCHIVE2\"\nhost = \"127.0.0.1\"\nport = {}\nallow = [\"echo\"]\nmove_destination = true\n",
        ae_entry("MODALITY", &["echo", "store"]),
        ae_entry("VIEWER", &["echo", "find", "get", "move"]),
        scp.port
    );
    let node = Node::start_with(site.options().config(&config));
    let auditor = basic("audrey", PASSWORD);
    let viewer = basic("vera", PASSWORD);

    // C-STORE: 4 CT slices on one association
    let (_dir, summary) = support::synth_ct(4, 7);
    let files = support::synth_paths(&summary);
    let first = dicom_object::open_file(&files[0]).unwrap();
    let patient_id = text(&first, tags::PATIENT_ID);
    let patient_name = text(&first, tags::PATIENT_NAME);
    let study = text(&first, tags::STUDY_INSTANCE_UID);
    let ct = text(&first, tags::SOP_CLASS_UID);
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "MODALITY", &[], &paths);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // one message per association and study per batch: a slow association may span two
    let deadline = Instant::now() + Duration::from_secs(15);
    let transferred = loop {
        let records = audit_records(&node, &auditor, "event=instances-transferred&ae=MODALITY");
        let total: u64 = records.iter().filter_map(|r| sop_class_count(r, &ct)).sum();
        if total == 4 {
            break records;
        }
        assert!(total < 4 && Instant::now() < deadline, "{records:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in &transferred {
        assert_eq!(r["outcome"], 0);
        assert_eq!(r["address"], "127.0.0.1");
        assert_eq!(r["patient_id"], patient_id.as_str());
        assert_eq!(r["patient_name"], patient_name.as_str());
        assert_eq!(r["study_uids"], serde_json::json!([study]));
    }
    let stored = transferred.last().unwrap().clone();
    let xml = stored["xml"].as_str().unwrap();
    assert!(xml.contains("csd-code=\"110104\""), "{xml}");
    assert!(
        xml.contains("UserID=\"MODALITY\" UserIsRequestor=\"true\""),
        "{xml}"
    );
    assert!(xml.contains("csd-code=\"110153\""), "source role: {xml}");
    // the registered AE's access: the operations its `allow` list names
    assert!(
        xml.contains("<RoleIDCode csd-code=\"store\" codeSystemName=\"PACS-ACCESS\""),
        "{xml}"
    );

    // a refused association: an AE the registry does not know
    let out = support::echoscu(&node, "STRANGER");
    assert!(!out.status.success());
    let alert = wait_for(&node, &auditor, "event=security-alert&ae=STRANGER", |_| {
        true
    });
    assert_eq!(alert["outcome"], 4);
    assert_eq!(alert["address"], "127.0.0.1");
    assert!(alert["xml"]
        .as_str()
        .unwrap()
        .contains("Node Authentication"));

    // C-FIND with the query itself in the message
    let mut cmd = support::dcmtk_command("findscu");
    cmd.args(["-S", "-aet", "VIEWER", "-aec", "PACS"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("PatientID={patient_id}")])
        .args(["-k", "StudyInstanceUID"])
        .args(["127.0.0.1", &node.dimse_port().to_string()]);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let find = wait_for(&node, &auditor, "event=query&ae=VIEWER", |_| true);
    assert_eq!(find["patient_id"], patient_id.as_str());
    // the same C-FIND as a user (User Identity, PS3.7 D.3.3.7): the user and what the
    // association granted it, as RoleIDCodes
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/dimse_as_user.py");
    let port = node.dimse_port().to_string();
    let report = support::python_stdout([
        script,
        &port,
        "find",
        "--calling",
        "VIEWER",
        "--user",
        "vera",
        "--passcode",
        PASSWORD,
        "--study",
        &study,
    ]);
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["established"], true, "{report}");
    let as_user = wait_for(&node, &auditor, "event=query&user=vera", |_| true);
    let user_xml = as_user["xml"].as_str().unwrap();
    assert!(
        user_xml.contains("<RoleIDCode csd-code=\"find\" codeSystemName=\"PACS-ACCESS\""),
        "{user_xml}"
    );
    let xml = find["xml"].as_str().unwrap();
    let query_b64 = xml
        .split("<ParticipantObjectQuery>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("a ParticipantObjectQuery");
    let query = base64::engine::general_purpose::STANDARD
        .decode(query_b64)
        .unwrap();
    // the identifier data set: Patient ID (0010,0020) with its value
    assert!(
        query
            .windows(patient_id.len())
            .any(|w| w == patient_id.as_bytes()),
        "the C-FIND identifier is not in the message"
    );
    assert!(xml.contains("1.2.840.10008.5.1.4.1.2.2.1"), "{xml}");

    // C-GET: Begin Transferring names the instances selected
    let get_dir = tempfile::tempdir().unwrap();
    let mut cmd = support::dcmtk_command("getscu");
    cmd.args(["-S", "-aet", "VIEWER", "-aec", "PACS", "-od"])
        .arg(get_dir.path())
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .args(["127.0.0.1", &node.dimse_port().to_string()]);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let begin = wait_for(&node, &auditor, "event=begin-transferring", |_| true);
    assert_eq!(begin["ae"], "VIEWER");
    assert_eq!(begin["study_uids"], serde_json::json!([study]));
    assert_eq!(sop_class_count(&begin, &ct), Some(4), "{begin}");
    // ...and, once the sub-operations are over, Instances Transferred what was stored
    let got = wait_for(
        &node,
        &auditor,
        "event=instances-transferred&ae=VIEWER",
        |_| true,
    );
    assert_eq!(got["outcome"], 0);
    assert_eq!(got["patient_id"], patient_id.as_str());
    assert_eq!(sop_class_count(&got, &ct), Some(4), "{got}");
    assert!(got["xml"]
        .as_str()
        .unwrap()
        .contains("UserID=\"VIEWER\" UserIsRequestor=\"true\""));

    // C-MOVE to a registered destination: the destination is named
    let mut cmd = support::dcmtk_command("movescu");
    cmd.args(["-S", "-aet", "VIEWER", "-aec", "PACS", "-aem", "ARCHIVE2"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .args(["127.0.0.1", &node.dimse_port().to_string()]);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = wait_for(
        &node,
        &auditor,
        "event=instances-transferred&ae=VIEWER",
        |r| r["xml"].as_str().unwrap().contains("UserID=\"ARCHIVE2\""),
    );
    assert_eq!(sop_class_count(&moved, &ct), Some(4), "{moved}");
    assert_eq!(scp.files().len(), 4);

    // logins: success and failure
    assert_eq!(login(&node, "vera", PASSWORD).status, 200);
    assert_eq!(login(&node, "vera", "wrong").status, 401);
    let ok = wait_for(
        &node,
        &auditor,
        "event=user-authentication&user=user:vera&outcome=0",
        |_| true,
    );
    assert_eq!(ok["address"], "127.0.0.1");
    wait_for(
        &node,
        &auditor,
        "event=user-authentication&user=user:vera&outcome=4",
        |_| true,
    );
    wait_for(
        &node,
        &auditor,
        "event=security-alert&user=user:vera",
        |r| r["xml"].as_str().unwrap().contains("bad credentials"),
    );
    // logout (its token's user): User Authentication, Logout
    let token = json(&login(&node, "vera", PASSWORD))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http_request(
        node.http_port(),
        "POST",
        "/api/logout",
        &[("Authorization", &bearer(&token))],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let out = wait_for(
        &node,
        &auditor,
        "event=user-authentication&user=user:vera&outcome=0",
        |r| r["xml"].as_str().unwrap().contains("csd-code=\"110123\""),
    );
    assert_eq!(out["address"], "127.0.0.1");
    // a refused bearer token: bad credentials at the HTTP layer
    let r = get(&node, "/dicom-web/studies", &bearer("not-a-token"));
    assert_eq!(r.status, 401);
    wait_for(
        &node,
        &auditor,
        "event=security-alert&user=anonymous",
        |r| r["xml"].as_str().unwrap().contains("HTTP 401"),
    );

    // QIDO-RS with its query string, WADO-RS metadata (accessed) and instances (transferred)
    let qido = format!("/dicom-web/studies?PatientID={patient_id}");
    assert_eq!(get(&node, &qido, &viewer).status, 200);
    let q = wait_for(&node, &auditor, "event=query&user=user:vera", |_| true);
    let xml = q["xml"].as_str().unwrap();
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("studies?PatientID={patient_id}"));
    assert!(xml.contains(&expected), "{xml}");
    assert_eq!(q["patient_id"], patient_id.as_str());
    // the viewer's access, as RoleIDCode
    assert!(
        xml.contains("<RoleIDCode csd-code=\"read\" codeSystemName=\"PACS-ACCESS\""),
        "{xml}"
    );
    let meta = format!("/dicom-web/studies/{study}/metadata");
    assert_eq!(get(&node, &meta, &viewer).status, 200);
    let accessed = wait_for(
        &node,
        &auditor,
        "event=instances-accessed&user=user:vera",
        |_| true,
    );
    assert_eq!(accessed["patient_id"], patient_id.as_str());
    assert_eq!(accessed["patient_name"], patient_name.as_str());
    assert_eq!(accessed["study_uids"], serde_json::json!([study]));
    assert_eq!(sop_class_count(&accessed, &ct), Some(4), "{accessed}");
    // frames of one instance, read twice: one instance accessed, however often
    let one = &summary.instances[0];
    let frames = format!(
        "/dicom-web/studies/{study}/series/{}/instances/{}/frames/1",
        one.series_instance_uid, one.sop_instance_uid
    );
    for _ in 0..2 {
        let r = http_request(
            node.http_port(),
            "GET",
            &frames,
            &[
                ("Authorization", viewer.as_str()),
                (
                    "Accept",
                    "multipart/related; type=\"application/octet-stream\"",
                ),
            ],
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let before = accessed["seq"].as_i64().unwrap();
    let framed = wait_for(
        &node,
        &auditor,
        "event=instances-accessed&user=user:vera",
        |r| r["seq"].as_i64().unwrap() > before,
    );
    assert_eq!(sop_class_count(&framed, &ct), Some(1), "{framed}");
    let r = http_request(
        node.http_port(),
        "GET",
        &format!("/dicom-web/studies/{study}"),
        &[
            ("Authorization", viewer.as_str()),
            ("Accept", "multipart/related; type=\"application/dicom\""),
        ],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = wait_for(
        &node,
        &auditor,
        "event=instances-transferred&user=user:vera",
        |_| true,
    );
    assert_eq!(sop_class_count(&sent, &ct), Some(4), "{sent}");

    // the auditor reads the trail, never images; a viewer never reads the trail
    assert_eq!(get(&node, &qido, &auditor).status, 403);
    wait_for(
        &node,
        &auditor,
        "event=security-alert&user=user:audrey",
        |r| r["xml"].as_str().unwrap().contains("HTTP 403"),
    );
    assert_eq!(get(&node, "/api/audit", &viewer).status, 403);
    wait_for(
        &node,
        &auditor,
        "event=security-alert&user=user:vera",
        |r| r["xml"].as_str().unwrap().contains("/api/audit"),
    );

    // a configuration change, by the administrator
    let ae = serde_json::json!({ "title": "NEWAE", "host": "192.0.2.5", "port": 104,
        "allow": ["echo"] })
    .to_string();
    let r = http_request(
        node.http_port(),
        "POST",
        "/api/aes",
        &[
            ("Authorization", basic("ada", PASSWORD).as_str()),
            ("Content-Type", "application/json"),
        ],
        ae.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let change = wait_for(&node, &auditor, "event=security-alert&user=user:ada", |r| {
        r["xml"].as_str().unwrap().contains("NEWAE")
    });
    assert_eq!(change["outcome"], 0);
    assert!(change["xml"]
        .as_str()
        .unwrap()
        .contains("Network Configuration"));

    // reading the trail is itself a Query
    wait_for(&node, &auditor, "event=query&user=user:audrey", |r| {
        r["xml"].as_str().unwrap().contains("/api/audit")
    });

    // filters: each narrows to what it names
    for (query, check) in [
        ("patient=".to_string() + &patient_id, "patient_id"),
        ("study=".to_string() + &study, "study_uids"),
        ("ae=VIEWER".to_string(), "ae"),
        ("user=user:vera".to_string(), "user"),
        ("outcome=4".to_string(), "outcome"),
        ("event=application-activity".to_string(), "event"),
    ] {
        let records = audit_records(&node, &auditor, &format!("{query}&limit=1000"));
        assert!(!records.is_empty(), "{query}");
        for r in &records {
            let ok = match check {
                "patient_id" => r["patient_id"] == patient_id.as_str(),
                "study_uids" => r["study_uids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == study.as_str()),
                "ae" => r["ae"] == "VIEWER",
                "user" => r["user"] == "user:vera",
                "outcome" => r["outcome"] == 4,
                _ => r["event"] == "application-activity",
            };
            assert!(ok, "{query} answered {r}");
        }
    }
    // time range, RFC 3339 and epoch milliseconds alike
    let all = audit_records(&node, &auditor, "limit=1000");
    let stored_ms = stored["time_ms"].as_i64().unwrap();
    let after = audit_records(
        &node,
        &auditor,
        &format!("from={}&limit=1000", stored_ms + 1),
    );
    assert!(after.len() < all.len());
    assert!(after
        .iter()
        .all(|r| r["time_ms"].as_i64().unwrap() > stored_ms));
    let stored_time = stored["time"].as_str().unwrap();
    let until = audit_records(&node, &auditor, &format!("to={stored_time}&limit=1000"));
    assert!(!until.is_empty());
    assert!(until
        .iter()
        .all(|r| r["time_ms"].as_i64().unwrap() <= stored_ms));
    // paging: newest first, pages disjoint and in order
    let four = audit_records(&node, &auditor, "limit=4");
    let page1 = audit_records(&node, &auditor, "limit=2&offset=0");
    let page2 = audit_records(&node, &auditor, "limit=2&offset=2");
    assert_eq!(page1.len(), 2);
    assert!(four[0]["seq"].as_i64() >= page1[0]["seq"].as_i64());
    assert!(page1[1]["seq"].as_i64() > page2[0]["seq"].as_i64());
    assert_eq!(get(&node, "/api/audit?limit=1001", &auditor).status, 400);
    assert_eq!(
        get(&node, "/api/audit?event=nonsense", &auditor).status,
        400
    );
    assert_eq!(
        get(&node, "/api/audit?from=yesterday", &auditor).status,
        400
    );

    // the node stops: Application Activity stop is the last record
    node.terminate();
    let out = site.cli(&["audit", "search", "--limit", "1000", "--json"], "");
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["event"], "application-activity");
    assert!(records[0]["xml"]
        .as_str()
        .unwrap()
        .contains("Application Stop"));
    // before the start, the accounts `pacs user add` made on the command line
    let start = records
        .iter()
        .rposition(|r| r["event"] == "application-activity")
        .unwrap();
    assert!(records[start]["xml"]
        .as_str()
        .unwrap()
        .contains("Application Start"));
    assert_eq!(
        records.len() - 1 - start,
        3,
        "the three users added before the start"
    );
    assert!(records[start + 1..]
        .iter()
        .all(|r| r["event"] == "security-alert"));

    // every message the node wrote validates against the standard's schema, with an Export
    // (the de-identified export records it through the public API) among them
    let mut messages: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_string(),
                r["xml"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut kinds: Vec<&str> = messages.iter().map(|(e, _)| e.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "application-activity",
            "begin-transferring",
            "instances-accessed",
            "instances-transferred",
            "query",
            "security-alert",
            "user-authentication"
        ]
    );
    for xml in export_messages() {
        messages.push(("export".into(), xml));
    }
    validate_all(&messages);

    // the chain: intact, then tampered with
    let verified = site.cli(&["audit", "verify"], "");
    assert!(verified.contains("intact"), "{verified}");
    let target = records[records.len() / 2]["seq"].as_i64().unwrap();
    tamper(
        &site,
        backend,
        &format!("UPDATE audit_log SET user_id = 'mallory' WHERE seq = {target}"),
    )
    .await;
    let out = site.cli_output(&["audit", "verify"], "");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains(&format!("record {target}")), "{said}");
    assert!(said.contains("altered"), "{said}");
}

/// The Data Export messages the node records when an export ends (`pacs::audit::export_events`
/// on an export's report): to a ZIP, to an AE with a failed instance, to a STOW-RS URL.
fn export_messages() -> Vec<String> {
    use pacs::export::{ExportReport, StudyReport};
    let study = StudyReport {
        original_patient_id: "PID-1".into(),
        original_study_instance_uid: "1.2.3".into(),
        sop_classes: [("1.2.840.10008.5.1.4.1.1.2".to_string(), 3u64)].into(),
    };
    let report = |destination: &str, outcome: &str, failed: i64| ExportReport {
        id: 7,
        requested_by: "user:rada".into(),
        roles: vec!["deidentify".into()],
        address: "192.0.2.7".into(),
        destination: destination.into(),
        studies: vec![study.clone()],
        outcome: outcome.into(),
        error: if failed > 0 {
            "1 instance refused".into()
        } else {
            String::new()
        },
        instances_done: 3,
        instances_failed: failed,
    };
    [
        report("zip", "succeeded", 0),
        report("ae:RESEARCH", "failed", 1),
        report(
            "stow:https://research.example.org/dicom-web/studies",
            "succeeded",
            0,
        ),
    ]
    .iter()
    .flat_map(|r| pacs::audit::export_events("PACS", r))
    .map(|e| e.to_record("PACS").xml)
    .collect()
}

/// Runs a statement on the node's index behind its back.
async fn tamper(site: &Site, backend: Backend, sql: &str) {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(site.dir.path().join("index.sqlite")).unwrap();
            assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
        }
        Backend::Postgres => {
            let client = support::pg_try_connect(site.url.as_deref().unwrap())
                .await
                .unwrap();
            assert_eq!(client.execute(sql, &[]).await.unwrap(), 1, "{sql}");
        }
    }
}

/// A deleted record breaks the chain where it was; several writers keep one chain.
async fn a_deleted_record_is_found(backend: Backend) {
    let site = Site::new(backend);
    let url = site
        .url
        .clone()
        .unwrap_or_else(|| site.dir.path().join("index.sqlite").display().to_string());
    // two writers on one database, appending at once: one chain
    let a = pacs::index::open(&url).await.unwrap();
    let b = pacs::index::open(&url).await.unwrap();
    let record = |n: i64| pacs::index::audit::NewAuditRecord {
        time_ms: n,
        event: "query".into(),
        xml: format!("<AuditMessage n=\"{n}\"/>"),
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for (w, index) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let batch = vec![record(w as i64 * 100 + n), record(w as i64 * 100 + n + 50)];
                index.append_audit(batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = a.audit_verify().await.unwrap();
    assert_eq!(report.records, 80);
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    // what the syslog forwarder reads: records after a sequence number, and its cursor
    let next = b.audit_records_after(10, 5).await.unwrap();
    assert_eq!(
        next.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert!(next
        .iter()
        .all(|r| r.xml.contains(&format!("n=\"{}\"", r.at_ms))));
    assert_eq!(a.audit_cursor("syslog").await.unwrap(), 0);
    a.set_audit_cursor("syslog", 15).await.unwrap();
    a.set_audit_cursor("syslog", 16).await.unwrap();
    assert_eq!(b.audit_cursor("syslog").await.unwrap(), 16);
    drop((a, b));
    assert!(site.cli(&["audit", "verify"], "").contains("80 records"));
    tamper(&site, backend, "DELETE FROM audit_log WHERE seq = 41").await;
    let out = site.cli_output(&["audit", "verify"], "");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        said.contains("record 42") && said.contains("41 to 41 are missing"),
        "{said}"
    );
}

/// Audit off (`--audit false`, for bench/audit.sh): nothing is written.
async fn audit_off_records_nothing(backend: Backend) {
    let site = Site::new(backend);
    let node = Node::start_with(site.options().arg("--audit").arg("false"));
    let out = support::echoscu(&node, "ANYONE");
    assert!(out.status.success());
    node.terminate();
    let out = site.cli(&["audit", "search", "--json"], "");
    assert_eq!(out.trim(), "", "audit off wrote records");
}

/// A change of the AI routes is a Security Alert (Software Configuration), with the routes.
#[test]
fn ai_route_changes_are_recorded() {
    let site = Site::new(Backend::Sqlite);
    let node = Node::start_with(
        site.options()
            .arg("--worker-token")
            .arg("audit-test-worker-token")
            .arg("--ai-models-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models")),
    );
    let routes = serde_json::json!([{"model": "ct-classical", "modality": ["CT"],
        "calling_ae": ["ONLYTHIS"]}])
    .to_string();
    let r = http_request(
        node.http_port(),
        "PUT",
        "/api/ai/routes",
        &[("Content-Type", "application/json")],
        routes.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    node.terminate();
    let out = site.cli(
        &["audit", "search", "--event", "security-alert", "--json"],
        "",
    );
    let record: Value = serde_json::from_str(out.lines().next().expect("a record")).unwrap();
    let xml = record["xml"].as_str().unwrap();
    assert!(xml.contains("Software Configuration"), "{xml}");
    assert!(xml.contains("/api/ai/routes"), "{xml}");
    let routes_b64 = base64::engine::general_purpose::STANDARD.encode(&routes);
    assert!(
        xml.contains(&routes_b64),
        "the routes are in the message: {xml}"
    );
    assert_eq!(record["outcome"], 0);
    assert_eq!(record["user"], "anonymous");
    validate_all(&[("security-alert".into(), xml.to_string())]);
}

both_backends!(
    trail_of_a_working_day,
    a_deleted_record_is_found,
    audit_off_records_nothing
);

/// `pacs user` and `pacs key` on the command line are recorded like the same changes through
/// the admin API: a Security Alert naming the account, the action and the operating-system
/// user, valid against the schema; the chain stays intact.
#[test]
fn command_line_account_changes_are_recorded() {
    let site = Site::new(Backend::Sqlite);
    site.add_user("cli-made", "viewer", PASSWORD);
    site.cli(&["key", "create", "script-1", "--roles", "viewer"], "");
    site.cli(&["key", "revoke", "script-1"], "");
    site.cli(&["user", "remove", "cli-made"], "");
    let records: Vec<Value> = site
        .cli(
            &["audit", "search", "--event", "security-alert", "--json"],
            "",
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<String> = records
        .iter()
        .map(|r| {
            let xml = r["xml"].as_str().unwrap();
            let b64 = xml
                .split("type=\"Action\" value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let mut actions = actions;
    actions.sort();
    assert_eq!(
        actions,
        [
            "create API key",
            "create user",
            "delete user",
            "revoke API key"
        ],
        "{records:?}"
    );
    for r in &records {
        assert!(r["user"].as_str().unwrap().starts_with("os:"), "{r}");
        assert_eq!(r["outcome"], 0);
    }
    validate_alerts(&records);
    assert!(site.cli(&["audit", "verify"], "").contains("4 records"));
}

/// A configuration change between starts (file, environment or command line) is a Security
/// Alert (Software Configuration) with the new configuration, secrets hidden, and the previous
/// digest; an unchanged restart records none.
#[test]
fn configuration_changes_between_starts_are_recorded() {
    let site = Site::new(Backend::Sqlite);
    // the same ports each time: they are part of the configuration
    let ports = [
        support::free_port(),
        support::free_port(),
        support::free_port(),
    ];
    let start = |extra: &[&str]| {
        let mut options = site
            .options()
            .arg("--admin-token")
            .arg("a-secret-admin-token");
        options.ports = Some(ports);
        for a in extra {
            options = options.arg(*a);
        }
        let node = Node::start_with(options);
        node.terminate();
    };
    let alerts = || -> Vec<Value> {
        site.cli(
            &["audit", "search", "--event", "security-alert", "--json"],
            "",
        )
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            r["xml"]
                .as_str()
                .unwrap()
                .contains("Software Configuration")
        })
        .collect()
    };
    let detail = |record: &Value, kind: &str| -> String {
        let xml = record["xml"].as_str().unwrap();
        let b64 = xml
            .split(&format!("type=\"{kind}\" value=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {kind} in {xml}"))
            .split('"')
            .next()
            .unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    start(&[]);
    start(&[]);
    let first = alerts();
    assert_eq!(
        first.len(),
        1,
        "an unchanged restart records nothing: {first:?}"
    );
    assert_eq!(detail(&first[0], "PreviousConfigurationDigest"), "none");
    start(&["--qido-max-results", "777"]);
    let now = alerts();
    assert_eq!(now.len(), 2, "{now:?}");
    let newest = &now[0];
    let configuration = detail(newest, "Configuration");
    assert!(configuration.contains("777"), "{configuration}");
    assert!(
        !configuration.contains("a-secret-admin-token"),
        "{configuration}"
    );
    assert!(configuration.contains("(set)"), "{configuration}");
    assert_eq!(
        detail(newest, "PreviousConfigurationDigest"),
        detail(&now[1], "ConfigurationDigest")
    );
    validate_alerts(&now);
    assert!(site.cli(&["audit", "verify"], "").contains("intact"));
}

/// Validates Security Alert records (from `pacs audit search --json`) against the schema.
fn validate_alerts(records: &[Value]) {
    let xmls: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                "security-alert".to_string(),
                r["xml"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    validate_all(&xmls);
}
