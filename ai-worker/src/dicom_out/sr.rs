//! The measurement report: a Comprehensive 3D SR (PS3.3 A.35.13) with the content of PS3.16
//! TID 1500 "Measurement Report". Each segment of the Segmentation it accompanies that holds a
//! voxel gets two measurement groups with the segment's Tracking Identifier and Tracking Unique
//! Identifier:
//!
//! 1. TID 1501 "Measurement and Qualitative Evaluation Group": the longest in-plane diameter
//!    (Long axis, mm) INFERRED FROM a two-point SCOORD POLYLINE SELECTED FROM the source image
//!    where it lies. This is the shape of a length measurement that viewers draw (OHIF 3.13's
//!    SR loader reads NUM > INFERRED FROM SCOORD > SELECTED FROM IMAGE, as dcmjs writes it).
//! 2. TID 1411 "Volumetric ROI Measurements" on the segment: volume, voxel and component
//!    counts, the longest 3-D diameter and intensity statistics, for machines.
//!
//! Viewers that merge groups by Tracking Unique Identifier (OHIF does) see one finding per
//! segment with its line. A segment without voxels gets no group: OHIF 3.13 stops loading a
//! report at the first finding without image coordinates (`Cannot read properties of undefined
//! (reading 'ReferencedSOPSequence')`); its zero volume is in the job's result record.

use dicom_core::header::Header;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::codes::{self as c, code, C};
use super::dataset::{self, ds, is, new_uid, text, truncate, DataSetExt, Timestamp};
use super::seg::{check_source, is_segmentation_sop_class, PatientIdentity};
use super::tracking::length_tracking_identifier;
use super::{Algorithm, Equipment, OutputError, SourceSeries};
use crate::measure::{InPlaneLine, SegmentMeasurements};
use crate::model::Code;

/// What the report needs to know of the Segmentation it points at.
struct SegmentationRef {
    sop_class_uid: String,
    sop_instance_uid: String,
    series_instance_uid: String,
    segments: Vec<SegmentRef>,
}

struct SegmentRef {
    number: u16,
    label: String,
    category: Option<Code>,
    property_type: Option<Code>,
    tracking_id: Option<String>,
    tracking_uid: Option<String>,
}

