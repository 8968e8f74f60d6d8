//! Measurements of one segment on the source volume (being written).

/// What the worker measures for each segment and reports in the TID 1500 SR.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentMeasurements {
    /// Volume in millilitres (voxel count times voxel volume).
    pub volume_ml: f64,
    pub voxel_count: u64,
    /// Number of 26-connected components.
    pub components: u32,
    /// Longest distance between two voxel centres of the segment, in mm.
    pub max_diameter_3d_mm: f64,
    /// Longest distance between two voxel centres within one slice, in mm.
    pub max_diameter_inplane_mm: f64,
    /// Source intensity (HU for CT) over the segment's voxels.
    pub mean: f64,
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
}
