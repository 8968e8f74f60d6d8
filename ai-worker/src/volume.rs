//! Volumes: the instances of one series assembled into a voxel array with the geometry of the
//! Image Plane Module (PS3.3 C.7.6.2), and the mapping of that array onto patient-aligned voxel
//! axes (RAS+ for models trained on NIfTI data) and back.
//!
//! Not here: fetching the instances (WADO-RS) and writing results (`dicom_out`).

use std::collections::HashSet;

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

/// Largest difference allowed between two instances' direction cosines.
pub const ORIENTATION_TOLERANCE: f64 = 1e-3;
/// Absolute part of the slice spacing tolerance, in mm.
pub const SPACING_TOLERANCE_MM: f64 = 0.01;
/// Relative part of the slice spacing tolerance (the larger of the two applies).
pub const SPACING_TOLERANCE_REL: f64 = 0.01;

/// Single-frame image storage SOP classes whose instances carry the Image Plane Module and can
/// be stacked into a volume.
const STACKABLE_SOP_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
];

/// Why a set of instances does not make a volume. The messages go into the job record as they are.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("a volume needs at least 2 slices, the series has {0}")]
    TooFewSlices(usize),
    #[error("instance {sop_instance_uid} is not an image: {reason}")]
    NotAnImage {
        sop_instance_uid: String,
        reason: String,
    },
    #[error("instance {sop_instance_uid}: {what} is not supported")]
    Unsupported {
        sop_instance_uid: String,
        what: String,
    },
    #[error("instance {sop_instance_uid}: missing or invalid {attribute}")]
    MissingAttribute {
        sop_instance_uid: String,
        attribute: &'static str,
    },
    #[error("instance {sop_instance_uid} has {attribute} {found}, the first instance {expected}")]
    Inconsistent {
        sop_instance_uid: String,
        attribute: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "mixed orientations: instance {sop_instance_uid} has ImageOrientationPatient {found:?}, \
         the first instance {expected:?}"
    )]
    MixedOrientation {
        sop_instance_uid: String,
        found: [f64; 6],
        expected: [f64; 6],
    },
    #[error(
        "instance {sop_instance_uid}: ImageOrientationPatient {iop:?} does not hold two \
         orthogonal unit vectors"
    )]
    BadOrientation {
        sop_instance_uid: String,
        iop: [f64; 6],
    },
    #[error("instance {sop_instance_uid} appears twice in the series")]
    DuplicateInstance { sop_instance_uid: String },
    #[error(
        "duplicate slice position: instances {first} and {second} both lie at {position_mm:.3} mm \
         along the slice normal"
    )]
    DuplicatePosition {
        first: String,
        second: String,
        position_mm: f64,
    },
    #[error(
        "missing slice(s): gap of {gap_mm:.3} mm between instances {before} and {after} where \
         the slice spacing is {spacing_mm:.3} mm (about {missing} slice(s) missing)"
    )]
    MissingSlices {
        before: String,
        after: String,
        gap_mm: f64,
        spacing_mm: f64,
        missing: usize,
    },
    #[error(
        "uneven slice spacing: gap of {gap_mm:.3} mm between instances {before} and {after} where \
         the slice spacing is {spacing_mm:.3} mm"
    )]
    UnevenSpacing {
        before: String,
        after: String,
        gap_mm: f64,
        spacing_mm: f64,
    },
    #[error(
        "instance {sop_instance_uid} lies {offset_mm:.3} mm off the slice normal through the \
         first slice (tilted or sheared stack)"
    )]
    NotStacked {
        sop_instance_uid: String,
        offset_mm: f64,
    },
    #[error(
        "instance {sop_instance_uid}: cannot decode the pixel data ({transfer_syntax}): {message}"
    )]
    Decode {
        sop_instance_uid: String,
        transfer_syntax: String,
        message: String,
    },
    #[error(
        "the slice axes are too oblique to map onto the patient axes (direction cosines \
         {0:?})"
    )]
    Oblique([[f64; 3]; 3]),
}

