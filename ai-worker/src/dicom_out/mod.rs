//! DICOM output of an analysis: the label masks as a Segmentation (PS3.3 A.51; a label map when
//! the segments do not overlap), their measurements as a Comprehensive 3D SR measurement report
//! (PS3.16 TID 1500) that points at the Segmentation and draws each segment's longest in-plane
//! diameter on its source slice, and a human-readable Encapsulated PDF report (PS3.3 A.45.1) of
//! both, all as Part 10 objects (Explicit VR Little Endian) ready for STOW-RS. Tracking
//! identifiers follow a finding of a patient across studies.
//!
//! Not here: computing masks and measurements (`inference`, `measure`), sending (STOW-RS).

mod codes;
mod color;
mod dataset;
mod report;
mod report_pdf;
mod seg;
mod sr;
mod tracking;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

use crate::model::{Code, LabelSpec};
use crate::volume::Volume;

pub use color::srgb_to_dicom_lab;
pub use report::{build_report, ReportSources, PDF_MIME_TYPE};
pub use seg::{
    build_segmentation, is_segmentation_sop_class, SegmentationType, LABEL_MAP_SEGMENTATION_STORAGE,
};
pub use sr::build_measurement_report;
pub use tracking::{
    length_tracking_identifier, tracking_identifier, tracking_uid, LENGTH_TRACKING_PREFIX,
};

/// Implementation Class UID of the file meta group of the objects written here
/// ("2.25." + a fixed UUID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.213339934935626359473400883599426622385";
/// Implementation Version Name of the file meta group (SH, at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "PACS_AI_WORKER";
/// Device Observer UID (SR) of a worker whose [`Equipment`] does not name its own.
pub const DEFAULT_DEVICE_OBSERVER_UID: &str = "2.25.180127451616213442963580221745497136961";

/// The series the masks were computed on, with the geometry the Segmentation shares with it.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    /// Data set of one source instance (Pixel Data not needed). Its Patient and General Study
    /// module attributes (PatientName, PatientID, PatientBirthDate, PatientSex,
    /// StudyInstanceUID, StudyDate, StudyTime, StudyID, AccessionNumber,
    /// ReferringPhysicianName and a few optional ones) are copied into both outputs, which
    /// belong to the same Patient and Study (PS3.3 A.51.1, A.35.13.1).
    pub instance: InMemDicomObject,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// Modality of the source series ("CT", "MR"): chooses the intensity concept and unit of
    /// the report (Hounsfield units for CT).
    pub modality: String,
    pub rows: usize,
    pub columns: usize,
    /// PixelSpacing (0028,0030): row spacing first, then column spacing, in mm.
    pub pixel_spacing: [f64; 2],
    /// ImageOrientationPatient (0020,0037) shared by every slice.
    pub image_orientation_patient: [f64; 6],
    /// SliceThickness (0018,0050) in mm.
    pub slice_thickness: f64,
    /// Distance between consecutive slice centres in mm (SpacingBetweenSlices, 0018,0088).
    pub spacing_between_slices: f64,
    /// The source instances in volume order: `slices[s]` holds slice `s` of every mask.
    pub slices: Vec<SourceSlice>,
}

/// One single-frame source instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSlice {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// ImagePositionPatient (0020,0032): centre of the first voxel, LPS mm.
    pub image_position_patient: [f64; 3],
}

impl SourceSeries {
    /// The source description of an assembled volume: geometry from the volume, Patient and
    /// Study attributes from its first instance, SliceThickness from that instance when it has
    /// one (else the slice spacing).
    pub fn from_volume(volume: &Volume) -> SourceSeries {
        let g = &volume.geometry;
        let slice_thickness = volume
            .first_instance
            .get(tags::SLICE_THICKNESS)
            .and_then(|e| e.to_float64().ok())
            .filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or(g.slice_spacing);
        let r = g.row_direction;
        let c = g.column_direction;
        SourceSeries {
            instance: volume.first_instance.clone(),
            series_instance_uid: volume.series_instance_uid.clone(),
            frame_of_reference_uid: volume.frame_of_reference_uid.clone(),
            modality: volume.modality.clone(),
            rows: g.rows,
            columns: g.columns,
            pixel_spacing: g.pixel_spacing,
            image_orientation_patient: [r[0], r[1], r[2], c[0], c[1], c[2]],
            slice_thickness,
            spacing_between_slices: g.slice_spacing,
            slices: volume
                .slices
                .iter()
                .map(|s| SourceSlice {
                    sop_class_uid: s.sop_class_uid.clone(),
                    sop_instance_uid: s.sop_instance_uid.clone(),
                    image_position_patient: s.image_position_patient,
                })
                .collect(),
        }
    }

    /// Voxels of one mask: slices x rows x columns.
    pub fn voxel_count(&self) -> usize {
        self.slices.len() * self.rows * self.columns
    }
}

/// The algorithm that produced the masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Algorithm {
    /// Model name ("deepbrain", "ct-classical").
    pub name: String,
    pub version: String,
    /// Algorithm Family Code Sequence (0066,002F), from PS3.16 CID 7162: see
    /// [`Algorithm::artificial_intelligence`] and [`Algorithm::histogram_analysis`].
    pub family: Code,
    /// A hand-written (not learned) algorithm: its series are not described as "AI".
    /// Segment Algorithm Type is AUTOMATIC either way (no human took part).
    pub classical: bool,
}

