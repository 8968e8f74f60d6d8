//! The worker's analysis pipeline end to end on real files: DICOM series -> volume -> ONNX
//! model -> masks on the source slices -> measurements.
//!
//! Needs ONNX Runtime (`ORT_DYLIB_PATH`, or `python3 -m pip install onnxruntime==1.31.1`): the
//! tests fail, not skip, without it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, FileDicomObject, FileMetaTableBuilder, InMemDicomObject};
use pacs_ai_worker::inference::{locate_onnxruntime, Runner, RuntimeOptions};
use pacs_ai_worker::measure::measure;
use pacs_ai_worker::model::{load_all, Model, Orientation};
use pacs_ai_worker::volume::{DecodedSlice, Volume, VolumeError};
use pacs_synth::{synthesise, CtTissue, SynthModality, SynthOptions};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn reference_dir() -> PathBuf {
    models_dir().join("deepbrain/reference")
}

/// ONNX Runtime options for the tests; panics (fails the test) when the library is missing.
fn runtime() -> RuntimeOptions {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| match locate_onnxruntime() {
        Ok(p) => p,
        Err(e) => panic!("these tests need ONNX Runtime and it was not found: {e}"),
    });
    RuntimeOptions {
        dylib_path: Some(path.clone()),
        intra_threads: 2,
        ..Default::default()
    }
}

type Instance = FileDicomObject<InMemDicomObject>;

fn reference_instances() -> Vec<Instance> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(reference_dir().join("dicom"))
        .expect("reference series")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 25);
    paths.iter().map(|p| open_file(p).unwrap()).collect()
}

/// A uint8 `.npy` array (format 1.0-3.0, C order), as written by numpy.save.
fn read_npy_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{} is not a .npy file",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '|u1'"), "not uint8: {header}");
    assert!(
        header.contains("'fortran_order': False"),
        "not C order: {header}"
    );
    let shape_text = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape_text[..shape_text.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = bytes[start + header_len..].to_vec();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

fn dice(a: &[bool], b: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len());
    let both = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let total = a.iter().filter(|x| **x).count() + b.iter().filter(|x| **x).count();
    2.0 * both as f64 / total as f64
}

fn count(m: &[bool]) -> usize {
    m.iter().filter(|x| **x).count()
}

// ---------------------------------------------------------------------------------------
// (a) deepbrain on the reference series
// ---------------------------------------------------------------------------------------

#[test]
fn deepbrain_reference_series_matches_the_original_pipeline() {
    let mut instances = reference_instances();
    instances.reverse(); // any order: the volume sorts along the slice normal
    let volume = Volume::from_instances(instances).unwrap();
    assert_eq!(volume.shape(), [25, 41, 33]);
    assert_eq!(volume.geometry.slice_spacing, 2.0);
    assert_eq!(volume.geometry.origin, [-32.0, -40.0, -16.0]);
    for (i, s) in volume.slices.iter().enumerate() {
        assert_eq!(s.instance_number, Some(i as i32 + 1));
    }
    let (lo, hi) = volume
        .voxels
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (-610.0, 30393.0)); // reference.json value_range

    let model = Model::load(models_dir().join("deepbrain")).unwrap();
    assert!(model.accepts_volume(&volume));
    let (shape, expected) = read_npy_u8(&reference_dir().join("expected_mask_dicom.npy"));
    assert_eq!(shape, vec![25, 41, 33]);
    let expected: Vec<bool> = expected.iter().map(|&v| v != 0).collect();

    let runner = Runner::new(model.clone(), &runtime()).unwrap();
    let start = Instant::now();
    let raw = runner.predict(&volume).unwrap();
    let elapsed = start.elapsed();
    let seg = runner.segment(&volume).unwrap();
    let raw_mask = &raw.masks[0].mask;
    let mask = &seg.masks[0].mask;
    let d_raw = dice(raw_mask, &expected);
    let d_post = dice(mask, &expected);
    let differing = raw_mask
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .count();
    println!(
        "deepbrain reference: Dice {d_raw:.6} as predicted ({} voxels, expected {}, {differing} \
         differ), {d_post:.6} after post-processing ({} voxels); first run {:?} ({:?}), second \
         run {:?}",
        count(raw_mask),
        count(&expected),
        count(mask),
        elapsed,
        raw.timings,
        seg.timings
    );
    assert!(d_raw >= 0.98, "Dice {d_raw} < 0.98");
    assert!(d_post >= 0.98, "Dice after post-processing {d_post} < 0.98");

    let m = measure(mask, &volume);
    assert_eq!(m.voxel_count, count(mask) as u64);
    assert!((m.volume_ml - m.voxel_count as f64 * 8.0 / 1000.0).abs() < 1e-9);
    assert_eq!(m.components, 1);
    println!("deepbrain reference measurements: {m:?}");

    // Sanity: the network is not flip invariant, so the as-stored array gives another mask.
    let mut as_stored = model;
    as_stored.manifest.input.orientation = Orientation::AsStored;
    let wrong = Runner::new(as_stored, &runtime())
        .unwrap()
        .predict(&volume)
        .unwrap();
    let d_wrong = dice(&wrong.masks[0].mask, &expected);
    println!("deepbrain fed the as-stored [slice][row][col] array: Dice {d_wrong:.6}");
    assert!(d_wrong < 0.97, "as-stored orientation gave Dice {d_wrong}");
}