/// Writes the measurement report of a Segmentation built by
/// [`build_segmentation`](super::build_segmentation) from the same `source`:
/// `measurements[i]` belongs to the `i`-th item of its Segment Sequence (Segment Number
/// `i + 1`). Finding, Finding Category and tracking identifiers are taken from that item, so
/// the report and the Segmentation cannot disagree. The report is a new Series numbered
/// `series_number` in the source's Study.
pub fn build_measurement_report(
    source: &SourceSeries,
    algorithm: &Algorithm,
    equipment: &Equipment,
    series_number: i32,
    segmentation: &InMemDicomObject,
    measurements: &[SegmentMeasurements],
) -> Result<FileDicomObject<InMemDicomObject>, OutputError> {
    check_source(source)?;
    let seg = read_segmentation(segmentation)?;
    if seg.segments.len() != measurements.len() {
        return Err(OutputError::MeasurementCount {
            measurements: measurements.len(),
            segments: seg.segments.len(),
        });
    }

    let at = Timestamp::now();
    let mut obj = InMemDicomObject::new_empty();
    dataset::put_sop_common(&mut obj, uids::COMPREHENSIVE3_DSR_STORAGE, &new_uid(), &at);
    dataset::put_patient_study(&mut obj, source)?;
    dataset::put_equipment(&mut obj, equipment);
    let study_uid = dataset::study_instance_uid(&obj);

    // SR Document Series module (C.17.1).
    obj.set_str(tags::MODALITY, "SR");
    obj.set_str(tags::SERIES_INSTANCE_UID, new_uid());
    obj.set_str(tags::SERIES_NUMBER, is(series_number.into()));
    obj.set_str(tags::SERIES_DATE, at.date.clone());
    obj.set_str(tags::SERIES_TIME, at.time.clone());
    obj.set_str(tags::SERIES_DESCRIPTION, algorithm.series_description("SR"));
    obj.set_seq(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );

    // SR Document General module (C.17.2).
    obj.set_str(tags::INSTANCE_NUMBER, "1");
    obj.set_str(tags::CONTENT_DATE, at.date.clone());
    obj.set_str(tags::CONTENT_TIME, at.time.clone());
    obj.set_str(tags::COMPLETION_FLAG, "COMPLETE");
    // Nobody has verified an automatic result (C.17.2.1).
    obj.set_str(tags::VERIFICATION_FLAG, "UNVERIFIED");
    obj.set_seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
    obj.set_seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence(&study_uid, source, &seg)],
    );

    // SR Document Content module (C.17.3): the root CONTAINER of TID 1500.
    obj.set_str(tags::VALUE_TYPE, "CONTAINER");
    obj.set_code(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        &code(c::IMAGING_MEASUREMENT_REPORT),
    );
    obj.set_str(tags::CONTINUITY_OF_CONTENT, "SEPARATE");
    obj.set_seq(tags::CONTENT_TEMPLATE_SEQUENCE, vec![template("1500")]);
    let mut content = vec![code_item(
        HAS_CONCEPT_MOD,
        c::LANGUAGE_OF_CONTENT,
        &code(c::ENGLISH_US),
    )];
    content.extend(observer_context(equipment));
    content.push(code_item(
        HAS_CONCEPT_MOD,
        c::PROCEDURE_REPORTED,
        &code(procedure_reported(&source.modality)),
    ));
    content.push(image_library(source));
    let patient = PatientIdentity::of(source);
    let mut groups = Vec::new();
    for (segment, m) in seg.segments.iter().zip(measurements) {
        let Some(line) = m.max_diameter_inplane_line.filter(|_| m.voxel_count > 0) else {
            continue;
        };
        let tracking = segment.tracking(&patient, algorithm);
        groups.push(diameter_group(
            source, algorithm, segment, &tracking, m, line,
        )?);
        groups.push(volumetric_group(
            source, algorithm, &seg, segment, &tracking, m,
        ));
    }
    content.push(container(CONTAINS, c::IMAGING_MEASUREMENTS, None, groups));
    obj.set_seq(tags::CONTENT_SEQUENCE, content);
    // PS3.3 C.12.1: a private coding scheme used in the document is identified here.
    if uses_scheme(&obj, c::LOCAL_SCHEME) {
        obj.set_seq(
            tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
            vec![local_coding_scheme(equipment)],
        );
    }

    dataset::with_meta(obj)
}

/// Whether any Coding Scheme Designator in the data set (at any depth) is `scheme`.
fn uses_scheme(obj: &InMemDicomObject, scheme: &str) -> bool {
    obj.iter().any(|e| {
        if e.tag() == tags::CODING_SCHEME_DESIGNATOR {
            return e.to_str().map(|v| v.trim() == scheme).unwrap_or(false);
        }
        e.items()
            .map(|items| items.iter().any(|i| uses_scheme(i, scheme)))
            .unwrap_or(false)
    })
}

// Relationship Types (PS3.3 C.17.3.2.4).
const CONTAINS: &str = "CONTAINS";
const HAS_OBS_CONTEXT: &str = "HAS OBS CONTEXT";
const HAS_CONCEPT_MOD: &str = "HAS CONCEPT MOD";
const HAS_ACQ_CONTEXT: &str = "HAS ACQ CONTEXT";
const INFERRED_FROM: &str = "INFERRED FROM";
const SELECTED_FROM: &str = "SELECTED FROM";