/// Where the voxels lie in the patient coordinate system (LPS, mm; PS3.3 C.7.6.2.1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub rows: usize,
    pub columns: usize,
    pub slices: usize,
    /// PixelSpacing (0028,0030): distance between rows, then between columns, in mm
    /// (PS3.3 10.7.1.3: row spacing comes first).
    pub pixel_spacing: [f64; 2],
    /// First triplet of ImageOrientationPatient: direction of increasing column index.
    pub row_direction: [f64; 3],
    /// Second triplet of ImageOrientationPatient: direction of increasing row index.
    pub column_direction: [f64; 3],
    /// `row_direction x column_direction`, the direction of increasing slice index.
    pub normal: [f64; 3],
    /// Distance between consecutive slices along the normal, from ImagePositionPatient (mm).
    pub slice_spacing: f64,
    /// ImagePositionPatient of slice 0: the centre of its first voxel.
    pub origin: [f64; 3],
}

impl Geometry {
    /// `[slice, row, col]` array shape.
    pub fn shape(&self) -> [usize; 3] {
        [self.slices, self.rows, self.columns]
    }

    pub fn voxel_count(&self) -> usize {
        self.slices * self.rows * self.columns
    }

    /// Voxel size along `[slice, row, col]` in mm.
    pub fn voxel_size_mm(&self) -> [f64; 3] {
        [
            self.slice_spacing,
            self.pixel_spacing[0],
            self.pixel_spacing[1],
        ]
    }

    pub fn voxel_volume_mm3(&self) -> f64 {
        self.slice_spacing * self.pixel_spacing[0] * self.pixel_spacing[1]
    }

    /// Patient position (LPS, mm) of the centre of voxel `[s, r, c]`.
    pub fn position(&self, s: f64, r: f64, c: f64) -> [f64; 3] {
        let mut p = self.origin;
        for (i, p) in p.iter_mut().enumerate() {
            *p += c * self.pixel_spacing[1] * self.row_direction[i]
                + r * self.pixel_spacing[0] * self.column_direction[i]
                + s * self.slice_spacing * self.normal[i];
        }
        p
    }

    /// Patient direction (LPS unit vector) of increasing index along `[slice, row, col]`.
    pub fn axis_directions(&self) -> [[f64; 3]; 3] {
        [self.normal, self.column_direction, self.row_direction]
    }
}

/// One source instance of the volume, in volume (sorted) order.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInfo {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub image_position_patient: [f64; 3],
    pub instance_number: Option<i32>,
}

/// One instance with its pixel data decoded and the attributes a volume needs.
#[derive(Debug, Clone)]
pub struct DecodedSlice {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub rows: usize,
    pub columns: usize,
    pub pixel_spacing: [f64; 2],
    pub image_orientation_patient: [f64; 6],
    pub image_position_patient: [f64; 3],
    pub instance_number: Option<i32>,
    /// Row-major pixels after the Modality LUT (RescaleSlope and RescaleIntercept applied).
    pub pixels: Vec<f32>,
}

/// The series as one voxel array.
#[derive(Debug, Clone)]
pub struct Volume {
    pub geometry: Geometry,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    /// Source instances, `slices[s]` being the instance of voxel slice `s`.
    pub slices: Vec<SliceInfo>,
    /// Modality values (HU for CT), `[slice][row][col]` flattened with the column fastest.
    pub voxels: Vec<f32>,
    /// The data set of the first instance given (Patient, Study and Series attributes), without
    /// its Pixel Data.
    pub first_instance: InMemDicomObject,
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let v = v.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!v.is_empty()).then(|| v.to_owned())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let v: [f64; N] = v.try_into().ok()?;
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// A readable name for the SOP classes a worker is most likely to be handed by mistake.
fn sop_class_name(uid: &str) -> String {
    let name = match uid {
        uids::BASIC_TEXT_SR_STORAGE => "Basic Text SR",
        uids::ENHANCED_SR_STORAGE => "Enhanced SR",
        uids::COMPREHENSIVE_SR_STORAGE => "Comprehensive SR",
        uids::COMPREHENSIVE3_DSR_STORAGE => "Comprehensive 3D SR",
        uids::KEY_OBJECT_SELECTION_DOCUMENT_STORAGE => "Key Object Selection Document",
        uids::SEGMENTATION_STORAGE => "Segmentation",
        uids::LABEL_MAP_SEGMENTATION_STORAGE => "Label Map Segmentation",
        uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE => {
            "Grayscale Softcopy Presentation State"
        }
        uids::RT_STRUCTURE_SET_STORAGE => "RT Structure Set",
        uids::ENCAPSULATED_PDF_STORAGE => "Encapsulated PDF",
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE => "Secondary Capture Image",
        uids::ENHANCED_CT_IMAGE_STORAGE => "Enhanced CT Image",
        uids::ENHANCED_MR_IMAGE_STORAGE => "Enhanced MR Image",
        _ => return format!("SOP Class {uid}"),
    };
    format!("{name} Storage ({uid})")
}

