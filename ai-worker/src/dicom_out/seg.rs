//! The Segmentation: Segmentation IOD (PS3.3 A.51), Segmentation Image module (C.8.20.2) and
//! its functional groups (A.51.5). Which Segmentation Type is written follows
//! [`SegmentationType::for_segments`]: a LABELMAP (Label Map Segmentation Storage) whenever the
//! segments do not overlap, which every viewer draws right; BINARY or FRACTIONAL otherwise. Frames
//! are laid out as highdicom lays them out: for LABELMAP one frame per source slice holding a
//! segment pixel, else one frame per segment and source slice holding a pixel of the segment.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::color::srgb_to_dicom_lab;
use super::dataset::{self, cs_label, is, new_uid, text, truncate, DataSetExt, Timestamp};
use super::tracking::{tracking_identifier, tracking_uid};
use super::{dcm, Algorithm, Equipment, OutputError, SegmentInput, SourceSeries};

/// Label Map Segmentation Storage (PS3.4 B.5, added by Supplement 243 in 2024).
pub const LABEL_MAP_SEGMENTATION_STORAGE: &str = uids::LABEL_MAP_SEGMENTATION_STORAGE;

/// Segmentation Type (0062,0001) of the objects written here, with its SOP Class and pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentationType {
    /// One frame per source slice; each pixel holds the number of its segment (0: none),
    /// 8 bits per pixel, 16 with more than 255 segments. Label Map Segmentation Storage.
    Labelmap,
    /// One frame per segment and slice, 1 bit per pixel with frames packed back to back
    /// (PS3.5 8.1.1). Segmentation Storage.
    Binary,
    /// One frame per segment and slice, 8 bits per pixel: 255 inside, 0 outside (an occupancy
    /// that is either full or empty). Segmentation Storage.
    Fractional,
}

impl SegmentationType {
    /// The type written for a set of masks, as a table:
    ///
    /// | segments overlap | rows x columns a multiple of 8 | type |
    /// |---|---|---|
    /// | no | any | LABELMAP |
    /// | yes | yes | BINARY |
    /// | yes | no | FRACTIONAL (8-bit, 0 or 255) |
    ///
    /// A label map cannot hold overlapping segments (a pixel has one value). BINARY frames of a
    /// size that is not a multiple of 8 start in the middle of a byte, which some viewers
    /// (OHIF 3.13) decode as shifted stripes; 8-bit frames always start on a byte.
    pub fn for_segments(overlap: bool, pixels_per_frame: usize) -> SegmentationType {
        match (overlap, pixels_per_frame.is_multiple_of(8)) {
            (false, _) => SegmentationType::Labelmap,
            (true, true) => SegmentationType::Binary,
            (true, false) => SegmentationType::Fractional,
        }
    }

    pub fn sop_class_uid(self) -> &'static str {
        match self {
            SegmentationType::Labelmap => LABEL_MAP_SEGMENTATION_STORAGE,
            SegmentationType::Binary | SegmentationType::Fractional => uids::SEGMENTATION_STORAGE,
        }
    }

    fn defined_term(self) -> &'static str {
        match self {
            SegmentationType::Labelmap => "LABELMAP",
            SegmentationType::Binary => "BINARY",
            SegmentationType::Fractional => "FRACTIONAL",
        }
    }
}

/// Whether a SOP Class is one of the Segmentation Storage classes written here.
pub fn is_segmentation_sop_class(uid: &str) -> bool {
    uid == uids::SEGMENTATION_STORAGE || uid == LABEL_MAP_SEGMENTATION_STORAGE
}

/// One frame: the pixels of segment `segment` (0-based; None for a label map frame, which holds
/// every segment) on source slice `slice`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    segment: Option<usize>,
    slice: usize,
}