fn read_segmentation(obj: &InMemDicomObject) -> Result<SegmentationRef, OutputError> {
    let required = |tag: Tag, name: &str| {
        text(obj, tag).ok_or_else(|| OutputError::BadSegmentation(format!("no {name}")))
    };
    let sop_class_uid = required(tags::SOP_CLASS_UID, "SOPClassUID")?;
    if !is_segmentation_sop_class(&sop_class_uid) {
        return Err(OutputError::BadSegmentation(format!(
            "SOP Class {sop_class_uid} is neither Segmentation nor Label Map Segmentation Storage"
        )));
    }
    let items = obj
        .get(tags::SEGMENT_SEQUENCE)
        .and_then(|e| e.items())
        .filter(|items| !items.is_empty())
        .ok_or_else(|| OutputError::BadSegmentation("no Segment Sequence".into()))?;
    let segments = items
        .iter()
        .map(|item| {
            let number = item
                .get(tags::SEGMENT_NUMBER)
                .and_then(|e| e.to_int::<u16>().ok())
                .ok_or_else(|| {
                    OutputError::BadSegmentation("a segment without Segment Number".into())
                })?;
            Ok(SegmentRef {
                number,
                label: text(item, tags::SEGMENT_LABEL)
                    .unwrap_or_else(|| format!("Segment {number}")),
                category: first_code(item, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE),
                property_type: first_code(item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE),
                tracking_id: text(item, tags::TRACKING_ID),
                tracking_uid: text(item, tags::TRACKING_UID),
            })
        })
        .collect::<Result<_, OutputError>>()?;
    Ok(SegmentationRef {
        sop_class_uid,
        sop_instance_uid: required(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        series_instance_uid: required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        segments,
    })
}

impl SegmentRef {
    /// The segment's Tracking ID and Tracking UID from the Segmentation, else derived as the
    /// Segmentation writer derives them.
    fn tracking(&self, patient: &PatientIdentity, algorithm: &Algorithm) -> (String, String) {
        let (id, uid) = patient.tracking(&algorithm.name, &self.label);
        (
            self.tracking_id.clone().unwrap_or(id),
            self.tracking_uid.clone().unwrap_or(uid),
        )
    }
}

fn first_code(item: &InMemDicomObject, tag: Tag) -> Option<Code> {
    let c = item.get(tag)?.items()?.first()?;
    let value = text(c, tags::CODE_VALUE)
        .or_else(|| text(c, tags::LONG_CODE_VALUE))
        .or_else(|| text(c, tags::URN_CODE_VALUE))?;
    Some(Code {
        value,
        scheme: text(c, tags::CODING_SCHEME_DESIGNATOR)?,
        meaning: text(c, tags::CODE_MEANING).unwrap_or_default(),
    })
}

fn local_coding_scheme(equipment: &Equipment) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.set_str(tags::CODING_SCHEME_DESIGNATOR, c::LOCAL_SCHEME);
    item.set_str(tags::CODING_SCHEME_NAME, c::LOCAL_SCHEME_NAME);
    item.set_str(
        tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
        truncate(&equipment.manufacturer, 64),
    );
    item
}

/// Hierarchical SOP Instance Reference macro (C.17.2.1): the source instances and the
/// Segmentation, all in the source's Study.
fn evidence(study_uid: &str, source: &SourceSeries, seg: &SegmentationRef) -> InMemDicomObject {
    let series = |uid: &str, instances: Vec<(&str, &str)>| {
        let mut s = InMemDicomObject::new_empty();
        s.set_str(tags::SERIES_INSTANCE_UID, uid);
        s.set_seq(
            tags::REFERENCED_SOP_SEQUENCE,
            instances
                .into_iter()
                .map(|(class, instance)| sop_reference(class, instance, None))
                .collect(),
        );
        s
    };
    let source_instances = source
        .slices
        .iter()
        .map(|s| (s.sop_class_uid.as_str(), s.sop_instance_uid.as_str()))
        .collect();
    let mut study = InMemDicomObject::new_empty();
    study.set_str(tags::STUDY_INSTANCE_UID, study_uid);
    study.set_seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![
            series(&source.series_instance_uid, source_instances),
            series(
                &seg.series_instance_uid,
                vec![(&seg.sop_class_uid, &seg.sop_instance_uid)],
            ),
        ],
    );
    study
}

