//! De-identified export (PS3.15 Annex E, issue 13) against the real node: synthetic CT studies
//! of two patients (and an instance with burned-in annotation) exported by a `researcher` as a
//! ZIP, to a DCMTK storescp and by STOW-RS to a second node; every exported file walked by an
//! independent checker (pydicom and dicom-anonymizer's transcription of Table E.1-1,
//! tests/peers/deid_check.py) and by dciodvfy; pseudonyms consistent across exports and
//! different across patients; the researcher never reads identified data.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::auth::basic;
use crate::support::{
    http_request, python, storescu, synth_ct, synth_paths, Backend, Node, NodeOptions, StoreScp,
};

const ADMIN: &str = "Bearer deid-admin-token";

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn request(node: &Node, method: &str, path: &str, auth: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut headers = vec![("Authorization", auth)];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http_request(node.http_port(), method, path, &headers, body);
    (r.status, r.body)
}

/// Creates an export and waits for it to end; the final job.
fn export(node: &Node, auth: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, created) = request(
        node,
        "POST",
        "/api/exports",
        auth,
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&created));
    let id = json(&created)["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = request(node, "GET", &format!("/api/exports/{id}"), auth, b"");
        assert_eq!(status, 200);
        let job = json(&job);
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(Instant::now() < deadline, "export {id} did not end: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Downloads and unpacks an export's ZIP (with Python's zipfile: an independent reader).
fn unpack(node: &Node, auth: &str, id: i64, dir: &Path) -> Vec<PathBuf> {
    let (status, zip) = request(
        node,
        "GET",
        &format!("/api/exports/{id}/archive"),
        auth,
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&zip));
    // as a browser asks for it (Accept-Encoding: gzip): the same archive, not compressed again
    let browser = http_request(
        node.http_port(),
        "GET",
        &format!("/api/exports/{id}/archive"),
        &[
            ("Authorization", auth),
            ("Accept-Encoding", "gzip, deflate, br"),
        ],
        b"",
    );
    assert_eq!(browser.status, 200);
    assert_eq!(browser.header("content-encoding"), None);
    assert!(
        browser.body == zip,
        "the archive differs when gzip is accepted"
    );
    let path = dir.with_extension("zip");
    std::fs::write(&path, zip).unwrap();
    let out = std::process::Command::new(python())
        .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; z.extractall(sys.argv[2])"])
        .arg(&path)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    files_under(dir)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs the independent checker; its report (it must find nothing wrong).
fn check(paths: &[PathBuf], flags: &[&str], forbid: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/deid_check.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).args(flags);
    for f in forbid {
        cmd.arg("--forbid").arg(f);
    }
    let out = cmd.args(paths).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "checker failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "the checker found problems: {report:#}"
    );
    report
}

/// The checker on identified files must find problems (it is not vacuous).
fn check_finds_problems(paths: &[PathBuf], forbid: &[String]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/deid_check.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script);
    for f in forbid {
        cmd.arg("--forbid").arg(f);
    }
    let out = cmd.args(paths).output().unwrap();
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    for expected in [
        "should have been removed (X)",
        "Patient Identity Removed is not YES",
        "original identifier",
    ] {
        assert!(problems.contains(expected), "{expected}: {problems}");
    }
}

/// dciodvfy on each file: no line of errors (warnings are allowed).
fn dciodvfy_clean(paths: &[PathBuf]) {
    for p in paths {
        let out = std::process::Command::new("dciodvfy")
            .arg(p)
            .output()
            .expect("run dciodvfy");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "dciodvfy {}: {errors:#?}", p.display());
    }
}

/// What identified a synthetic study: strings that must not appear in any exported file.
fn originals(files: &[PathBuf]) -> Vec<String> {
    let script = "import sys,pydicom,json
out=set()
for f in sys.argv[1:]:
    d=pydicom.dcmread(f)
    out.update([str(d.PatientName), d.PatientID, d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, d.get('FrameOfReferenceUID', d.SOPInstanceUID)])
print(json.dumps(sorted(out)))";
    let out = crate::support::python_stdout(
        std::iter::once("-c".into())
            .chain(std::iter::once(script.to_string()))
            .chain(files.iter().map(|f| f.to_string_lossy().into_owned())),
    );
    serde_json::from_slice(&out).unwrap()
}