/// Writes the masks as a Segmentation of the source series (its type chosen by
/// [`SegmentationType::for_segments`]), in the source's Study and Frame of Reference, in a new
/// Series numbered `series_number`. Segment `i` of `segments` becomes Segment Number `i + 1`;
/// only frames holding at least one pixel are written (a segment whose mask is empty is
/// declared without frames). Each segment's Tracking ID and Tracking UID identify it for the
/// patient across studies ([`tracking_uid`]). Fails when every mask is empty.
pub fn build_segmentation(
    source: &SourceSeries,
    algorithm: &Algorithm,
    equipment: &Equipment,
    series_number: i32,
    segments: &[SegmentInput<'_>],
) -> Result<FileDicomObject<InMemDicomObject>, OutputError> {
    check_source(source)?;
    if segments.is_empty() {
        return Err(OutputError::NoSegments);
    }
    if segments.len() > usize::from(u16::MAX) {
        return Err(OutputError::TooManySegments(segments.len()));
    }
    let expected = source.voxel_count();
    for (i, s) in segments.iter().enumerate() {
        if s.mask.len() != expected {
            return Err(OutputError::MaskSize {
                number: i + 1,
                label: s.label.name.clone(),
                found: s.mask.len(),
                expected,
            });
        }
    }
    let plane = source.rows * source.columns;
    let overlapping = overlap(segments);
    let kind = SegmentationType::for_segments(overlapping, plane);
    let frames: Vec<Frame> = match kind {
        // One frame per slice where any segment has a pixel.
        SegmentationType::Labelmap => (0..source.slices.len())
            .filter(|&slice| {
                segments
                    .iter()
                    .any(|s| s.mask[slice * plane..(slice + 1) * plane].contains(&true))
            })
            .map(|slice| Frame {
                segment: None,
                slice,
            })
            .collect(),
        // Ordered by segment, then slice (volume order), as highdicom orders them.
        SegmentationType::Binary | SegmentationType::Fractional => segments
            .iter()
            .enumerate()
            .flat_map(|(segment, s)| {
                s.mask
                    .chunks_exact(plane)
                    .enumerate()
                    .filter(|(_, pixels)| pixels.contains(&true))
                    .map(move |(slice, _)| Frame {
                        segment: Some(segment),
                        slice,
                    })
            })
            .collect(),
    };
    if frames.is_empty() {
        return Err(OutputError::EmptySegmentation);
    }

    let at = Timestamp::now();
    let mut obj = InMemDicomObject::new_empty();
    dataset::put_sop_common(&mut obj, kind.sop_class_uid(), &new_uid(), &at);
    dataset::put_patient_study(&mut obj, source)?;
    dataset::put_equipment(&mut obj, equipment);

    // General Series and Segmentation Series modules (C.7.3.1, C.8.20.1).
    obj.set_str(tags::MODALITY, "SEG");
    obj.set_str(tags::SERIES_INSTANCE_UID, new_uid());
    obj.set_str(tags::SERIES_NUMBER, is(series_number.into()));
    obj.set_str(tags::SERIES_DATE, at.date.clone());
    obj.set_str(tags::SERIES_TIME, at.time.clone());
    obj.set_str(
        tags::SERIES_DESCRIPTION,
        algorithm.series_description("SEG"),
    );

    // Frame of Reference module (C.7.4.1): the source's, so the frames overlay the slices.
    obj.set_str(
        tags::FRAME_OF_REFERENCE_UID,
        source.frame_of_reference_uid.clone(),
    );
    obj.set_str(
        tags::POSITION_REFERENCE_INDICATOR,
        dataset::text(&source.instance, tags::POSITION_REFERENCE_INDICATOR).unwrap_or_default(),
    );

    // General Image, Segmentation Image and Multi-frame Functional Groups modules.
    obj.set_strs(tags::IMAGE_TYPE, ["DERIVED", "PRIMARY"]);
    obj.set_str(tags::INSTANCE_NUMBER, "1");
    obj.set_str(tags::CONTENT_DATE, at.date.clone());
    obj.set_str(tags::CONTENT_TIME, at.time.clone());
    obj.set_str(tags::CONTENT_LABEL, cs_label(&algorithm.name));
    obj.set_str(
        tags::CONTENT_DESCRIPTION,
        truncate(
            &format!(
                "{} {} ({})",
                algorithm.name, algorithm.version, algorithm.family.meaning
            ),
            64,
        ),
    );
    // Type 2: the creator is a device, named in the Enhanced General Equipment module.
    obj.set_str(tags::CONTENT_CREATOR_NAME, "");
    obj.set_str(tags::LOSSY_IMAGE_COMPRESSION, "00");
    obj.set_str(tags::SEGMENTATION_TYPE, kind.defined_term());
    obj.set_str(
        tags::SEGMENTS_OVERLAP,
        if overlapping { "YES" } else { "NO" },
    );
    // PS3.3 Table 10-23: Segment Numbers start at 1 and increase by 1.
    let patient = PatientIdentity::of(source);
    obj.set_seq(
        tags::SEGMENT_SEQUENCE,
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| segment_item(i + 1, s, algorithm, equipment, &patient))
            .collect(),
    );

    // Image Pixel module, as the Segmentation Image module constrains it (C.8.20.2).
    obj.set_value(tags::SAMPLES_PER_PIXEL, 1_u16);
    obj.set_str(tags::PHOTOMETRIC_INTERPRETATION, "MONOCHROME2");
    obj.set_value(tags::ROWS, source.rows as u16);
    obj.set_value(tags::COLUMNS, source.columns as u16);
    let bits: u16 = match kind {
        SegmentationType::Binary => 1,
        SegmentationType::Labelmap if segments.len() > 255 => 16,
        SegmentationType::Labelmap | SegmentationType::Fractional => 8,
    };
    obj.set_value(tags::BITS_ALLOCATED, bits);
    obj.set_value(tags::BITS_STORED, bits);
    obj.set_value(tags::HIGH_BIT, bits - 1);
    obj.set_value(tags::PIXEL_REPRESENTATION, 0_u16);
    match kind {
        SegmentationType::Labelmap => {
            // C.8.20.2: a MONOCHROME2 label map is shown through an identity Presentation LUT;
            // 0 is the background.
            obj.set_str(tags::PRESENTATION_LUT_SHAPE, "IDENTITY");
            // (VR US or SS in PS3.6: US, as the pixels are unsigned.)
            obj.put(dicom_core::DataElement::new(
                tags::PIXEL_PADDING_VALUE,
                VR::US,
                dicom_core::PrimitiveValue::from(0_u16),
            ));
        }
        SegmentationType::Fractional => {
            obj.set_str(tags::SEGMENTATION_FRACTIONAL_TYPE, "OCCUPANCY");
            obj.set_value(tags::MAXIMUM_FRACTIONAL_VALUE, 255_u16);
        }
        SegmentationType::Binary => {}
    }
    obj.set_str(tags::NUMBER_OF_FRAMES, is(frames.len() as i64));
    let (vr, pixels) = match kind {
        SegmentationType::Binary => (VR::OB, pack_frames(&frames, segments, plane)),
        SegmentationType::Fractional => (VR::OB, fractional_frames(&frames, segments, plane)),
        SegmentationType::Labelmap if bits == 16 => {
            (VR::OW, label_frames_16(&frames, segments, plane))
        }
        SegmentationType::Labelmap => (VR::OB, label_frames_8(&frames, segments, plane)),
    };
    obj.set_bytes(tags::PIXEL_DATA, vr, pixels);

    // Common Instance Reference module (C.12.2): every source instance, same Study.
    obj.set_seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![referenced_series(source)],
    );

    put_dimensions(&mut obj, kind);
    obj.set_seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared_groups(source)],
    );
    let position_index = position_indices(&frames, source.slices.len());
    obj.set_seq(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        frames
            .iter()
            .map(|f| frame_groups(source, *f, position_index[f.slice]))
            .collect(),
    );

    dataset::with_meta(obj)
}