impl DecodedSlice {
    /// Reads the attributes and decodes the (single-frame, single-sample) pixel data of one
    /// instance; native and the compressed transfer syntaxes `dicom-pixeldata` decodes.
    pub fn from_object(obj: &FileDicomObject<InMemDicomObject>) -> Result<Self, VolumeError> {
        let sop_instance_uid = text(obj, tags::SOP_INSTANCE_UID)
            .unwrap_or_else(|| obj.meta().media_storage_sop_instance_uid().to_owned());
        let missing = |attribute| VolumeError::MissingAttribute {
            sop_instance_uid: sop_instance_uid.clone(),
            attribute,
        };
        let sop_class_uid = text(obj, tags::SOP_CLASS_UID)
            .unwrap_or_else(|| obj.meta().media_storage_sop_class_uid().to_owned());
        if obj.get(tags::PIXEL_DATA).is_none() {
            return Err(VolumeError::NotAnImage {
                sop_instance_uid,
                reason: format!("{} has no Pixel Data", sop_class_name(&sop_class_uid)),
            });
        }
        if !STACKABLE_SOP_CLASSES.contains(&sop_class_uid.as_str()) {
            return Err(VolumeError::NotAnImage {
                sop_instance_uid,
                reason: format!(
                    "{} is not a single-frame cross-sectional image (CT, MR or PET Image Storage)",
                    sop_class_name(&sop_class_uid)
                ),
            });
        }
        let frames = text(obj, tags::NUMBER_OF_FRAMES)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1);
        if frames != 1 {
            return Err(VolumeError::Unsupported {
                sop_instance_uid,
                what: format!("a multi-frame image ({frames} frames)"),
            });
        }
        let samples = obj
            .get(tags::SAMPLES_PER_PIXEL)
            .and_then(|e| e.to_int::<u16>().ok())
            .unwrap_or(1);
        if samples != 1 {
            return Err(VolumeError::Unsupported {
                sop_instance_uid,
                what: format!("a colour image ({samples} samples per pixel)"),
            });
        }
        let rows = obj
            .get(tags::ROWS)
            .and_then(|e| e.to_int::<u16>().ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| missing("Rows (0028,0010)"))?;
        let columns = obj
            .get(tags::COLUMNS)
            .and_then(|e| e.to_int::<u16>().ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| missing("Columns (0028,0011)"))?;
        let pixel_spacing = floats::<2>(obj, tags::PIXEL_SPACING)
            .filter(|v| v[0] > 0.0 && v[1] > 0.0)
            .ok_or_else(|| missing("PixelSpacing (0028,0030)"))?;
        let image_orientation_patient = floats::<6>(obj, tags::IMAGE_ORIENTATION_PATIENT)
            .ok_or_else(|| missing("ImageOrientationPatient (0020,0037)"))?;
        let image_position_patient = floats::<3>(obj, tags::IMAGE_POSITION_PATIENT)
            .ok_or_else(|| missing("ImagePositionPatient (0020,0032)"))?;
        let frame_of_reference_uid = text(obj, tags::FRAME_OF_REFERENCE_UID)
            .ok_or_else(|| missing("FrameOfReferenceUID (0020,0052)"))?;
        let series_instance_uid = text(obj, tags::SERIES_INSTANCE_UID)
            .ok_or_else(|| missing("SeriesInstanceUID (0020,000E)"))?;
        let study_instance_uid = text(obj, tags::STUDY_INSTANCE_UID)
            .ok_or_else(|| missing("StudyInstanceUID (0020,000D)"))?;
        let modality = text(obj, tags::MODALITY).unwrap_or_default();
        let instance_number = text(obj, tags::INSTANCE_NUMBER).and_then(|v| v.parse().ok());
        // PS3.3 C.11.1.1.2: the Modality LUT is the linear RescaleSlope/RescaleIntercept here
        // (a Modality LUT Sequence would replace it, and is not supported).
        if obj.get(tags::MODALITY_LUT_SEQUENCE).is_some() {
            return Err(VolumeError::Unsupported {
                sop_instance_uid,
                what: "a Modality LUT Sequence".to_owned(),
            });
        }
        let slope = text(obj, tags::RESCALE_SLOPE)
            .map(|v| v.parse::<f64>())
            .transpose()
            .map_err(|_| missing("RescaleSlope (0028,1053)"))?
            .unwrap_or(1.0);
        let intercept = text(obj, tags::RESCALE_INTERCEPT)
            .map(|v| v.parse::<f64>())
            .transpose()
            .map_err(|_| missing("RescaleIntercept (0028,1052)"))?
            .unwrap_or(0.0);

