//! Measurements over time (docs/measurements.md) and `/rendered` of encapsulated documents, on
//! both index backends: SRs written by highdicom (tests/peers/measurement_sr.py), a broken SR
//! written by pydicom, and the AI worker's own SRs, stored with DCMTK's storescu; the trend
//! read through `GET /api/patients/{id}/measurements` and `pacs measurements`. An Encapsulated
//! PDF made by pydicom is stored and read back by dicomweb-client
//! (tests/peers/encapsulated_pdf.py).

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::worker::Worker;
use support::{both_backends, Backend, Node, NodeOptions};

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers");
const VOLUME: &str = "118565006";
/// Long axis (SCT): the AI worker's longest in-plane diameter.
const LONG_AXIS: &str = "103339001";

fn get(node: &Node, path: &str) -> support::HttpResponse {
    support::http_request(node.http_port(), "GET", path, &[], &[])
}

fn trend(node: &Node, patient: &str, query: &str) -> Vec<Value> {
    let path = format!("/api/patients/{patient}/measurements{query}");
    let rsp = get(node, &path);
    assert_eq!(rsp.status, 200, "GET {path}: {}", rsp.text());
    serde_json::from_slice::<Value>(&rsp.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// storescu of `files`, proposing the SOP classes of the files (-R: SR classes too).
fn push(node: &Node, files: &[PathBuf]) {
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(node, "MODALITY", &["-R"], &refs);
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One synthetic CT study of the seed's first patient on `date`, its lungs scaled by `scale`.
fn scan(
    seed: u64,
    date: &str,
    scale: f64,
    size: u16,
    slices: usize,
) -> (
    tempfile::TempDir,
    pacs_synth::SynthOptions,
    pacs_synth::SynthSummary,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Ct);
    opts.rows = size;
    opts.columns = size;
    opts.slices = slices;
    opts.seed = seed;
    opts.study_date = Some(date.into());
    opts.lung_scale = scale;
    opts.out = dir.path().to_path_buf();
    let summary = pacs_synth::synthesise(&opts).unwrap();
    (dir, opts, summary)
}

/// A TID 1500 report by highdicom over the series in `source_dir`; returns the SR's path.
fn highdicom_sr(out: &Path, source_dir: &Path, spec: &Value) -> PathBuf {
    let path = out.join(format!(
        "sr-{}.dcm",
        spec["sop_uid"].as_str().unwrap_or("new")
    ));
    support::python_stdout([
        format!("{PEERS}/measurement_sr.py"),
        path.display().to_string(),
        source_dir.display().to_string(),
        spec.to_string(),
    ]);
    path
}

fn series_dir(summary: &pacs_synth::SynthSummary) -> PathBuf {
    summary.instances[0].path.parent().unwrap().to_path_buf()
}

fn patient_of(summary: &pacs_synth::SynthSummary) -> String {
    let obj = dicom_object::open_file(&summary.instances[0].path).unwrap();
    obj.element(dicom_dictionary_std::tags::PATIENT_ID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string()
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1e-9)
}

/// An SR made by highdicom, not by the node: indexed at ingest (patient, study, SR, source
/// series, tracking, finding site, concept, value, unit), answered by the API and by `pacs
/// measurements`, filtered, and replaced with its SR.
async fn highdicom_sr_is_indexed(backend: Backend) {
    let node = Node::start_with(
        NodeOptions::new(backend)
            .arg("--duplicate-policy")
            .arg("overwrite"),
    );
    let (_ct, _opts, synth) = scan(31, "20240305", 1.0, 32, 4);
    let patient = patient_of(&synth);
    let study = synth.instances[0].study_instance_uid.clone();
    let series = synth.instances[0].series_instance_uid.clone();
    push(&node, &support::synth_paths(&synth));
    let out = tempfile::tempdir().unwrap();
    let sr_uid = "2.25.314159265358979323846264338327950288";
    let spec = |volume: f64| {
        json!({
            "sop_uid": sr_uid,
            "groups": [{
                "tracking_id": "Nodule 1",
                "tracking_uid": "2.25.271828182845904523536028747135266249",
                "finding_site": ["39607008", "SCT", "Lung"],
                "measurements": [
                    {"concept": [VOLUME, "SCT", "Volume"], "value": volume, "unit": ["mm3", "UCUM", "cubic millimeter"]},
                    {"concept": ["81827009", "SCT", "Diameter"], "value": 12.25, "unit": ["mm", "UCUM", "millimeter"]},
                ],
            }],
        })
    };
    let sr = highdicom_sr(out.path(), &series_dir(&synth), &spec(1234.5));
    push(&node, &[sr]);

    let tracks = trend(&node, &patient, "");
    assert_eq!(tracks.len(), 2, "{tracks:#?}");
    let volume = &tracks[0];
    assert_eq!(volume["tracking_id"], "Nodule 1");
    assert_eq!(
        volume["tracking_uid"],
        "2.25.271828182845904523536028747135266249"
    );
    assert_eq!(
        volume["concept"],
        json!({"code_value": VOLUME, "coding_scheme": "SCT", "code_meaning": "Volume"})
    );
    assert_eq!(volume["unit"], "mm3");
    assert_eq!(
        volume["points"],
        json!([{
            "study_uid": study, "study_date": "20240305", "sr_uid": sr_uid,
            "value": 1234.5, "change": null, "change_percent": null,
        }])
    );
    assert_eq!(tracks[1]["concept"]["code_value"], "81827009");
    assert_eq!(tracks[1]["points"][0]["value"], 12.25);

    // what the index holds beyond the answer: the finding site and the source series (from
    // the group's source image, through the SR's evidence)
    let url = node
        .database_url()
        .unwrap_or_else(|| node.data_dir().join("index.sqlite").display().to_string());
    let index = pacs::index::open(&url).await.unwrap();
    let rows = index
        .measurements_of_patient(&patient, &Default::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].row.source_series_uid, series);
    assert_eq!(rows[0].row.finding_site.code_value, "39607008");

    // filters
    assert_eq!(
        trend(&node, &patient, &format!("?concept={VOLUME}")).len(),
        1
    );
    assert_eq!(trend(&node, &patient, "?tracking_id=Nodule%201").len(), 2);
    assert_eq!(
        trend(
            &node,
            &patient,
            "?tracking_id=2.25.271828182845904523536028747135266249&concept=81827009"
        )
        .len(),
        1
    );
    assert_eq!(trend(&node, &patient, "?tracking_id=Other").len(), 0);
    assert_eq!(trend(&node, &patient, "?from=20240306").len(), 0);
    assert_eq!(
        trend(&node, &patient, "?from=20240305&to=20240305").len(),
        2
    );
    for bad in [
        "?from=2024-03-05",
        "?to=20241301",
        "?concept=",
        "?colour=red",
        "?from=20240306&to=20240305",
    ] {
        let rsp = get(&node, &format!("/api/patients/{patient}/measurements{bad}"));
        assert_eq!(rsp.status, 400, "{bad}: {}", rsp.text());
        assert!(rsp.text().contains("\"error\""), "{}", rsp.text());
    }

    // the same table from the command line
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_pacs"))
        .args(["measurements", &patient, "--concept", VOLUME])
        .args(["--node", &node.base_url()])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(table.contains("Volume (SCT, 118565006) [mm3]"), "{table}");
    assert!(table.contains("tracking id: Nodule 1"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("20240305") && l.contains("1234.5") && l.contains(sr_uid)),
        "{table}"
    );

    // a different object under the SR's UID (duplicate policy overwrite) replaces its rows
    let again = tempfile::tempdir().unwrap();
    let sr = highdicom_sr(again.path(), &series_dir(&synth), &spec(999.0));
    push(&node, &[sr]);
    let tracks = trend(&node, &patient, &format!("?concept={VOLUME}"));
    assert_eq!(
        tracks[0]["points"].as_array().unwrap().len(),
        1,
        "{tracks:#?}"
    );
    assert_eq!(tracks[0]["points"][0]["value"], 999.0);
    assert_eq!(index.measurement_count(sr_uid).await.unwrap(), 2);
}

/// One synthetic patient scanned three times, the lungs growing; highdicom reports with one
/// Tracking Unique Identifier for the lungs across the three (stored out of date order): the
/// trend lists three points in date order with their changes.
async fn growing_structure_makes_a_three_point_trend(backend: Backend) {
    let node = Node::start(backend);
    let out = tempfile::tempdir().unwrap();
    let tracking_uid = "2.25.161803398874989484820458683436563811";
    let visits = [("20230105", 0.9), ("20230706", 1.0), ("20240110", 1.1)];
    let mut expected = Vec::new();
    let mut patient = String::new();
    let mut reports = Vec::new();
    let mut scans = Vec::new();
    for (n, (date, scale)) in visits.iter().enumerate() {
        let (dir, opts, synth) = scan(77, date, *scale, 32, 4);
        patient = patient_of(&synth);
        let volume = opts.ct_phantom().lung_volume_ml();
        let spec = json!({
            "sop_uid": format!("2.25.{}", 900 + n),
            "groups": [{
                "tracking_id": "Lungs",
                "tracking_uid": tracking_uid,
                "finding_site": ["39607008", "SCT", "Lung"],
                "measurements": [{"concept": [VOLUME, "SCT", "Volume"], "value": volume, "unit": ["mL", "UCUM", "milliliter"]}],
            }],
        });
        push(&node, &support::synth_paths(&synth));
        reports.push(highdicom_sr(out.path(), &series_dir(&synth), &spec));
        expected.push((
            date.to_string(),
            synth.instances[0].study_instance_uid.clone(),
            volume,
        ));
        scans.push(dir);
    }
    // the newest first, then the oldest
    push(
        &node,
        &[reports[2].clone(), reports[0].clone(), reports[1].clone()],
    );

    let tracks = trend(&node, &patient, "");
    assert_eq!(tracks.len(), 1, "{tracks:#?}");
    let t = &tracks[0];
    assert_eq!(t["tracking_uid"], tracking_uid);
    assert_eq!(t["unit"], "mL");
    let points = t["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for (n, p) in points.iter().enumerate() {
        let (date, study, volume) = &expected[n];
        assert_eq!(p["study_date"], date.as_str());
        assert_eq!(p["study_uid"], study.as_str());
        assert_eq!(p["sr_uid"], format!("2.25.{}", 900 + n));
        assert!(close(p["value"].as_f64().unwrap(), *volume, 1e-9), "{p}");
        if n == 0 {
            assert_eq!(
                (&p["change"], &p["change_percent"]),
                (&Value::Null, &Value::Null)
            );
        } else {
            let prior = expected[n - 1].2;
            let change = volume - prior;
            assert!(close(p["change"].as_f64().unwrap(), change, 1e-6), "{p}");
            assert!(
                close(
                    p["change_percent"].as_f64().unwrap(),
                    change / prior * 100.0,
                    1e-6
                ),
                "{p}"
            );
            assert!(change > 0.0, "the lungs grow: {p}");
        }
    }
    // a date range keeps the points inside it, the first of them without a change
    let tracks = trend(&node, &patient, "?from=20230601&to=20231231");
    assert_eq!(tracks[0]["points"].as_array().unwrap().len(), 1);
    assert_eq!(tracks[0]["points"][0]["study_date"], "20230706");
    assert_eq!(tracks[0]["points"][0]["change"], Value::Null);
}

/// The Tracking Unique Identifier the AI worker writes for a (patient, model, segment):
/// "2.25." and the decimal of the first 16 bytes of SHA-256 over `pacs-tracking`, PatientID,
/// IssuerOfPatientID, the model's name and the segment's label, NUL-separated.
fn worker_tracking_uid(patient: &str, issuer: &str, model: &str, label: &str) -> String {
    let text = format!("pacs-tracking\0{patient}\0{issuer}\0{model}\0{label}");
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// The same with the real AI worker: three CT studies of one patient, lungs growing; the
/// worker's SRs give one lung volume track of three points.
async fn worker_reports_make_one_track(backend: Backend) {
    const TOKEN: &str = "worker-secret";
    let node = Node::start_with(
        NodeOptions::new(backend)
            .arg("--worker-token")
            .arg(TOKEN)
            .arg("--series-quiet-secs")
            .arg("2")
            .arg("--ai-models-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models")),
    );
    let worker = Worker::start(&node, TOKEN, "w-trend", &[], &[]);
    let visits = [("20220301", 0.9), ("20220901", 1.0), ("20230301", 1.1)];
    let mut scans = Vec::new();
    let mut patient = String::new();
    for (date, scale) in visits {
        let (dir, opts, synth) = scan(5, date, scale, 96, 24);
        patient = patient_of(&synth);
        push(&node, &support::synth_paths(&synth));
        scans.push((dir, opts.ct_phantom().lung_volume_ml(), synth));
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let lungs = loop {
        let tracks = trend(
            &node,
            &patient,
            &format!("?concept={VOLUME}&tracking_id=ct-classical%20Lungs"),
        );
        let points: usize = tracks
            .iter()
            .map(|t| t["points"].as_array().unwrap().len())
            .sum();
        if points >= 3 {
            break tracks;
        }
        assert!(
            Instant::now() < deadline,
            "three lung volumes not indexed: {tracks:#?}\n--- worker:\n{}\n--- node:\n{}",
            worker.log(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(lungs.len(), 1, "one track for the lungs: {lungs:#?}");
    let t = &lungs[0];
    // the worker's Tracking Identifier is "<model> <segment label>" (docs/ai.md)
    assert_eq!(t["tracking_id"], "ct-classical Lungs");
    assert_eq!(
        t["tracking_uid"],
        worker_tracking_uid(&patient, "", "ct-classical", "Lungs")
    );
    // UCUM: both spellings of the millilitre are valid codes
    assert!(t["unit"] == "ml" || t["unit"] == "mL", "{t}");
    let points = t["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for (n, p) in points.iter().enumerate() {
        let (_, volume, synth) = &scans[n];
        assert_eq!(p["study_date"], visits[n].0);
        assert_eq!(
            p["study_uid"],
            synth.instances[0].study_instance_uid.as_str()
        );
        // voxelised ellipsoids of a 96 x 96 x 24 phantom
        assert!(
            close(p["value"].as_f64().unwrap(), *volume, 0.02),
            "{p} vs {volume}"
        );
        if n > 0 {
            let prior = points[n - 1]["value"].as_f64().unwrap();
            let value = p["value"].as_f64().unwrap();
            assert!(
                close(p["change"].as_f64().unwrap(), value - prior, 1e-9),
                "{p}"
            );
            assert!(value > prior, "the lungs grow: {p}");
        }
    }
    // The long axis, written under Cornerstone's Length identifier so that OHIF lists it
    // (`Cornerstone3DTools@^0.1.0:Length:ct-classical Lungs`), is filed under the finding's.
    let axes = trend(
        &node,
        &patient,
        &format!("?concept={LONG_AXIS}&tracking_id=ct-classical%20Lungs"),
    );
    assert_eq!(
        axes.len(),
        1,
        "one long-axis track for the lungs: {axes:#?}"
    );
    assert_eq!(axes[0]["tracking_id"], "ct-classical Lungs");
    assert_eq!(axes[0]["tracking_uid"], t["tracking_uid"]);
    assert_eq!(axes[0]["points"].as_array().unwrap().len(), 3);
}

/// An SR that no template explains is stored and served as before, and indexed as far as it
/// can be (here: nothing).
async fn broken_sr_is_stored_and_served(backend: Backend) {
    let node = Node::start(backend);
    let (_ct, _opts, synth) = scan(41, "20240101", 1.0, 32, 4);
    let patient = patient_of(&synth);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("broken.dcm");
    let made: Value = serde_json::from_slice(&support::python_stdout([
        format!("{PEERS}/measurement_sr.py"),
        "--broken".into(),
        path.display().to_string(),
        series_dir(&synth).display().to_string(),
    ]))
    .unwrap();
    push(&node, std::slice::from_ref(&path));
    let study = &synth.instances[0].study_instance_uid;
    let metadata = get(
        &node,
        &format!(
            "/dicom-web/studies/{study}/series/{}/instances/{}/metadata",
            made["series_uid"].as_str().unwrap(),
            made["sop_uid"].as_str().unwrap()
        ),
    );
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    let instance = get(
        &node,
        &format!(
            "/dicom-web/studies/{study}/series/{}/instances/{}",
            made["series_uid"].as_str().unwrap(),
            made["sop_uid"].as_str().unwrap()
        ),
    );
    assert_eq!(instance.status, 200);
    // its Numeric Value that is no number, as sent
    let spoilt: &[u8] = b"\x40\x00\x0a\xa3DS\x02\x00x2";
    assert!(
        instance.body.windows(spoilt.len()).any(|w| w == spoilt),
        "the SR is served as stored"
    );
    assert_eq!(trend(&node, &patient, ""), Vec::<Value>::new());
}

/// An Encapsulated PDF is rendered as itself (PS3.18 rendered resources): the document's bytes
/// without the pad byte, as application/pdf, for the instance and its frame 1; 406 for a
/// client that accepts neither application/pdf nor */*.
async fn encapsulated_pdf_is_rendered_as_pdf(backend: Backend) {
    let node = Node::start(backend);
    let out = tempfile::tempdir().unwrap();
    let r: Value = serde_json::from_slice(&support::python_stdout([
        format!("{PEERS}/encapsulated_pdf.py"),
        format!("{}/dicom-web", node.base_url()),
        out.path().display().to_string(),
    ]))
    .unwrap();
    assert_eq!(r["pdf_len"].as_u64().unwrap() % 2, 1, "{r}");
    assert_eq!(r["instance_identical"], true, "{r}");
    assert_eq!(r["frame_identical"], true, "{r}");
    assert_eq!(r["raw_identical"], true, "{r}");
    assert_eq!(r["content_type"], "application/pdf", "{r}");

    let pdf = std::fs::read(out.path().join("document.pdf")).unwrap();
    let uids: Vec<&str> = r["uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let instance = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        uids[0], uids[1], uids[2]
    );
    let fetch = |path: &str, accept: Option<&str>| {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        support::http_request(node.http_port(), "GET", path, &headers, &[])
    };
    for (path, accept) in [
        (format!("{instance}/rendered"), Some("*/*")),
        (format!("{instance}/rendered"), None),
        (
            format!("{instance}/frames/1/rendered"),
            Some("image/jpeg, application/pdf;q=0.5"),
        ),
        (
            format!("/dicom-web/studies/{}/rendered", uids[0]),
            Some("application/*"),
        ),
    ] {
        let rsp = fetch(&path, accept);
        assert_eq!(rsp.status, 200, "{path} {accept:?}: {}", rsp.text());
        assert_eq!(
            rsp.header("content-type"),
            Some("application/pdf"),
            "{path}"
        );
        assert_eq!(rsp.body, pdf, "{path}");
    }
    for (path, accept, status) in [
        (format!("{instance}/rendered"), "image/jpeg", 406),
        (format!("{instance}/rendered"), "image/*, text/html", 406),
        (
            format!("{instance}/frames/2/rendered"),
            "application/pdf",
            404,
        ),
        (format!("{instance}/thumbnail"), "*/*", 406),
    ] {
        let rsp = fetch(&path, Some(accept));
        assert_eq!(rsp.status, status, "{path} {accept}: {}", rsp.text());
    }
}

both_backends!(
    highdicom_sr_is_indexed,
    growing_structure_makes_a_three_point_trend,
    worker_reports_make_one_track,
    broken_sr_is_stored_and_served,
    encapsulated_pdf_is_rendered_as_pdf,
);