/// The patient the tracking identifiers are derived for: PatientID and IssuerOfPatientID of
/// the source (empty when absent).
pub(crate) struct PatientIdentity {
    pub id: String,
    pub issuer: String,
}

impl PatientIdentity {
    pub fn of(source: &SourceSeries) -> PatientIdentity {
        PatientIdentity {
            id: text(&source.instance, tags::PATIENT_ID).unwrap_or_default(),
            issuer: text(&source.instance, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(),
        }
    }

    /// Tracking Identifier and Tracking Unique Identifier of a segment of a model's output.
    pub fn tracking(&self, model: &str, segment_label: &str) -> (String, String) {
        (
            tracking_identifier(model, segment_label),
            tracking_uid(&self.id, &self.issuer, model, segment_label),
        )
    }
}

/// The geometry both outputs rely on.
pub(crate) fn check_source(source: &SourceSeries) -> Result<(), OutputError> {
    if source.slices.is_empty() {
        return Err(OutputError::NoSlices);
    }
    let bad = |what: String| Err(OutputError::Geometry(what));
    if source.rows == 0 || source.columns == 0 || source.rows > 65535 || source.columns > 65535 {
        return bad(format!("{} rows x {} columns", source.rows, source.columns));
    }
    let lengths = [
        source.pixel_spacing[0],
        source.pixel_spacing[1],
        source.slice_thickness,
        source.spacing_between_slices,
    ];
    if lengths.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return bad(format!(
            "PixelSpacing {:?}, SliceThickness {}, spacing {}",
            source.pixel_spacing, source.slice_thickness, source.spacing_between_slices
        ));
    }
    if source
        .image_orientation_patient
        .iter()
        .any(|v| !v.is_finite())
    {
        return bad(format!(
            "ImageOrientationPatient {:?}",
            source.image_orientation_patient
        ));
    }
    Ok(())
}