        let decode_error = |message: String| VolumeError::Decode {
            sop_instance_uid: sop_instance_uid.clone(),
            transfer_syntax: transfer_syntax_name(obj.meta().transfer_syntax()),
            message,
        };
        let decoded = obj
            .decode_pixel_data()
            .map_err(|e| decode_error(error_chain(&e)))?;
        let raw: Vec<f32> = decoded
            .to_vec_frame_with_options(
                0,
                &ConvertOptions::new().with_modality_lut(ModalityLutOption::None),
            )
            .map_err(|e| decode_error(error_chain(&e)))?;
        let expected = usize::from(rows) * usize::from(columns);
        if raw.len() != expected {
            return Err(decode_error(format!(
                "{} samples decoded, {expected} expected",
                raw.len()
            )));
        }
        let pixels = if slope == 1.0 && intercept == 0.0 {
            raw
        } else {
            raw.into_iter()
                .map(|v| (f64::from(v) * slope + intercept) as f32)
                .collect()
        };
        Ok(DecodedSlice {
            sop_class_uid,
            sop_instance_uid,
            study_instance_uid,
            series_instance_uid,
            frame_of_reference_uid,
            modality,
            rows: usize::from(rows),
            columns: usize::from(columns),
            pixel_spacing,
            image_orientation_patient,
            image_position_patient,
            instance_number,
            pixels,
        })
    }
}

/// An error with its sources, "outer: inner: innermost".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn transfer_syntax_name(uid: &str) -> String {
    let uid = uid.trim_end_matches('\0');
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{} {uid}", ts.name()),
        None => format!("Transfer Syntax {uid}"),
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalised(a: [f64; 3]) -> [f64; 3] {
    let n = dot(a, a).sqrt();
    [a[0] / n, a[1] / n, a[2] / n]
}

impl Volume {
    /// Decodes and stacks the instances of one series (any order).
    pub fn from_instances(
        instances: Vec<FileDicomObject<InMemDicomObject>>,
    ) -> Result<Volume, VolumeError> {
        if instances.len() < 2 {
            // still report a non-image first: it says more than the count
            if let Some(obj) = instances.first() {
                DecodedSlice::from_object(obj)?;
            }
            return Err(VolumeError::TooFewSlices(instances.len()));
        }
        let mut first_instance = None;
        let mut slices = Vec::with_capacity(instances.len());
        for obj in instances {
            slices.push(DecodedSlice::from_object(&obj)?);
            if first_instance.is_none() {
                let mut ds = obj.into_inner();
                ds.remove_element(tags::PIXEL_DATA);
                first_instance = Some(ds);
            }
        }
        let first_instance = first_instance.expect("at least two instances");
        Volume::from_decoded(slices, first_instance)
    }