fn sop_reference(class: &str, instance: &str, segment: Option<u16>) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    r.set_str(tags::REFERENCED_SOP_CLASS_UID, class);
    r.set_str(tags::REFERENCED_SOP_INSTANCE_UID, instance);
    if let Some(number) = segment {
        r.set_value(tags::REFERENCED_SEGMENT_NUMBER, number);
    }
    r
}

fn template(id: &str) -> InMemDicomObject {
    let mut t = InMemDicomObject::new_empty();
    t.set_str(tags::MAPPING_RESOURCE, "DCMR");
    t.set_str(tags::TEMPLATE_IDENTIFIER, id);
    t
}

// Content items (PS3.3 C.17.3, Table C.17-5).

fn item(relationship: &str, value_type: &str, concept: C) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    i.set_str(tags::RELATIONSHIP_TYPE, relationship);
    i.set_str(tags::VALUE_TYPE, value_type);
    i.set_code(tags::CONCEPT_NAME_CODE_SEQUENCE, &code(concept));
    i
}

fn container(
    relationship: &str,
    concept: C,
    template_id: Option<&str>,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut i = item(relationship, "CONTAINER", concept);
    i.set_str(tags::CONTINUITY_OF_CONTENT, "SEPARATE");
    if let Some(id) = template_id {
        i.set_seq(tags::CONTENT_TEMPLATE_SEQUENCE, vec![template(id)]);
    }
    i.set_seq(tags::CONTENT_SEQUENCE, children);
    i
}

fn code_item(relationship: &str, concept: C, value: &Code) -> InMemDicomObject {
    let mut i = item(relationship, "CODE", concept);
    i.set_code(tags::CONCEPT_CODE_SEQUENCE, value);
    i
}

fn text_item(relationship: &str, concept: C, value: &str) -> InMemDicomObject {
    let mut i = item(relationship, "TEXT", concept);
    i.set_str(tags::TEXT_VALUE, value);
    i
}

fn uidref_item(relationship: &str, concept: C, uid: &str) -> InMemDicomObject {
    let mut i = item(relationship, "UIDREF", concept);
    i.set_str(tags::UID, uid);
    i
}

fn image_item(relationship: &str, concept: C, reference: InMemDicomObject) -> InMemDicomObject {
    let mut i = item(relationship, "IMAGE", concept);
    i.set_seq(tags::REFERENCED_SOP_SEQUENCE, vec![reference]);
    i
}

/// A NUM content item with its value as Decimal String and, when the string rounds it, also as
/// Floating Point Value (Table C.18.1-1: Type 1C when the DS has insufficient precision).
fn num_item(
    relationship: &str,
    concept: C,
    value: f64,
    unit: C,
    modifiers: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut i = item(relationship, "NUM", concept);
    let mut measured = InMemDicomObject::new_empty();
    let text = ds(value);
    if text.parse::<f64>().ok() != Some(value) {
        measured.set_value(tags::FLOATING_POINT_VALUE, value);
    }
    measured.set_str(tags::NUMERIC_VALUE, text);
    measured.set_code(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, &code(unit));
    i.set_seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
    if !modifiers.is_empty() {
        i.set_seq(tags::CONTENT_SEQUENCE, modifiers);
    }
    i
}

/// TID 1002 Observer Context with TID 1004 Device Observer Identifying Attributes.
fn observer_context(equipment: &Equipment) -> Vec<InMemDicomObject> {
    vec![
        code_item(HAS_OBS_CONTEXT, c::OBSERVER_TYPE, &code(c::DEVICE)),
        uidref_item(
            HAS_OBS_CONTEXT,
            c::DEVICE_OBSERVER_UID,
            &equipment.device_observer_uid,
        ),
        text_item(
            HAS_OBS_CONTEXT,
            c::DEVICE_OBSERVER_NAME,
            &equipment.model_name,
        ),
        text_item(
            HAS_OBS_CONTEXT,
            c::DEVICE_OBSERVER_MANUFACTURER,
            &equipment.manufacturer,
        ),
        text_item(
            HAS_OBS_CONTEXT,
            c::DEVICE_OBSERVER_MODEL_NAME,
            &equipment.model_name,
        ),
        text_item(
            HAS_OBS_CONTEXT,
            c::DEVICE_OBSERVER_SERIAL_NUMBER,
            &equipment.device_serial_number,
        ),
    ]
}