/// Whether a voxel belongs to two segments (Segments Overlap, 0062,0013).
fn overlap(segments: &[SegmentInput<'_>]) -> bool {
    let n = segments[0].mask.len();
    (0..n).any(|v| segments.iter().filter(|s| s.mask[v]).nth(1).is_some())
}

/// A Segment Sequence item: Segment Description macro (PS3.3 Table 10-23).
fn segment_item(
    number: usize,
    s: &SegmentInput<'_>,
    algorithm: &Algorithm,
    equipment: &Equipment,
    patient: &PatientIdentity,
) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.set_value(tags::SEGMENT_NUMBER, number as u16);
    item.set_str(tags::SEGMENT_LABEL, truncate(&s.label.name, 64));
    item.set_code(
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        &s.label.category,
    );
    item.set_code(
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        &s.label.property_type,
    );
    // A model runs without a human in the loop, learned or hand-written alike.
    item.set_str(tags::SEGMENT_ALGORITHM_TYPE, "AUTOMATIC");
    item.set_str(tags::SEGMENT_ALGORITHM_NAME, truncate(&algorithm.name, 64));
    let mut id = InMemDicomObject::new_empty();
    id.set_code(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, &algorithm.family);
    id.set_str(tags::ALGORITHM_NAME, truncate(&algorithm.name, 64));
    id.set_str(tags::ALGORITHM_VERSION, truncate(&algorithm.version, 64));
    id.set_str(tags::ALGORITHM_SOURCE, truncate(&equipment.model_name, 64));
    item.set_seq(
        tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
        vec![id],
    );
    item.set_value(
        tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
        srgb_to_dicom_lab(s.label.color),
    );
    // Tracking ID/UID: the report's Tracking Identifier and Tracking Unique Identifier, the
    // same for this patient, model and segment in every study.
    let (id, uid) = patient.tracking(&algorithm.name, &s.label.name);
    item.set_str(tags::TRACKING_ID, id);
    item.set_str(tags::TRACKING_UID, uid);
    item
}