    /// Stacks decoded slices: checks that they form one regular volume, sorts them along the
    /// slice normal and derives the slice spacing from ImagePositionPatient.
    pub fn from_decoded(
        slices: Vec<DecodedSlice>,
        first_instance: InMemDicomObject,
    ) -> Result<Volume, VolumeError> {
        if slices.len() < 2 {
            return Err(VolumeError::TooFewSlices(slices.len()));
        }
        let first = &slices[0];
        let iop = first.image_orientation_patient;
        let row_direction = [iop[0], iop[1], iop[2]];
        let column_direction = [iop[3], iop[4], iop[5]];
        let unit = |v: [f64; 3]| (dot(v, v).sqrt() - 1.0).abs() < 1e-2;
        if !unit(row_direction)
            || !unit(column_direction)
            || dot(row_direction, column_direction).abs() > 1e-2
        {
            return Err(VolumeError::BadOrientation {
                sop_instance_uid: first.sop_instance_uid.clone(),
                iop,
            });
        }
        let row_direction = normalised(row_direction);
        let column_direction = normalised(column_direction);
        // PS3.3 C.7.6.2.1.1: the cross product of the row and column direction cosines is the
        // normal of the image plane; slices are ordered by their position along it.
        let normal = normalised(cross(row_direction, column_direction));

        let mut seen = HashSet::new();
        for s in &slices {
            let inconsistent = |attribute, found: String, expected: String| {
                Err(VolumeError::Inconsistent {
                    sop_instance_uid: s.sop_instance_uid.clone(),
                    attribute,
                    found,
                    expected,
                })
            };
            if !seen.insert(s.sop_instance_uid.as_str()) {
                return Err(VolumeError::DuplicateInstance {
                    sop_instance_uid: s.sop_instance_uid.clone(),
                });
            }
            if s.series_instance_uid != first.series_instance_uid {
                return inconsistent(
                    "SeriesInstanceUID",
                    s.series_instance_uid.clone(),
                    first.series_instance_uid.clone(),
                );
            }
            if s.study_instance_uid != first.study_instance_uid {
                return inconsistent(
                    "StudyInstanceUID",
                    s.study_instance_uid.clone(),
                    first.study_instance_uid.clone(),
                );
            }
            if s.frame_of_reference_uid != first.frame_of_reference_uid {
                return inconsistent(
                    "FrameOfReferenceUID",
                    s.frame_of_reference_uid.clone(),
                    first.frame_of_reference_uid.clone(),
                );
            }
            if (s.rows, s.columns) != (first.rows, first.columns) {
                return inconsistent(
                    "Rows/Columns",
                    format!("{}x{}", s.rows, s.columns),
                    format!("{}x{}", first.rows, first.columns),
                );
            }
            let spacing_tol = |a: f64, b: f64| (a - b).abs() <= 1e-3 * a.abs().max(b.abs());
            if !spacing_tol(s.pixel_spacing[0], first.pixel_spacing[0])
                || !spacing_tol(s.pixel_spacing[1], first.pixel_spacing[1])
            {
                return inconsistent(
                    "PixelSpacing",
                    format!("{:?}", s.pixel_spacing),
                    format!("{:?}", first.pixel_spacing),
                );
            }
            let differs = s
                .image_orientation_patient
                .iter()
                .zip(&iop)
                .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE);
            if differs {
                return Err(VolumeError::MixedOrientation {
                    sop_instance_uid: s.sop_instance_uid.clone(),
                    found: s.image_orientation_patient,
                    expected: iop,
                });
            }
        }