fn procedure_reported(modality: &str) -> C {
    match modality {
        "CT" => c::CT_UNSPECIFIED,
        "MR" => c::MRI_UNSPECIFIED,
        "PT" => c::PET_UNSPECIFIED,
        _ => c::IMAGING_PROCEDURE,
    }
}

/// TID 1600 Image Library: one group (TID 1602 descriptors shared by the whole series) holding
/// the source instances.
fn image_library(source: &SourceSeries) -> InMemDicomObject {
    let mut group = Vec::new();
    let modality = match source.modality.as_str() {
        "CT" => Some(c::COMPUTED_TOMOGRAPHY),
        "MR" => Some(c::MAGNETIC_RESONANCE),
        "PT" => Some(c::POSITRON_EMISSION_TOMOGRAPHY),
        _ => None,
    };
    if let Some(m) = modality {
        group.push(code_item(HAS_ACQ_CONTEXT, c::MODALITY, &code(m)));
    }
    group.push(uidref_item(
        HAS_ACQ_CONTEXT,
        c::FRAME_OF_REFERENCE_UID,
        &source.frame_of_reference_uid,
    ));
    group.push(num_item(
        HAS_ACQ_CONTEXT,
        c::PIXEL_DATA_ROWS,
        source.rows as f64,
        c::PIXELS,
        Vec::new(),
    ));
    group.push(num_item(
        HAS_ACQ_CONTEXT,
        c::PIXEL_DATA_COLUMNS,
        source.columns as f64,
        c::PIXELS,
        Vec::new(),
    ));
    // PixelSpacing holds the row spacing (vertical) first (PS3.3 10.7.1.3).
    group.push(num_item(
        HAS_ACQ_CONTEXT,
        c::HORIZONTAL_PIXEL_SPACING,
        source.pixel_spacing[1],
        c::MILLIMETER,
        Vec::new(),
    ));
    group.push(num_item(
        HAS_ACQ_CONTEXT,
        c::VERTICAL_PIXEL_SPACING,
        source.pixel_spacing[0],
        c::MILLIMETER,
        Vec::new(),
    ));
    group.push(num_item(
        HAS_ACQ_CONTEXT,
        c::SLICE_THICKNESS,
        source.slice_thickness,
        c::MILLIMETER,
        Vec::new(),
    ));
    group.push(num_item(
        HAS_ACQ_CONTEXT,
        c::SPACING_BETWEEN_SLICES,
        source.spacing_between_slices,
        c::MILLIMETER,
        Vec::new(),
    ));
    for s in &source.slices {
        group.push(image_item(
            CONTAINS,
            c::SOURCE,
            sop_reference(&s.sop_class_uid, &s.sop_instance_uid, None),
        ));
    }
    container(
        CONTAINS,
        c::IMAGE_LIBRARY,
        None,
        vec![container(CONTAINS, c::IMAGE_LIBRARY_GROUP, None, group)],
    )
}