fn store(node: &Node, files: &[PathBuf]) {
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    // -R: propose the SOP classes of the files (SEG is not among storescu's defaults)
    let out = storescu(node, "MODALITY", &["-R"], &refs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

crate::support::both_backends!(researcher_exports_deidentified_studies_everywhere);

async fn researcher_exports_deidentified_studies_everywhere(backend: Backend) {
    // the harness's calls block: off the runtime's threads
    if let Err(e) = tokio::task::spawn_blocking(move || export_matrix(backend)).await {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn export_matrix(backend: Backend) {
    let scp = StoreScp::start("DEIDSCP", &[]);
    let receiver = Node::start_with(NodeOptions::new(Backend::Sqlite));
    let node = Node::start_with(
        NodeOptions::new(backend)
            .arg("--admin-token")
            .arg("deid-admin-token")
            .env("PACS_DEID_SECRET", "a test secret of the site"),
    );
    assert!(!node.log().contains("a test secret of the site"));
    // the AE and the researcher
    let ae = serde_json::json!({"title": "DEIDSCP", "host": "127.0.0.1", "port": scp.port, "allow": ["echo", "store"]});
    let (status, body) = request(&node, "POST", "/api/aes", ADMIN, ae.to_string().as_bytes());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let user =
        serde_json::json!({"name": "rita", "roles": ["researcher"], "password": "rita-password-1"});
    let (status, body) = request(
        &node,
        "POST",
        "/api/users",
        ADMIN,
        user.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let rita = basic("rita", "rita-password-1");

    // two patients; patient A's study also holds an instance with burned-in annotation
    let (dir_a, a) = synth_ct(4, 1);
    let (_dir_b, b) = synth_ct(3, 2);
    let files_a = synth_paths(&a);
    let burned = dir_a.path().join("burned.dcm");
    crate::support::python_stdout([
        "-c",
        "import sys,pydicom; d=pydicom.dcmread(sys.argv[1]); d.BurnedInAnnotation='YES'; \
         d.SOPInstanceUID=d.SOPInstanceUID+'.9'; d.file_meta.MediaStorageSOPInstanceUID=d.SOPInstanceUID; \
         d.InstanceNumber=99; d.save_as(sys.argv[2])",
        &files_a[0].to_string_lossy(),
        &burned.to_string_lossy(),
    ]);
    // an AI-like SEG (highdicom) over patient A's CT
    let seg = dir_a.path().join("seg.dcm");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/deid_check.py");
    let mut make = vec![
        script.to_string_lossy().into_owned(),
        "make-seg".into(),
        seg.to_string_lossy().into_owned(),
    ];
    make.extend(files_a.iter().map(|f| f.to_string_lossy().into_owned()));
    crate::support::python_stdout(make);
    // and a highdicom Comprehensive 3D SR measurement report
    let sr = dir_a.path().join("sr.dcm");
    let mut make = vec![
        script.to_string_lossy().into_owned(),
        "make-sr".into(),
        sr.to_string_lossy().into_owned(),
    ];
    make.extend(files_a.iter().map(|f| f.to_string_lossy().into_owned()));
    crate::support::python_stdout(make);
    store(&node, &files_a);
    store(&node, &[burned.clone(), seg.clone(), sr.clone()]);
    store(&node, &synth_paths(&b));
    let study_a = a.instances[0].study_instance_uid.clone();
    let study_b = b.instances[0].study_instance_uid.clone();
    let mut forbid_a = originals(&files_a);
    forbid_a.extend(originals(std::slice::from_ref(&burned)));
    forbid_a.extend(originals(std::slice::from_ref(&seg)));
    forbid_a.extend(originals(std::slice::from_ref(&sr)));

    // the researcher reads no identified data
    for path in [
        "/dicom-web/studies".to_string(),
        format!("/dicom-web/studies/{study_a}/metadata"),
        format!("/dicom-web/studies/{study_a}"),
        "/api/reidentification".to_string(),
    ] {
        let (status, _) = request(&node, "GET", &path, &rita, b"");
        assert_eq!(status, 403, "{path}");
    }

    // 1. the Basic Profile to a ZIP: the burned-in instance refused and reported
    let job = export(
        &node,
        &rita,
        serde_json::json!({"studies": [study_a], "destination": {"type": "zip"}}),
    );
    assert_eq!(job["instances_total"], 7, "{job}");
    assert_eq!(job["instances_done"], 6, "{job}");
    assert_eq!(job["instances_failed"], 1, "{job}");
    assert!(
        job["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("Burned In Annotation"),
        "{job}"
    );
    assert_eq!(job["requested_by"], "user:rita");
    let id = job["id"].as_i64().unwrap();
    let (status, _) = request(&node, "DELETE", &format!("/api/exports/{id}"), &rita, b"");
    assert_eq!(status, 409, "a finished export cannot be cancelled");
    let (status, listed) = request(&node, "GET", "/api/exports", &rita, b"");
    assert_eq!(status, 200);
    assert_eq!(json(&listed).as_array().unwrap().len(), 1);
    let tmp = tempfile::tempdir().unwrap();
    let first = unpack(
        &node,
        &rita,
        job["id"].as_i64().unwrap(),
        &tmp.path().join("first"),
    );
    assert_eq!(first.len(), 6);
    let report = check(&first, &[], &forbid_a);
    // highdicom reads the exported SEG, and its source images are the exported CT slices
    let exported_seg = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sop_class"] == "1.2.840.10008.5.1.4.1.1.66.4")
        .expect("the SEG was exported")["path"]
        .as_str()
        .unwrap()
        .to_string();
    let refs = crate::support::python_stdout([
        script.to_string_lossy().into_owned(),
        "seg-refs".into(),
        exported_seg,
        tmp.path().join("first").to_string_lossy().into_owned(),
    ]);
    assert!(
        String::from_utf8_lossy(&refs).contains("\"references\": 4"),
        "{}",
        String::from_utf8_lossy(&refs)
    );
    let exported_sr = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sop_class"] == "1.2.840.10008.5.1.4.1.1.88.34")
        .expect("the SR was exported")["path"]
        .as_str()
        .unwrap()
        .to_string();
    let refs = crate::support::python_stdout([
        script.to_string_lossy().into_owned(),
        "sr-refs".into(),
        exported_sr,
        tmp.path().join("first").to_string_lossy().into_owned(),
    ]);
    assert!(
        String::from_utf8_lossy(&refs).contains("\"missing\": []"),
        "{}",
        String::from_utf8_lossy(&refs)
    );
    check_finds_problems(&files_a[..1], &forbid_a);
    dciodvfy_clean(&first);
    let pseudonym = report["instances"][0]["patient_id"]
        .as_str()
        .unwrap()
        .to_string();
    let new_study = report["instances"][0]["study_uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pseudonym.starts_with("PSN"), "{report}");
    assert!(new_study.starts_with("2.25."));
    assert_eq!(report["instances"][0]["study_date"], "");

    // 2. the same patient again: the same pseudonym and UIDs; the second patient: others
    let again = export(
        &node,
        &rita,
        serde_json::json!({"studies": [study_a, study_b], "destination": {"type": "zip"}}),
    );
    let both = unpack(
        &node,
        &rita,
        again["id"].as_i64().unwrap(),
        &tmp.path().join("again"),
    );
    assert_eq!(both.len(), 9);
    let mut forbid = forbid_a.clone();
    forbid.extend(originals(&synth_paths(&b)));
    let report2 = check(&both, &[], &forbid);
    let instances = report2["instances"].as_array().unwrap();
    let sops_first: std::collections::BTreeSet<String> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sop_uid"].as_str().unwrap().to_string())
        .collect();
    let of_a: Vec<&serde_json::Value> = instances
        .iter()
        .filter(|i| i["patient_id"] == pseudonym.as_str())
        .collect();
    assert_eq!(of_a.len(), 6);
    assert!(of_a.iter().all(|i| i["study_uid"] == new_study.as_str()
        && sops_first.contains(i["sop_uid"].as_str().unwrap())));
    let of_b: Vec<&serde_json::Value> = instances
        .iter()
        .filter(|i| i["patient_id"] != pseudonym.as_str())
        .collect();
    assert_eq!(of_b.len(), 3);
    assert!(of_b.iter().all(|i| i["study_uid"] != new_study.as_str()
        && i["patient_name"] != report["instances"][0]["patient_name"]));

    // 3. options: shifted dates and cleaned descriptors, found by a QIDO-style query
    let shifted = export(
        &node,
        &rita,
        serde_json::json!({
        "query": {"PatientID": "SYN-1-0"},
        "options": {"retain_longitudinal_modified_dates": true, "clean_descriptors": true},
        "destination": {"type": "zip"}}),
    );
    assert_eq!(shifted["instances_done"], 6, "{shifted}");
    let files = unpack(
        &node,
        &rita,
        shifted["id"].as_i64().unwrap(),
        &tmp.path().join("shifted"),
    );
    let report3 = check(
        &files,
        &[
            "--retain-longitudinal-modified-dates",
            "--clean-descriptors",
        ],
        &forbid_a,
    );
    dciodvfy_clean(&files);
    let date = report3["instances"][0]["study_date"].as_str().unwrap();
    assert_eq!(date.len(), 8, "{report3}");

    // 3b. the options that keep what describes the patient, the device and the institution: the
    // checker holds every file to their original values (and to the Basic Profile otherwise)
    let original = dicom_object::open_file(&files_a[0]).unwrap();
    let value = |tag| {
        original
            .element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    };
    use dicom_dictionary_std::tags;
    let kept = [
        ("PatientSex", value(tags::PATIENT_SEX)),
        ("PatientAge", value(tags::PATIENT_AGE)),
        ("StationName", value(tags::STATION_NAME)),
        ("DeviceSerialNumber", value(tags::DEVICE_SERIAL_NUMBER)),
        ("InstitutionName", value(tags::INSTITUTION_NAME)),
    ];
    let retained = export(
        &node,
        &rita,
        serde_json::json!({
        "studies": [study_a],
        "options": {"retain_patient_characteristics": true, "retain_device_identity": true,
                    "retain_institution_identity": true},
        "destination": {"type": "zip"}}),
    );
    assert_eq!(retained["instances_done"], 6, "{retained}");
    let files = unpack(
        &node,
        &rita,
        retained["id"].as_i64().unwrap(),
        &tmp.path().join("retained"),
    );
    let options = [
        "--retain-patient-characteristics",
        "--retain-device-identity",
        "--retain-institution-identity",
    ];
    check(&files, &options, &forbid_a);
    dciodvfy_clean(&files);
    // the CT slices (not the SEG, whose device is the one that made it) keep the originals
    let is_ct = |f: &&PathBuf| {
        let o = dicom_object::open_file(f).unwrap();
        o.element(tags::MODALITY).unwrap().to_str().unwrap().trim() == "CT"
    };
    let slices: Vec<PathBuf> = files.iter().filter(is_ct).cloned().collect();
    assert_eq!(slices.len(), files_a.len());
    let mut flags: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    for (keyword, v) in &kept {
        assert!(!v.is_empty(), "the synthetic series has no {keyword}");
        flags.push(format!("--expect-kept={keyword}={v}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    check(&slices, &flags, &forbid_a);
    // without the options their original values are gone (removed, emptied or replaced by a
    // dummy, as Table E.1-1 allows each); Patient's Sex is Z, so it may stay
    let plain = dicom_object::open_file(first.iter().find(|f| is_ct(f)).unwrap()).unwrap();
    for (keyword, original) in &kept[1..] {
        let now = plain
            .element_by_name(keyword)
            .ok()
            .and_then(|e| e.to_str().ok().map(|v| v.trim().to_string()));
        assert_ne!(
            now.as_ref(),
            Some(original),
            "{keyword} kept without its option"
        );
    }

    // 4. to a registered AE (C-STORE): the same de-identified objects
    let sent = export(
        &node,
        &rita,
        serde_json::json!({"studies": [study_b], "destination": {"type": "ae", "title": "DEIDSCP"}}),
    );
    assert_eq!(sent["state"], "succeeded", "{sent}");
    assert_eq!(scp.files().len(), 3);
    let received = check(&scp.files(), &[], &originals(&synth_paths(&b)));
    dciodvfy_clean(&scp.files());
    let b_pseudonym = of_b[0]["patient_id"].as_str().unwrap();
    assert!(received["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["patient_id"] == b_pseudonym));

    // 5. by STOW-RS to a second node, found there by the pseudonym
    let url = format!("{}/dicom-web/studies", receiver.base_url());
    let stowed = export(
        &node,
        &rita,
        serde_json::json!({"studies": [study_a], "destination": {"type": "stow", "url": url}}),
    );
    assert_eq!(stowed["instances_done"], 6, "{stowed}");
    let qido = http_request(
        receiver.http_port(),
        "GET",
        &format!("/dicom-web/studies?PatientID={pseudonym}"),
        &[],
        b"",
    );
    assert_eq!(qido.status, 200, "{}", qido.text());
    let studies = json(&qido.body);
    assert_eq!(studies.as_array().unwrap().len(), 1);
    assert_eq!(studies[0]["0020000D"]["Value"][0], new_study.as_str());

    // 6. the re-identification table, for the admin only
    let (status, table) = request(&node, "GET", "/api/reidentification", ADMIN, b"");
    assert_eq!(status, 200);
    let table = json(&table);
    assert!(
        table
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "patient_id"
                && r["original"] == "SYN-1-0"
                && r["pseudonym"] == pseudonym.as_str()),
        "{table}"
    );
    assert!(table
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "study_uid"
            && r["original"] == study_a.as_str()
            && r["pseudonym"] == new_study.as_str()));

    // the audit trail names whose data left: a Data Export (110106) per patient, with the
    // original patient and study, the researcher as the requestor
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let exported = loop {
        let (status, body) = request(
            &node,
            "GET",
            "/api/audit?event=export&patient=SYN-1-0",
            ADMIN,
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let records = json(&body)["records"].as_array().unwrap().clone();
        if !records.is_empty() || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(!exported.is_empty(), "no Data Export record for patient A");
    for r in &exported {
        let xml = r["xml"].as_str().unwrap();
        assert!(xml.contains("csd-code=\"110106\""), "{xml}");
        assert!(r["user"].as_str().unwrap().contains("rita"), "{r}");
        assert!(
            r["study_uids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == study_a.as_str()),
            "{r}"
        );
    }

    // 7. `pacs export` on the command line, with the researcher's login token
    let (status, login) = request(&node, "POST", "/api/login", &rita, b"");
    assert_eq!(status, 200);
    let token = json(&login)["access_token"].as_str().unwrap().to_string();
    let out_dir = tmp.path().join("cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pacs"))
        .args([
            "export",
            "--node",
            &node.base_url(),
            "--token",
            &token,
            "--study",
            &study_b,
            "--retain-uids",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_files = files_under(&out_dir);
    assert_eq!(cli_files.len(), 3);
    // UIDs retained; the patient's name and ID still never appear
    let identity: Vec<String> = serde_json::from_slice(&crate::support::python_stdout([
        "-c",
        "import sys,json,pydicom; d=pydicom.dcmread(sys.argv[1]); print(json.dumps([str(d.PatientName), d.PatientID]))",
        &b.instances[0].path.to_string_lossy(),
    ]))
    .unwrap();
    let kept = check(&cli_files, &["--retain-uids"], &identity);
    assert_eq!(kept["instances"][0]["study_uid"], study_b.as_str());
    // and to STOW-RS: patient B's pseudonym arrives at the second node
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pacs"))
        .args([
            "export",
            "--node",
            &node.base_url(),
            "--token",
            &token,
            "--study",
            &study_b,
            "--to-stow",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qido = http_request(
        receiver.http_port(),
        "GET",
        &format!("/dicom-web/studies?PatientID={b_pseudonym}"),
        &[],
        b"",
    );
    assert_eq!(
        json(&qido.body).as_array().unwrap().len(),
        1,
        "{}",
        qido.text()
    );
    // and to the registered AE: patient B's 3 slices reach storescp again, de-identified, with
    // the same pseudonymous UIDs (the files the first export wrote are removed first)
    let earlier: Vec<PathBuf> = scp.files();
    for f in &earlier {
        std::fs::remove_file(f).unwrap();
    }
    let before = 0;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pacs"))
        .args([
            "export",
            "--node",
            &node.base_url(),
            "--token",
            &token,
            "--study",
            &study_b,
            "--to-ae",
            "DEIDSCP",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = scp.files();
    assert_eq!(files.len(), before + 3, "{files:?}");
    assert_eq!(files, earlier, "the same UIDs as in the first export");
    check(&files, &[], &originals(&synth_paths(&b)));

    // nobody exports without the secret
    let plain = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--admin-token")
            .arg("deid-admin-token"),
    );
    let (status, body) = request(
        &plain,
        "POST",
        "/api/exports",
        ADMIN,
        br#"{"studies": ["1.2.3"], "destination": {"type": "zip"}}"#,
    );
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("--deid-secret"));
}

/// A STOW-RS receiver that holds each request `hold` before answering 200, and counts them.
struct SlowStow {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowStow {
    fn start(hold: Duration) -> SlowStow {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        // one request: headers, then the body its Content-Length gives
                        let mut length = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        std::thread::sleep(hold);
                        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n\
                                      Content-Length: 2\r\n\r\n{}";
                        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowStow { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An export cancelled while it runs stops at its next batch: a STOW-RS destination holds the
/// first batch (50 instances) while the export is cancelled; no second batch is sent and the
/// export ends cancelled.
#[test]
fn a_running_export_cancelled_sends_no_further_batch() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--admin-token")
            .arg("deid-admin-token")
            .env("PACS_DEID_SECRET", "a test secret of the site"),
    );
    let user =
        serde_json::json!({"name": "rita", "roles": ["researcher"], "password": "rita-password-1"});
    let (status, body) = request(
        &node,
        "POST",
        "/api/users",
        ADMIN,
        user.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let rita = basic("rita", "rita-password-1");
    let (_dir, series) = synth_ct(120, 9);
    store(&node, &synth_paths(&series));
    let study = series.instances[0].study_instance_uid.clone();

    let receiver = SlowStow::start(Duration::from_secs(3));
    let url = format!("http://127.0.0.1:{}/dicom-web/studies", receiver.port);
    let body = serde_json::json!({"studies": [study], "destination": {"type": "stow", "url": url}});
    let (status, created) = request(
        &node,
        "POST",
        "/api/exports",
        &rita,
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&created));
    let id = json(&created)["id"].as_i64().unwrap();
    // the first batch is at the receiver: the export is running
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.requests() == 0 {
        assert!(Instant::now() < deadline, "no batch reached the receiver");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, job) = request(&node, "DELETE", &format!("/api/exports/{id}"), &rita, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&job));
    assert_eq!(json(&job)["state"], "cancelled");
    // the held batch is answered; the export notices and sends nothing more
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, job) = request(&node, "GET", &format!("/api/exports/{id}"), &rita, b"");
        let job = json(&job);
        if node.log().contains("export finished") {
            break job;
        }
        assert!(Instant::now() < deadline, "export {id} did not stop: {job}");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["instances_total"], 120, "{job}");
    assert_eq!(
        receiver.requests(),
        1,
        "a batch was sent after the cancellation"
    );
    let (status, _) = request(&node, "DELETE", &format!("/api/exports/{id}"), &rita, b"");
    assert_eq!(status, 409, "a cancelled export cannot be cancelled again");
}

/// The Retain Safe Private Option keeps the private blocks an instance declares safe in its
/// Private Data Element Characteristics Sequence (PS3.15 E.3.10) and removes the rest; the
/// independent checker holds the export to the same declarations, and without the option it
/// finds the kept private attributes.
#[test]
fn retain_safe_private_keeps_only_what_the_instance_declares_safe() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--admin-token")
            .arg("deid-admin-token")
            .env("PACS_DEID_SECRET", "a test secret of the site"),
    );
    let (_dir, series) = synth_ct(2, 12);
    let files = synth_paths(&series);
    for f in &files {
        // a SAFE block (0019,10xx), a MIXED block (0019,11xx: only xx01 listed), an UNSAFE
        // block (0021,10xx) and an undeclared one (0023,10xx)
        crate::support::python_stdout([
            "-c",
            "import sys,pydicom; from pydicom.dataset import Dataset\n\
             d=pydicom.dcmread(sys.argv[1])\n\
             def put(g,b,c,els):\n\
             \x20   blk=d.private_block(g,c,create=True)\n\
             \x20   assert blk.block_start>>8==b\n\
             \x20   for e,v in els: blk.add_new(e,'LO',v)\n\
             put(0x19,0x10,'ACME SAFE',[(0x10,'table speed 30'),(0x11,'tilt 0')])\n\
             put(0x19,0x11,'ACME MIXED',[(0x01,'kernel B30f'),(0x02,'operator Smith')])\n\
             put(0x21,0x10,'ACME UNSAFE',[(0x01,'workstation of Smith')])\n\
             put(0x23,0x10,'UNDECLARED',[(0x01,'undeclared value')])\n\
             def decl(g,c,s,els=None):\n\
             \x20   i=Dataset(); i.PrivateGroupReference=g; i.PrivateCreatorReference=c\n\
             \x20   i.BlockIdentifyingInformationStatus=s\n\
             \x20   if els is not None: i.NonidentifyingPrivateElements=els\n\
             \x20   return i\n\
             d.PrivateDataElementCharacteristicsSequence=[decl(0x19,'ACME SAFE','SAFE'),\
             decl(0x19,'ACME MIXED','MIXED',[1]),decl(0x21,'ACME UNSAFE','UNSAFE')]\n\
             d.save_as(sys.argv[1])",
            &f.to_string_lossy(),
        ]);
    }
    store(&node, &files);
    let user =
        serde_json::json!({"name": "rita", "roles": ["researcher"], "password": "rita-password-1"});
    let (status, body) = request(
        &node,
        "POST",
        "/api/users",
        ADMIN,
        user.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let rita = basic("rita", "rita-password-1");
    let study = series.instances[0].study_instance_uid.clone();
    let job = export(
        &node,
        &rita,
        serde_json::json!({"studies": [study], "options": {"retain_safe_private": true},
                           "destination": {"type": "zip"}}),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let tmp = tempfile::tempdir().unwrap();
    let exported = unpack(&node, &rita, job["id"].as_i64().unwrap(), tmp.path());
    assert_eq!(exported.len(), 2);
    let mut forbid = originals(&files);
    forbid.extend(["Smith".to_string(), "undeclared value".to_string()]);
    check(&exported, &["--retain-safe-private"], &forbid);
    dciodvfy_clean(&exported);
    let out = dicom_object::open_file(&exported[0]).unwrap();
    let value = |g: u16, e: u16| {
        out.element(dicom_core::Tag(g, e))
            .ok()
            .map(|v| v.to_str().unwrap().trim().to_string())
    };
    assert_eq!(value(0x0019, 0x0010).as_deref(), Some("ACME SAFE"));
    assert_eq!(value(0x0019, 0x1010).as_deref(), Some("table speed 30"));
    assert_eq!(value(0x0019, 0x1011).as_deref(), Some("tilt 0"));
    assert_eq!(value(0x0019, 0x1101).as_deref(), Some("kernel B30f"));
    assert_eq!(value(0x0019, 0x1102), None);
    assert_eq!(value(0x0021, 0x1001), None);
    assert_eq!(value(0x0023, 0x1001), None);
    // without the option's flag the checker finds the private attributes kept
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/deid_check.py");
    let plain = std::process::Command::new(python())
        .arg(&script)
        .args(&exported)
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stdout).contains("private attribute kept"));
}