impl Algorithm {
    /// CID 7162 (DCM, 123110) "Artificial Intelligence".
    pub fn artificial_intelligence() -> Code {
        dcm("123110", "Artificial Intelligence")
    }

    /// CID 7162 (DCM, 123105) "Histogram Analysis", e.g. for threshold-based classical models.
    pub fn histogram_analysis() -> Code {
        dcm("123105", "Histogram Analysis")
    }

    /// "AI SEG deepbrain 0.1" for a learned model, "SEG ct-classical 1.0" for a classical one.
    pub fn series_description(&self, kind: &str) -> String {
        let prefix = if self.classical { "" } else { "AI " };
        dataset::truncate(
            &format!("{prefix}{kind} {} {}", self.name, self.version),
            64,
        )
    }
}

/// The device that writes the objects: Enhanced General Equipment module (PS3.3 C.7.5.2) and
/// the SR's Device Observer (TID 1004).
#[derive(Debug, Clone, PartialEq)]
pub struct Equipment {
    pub manufacturer: String,
    pub model_name: String,
    pub device_serial_number: String,
    pub software_versions: String,
    /// Device Observer UID (DCM, 121012) of the report.
    pub device_observer_uid: String,
}

impl Equipment {
    /// This worker program, identified by `serial` (a worker id or host name).
    pub fn worker(serial: impl Into<String>) -> Equipment {
        Equipment {
            manufacturer: "pacs".into(),
            model_name: "pacs-ai-worker".into(),
            device_serial_number: serial.into(),
            software_versions: env!("CARGO_PKG_VERSION").into(),
            device_observer_uid: DEFAULT_DEVICE_OBSERVER_UID.into(),
        }
    }
}

/// One segment of the Segmentation: Segment Numbers follow the order of the segments given
/// to [`build_segmentation`], starting at 1.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInput<'a> {
    pub label: &'a LabelSpec,
    /// `[slice][row][col]` flattened with the column fastest, slices in the order of
    /// [`SourceSeries::slices`]; `true` inside the segment.
    pub mask: &'a [bool],
}

/// Why an output object cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("the source series has no slices")]
    NoSlices,
    #[error("invalid source geometry: {0}")]
    Geometry(String),
    #[error("the source instance has no {0}")]
    MissingAttribute(&'static str),
    #[error("no segments given")]
    NoSegments,
    #[error("{0} segments: Segment Number (US) allows at most 65535")]
    TooManySegments(usize),
    #[error(
        "segment {number} ({label}): the mask has {found} voxels, the source series {expected}"
    )]
    MaskSize {
        number: usize,
        label: String,
        found: usize,
        expected: usize,
    },
    #[error("every mask is empty: a Segmentation needs at least one frame")]
    EmptySegmentation,
    #[error("the referenced Segmentation is unusable: {0}")]
    BadSegmentation(String),
    #[error("{measurements} measurements for {segments} segments of the Segmentation")]
    MeasurementCount {
        measurements: usize,
        segments: usize,
    },
    #[error("cannot encode the object: {0}")]
    Encode(String),
}

/// The object as a Part 10 file (preamble, "DICM", File Meta group, data set in the transfer
/// syntax of its meta group: Explicit VR Little Endian for the objects built here).
pub fn to_part10_bytes(obj: &FileDicomObject<InMemDicomObject>) -> Result<Vec<u8>, OutputError> {
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| OutputError::Encode(e.to_string()))?;
    Ok(out)
}

/// Gives a built object the Series Instance UID, SOP Instance UID and Series Description a
/// caller chose (the worker derives the UIDs from its job, so that a retried job stores the same
/// instances again instead of a second copy), with its File Meta group rebuilt to match.
/// Re-identify a Segmentation before its report is built: the report refers to its UIDs.
pub fn reidentify(
    obj: FileDicomObject<InMemDicomObject>,
    series_instance_uid: &str,
    sop_instance_uid: &str,
    series_description: &str,
) -> Result<FileDicomObject<InMemDicomObject>, OutputError> {
    use dataset::DataSetExt;
    let mut ds = obj.into_inner();
    ds.set_str(tags::SERIES_INSTANCE_UID, series_instance_uid);
    ds.set_str(tags::SOP_INSTANCE_UID, sop_instance_uid);
    ds.set_str(
        tags::SERIES_DESCRIPTION,
        dataset::truncate(series_description, 64),
    );
    dataset::with_meta(ds)
}

pub(crate) fn dcm(value: &str, meaning: &str) -> Code {
    code(value, "DCM", meaning)
}

pub(crate) fn code(value: &str, scheme: &str, meaning: &str) -> Code {
    Code {
        value: value.into(),
        scheme: scheme.into(),
        meaning: meaning.into(),
    }
}

/// Attributes of the Patient, Clinical Trial Subject, General Study and Patient Study modules
/// copied from a source instance. The Type 2 ones are written empty when the source lacks them.
const PATIENT_STUDY_TYPE2: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
];
const PATIENT_STUDY_OPTIONAL: &[Tag] = &[
    tags::ISSUER_OF_PATIENT_ID,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::STUDY_DESCRIPTION,
    tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_description_names_model_and_version() {
        let mut a = Algorithm {
            name: "deepbrain".into(),
            version: "0.1".into(),
            family: Algorithm::artificial_intelligence(),
            classical: false,
        };
        assert_eq!(a.series_description("SEG"), "AI SEG deepbrain 0.1");
        a.classical = true;
        assert_eq!(a.series_description("SR"), "SR deepbrain 0.1");
    }
}