        let mut order: Vec<(f64, usize)> = slices
            .iter()
            .enumerate()
            .map(|(i, s)| (dot(s.image_position_patient, normal), i))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        let uid = |k: usize| slices[order[k].1].sop_instance_uid.clone();
        let mut gaps = Vec::with_capacity(order.len() - 1);
        for k in 1..order.len() {
            let gap = order[k].0 - order[k - 1].0;
            if gap < SPACING_TOLERANCE_MM {
                return Err(VolumeError::DuplicatePosition {
                    first: uid(k - 1),
                    second: uid(k),
                    position_mm: order[k].0,
                });
            }
            gaps.push(gap);
        }
        let mut sorted_gaps = gaps.clone();
        sorted_gaps.sort_by(f64::total_cmp);
        let nominal = sorted_gaps[sorted_gaps.len() / 2];
        let tolerance = |spacing: f64| SPACING_TOLERANCE_MM.max(SPACING_TOLERANCE_REL * spacing);
        for (k, &gap) in gaps.iter().enumerate() {
            if (gap - nominal).abs() <= tolerance(nominal) {
                continue;
            }
            let multiple = (gap / nominal).round();
            if multiple >= 2.0 && (gap - multiple * nominal).abs() <= tolerance(multiple * nominal)
            {
                return Err(VolumeError::MissingSlices {
                    before: uid(k),
                    after: uid(k + 1),
                    gap_mm: gap,
                    spacing_mm: nominal,
                    missing: multiple as usize - 1,
                });
            }
            return Err(VolumeError::UnevenSpacing {
                before: uid(k),
                after: uid(k + 1),
                gap_mm: gap,
                spacing_mm: nominal,
            });
        }
        let n = order.len();
        let slice_spacing = (order[n - 1].0 - order[0].0) / (n - 1) as f64;
        let origin = slices[order[0].1].image_position_patient;
        // every position must lie on the normal through the first one (no gantry tilt / shear)
        for &(along, i) in &order {
            let p = slices[i].image_position_patient;
            let d = along - order[0].0;
            let off = [
                p[0] - origin[0] - d * normal[0],
                p[1] - origin[1] - d * normal[1],
                p[2] - origin[2] - d * normal[2],
            ];
            let offset_mm = dot(off, off).sqrt();
            if offset_mm > tolerance(first.pixel_spacing[0].min(first.pixel_spacing[1])) {
                return Err(VolumeError::NotStacked {
                    sop_instance_uid: slices[i].sop_instance_uid.clone(),
                    offset_mm,
                });
            }
        }

        let geometry = Geometry {
            rows: first.rows,
            columns: first.columns,
            slices: n,
            pixel_spacing: first.pixel_spacing,
            row_direction,
            column_direction,
            normal,
            slice_spacing,
            origin,
        };
        let study_instance_uid = first.study_instance_uid.clone();
        let series_instance_uid = first.series_instance_uid.clone();
        let frame_of_reference_uid = first.frame_of_reference_uid.clone();
        let modality = first.modality.clone();
        let mut slices: Vec<Option<DecodedSlice>> = slices.into_iter().map(Some).collect();
        let mut voxels = Vec::with_capacity(geometry.voxel_count());
        let mut infos = Vec::with_capacity(n);
        for &(_, i) in &order {
            let s = slices[i].take().expect("each index sorted once");
            voxels.extend_from_slice(&s.pixels);
            infos.push(SliceInfo {
                sop_class_uid: s.sop_class_uid,
                sop_instance_uid: s.sop_instance_uid,
                image_position_patient: s.image_position_patient,
                instance_number: s.instance_number,
            });
        }
        Ok(Volume {
            geometry,
            study_instance_uid,
            series_instance_uid,
            frame_of_reference_uid,
            modality,
            slices: infos,
            voxels,
            first_instance,
        })
    }

    /// `[slice, row, col]` shape of [`Volume::voxels`].
    pub fn shape(&self) -> [usize; 3] {
        self.geometry.shape()
    }

    /// A text attribute of the first instance (BodyPartExamined, SeriesDescription...).
    pub fn attribute(&self, tag: Tag) -> Option<String> {
        text(&self.first_instance, tag)
    }

    /// The mapping of this volume onto voxel axes pointing to `target` (nearest axes).
    pub fn axis_map(&self, target: [PatientDirection; 3]) -> Result<AxisMap, VolumeError> {
        AxisMap::to_directions(&self.geometry, target)
    }

    /// The voxels on RAS+ axes (the usual NIfTI orientation): the first index increases
    /// towards the patient's right, the second anterior, the third superior; the last index
    /// varies fastest. Returns the map, whose [`AxisMap::to_source`] brings masks back.
    pub fn to_ras(&self) -> Result<(AxisMap, Vec<f32>), VolumeError> {
        let map = self.axis_map(PatientDirection::RAS)?;
        let data = map.from_source(&self.voxels);
        Ok((map, data))
    }
}