/// Packs the frames' pixels one bit each. PS3.5 8.1.1: with Bits Allocated 1 the first pixel
/// goes to the least significant bit of the first byte, and frames follow each other without
/// padding, so a frame may start in the middle of a byte; the value is padded to even length.
fn pack_frames(frames: &[Frame], segments: &[SegmentInput<'_>], plane: usize) -> Vec<u8> {
    let mut out = vec![0_u8; (frames.len() * plane).div_ceil(8)];
    let mut bit = 0;
    for f in frames {
        let segment = f.segment.expect("a BINARY frame holds one segment");
        for &p in &segments[segment].mask[f.slice * plane..(f.slice + 1) * plane] {
            if p {
                out[bit / 8] |= 1 << (bit % 8);
            }
            bit += 1;
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// FRACTIONAL frames: one byte per pixel, the Maximum Fractional Value (255) inside.
fn fractional_frames(frames: &[Frame], segments: &[SegmentInput<'_>], plane: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.len() * plane + 1);
    for f in frames {
        let segment = f.segment.expect("a FRACTIONAL frame holds one segment");
        let mask = &segments[segment].mask[f.slice * plane..(f.slice + 1) * plane];
        out.extend(mask.iter().map(|&p| if p { 255_u8 } else { 0 }));
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// The Segment Number of each pixel of a slice (0 outside every segment). Segments do not
/// overlap when this is used.
fn label_slice(slice: usize, segments: &[SegmentInput<'_>], plane: usize) -> Vec<u16> {
    let mut labels = vec![0_u16; plane];
    for (i, s) in segments.iter().enumerate() {
        for (label, &p) in labels
            .iter_mut()
            .zip(&s.mask[slice * plane..(slice + 1) * plane])
        {
            if p {
                *label = (i + 1) as u16;
            }
        }
    }
    labels
}

/// LABELMAP frames with 8-bit pixels, padded to even length.
fn label_frames_8(frames: &[Frame], segments: &[SegmentInput<'_>], plane: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.len() * plane + 1);
    for f in frames {
        out.extend(
            label_slice(f.slice, segments, plane)
                .into_iter()
                .map(|l| l as u8),
        );
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// LABELMAP frames with 16-bit pixels, little endian (the transfer syntax written here).
fn label_frames_16(frames: &[Frame], segments: &[SegmentInput<'_>], plane: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.len() * plane * 2);
    for f in frames {
        for l in label_slice(f.slice, segments, plane) {
            out.extend(l.to_le_bytes());
        }
    }
    out
}

fn referenced_series(source: &SourceSeries) -> InMemDicomObject {
    let mut series = InMemDicomObject::new_empty();
    series.set_str(
        tags::SERIES_INSTANCE_UID,
        source.series_instance_uid.clone(),
    );
    series.set_seq(
        tags::REFERENCED_INSTANCE_SEQUENCE,
        source
            .slices
            .iter()
            .map(|s| {
                let mut i = InMemDicomObject::new_empty();
                i.set_str(tags::REFERENCED_SOP_CLASS_UID, s.sop_class_uid.clone());
                i.set_str(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    s.sop_instance_uid.clone(),
                );
                i
            })
            .collect(),
    );
    series
}

/// Multi-frame Dimension module (C.7.6.17): frames indexed by Referenced Segment Number (not
/// for a label map, whose frames hold every segment), then Image Position (Patient), as
/// highdicom indexes them.
fn put_dimensions(obj: &mut InMemDicomObject, kind: SegmentationType) {
    let organization = new_uid();
    let mut org = InMemDicomObject::new_empty();
    org.set_str(tags::DIMENSION_ORGANIZATION_UID, organization.clone());
    obj.set_seq(tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    let index = |pointer, group, label: &str| {
        let mut d = InMemDicomObject::new_empty();
        d.set_str(tags::DIMENSION_ORGANIZATION_UID, organization.clone());
        d.set_value(tags::DIMENSION_INDEX_POINTER, pointer);
        d.set_value(tags::FUNCTIONAL_GROUP_POINTER, group);
        d.set_str(tags::DIMENSION_DESCRIPTION_LABEL, label);
        d
    };
    let mut dimensions = Vec::new();
    if kind != SegmentationType::Labelmap {
        dimensions.push(index(
            tags::REFERENCED_SEGMENT_NUMBER,
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            "Segment Number",
        ));
    }
    dimensions.push(index(
        tags::IMAGE_POSITION_PATIENT,
        tags::PLANE_POSITION_SEQUENCE,
        "Image Position Patient",
    ));
    obj.set_seq(tags::DIMENSION_INDEX_SEQUENCE, dimensions);
}

/// Dimension index value of each slice's position: 1-based rank among the slices that have
/// frames, in volume order (unused slices get 0 and are never looked up).
fn position_indices(frames: &[Frame], slices: usize) -> Vec<u32> {
    let mut used = vec![false; slices];
    for f in frames {
        used[f.slice] = true;
    }
    let mut next = 0;
    used.iter()
        .map(|&u| {
            if u {
                next += 1;
                next
            } else {
                0
            }
        })
        .collect()
}

/// Shared Functional Groups: Pixel Measures and Plane Orientation (Patient), the grid of the
/// source (the Segmentation is not resampled).
fn shared_groups(source: &SourceSeries) -> InMemDicomObject {
    let mut measures = InMemDicomObject::new_empty();
    measures.set_ds(tags::PIXEL_SPACING, &source.pixel_spacing);
    measures.set_ds(tags::SLICE_THICKNESS, &[source.slice_thickness]);
    measures.set_ds(
        tags::SPACING_BETWEEN_SLICES,
        &[source.spacing_between_slices],
    );
    let mut orientation = InMemDicomObject::new_empty();
    orientation.set_ds(
        tags::IMAGE_ORIENTATION_PATIENT,
        &source.image_orientation_patient,
    );
    let mut shared = InMemDicomObject::new_empty();
    shared.set_seq(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    shared.set_seq(tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]);
    shared
}

/// Per-frame Functional Groups of one frame: Derivation Image, Frame Content, Plane Position
/// (Patient) and, for a frame of one segment, Segment Identification.
fn frame_groups(source: &SourceSeries, f: Frame, position_index: u32) -> InMemDicomObject {
    let slice = &source.slices[f.slice];
    let segment_number = f.segment.map(|s| (s + 1) as u16);

    let mut source_image = InMemDicomObject::new_empty();
    source_image.set_str(tags::REFERENCED_SOP_CLASS_UID, slice.sop_class_uid.clone());
    source_image.set_str(
        tags::REFERENCED_SOP_INSTANCE_UID,
        slice.sop_instance_uid.clone(),
    );
    // The frame lies on the source pixel grid (highdicom indexes frames by source instance
    // only when this says so).
    source_image.set_str(tags::SPATIAL_LOCATIONS_PRESERVED, "YES");
    source_image.set_code(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        &dcm("121322", "Source image for image processing operation"),
    );
    let mut derivation = InMemDicomObject::new_empty();
    derivation.set_code(
        tags::DERIVATION_CODE_SEQUENCE,
        &dcm("113076", "Segmentation"),
    );
    derivation.set_seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_image]);

    let mut content = InMemDicomObject::new_empty();
    match segment_number {
        Some(n) => content.set_value(tags::DIMENSION_INDEX_VALUES, [u32::from(n), position_index]),
        None => content.set_value(tags::DIMENSION_INDEX_VALUES, [position_index]),
    }

    let mut position = InMemDicomObject::new_empty();
    position.set_ds(tags::IMAGE_POSITION_PATIENT, &slice.image_position_patient);

    let mut groups = InMemDicomObject::new_empty();
    groups.set_seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
    groups.set_seq(tags::FRAME_CONTENT_SEQUENCE, vec![content]);
    groups.set_seq(tags::PLANE_POSITION_SEQUENCE, vec![position]);
    if let Some(n) = segment_number {
        let mut identification = InMemDicomObject::new_empty();
        identification.set_value(tags::REFERENCED_SEGMENT_NUMBER, n);
        groups.set_seq(tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![identification]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LabelSpec;

    fn label() -> LabelSpec {
        LabelSpec {
            value: 1,
            name: "x".into(),
            color: [1, 2, 3],
            category: dcm("1", "c"),
            property_type: dcm("2", "t"),
        }
    }

    #[test]
    fn frames_are_packed_without_padding_between_them() {
        // 3x3 planes: 9 bits per frame, so the second frame starts at bit 1 of byte 1.
        let l = label();
        let mut mask = vec![false; 18];
        mask[0] = true;
        mask[9] = true;
        mask[17] = true;
        let seg = [SegmentInput {
            label: &l,
            mask: &mask,
        }];
        let frames = [
            Frame {
                segment: Some(0),
                slice: 0,
            },
            Frame {
                segment: Some(0),
                slice: 1,
            },
        ];
        let packed = pack_frames(&frames, &seg, 9);
        assert_eq!(packed, vec![0b0000_0001, 0b0000_0010, 0b0000_0010, 0]);
    }

    #[test]
    fn the_type_follows_overlap_and_frame_size() {
        use SegmentationType::*;
        assert_eq!(SegmentationType::for_segments(false, 27 * 30), Labelmap);
        assert_eq!(SegmentationType::for_segments(false, 256 * 256), Labelmap);
        assert_eq!(SegmentationType::for_segments(true, 256 * 256), Binary);
        assert_eq!(SegmentationType::for_segments(true, 27 * 30), Fractional);
        assert_eq!(Labelmap.sop_class_uid(), "1.2.840.10008.5.1.4.1.1.66.7");
        assert_eq!(Binary.sop_class_uid(), uids::SEGMENTATION_STORAGE);
    }

    #[test]
    fn label_map_pixels_hold_segment_numbers() {
        let (a, b) = (label(), label());
        // 1 x 3 planes, 2 slices: segment 1 at (0, 0), segment 2 at (1, 2)
        let mut m1 = vec![false; 6];
        let mut m2 = vec![false; 6];
        m1[0] = true;
        m2[5] = true;
        let segs = [
            SegmentInput {
                label: &a,
                mask: &m1,
            },
            SegmentInput {
                label: &b,
                mask: &m2,
            },
        ];
        let frames = [
            Frame {
                segment: None,
                slice: 0,
            },
            Frame {
                segment: None,
                slice: 1,
            },
        ];
        assert_eq!(label_frames_8(&frames, &segs, 3), vec![1, 0, 0, 0, 0, 2]);
        assert_eq!(
            label_frames_16(&frames[1..], &segs, 3),
            vec![0, 0, 0, 0, 2, 0]
        );
        assert_eq!(fractional_frames(&frames[..0], &segs, 3), Vec::<u8>::new());
    }

    #[test]
    fn position_indices_count_used_slices_only() {
        let frames = [
            Frame {
                segment: Some(0),
                slice: 3,
            },
            Frame {
                segment: Some(1),
                slice: 1,
            },
            Frame {
                segment: Some(1),
                slice: 3,
            },
        ];
        assert_eq!(position_indices(&frames, 5), vec![0, 1, 0, 2, 0]);
    }
}