/// The rows both kinds of group start with: tracking (TID 1501/1411 rows 1-2), Finding
/// Category, Finding, Finding Site for an anatomical segment, and TID 4019 Algorithm
/// Identification. The Tracking Unique Identifier is the group's first UIDREF (OHIF takes the
/// first UIDREF of a group as its tracking UID).
fn group_header(
    algorithm: &Algorithm,
    segment: &SegmentRef,
    (tracking_id, tracking_uid): &(String, String),
) -> Vec<InMemDicomObject> {
    let mut content = vec![
        text_item(HAS_OBS_CONTEXT, c::TRACKING_IDENTIFIER, tracking_id),
        uidref_item(HAS_OBS_CONTEXT, c::TRACKING_UNIQUE_IDENTIFIER, tracking_uid),
    ];
    if let Some(category) = &segment.category {
        content.push(code_item(CONTAINS, c::FINDING_CATEGORY, category));
    }
    if let Some(finding) = &segment.property_type {
        content.push(code_item(CONTAINS, c::FINDING, finding));
        // An anatomical structure is where it is found.
        let anatomical = segment
            .category
            .as_ref()
            .is_some_and(|k| k.scheme == "SCT" && ANATOMIC_CATEGORIES.contains(&k.value.as_str()));
        if anatomical {
            content.push(code_item(HAS_CONCEPT_MOD, c::FINDING_SITE, finding));
        }
    }
    content.push(text_item(
        HAS_CONCEPT_MOD,
        c::ALGORITHM_NAME,
        &algorithm.name,
    ));
    content.push(text_item(
        HAS_CONCEPT_MOD,
        c::ALGORITHM_VERSION,
        &algorithm.version,
    ));
    content
}

/// Segmented Property Categories (CID 7150) whose types are anatomy: (SCT, 91723000)
/// "Anatomical Structure", (SCT, 85756007) "Tissue".
const ANATOMIC_CATEGORIES: &[&str] = &["91723000", "85756007"];

/// TID 1501 group of one segment: its longest in-plane diameter drawn on the source slice
/// where it lies.
fn diameter_group(
    source: &SourceSeries,
    algorithm: &Algorithm,
    segment: &SegmentRef,
    tracking: &(String, String),
    m: &SegmentMeasurements,
    line: InPlaneLine,
) -> Result<InMemDicomObject, OutputError> {
    let slice = source.slices.get(line.slice).ok_or_else(|| {
        OutputError::Geometry(format!(
            "segment {}: the diameter lies on slice {} of {}",
            segment.number,
            line.slice,
            source.slices.len()
        ))
    })?;
    // OHIF lists the line in its measurement panel only under its Length tool's Tracking
    // Identifier (tracking.rs); the Tracking Unique Identifier stays the finding's.
    let (tracking_id, tracking_uid) = tracking;
    let mut content = group_header(
        algorithm,
        segment,
        &(
            length_tracking_identifier(tracking_id),
            tracking_uid.clone(),
        ),
    );
    let mut length = num_item(
        CONTAINS,
        c::LONG_AXIS,
        m.max_diameter_inplane_mm,
        c::MILLIMETER,
        Vec::new(),
    );
    length.set_seq(
        tags::CONTENT_SEQUENCE,
        vec![image_line(
            line,
            sop_reference(&slice.sop_class_uid, &slice.sop_instance_uid, None),
        )],
    );
    content.push(length);
    Ok(container(
        CONTAINS,
        c::MEASUREMENT_GROUP,
        Some("1501"),
        content,
    ))
}

/// TID 320 "Image or Spatial Coordinates": a two-point SCOORD POLYLINE between voxel centres,
/// SELECTED FROM its image. PS3.3 C.18.6.1.1: Graphic Data are (column, row) pairs in image
/// pixels with (0, 0) at the top left corner of the top left pixel, so the centre of pixel
/// (r, c) is (c + 0.5, r + 0.5).
fn image_line(line: InPlaneLine, image: InMemDicomObject) -> InMemDicomObject {
    let point = |[r, c]: [usize; 2]| [c as f32 + 0.5, r as f32 + 0.5];
    let [x1, y1] = point(line.from);
    let [x2, y2] = point(line.to);
    let mut scoord = InMemDicomObject::new_empty();
    scoord.set_str(tags::RELATIONSHIP_TYPE, INFERRED_FROM);
    scoord.set_str(tags::VALUE_TYPE, "SCOORD");
    scoord.put(DataElement::new(
        tags::GRAPHIC_DATA,
        VR::FL,
        PrimitiveValue::F32([x1, y1, x2, y2].into_iter().collect()),
    ));
    scoord.set_str(tags::GRAPHIC_TYPE, "POLYLINE");
    let mut selected = InMemDicomObject::new_empty();
    selected.set_str(tags::RELATIONSHIP_TYPE, SELECTED_FROM);
    selected.set_str(tags::VALUE_TYPE, "IMAGE");
    selected.set_seq(tags::REFERENCED_SOP_SEQUENCE, vec![image]);
    scoord.set_seq(tags::CONTENT_SEQUENCE, vec![selected]);
    scoord
}