// ---------------------------------------------------------------------------------------
// (b) the classical CT model on the synthetic phantom
// ---------------------------------------------------------------------------------------

#[test]
fn ct_classical_segments_the_synthetic_phantom() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SynthOptions::new(SynthModality::Ct);
    opts.rows = 256;
    opts.columns = 256;
    opts.slices = 80;
    opts.out = dir.path().to_path_buf();
    let summary = synthesise(&opts).unwrap();
    let instances: Vec<Instance> = summary
        .instances
        .iter()
        .map(|i| open_file(&i.path).unwrap())
        .collect();
    let volume = Volume::from_instances(instances).unwrap();
    assert_eq!(volume.shape(), [80, 256, 256]);
    assert!((volume.geometry.slice_spacing - 1.25).abs() < 1e-9);

    // ground truth: the phantom's tissue at every voxel centre
    let phantom = opts.ct_phantom();
    let g = &volume.geometry;
    let n = g.voxel_count();
    let (mut body, mut lungs, mut bone) = (vec![false; n], vec![false; n], vec![false; n]);
    let mut i = 0;
    for s in 0..g.slices {
        for r in 0..g.rows {
            for c in 0..g.columns {
                let [x, y, z] = g.position(s as f64, r as f64, c as f64);
                let t = phantom.tissue_at(x, y, z);
                body[i] = phantom.in_body(x, y);
                lungs[i] = t == CtTissue::Lung;
                bone[i] = t == CtTissue::Bone;
                i += 1;
            }
        }
    }

    let model = Model::load(models_dir().join("ct-classical")).unwrap();
    assert!(model.manifest.classical);
    assert!(model.accepts_volume(&volume));
    let runner = Runner::new(model, &runtime()).unwrap();
    let start = Instant::now();
    let seg = runner.segment(&volume).unwrap();
    let elapsed = start.elapsed();
    let names: Vec<&str> = seg.masks.iter().map(|m| m.label.name.as_str()).collect();
    assert_eq!(names, ["Body", "Lungs", "Bone"]);
    let d_body = dice(&seg.masks[0].mask, &body);
    let d_lungs = dice(&seg.masks[1].mask, &lungs);
    let d_bone = dice(&seg.masks[2].mask, &bone);

    let m = measure(&seg.masks[1].mask, &volume);
    let analytic = phantom.lung_volume_ml();
    let error = (m.volume_ml - analytic) / analytic;
    println!(
        "ct-classical on a 256x256x80 phantom: Dice body {d_body:.5} lungs {d_lungs:.5} bone \
         {d_bone:.5}; lung volume {:.2} mL vs analytic {analytic:.2} mL ({:+.3}%); {elapsed:?} \
         total, timings {:?}",
        m.volume_ml,
        100.0 * error,
        seg.timings
    );
    println!("lung measurements: {m:?}");
    assert!(d_body > 0.95, "body Dice {d_body}");
    assert!(d_lungs > 0.95, "lung Dice {d_lungs}");
    assert!(d_bone > 0.9, "bone Dice {d_bone}");
    assert!(
        error.abs() < 0.02,
        "lung volume off by {:.2}%",
        100.0 * error
    );
    assert_eq!(m.components, 2, "two lungs");
    assert!((m.mean + 850.0).abs() < 1.0, "lung mean HU {}", m.mean);
    assert!(m.min >= -860.0 && m.max <= -840.0);
}

// ---------------------------------------------------------------------------------------
// (c) series that do not make a volume
// ---------------------------------------------------------------------------------------

fn set_strs(obj: &mut Instance, tag: dicom_core::Tag, vr: VR, values: &[String]) {
    let value = PrimitiveValue::Strs(values.iter().cloned().collect());
    obj.put(DataElement::new(tag, vr, value));
}

fn ds(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| format!("{v}")).collect()
}

fn error_of(instances: Vec<Instance>) -> VolumeError {
    match Volume::from_instances(instances) {
        Ok(_) => panic!("a volume was built"),
        Err(e) => {
            println!("{e}");
            e
        }
    }
}