/// A patient direction, as the letters of PS3.3 C.7.6.1.1.1 (Patient Orientation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PatientDirection {
    /// Towards the patient's left: +x in DICOM's LPS patient coordinates.
    L,
    R,
    /// Posterior: +y in LPS.
    P,
    A,
    /// Head: +z in LPS.
    S,
    I,
}

impl PatientDirection {
    /// NIfTI's RAS+ voxel axes.
    pub const RAS: [PatientDirection; 3] = [Self::R, Self::A, Self::S];
    /// DICOM's patient axes.
    pub const LPS: [PatientDirection; 3] = [Self::L, Self::P, Self::S];

    /// The LPS axis (0 = x, 1 = y, 2 = z) and the sign of this direction along it.
    fn lps_axis(self) -> (usize, f64) {
        match self {
            Self::L => (0, 1.0),
            Self::R => (0, -1.0),
            Self::P => (1, 1.0),
            Self::A => (1, -1.0),
            Self::S => (2, 1.0),
            Self::I => (2, -1.0),
        }
    }
}

/// A permutation and flips of the `[slice, row, col]` axes: `mapped[i][j][k]` (last index
/// fastest) is a voxel of the source array, with no interpolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisMap {
    /// For each mapped axis, the source axis (0 = slice, 1 = row, 2 = col) it runs along.
    pub source_axis: [usize; 3],
    /// For each mapped axis, whether it runs against its source axis.
    pub flip: [bool; 3],
    /// `[slice, row, col]` shape of the source.
    pub source_shape: [usize; 3],
}

impl AxisMap {
    /// The source order itself (a model fed the array as stored).
    pub fn identity(source_shape: [usize; 3]) -> AxisMap {
        AxisMap {
            source_axis: [0, 1, 2],
            flip: [false; 3],
            source_shape,
        }
    }

