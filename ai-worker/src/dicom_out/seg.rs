//! The binary Segmentation: Segmentation IOD (PS3.3 A.51), Segmentation Image module (C.8.20.2)
//! and its functional groups (A.51.5), with frames laid out as highdicom lays them out: one
//! frame per segment and source slice that holds at least one pixel of the segment.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::color::srgb_to_dicom_lab;
use super::dataset::{self, cs_label, is, new_uid, truncate, DataSetExt, Timestamp};
use super::{dcm, Algorithm, Equipment, OutputError, SegmentInput, SourceSeries};

/// One frame: the pixels of segment `segment` (0-based) on source slice `slice`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    segment: usize,
    slice: usize,
}

/// Writes the masks as a binary Segmentation of the source series (SOP Class
/// 1.2.840.10008.5.1.4.1.1.66.4), in the source's Study and Frame of Reference, in a new
/// Series numbered `series_number`. Segment `i` of `segments` becomes Segment Number `i + 1`;
/// only frames holding at least one pixel are written (a segment whose mask is empty is
/// declared without frames). Fails when every mask is empty.
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
    // Frames ordered by segment, then slice (volume order), as highdicom orders them.
    let frames: Vec<Frame> = segments
        .iter()
        .enumerate()
        .flat_map(|(segment, s)| {
            s.mask
                .chunks_exact(plane)
                .enumerate()
                .filter(|(_, pixels)| pixels.iter().any(|&p| p))
                .map(move |(slice, _)| Frame { segment, slice })
        })
        .collect();
    if frames.is_empty() {
        return Err(OutputError::EmptySegmentation);
    }

    let at = Timestamp::now();
    let mut obj = InMemDicomObject::new_empty();
    dataset::put_sop_common(&mut obj, uids::SEGMENTATION_STORAGE, &new_uid(), &at);
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
    obj.set_str(tags::SEGMENTATION_TYPE, "BINARY");
    obj.set_str(
        tags::SEGMENTS_OVERLAP,
        if overlap(segments) { "YES" } else { "NO" },
    );
    // PS3.3 Table 10-23: Segment Numbers start at 1 and increase by 1.
    obj.set_seq(
        tags::SEGMENT_SEQUENCE,
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| segment_item(i + 1, s, algorithm, equipment))
            .collect(),
    );

    // Image Pixel module, as the Segmentation Image module constrains it (C.8.20.2).
    obj.set_value(tags::SAMPLES_PER_PIXEL, 1_u16);
    obj.set_str(tags::PHOTOMETRIC_INTERPRETATION, "MONOCHROME2");
    obj.set_value(tags::ROWS, source.rows as u16);
    obj.set_value(tags::COLUMNS, source.columns as u16);
    obj.set_value(tags::BITS_ALLOCATED, 1_u16);
    obj.set_value(tags::BITS_STORED, 1_u16);
    obj.set_value(tags::HIGH_BIT, 0_u16);
    obj.set_value(tags::PIXEL_REPRESENTATION, 0_u16);
    obj.set_str(tags::NUMBER_OF_FRAMES, is(frames.len() as i64));
    obj.set_bytes(
        tags::PIXEL_DATA,
        VR::OB,
        pack_frames(&frames, segments, plane),
    );

    // Common Instance Reference module (C.12.2): every source instance, same Study.
    obj.set_seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![referenced_series(source)],
    );

    put_dimensions(&mut obj);
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
    // Tracking ID/UID: the report's Tracking Identifier and Tracking Unique Identifier.
    item.set_str(tags::TRACKING_ID, s.label.name.clone());
    item.set_str(tags::TRACKING_UID, new_uid());
    item
}

/// Packs the frames' pixels one bit each. PS3.5 8.1.1: with Bits Allocated 1 the first pixel
/// goes to the least significant bit of the first byte, and frames follow each other without
/// padding, so a frame may start in the middle of a byte; the value is padded to even length.
fn pack_frames(frames: &[Frame], segments: &[SegmentInput<'_>], plane: usize) -> Vec<u8> {
    let mut out = vec![0_u8; (frames.len() * plane).div_ceil(8)];
    let mut bit = 0;
    for f in frames {
        for &p in &segments[f.segment].mask[f.slice * plane..(f.slice + 1) * plane] {
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

/// Multi-frame Dimension module (C.7.6.17): frames indexed by Referenced Segment Number, then
/// Image Position (Patient), as highdicom indexes them.
fn put_dimensions(obj: &mut InMemDicomObject) {
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
    obj.set_seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            index(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "Segment Number",
            ),
            index(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "Image Position Patient",
            ),
        ],
    );
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
/// (Patient) and Segment Identification.
fn frame_groups(source: &SourceSeries, f: Frame, position_index: u32) -> InMemDicomObject {
    let slice = &source.slices[f.slice];
    let segment_number = (f.segment + 1) as u16;

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
    content.set_value(
        tags::DIMENSION_INDEX_VALUES,
        [u32::from(segment_number), position_index],
    );

    let mut position = InMemDicomObject::new_empty();
    position.set_ds(tags::IMAGE_POSITION_PATIENT, &slice.image_position_patient);

    let mut identification = InMemDicomObject::new_empty();
    identification.set_value(tags::REFERENCED_SEGMENT_NUMBER, segment_number);

    let mut groups = InMemDicomObject::new_empty();
    groups.set_seq(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
    groups.set_seq(tags::FRAME_CONTENT_SEQUENCE, vec![content]);
    groups.set_seq(tags::PLANE_POSITION_SEQUENCE, vec![position]);
    groups.set_seq(tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![identification]);
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
                segment: 0,
                slice: 0,
            },
            Frame {
                segment: 0,
                slice: 1,
            },
        ];
        let packed = pack_frames(&frames, &seg, 9);
        assert_eq!(packed, vec![0b0000_0001, 0b0000_0010, 0b0000_0010, 0]);
    }

    #[test]
    fn position_indices_count_used_slices_only() {
        let frames = [
            Frame {
                segment: 0,
                slice: 3,
            },
            Frame {
                segment: 1,
                slice: 1,
            },
            Frame {
                segment: 1,
                slice: 3,
            },
        ];
        assert_eq!(position_indices(&frames, 5), vec![0, 1, 0, 2, 0]);
    }
}