#[test]
fn volume_refuses_missing_uneven_mixed_and_non_image_series() {
    // a missing slice
    let mut instances = reference_instances();
    instances.remove(12);
    let e = error_of(instances);
    assert!(
        matches!(e, VolumeError::MissingSlices { missing: 1, .. }),
        "{e:?}"
    );
    assert!(e
        .to_string()
        .starts_with("missing slice(s): gap of 4.000 mm"));

    // uneven spacing: one slice 0.5 mm off its place
    let mut instances = reference_instances();
    set_strs(
        &mut instances[12],
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &ds(&[-32.0, -40.0, 8.5]),
    );
    let e = error_of(instances);
    assert!(matches!(e, VolumeError::UnevenSpacing { .. }), "{e:?}");

    // a slice tilted by about 1.1 degrees
    let mut instances = reference_instances();
    let (c, s) = (0.02f64.cos(), 0.02f64.sin());
    set_strs(
        &mut instances[5],
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds(&[c, s, 0.0, -s, c, 0.0]),
    );
    let e = error_of(instances);
    assert!(matches!(e, VolumeError::MixedOrientation { .. }), "{e:?}");

    // two slices at the same position
    let mut instances = reference_instances();
    set_strs(
        &mut instances[3],
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &ds(&[-32.0, -40.0, -8.0]),
    );
    let e = error_of(instances);
    assert!(matches!(e, VolumeError::DuplicatePosition { .. }), "{e:?}");

    // another series slipped in
    let mut instances = reference_instances();
    set_strs(
        &mut instances[7],
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &["2.25.1".into()],
    );
    let e = error_of(instances);
    assert!(matches!(
        e,
        VolumeError::Inconsistent {
            attribute: "SeriesInstanceUID",
            ..
        }
    ));

    // a structured report among the images
    let mut instances = reference_instances();
    let mut sr = InMemDicomObject::new_empty();
    sr.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(uids::BASIC_TEXT_SR_STORAGE),
    ));
    sr.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from("2.25.42"),
    ));
    sr.put(DataElement::new(
        tags::MODALITY,
        VR::CS,
        PrimitiveValue::from("SR"),
    ));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(uids::BASIC_TEXT_SR_STORAGE)
        .media_storage_sop_instance_uid("2.25.42")
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN);
    instances.push(sr.with_meta(meta).unwrap());
    let e = error_of(instances);
    assert!(matches!(e, VolumeError::NotAnImage { .. }), "{e:?}");
    assert!(e.to_string().contains("Basic Text SR Storage"), "{e}");

    // compressed pixel data that cannot be decoded (a JPEG 2000 stream that is not one)
    let mut instances = reference_instances();
    instances[4].meta_mut().transfer_syntax = uids::JPEG2000_LOSSLESS.to_owned();
    instances[4].put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![vec![0u8; 64]])),
    ));
    let e = error_of(instances);
    assert!(matches!(e, VolumeError::Decode { .. }), "{e:?}");

    // fewer than two slices
    let mut instances = reference_instances();
    instances.truncate(1);
    assert!(matches!(error_of(instances), VolumeError::TooFewSlices(1)));
}

// ---------------------------------------------------------------------------------------
// (d) measurements on shapes of known size
// ---------------------------------------------------------------------------------------

/// A volume with the given voxels and voxel size `[slice, row, col]`, axial, without DICOM.
fn synthetic_volume(shape: [usize; 3], size: [f64; 3], voxels: Vec<f32>) -> Volume {
    let [ns, nr, nc] = shape;
    let plane = nr * nc;
    let slices = (0..ns)
        .map(|s| DecodedSlice {
            sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
            sop_instance_uid: format!("2.25.{}", s + 1),
            study_instance_uid: "2.25.100".into(),
            series_instance_uid: "2.25.101".into(),
            frame_of_reference_uid: "2.25.102".into(),
            modality: "CT".into(),
            rows: nr,
            columns: nc,
            pixel_spacing: [size[1], size[2]],
            image_orientation_patient: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            image_position_patient: [0.0, 0.0, s as f64 * size[0]],
            instance_number: Some(s as i32 + 1),
            pixels: voxels[s * plane..(s + 1) * plane].to_vec(),
        })
        .collect();
    Volume::from_decoded(slices, InMemDicomObject::new_empty()).unwrap()
}