    /// Picks for each target direction the volume axis closest to it (largest direction
    /// cosine), flipped when it points the other way, as nibabel's `as_closest_canonical` does.
    pub fn to_directions(
        geometry: &Geometry,
        target: [PatientDirection; 3],
    ) -> Result<AxisMap, VolumeError> {
        let dirs = geometry.axis_directions();
        let dominant = dirs.map(|d| {
            (0..3)
                .max_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()))
                .unwrap_or(0)
        });
        let mut used = [false; 3];
        let mut source_axis = [0; 3];
        let mut flip = [false; 3];
        for (t, direction) in target.iter().enumerate() {
            let (lps, sign) = direction.lps_axis();
            let Some(a) = (0..3).find(|&a| dominant[a] == lps) else {
                return Err(VolumeError::Oblique(dirs));
            };
            if used[a] {
                return Err(VolumeError::Oblique(dirs));
            }
            used[a] = true;
            source_axis[t] = a;
            flip[t] = dirs[a][lps] * sign < 0.0;
        }
        Ok(AxisMap {
            source_axis,
            flip,
            source_shape: geometry.shape(),
        })
    }

    /// Whether the mapping is the source order itself.
    pub fn is_identity(&self) -> bool {
        self.source_axis == [0, 1, 2] && self.flip == [false; 3]
    }

    /// Shape of the mapped array.
    pub fn shape(&self) -> [usize; 3] {
        self.source_axis.map(|a| self.source_shape[a])
    }

    /// Voxel size (mm) along the mapped axes.
    pub fn spacing(&self, geometry: &Geometry) -> [f64; 3] {
        let size = geometry.voxel_size_mm();
        self.source_axis.map(|a| size[a])
    }

    /// Source offset of mapped voxel 0 and source stride of each mapped axis (signed).
    fn strides(&self) -> (isize, [isize; 3]) {
        let [_, rows, cols] = self.source_shape;
        let source_stride = [(rows * cols) as isize, cols as isize, 1];
        let mut offset = 0isize;
        let mut stride = [0isize; 3];
        for ((stride, &a), &flip) in stride.iter_mut().zip(&self.source_axis).zip(&self.flip) {
            if flip {
                offset += (self.source_shape[a] as isize - 1) * source_stride[a];
                *stride = -source_stride[a];
            } else {
                *stride = source_stride[a];
            }
        }
        (offset, stride)
    }

    fn for_each_pair(&self, mut f: impl FnMut(usize, usize)) {
        let [n0, n1, n2] = self.shape();
        let (offset, stride) = self.strides();
        let mut m = 0;
        for i in 0..n0 {
            let si = offset + i as isize * stride[0];
            for j in 0..n1 {
                let sj = si + j as isize * stride[1];
                for k in 0..n2 {
                    f(m, (sj + k as isize * stride[2]) as usize);
                    m += 1;
                }
            }
        }
    }

    /// The source array (`[slice][row][col]`) on the mapped axes.
    pub fn from_source<T: Copy>(&self, source: &[T]) -> Vec<T> {
        assert_eq!(source.len(), self.source_shape.iter().product::<usize>());
        let mut out = Vec::with_capacity(source.len());
        self.for_each_pair(|_, s| out.push(source[s]));
        out
    }

    /// A mapped array (a mask) back on the source `[slice][row][col]` axes.
    pub fn to_source<T: Copy + Default>(&self, mapped: &[T]) -> Vec<T> {
        assert_eq!(mapped.len(), self.source_shape.iter().product::<usize>());
        let mut out = vec![T::default(); mapped.len()];
        self.for_each_pair(|m, s| out[s] = mapped[m]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(iop: [f64; 6], shape: [usize; 3]) -> Geometry {
        let r = [iop[0], iop[1], iop[2]];
        let c = [iop[3], iop[4], iop[5]];
        Geometry {
            slices: shape[0],
            rows: shape[1],
            columns: shape[2],
            pixel_spacing: [1.0, 1.0],
            row_direction: r,
            column_direction: c,
            normal: cross(r, c),
            slice_spacing: 1.0,
            origin: [0.0; 3],
        }
    }

    #[test]
    fn axial_to_ras_matches_the_deepbrain_reference_formula() {
        // reference/README.md: dicom[s, r, c] = nifti_las[c, 40 - r, s]; RAS+ flips i as well,
        // so ras[i, j, k] = dicom[k, 40 - j, 32 - i].
        let g = geometry([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [25, 41, 33]);
        let map = AxisMap::to_directions(&g, PatientDirection::RAS).unwrap();
        assert_eq!(map.shape(), [33, 41, 25]);
        let src: Vec<u32> = (0..25 * 41 * 33).collect();
        let ras = map.from_source(&src);
        let at = |s: usize, r: usize, c: usize| src[(s * 41 + r) * 33 + c];
        for (i, j, k) in [(0, 0, 0), (5, 7, 9), (32, 40, 24), (1, 40, 3)] {
            assert_eq!(ras[(i * 41 + j) * 25 + k], at(k, 40 - j, 32 - i));
        }
        assert_eq!(map.to_source(&ras), src);
    }

    #[test]
    fn sagittal_and_coronal_map_onto_ras() {
        // sagittal: rows run anterior->posterior (+y), columns head->feet (-z)
        let g = geometry([0.0, 1.0, 0.0, 0.0, 0.0, -1.0], [4, 5, 6]);
        let map = AxisMap::to_directions(&g, PatientDirection::RAS).unwrap();
        // normal = (0,1,0) x (0,0,-1) = (-1, 0, 0): slices run towards the right
        assert_eq!(map.source_axis, [0, 2, 1]);
        assert_eq!(map.flip, [false, true, true]);
        let src: Vec<u32> = (0..120).collect();
        assert_eq!(map.to_source(&map.from_source(&src)), src);
        // an oblique plane between two axes is refused
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let g = geometry([s, s, 0.0, -s, s, 0.0], [4, 5, 6]);
        assert!(AxisMap::to_directions(&g, PatientDirection::RAS).is_err());
    }
}
