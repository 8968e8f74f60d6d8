//! Coded concepts of the measurement report (PS3.16), as `(value, scheme, meaning)`.
//! Checked against pydicom's `codes` and highdicom's templates.

use crate::model::Code;

pub(crate) type C = (&'static str, &'static str, &'static str);

pub(crate) fn code((value, scheme, meaning): C) -> Code {
    super::code(value, scheme, meaning)
}

// Document structure: TID 1500 and the templates it includes.
pub(crate) const IMAGING_MEASUREMENT_REPORT: C = ("126000", "DCM", "Imaging Measurement Report");
pub(crate) const LANGUAGE_OF_CONTENT: C =
    ("121049", "DCM", "Language of Content Item and Descendants");
pub(crate) const ENGLISH_US: C = ("en-US", "RFC5646", "English (United States)");
pub(crate) const OBSERVER_TYPE: C = ("121005", "DCM", "Observer Type");
pub(crate) const DEVICE: C = ("121007", "DCM", "Device");
pub(crate) const DEVICE_OBSERVER_UID: C = ("121012", "DCM", "Device Observer UID");
pub(crate) const DEVICE_OBSERVER_NAME: C = ("121013", "DCM", "Device Observer Name");
pub(crate) const DEVICE_OBSERVER_MANUFACTURER: C =
    ("121014", "DCM", "Device Observer Manufacturer");
pub(crate) const DEVICE_OBSERVER_MODEL_NAME: C = ("121015", "DCM", "Device Observer Model Name");
pub(crate) const DEVICE_OBSERVER_SERIAL_NUMBER: C =
    ("121016", "DCM", "Device Observer Serial Number");
pub(crate) const PROCEDURE_REPORTED: C = ("121058", "DCM", "Procedure reported");
pub(crate) const IMAGE_LIBRARY: C = ("111028", "DCM", "Image Library");
pub(crate) const IMAGE_LIBRARY_GROUP: C = ("126200", "DCM", "Image Library Group");
pub(crate) const SOURCE: C = ("260753009", "SCT", "Source");
pub(crate) const MODALITY: C = ("121139", "DCM", "Modality");
pub(crate) const FRAME_OF_REFERENCE_UID: C = ("112227", "DCM", "Frame of Reference UID");
pub(crate) const PIXEL_DATA_ROWS: C = ("110910", "DCM", "Pixel Data Rows");
pub(crate) const PIXEL_DATA_COLUMNS: C = ("110911", "DCM", "Pixel Data Columns");
pub(crate) const HORIZONTAL_PIXEL_SPACING: C = ("111026", "DCM", "Horizontal Pixel Spacing");
pub(crate) const VERTICAL_PIXEL_SPACING: C = ("111066", "DCM", "Vertical Pixel Spacing");
pub(crate) const SLICE_THICKNESS: C = ("112225", "DCM", "Slice Thickness");
pub(crate) const SPACING_BETWEEN_SLICES: C = ("112226", "DCM", "Spacing between slices");
pub(crate) const IMAGING_MEASUREMENTS: C = ("126010", "DCM", "Imaging Measurements");
pub(crate) const MEASUREMENT_GROUP: C = ("125007", "DCM", "Measurement Group");
pub(crate) const TRACKING_IDENTIFIER: C = ("112039", "DCM", "Tracking Identifier");
pub(crate) const TRACKING_UNIQUE_IDENTIFIER: C = ("112040", "DCM", "Tracking Unique Identifier");
pub(crate) const FINDING_CATEGORY: C = ("276214006", "SCT", "Finding category");
pub(crate) const FINDING: C = ("121071", "DCM", "Finding");
pub(crate) const ALGORITHM_NAME: C = ("111001", "DCM", "Algorithm Name");
pub(crate) const ALGORITHM_VERSION: C = ("111003", "DCM", "Algorithm Version");
/// TID 1411: the segment of a Segmentation instance that is the volume of interest.
pub(crate) const REFERENCED_SEGMENT: C = ("121191", "DCM", "Referenced Segment");
pub(crate) const SOURCE_SERIES_FOR_SEGMENTATION: C =
    ("121232", "DCM", "Source series for segmentation");

// Procedure reported: CID 100 "Quantitative Diagnostic Imaging Procedure".
pub(crate) const CT_UNSPECIFIED: C = ("25045-6", "LN", "CT unspecified body region");
pub(crate) const MRI_UNSPECIFIED: C = ("25056-3", "LN", "MRI unspecified body region");
pub(crate) const PET_UNSPECIFIED: C = ("44136-0", "LN", "PET unspecified body region");
pub(crate) const IMAGING_PROCEDURE: C = ("363679005", "SCT", "Imaging procedure");

// Modality codes (CID 29).
pub(crate) const COMPUTED_TOMOGRAPHY: C = ("CT", "DCM", "Computed Tomography");
pub(crate) const MAGNETIC_RESONANCE: C = ("MR", "DCM", "Magnetic Resonance");
pub(crate) const POSITRON_EMISSION_TOMOGRAPHY: C = ("PT", "DCM", "Positron emission tomography");

// Measurements (TID 1419) and their modifiers.
pub(crate) const MEASUREMENT_METHOD: C = ("370129005", "SCT", "Measurement Method");
pub(crate) const DERIVATION: C = ("121401", "DCM", "Derivation");
/// CID 7469 "Generic Intensity and Size Measurement".
pub(crate) const VOLUME: C = ("118565006", "SCT", "Volume");
/// CID 7474 "Volume Measurement Method".
pub(crate) const SUM_OF_SEGMENTED_VOXELS: C =
    ("126030", "DCM", "Sum of segmented voxel method for volume");
/// CID 7470 "Linear Measurement": with Derivation "Maximum", the longest 3D extent.
pub(crate) const DIAMETER: C = ("81827009", "SCT", "Diameter");
/// CID 7470: the longest in-plane diameter (RECIST's long axis).
pub(crate) const LONG_AXIS: C = ("103339001", "SCT", "Long axis");
/// TID 1411 / 1501 row "Finding Site": where an anatomical finding is.
pub(crate) const FINDING_SITE: C = ("363698007", "SCT", "Finding Site");
/// CID 7180 "Abstract Multi-dimensional Image Model Component Semantic": CT intensities.
pub(crate) const ATTENUATION_COEFFICIENT: C = ("112031", "DCM", "Attenuation Coefficient");
/// CID 7180: MR intensities.
pub(crate) const MR_SIGNAL_INTENSITY: C = ("110852", "DCM", "MR signal intensity");
/// CID 7180: PET and SPECT intensities.
pub(crate) const NM_TOMOGRAPHIC_ACTIVITY: C =
    ("110821", "DCM", "Nuclear Medicine Tomographic Activity");
/// A count; what is counted is said by the unit ({voxels}, {components}). No PS3.16 context
/// group names a voxel or component count.
pub(crate) const QUANTITY: C = ("246205007", "SCT", "Quantity");
// CID 7464 "General Region of Interest Measurement Modifier".
pub(crate) const MEAN: C = ("373098007", "SCT", "Mean");
pub(crate) const STANDARD_DEVIATION: C = ("386136009", "SCT", "Standard Deviation");
pub(crate) const MINIMUM: C = ("255605001", "SCT", "Minimum");
pub(crate) const MAXIMUM: C = ("56851009", "SCT", "Maximum");

// Units (UCUM; CID 7181 where it lists them).
pub(crate) const MILLILITER: C = ("ml", "UCUM", "milliliter");
pub(crate) const MILLIMETER: C = ("mm", "UCUM", "mm");
pub(crate) const HOUNSFIELD_UNIT: C = ("[hnsf'U]", "UCUM", "Hounsfield unit");
pub(crate) const ARBITRARY_UNIT: C = ("[arb'U]", "UCUM", "arbitrary unit");
pub(crate) const BECQUEREL_PER_ML: C = ("Bq/ml", "UCUM", "Becquerels/milliliter");
pub(crate) const VOXELS: C = ("{voxels}", "UCUM", "voxels");
pub(crate) const COMPONENTS: C = ("{components}", "UCUM", "connected components");
pub(crate) const PIXELS: C = ("{pixels}", "UCUM", "pixels");

/// Private coding scheme of this worker (PS3.16 8.2: designators beginning with "99"), for the
/// one concept no standard code names: the intensity of a modality other than CT, MR, PET or
/// NM. A report that uses it declares it in its Coding Scheme Identification Sequence
/// (PS3.3 C.12.1); dciodvfy still warns about any designator outside PS3.16 Table 8-1, which
/// is why CT and MR reports use none.
pub(crate) const LOCAL_SCHEME: &str = "99PACS";
pub(crate) const LOCAL_SCHEME_NAME: &str = "pacs AI worker local codes";
pub(crate) const IMAGE_INTENSITY: C = ("INTENSITY", LOCAL_SCHEME, "Image intensity");