#[test]
fn measurements_of_a_box_and_a_sphere() {
    // two boxes: 4 x 10 x 20 voxels and a single voxel, voxel 2.5 x 0.5 x 0.8 mm
    let shape = [8, 16, 32];
    let size = [2.5, 0.5, 0.8];
    let mut voxels = vec![0.0f32; 8 * 16 * 32];
    let mut mask = vec![false; voxels.len()];
    for s in 2..6 {
        for r in 3..13 {
            for c in 5..25 {
                let i = (s * 16 + r) * 32 + c;
                mask[i] = true;
                voxels[i] = s as f32 * 10.0; // 20, 30, 40, 50 HU per slice
            }
        }
    }
    let lone = (7 * 16 + 15) * 32 + 31;
    mask[lone] = true;
    voxels[lone] = 35.0;
    let volume = synthetic_volume(shape, size, voxels);
    let m = measure(&mask, &volume);
    assert_eq!(m.voxel_count, 801);
    assert!((m.volume_ml - 801.0 * 2.5 * 0.5 * 0.8 / 1000.0).abs() < 1e-12);
    assert_eq!(m.components, 2);
    assert_eq!((m.min, m.max), (20.0, 50.0));
    assert!((m.mean - 35.0).abs() < 1e-9);
    // population std of 20,30,40,50 (200 voxels each) and one 35: sqrt(125 * 800 / 801 + ...)
    let var = (200.0 * (225.0 + 25.0 + 25.0 + 225.0)) / 801.0;
    assert!((m.std_dev - f64::sqrt(var)).abs() < 1e-9);
    // longest: from the box's corner (2, 3, 5) to the lone voxel (7, 15, 31)
    let d3 = ((5.0 * 2.5f64).powi(2) + (12.0 * 0.5f64).powi(2) + (26.0 * 0.8f64).powi(2)).sqrt();
    assert!((m.max_diameter_3d_mm - d3).abs() < 1e-9, "{m:?}");
    // in plane: the box's diagonal, 9 rows by 19 columns
    let d2 = ((9.0 * 0.5f64).powi(2) + (19.0 * 0.8f64).powi(2)).sqrt();
    assert!((m.max_diameter_inplane_mm - d2).abs() < 1e-9, "{m:?}");

    // a ball of radius 20 mm on a 1 mm grid
    let n = 48;
    let mut ball = vec![false; n * n * n];
    for s in 0..n {
        for r in 0..n {
            for c in 0..n {
                let d2: f64 = [s, r, c].iter().map(|&v| (v as f64 - 23.5).powi(2)).sum();
                ball[(s * n + r) * n + c] = d2 <= 400.0;
            }
        }
    }
    let volume = synthetic_volume([n, n, n], [1.0; 3], vec![1.0; n * n * n]);
    let m = measure(&ball, &volume);
    let analytic = 4.0 / 3.0 * std::f64::consts::PI * 8000.0 / 1000.0;
    assert!(
        (m.volume_ml / analytic - 1.0).abs() < 0.01,
        "{} vs {analytic}",
        m.volume_ml
    );
    assert_eq!(m.components, 1);
    assert!(
        m.max_diameter_3d_mm <= 40.0 && m.max_diameter_3d_mm > 38.5,
        "{m:?}"
    );
    assert!(m.max_diameter_inplane_mm <= m.max_diameter_3d_mm);
    assert!((m.std_dev, m.mean) == (0.0, 1.0));
}

// ---------------------------------------------------------------------------------------
// the shipped model folders
// ---------------------------------------------------------------------------------------

#[test]
fn shipped_models_load_and_route() {
    let models = load_all(models_dir()).unwrap();
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["ct-classical", "deepbrain"]);
    let (ct, brain) = (&models[0], &models[1]);
    assert!(ct.manifest.classical && !brain.manifest.classical);
    assert!(ct.accepts("CT", Some("CHEST"), None));
    assert!(!ct.accepts("MR", Some("BRAIN"), None));
    assert!(brain.accepts("MR", Some("HEAD"), None));
    assert!(brain.accepts("MR", None, Some("T1 MPRAGE")));
    assert!(!brain.accepts("MR", Some("KNEE"), Some("PD FS")));
    assert!(!brain.accepts("CT", Some("HEAD"), None));
    assert_eq!(brain.labels()[0].property_type.meaning, "Brain");
}

#[test]
fn cuda_request_falls_back_to_the_cpu_when_unavailable() {
    let model = Model::load(models_dir().join("ct-classical")).unwrap();
    let options = RuntimeOptions {
        cuda: true,
        ..runtime()
    };
    let runner = Runner::new(model, &options).unwrap();
    // the PyPI `onnxruntime` wheel has no CUDA execution provider; `onnxruntime-gpu` on a
    // machine with a GPU would give "CUDA"
    assert!(["CPU", "CUDA"].contains(&runner.execution_provider()));
    println!("CUDA requested: running on {}", runner.execution_provider());
    let shape = [3, 8, 8];
    let volume = synthetic_volume(shape, [1.0; 3], vec![-1000.0; 3 * 8 * 8]);
    let seg = runner.segment(&volume).unwrap();
    assert!(seg.masks.iter().all(|m| count(&m.mask) == 0));
}