/// TID 1411 Volumetric ROI Measurements for one segment.
fn volumetric_group(
    source: &SourceSeries,
    algorithm: &Algorithm,
    seg: &SegmentationRef,
    segment: &SegmentRef,
    tracking: &(String, String),
    m: &SegmentMeasurements,
) -> InMemDicomObject {
    let mut content = group_header(algorithm, segment, tracking);
    content.push(image_item(
        CONTAINS,
        c::REFERENCED_SEGMENT,
        sop_reference(
            &seg.sop_class_uid,
            &seg.sop_instance_uid,
            Some(segment.number),
        ),
    ));
    content.push(uidref_item(
        CONTAINS,
        c::SOURCE_SERIES_FOR_SEGMENTATION,
        &source.series_instance_uid,
    ));
    content.extend(measurements(&source.modality, source_units(source), m));
    container(CONTAINS, c::MEASUREMENT_GROUP, Some("1411"), content)
}

/// Units (0054,1001) of a PET source, which says what its rescaled values are.
fn source_units(source: &SourceSeries) -> Option<String> {
    text(&source.instance, tags::UNITS)
}

/// TID 1419 ROI Measurements of a segment with voxels. The longest in-plane diameter is in the
/// segment's TID 1501 group.
fn measurements(
    modality: &str,
    units: Option<String>,
    m: &SegmentMeasurements,
) -> Vec<InMemDicomObject> {
    let modifier = |concept: C, value: C| code_item(HAS_CONCEPT_MOD, concept, &code(value));
    let mut items = vec![
        num_item(
            CONTAINS,
            c::VOLUME,
            m.volume_ml,
            c::MILLILITER,
            vec![modifier(c::MEASUREMENT_METHOD, c::SUM_OF_SEGMENTED_VOXELS)],
        ),
        num_item(
            CONTAINS,
            c::QUANTITY,
            m.voxel_count as f64,
            c::VOXELS,
            Vec::new(),
        ),
        num_item(
            CONTAINS,
            c::QUANTITY,
            f64::from(m.components),
            c::COMPONENTS,
            Vec::new(),
        ),
    ];
    items.push(num_item(
        CONTAINS,
        c::DIAMETER,
        m.max_diameter_3d_mm,
        c::MILLIMETER,
        vec![modifier(c::DERIVATION, c::MAXIMUM)],
    ));
    let (concept, unit) = match (modality, units.as_deref()) {
        ("CT", _) => (c::ATTENUATION_COEFFICIENT, c::HOUNSFIELD_UNIT),
        ("MR", _) => (c::MR_SIGNAL_INTENSITY, c::ARBITRARY_UNIT),
        ("PT" | "NM", Some("BQML")) => (c::NM_TOMOGRAPHIC_ACTIVITY, c::BECQUEREL_PER_ML),
        ("PT" | "NM", _) => (c::NM_TOMOGRAPHIC_ACTIVITY, c::ARBITRARY_UNIT),
        (_, Some("BQML")) => (c::IMAGE_INTENSITY, c::BECQUEREL_PER_ML),
        _ => (c::IMAGE_INTENSITY, c::ARBITRARY_UNIT),
    };
    // Intensity statistics: the quantity, qualified by a Derivation from CID 7464.
    for (value, derivation) in [
        (m.mean, c::MEAN),
        (m.std_dev, c::STANDARD_DEVIATION),
        (m.min, c::MINIMUM),
        (m.max, c::MAXIMUM),
    ] {
        items.push(num_item(
            CONTAINS,
            concept,
            value,
            unit,
            vec![modifier(c::DERIVATION, derivation)],
        ));
    }
    items
}
