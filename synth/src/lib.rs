//! Deterministic synthetic DICOM studies (CT chest and MR brain phantoms) for tests, demos
//! and load generation: every UID, name, date and pixel derives from a seed, so the same
//! options always produce byte-identical files, and the CT phantom has analytic volumes.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use dicom_core::value::{PrimitiveValue, C};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// In-plane pixel spacing of synthetic CT images (360 mm field of view at 512 columns).
pub const CT_PIXEL_SPACING_MM: f64 = 0.703125;
/// Distance between synthetic CT slices, also written as SliceThickness.
pub const CT_SLICE_SPACING_MM: f64 = 1.25;
/// In-plane pixel spacing of synthetic MR images (240 mm field of view at 256 columns).
pub const MR_PIXEL_SPACING_MM: f64 = 0.9375;
/// Distance between synthetic MR slices, also written as SliceThickness.
pub const MR_SLICE_SPACING_MM: f64 = 5.0;
/// Manufacturer (0008,0070) written into every synthetic instance.
pub const SYNTH_MANUFACTURER: &str = "PACS-SYNTH";

/// RescaleIntercept of the synthetic CT images: HU = stored value - 1024.
const CT_RESCALE_INTERCEPT: i32 = -1024;
/// Largest stored value with BitsStored 12.
const MAX_STORED: i32 = 4095;
const IMPLEMENTATION_VERSION_NAME: &str = "PACS_SYNTH_1";

// ---------------------------------------------------------------------------------------
// Options, results and errors
// ---------------------------------------------------------------------------------------

/// Modality of the synthetic study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthModality {
    /// CT chest (CT Image Storage).
    Ct,
    /// MR brain (MR Image Storage).
    Mr,
}

impl SynthModality {
    /// The DICOM Modality code ("CT" or "MR").
    pub fn as_str(self) -> &'static str {
        match self {
            SynthModality::Ct => "CT",
            SynthModality::Mr => "MR",
        }
    }

    /// The storage SOP class UID written for this modality.
    pub fn sop_class_uid(self) -> &'static str {
        match self {
            SynthModality::Ct => uids::CT_IMAGE_STORAGE,
            SynthModality::Mr => uids::MR_IMAGE_STORAGE,
        }
    }
}

impl fmt::Display for SynthModality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SynthModality {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "CT" => Ok(SynthModality::Ct),
            "MR" => Ok(SynthModality::Mr),
            _ => Err(SynthError::UnknownModality(s.to_owned())),
        }
    }
}

/// What to synthesise and where to put it.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Number of studies (one synthetic patient per study).
    pub studies: usize,
    /// Number of series in every study.
    pub series_per_study: usize,
    /// Number of slices (instances) in every series.
    pub slices: usize,
    /// CT chest or MR brain.
    pub modality: SynthModality,
    /// Image rows.
    pub rows: u16,
    /// Image columns.
    pub columns: u16,
    /// Seed from which all UIDs, names, dates and identifiers derive.
    pub seed: u64,
    /// Output directory; files go to `out/<study>/<series>/IM<nnnn>.dcm`
    /// (0-based study and series indices, 1-based zero-padded instance number).
    pub out: PathBuf,
    /// Study Date of every study (YYYYMMDD) instead of one derived from the seed. The
    /// patients stay those of the seed, and the UIDs derive from the date too: the same seed
    /// with several dates gives the same patients scanned again (follow-up studies).
    pub study_date: Option<String>,
    /// Linear scale of the CT phantom's lungs (each semi-axis), so that follow-up studies
    /// show a structure that grows or shrinks: the lung volume scales with its cube. 1 is the
    /// standard phantom; (0.3, 1.2] keeps the lungs apart and inside the body.
    pub lung_scale: f64,
}

impl SynthOptions {
    /// Defaults for a modality: one study with one series; CT 512x512 with 100 slices,
    /// MR 256x256 with 30 slices; seed 0; output directory `synth`.
    pub fn new(modality: SynthModality) -> Self {
        let (size, slices) = match modality {
            SynthModality::Ct => (512, 100),
            SynthModality::Mr => (256, 30),
        };
        SynthOptions {
            studies: 1,
            series_per_study: 1,
            slices,
            modality,
            rows: size,
            columns: size,
            seed: 0,
            out: PathBuf::from("synth"),
            study_date: None,
            lung_scale: 1.0,
        }
    }

    /// In-plane pixel spacing (mm) used for this modality.
    pub fn pixel_spacing_mm(&self) -> f64 {
        match self.modality {
            SynthModality::Ct => CT_PIXEL_SPACING_MM,
            SynthModality::Mr => MR_PIXEL_SPACING_MM,
        }
    }

    /// Slice spacing (mm) used for this modality; equal to SliceThickness.
    pub fn slice_spacing_mm(&self) -> f64 {
        match self.modality {
            SynthModality::Ct => CT_SLICE_SPACING_MM,
            SynthModality::Mr => MR_SLICE_SPACING_MM,
        }
    }

    /// ImagePositionPatient (LPS, mm) of slice `index` (0-based; InstanceNumber - 1).
    /// The volume is centred on the origin and z decreases by the slice spacing per slice.
    pub fn image_position_patient(&self, index: usize) -> [f64; 3] {
        Geometry::new(self).position(index)
    }

    /// The CT phantom matching these options' volume (meaningful for CT).
    pub fn ct_phantom(&self) -> CtPhantom {
        let mut phantom = CtPhantom::for_volume(
            self.columns,
            self.rows,
            self.pixel_spacing_mm(),
            self.slices,
            self.slice_spacing_mm(),
        );
        for lung in &mut phantom.lungs {
            for axis in &mut lung.semi_axes_mm {
                *axis *= self.lung_scale;
            }
        }
        phantom
    }
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions::new(SynthModality::Ct)
    }
}

/// One written instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthInstance {
    /// Path of the written file.
    pub path: PathBuf,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// SOP Instance UID (0008,0018), also the Media Storage SOP Instance UID.
    pub sop_instance_uid: String,
}

/// Everything [`synthesise`] wrote.
#[derive(Debug, Clone, Default)]
pub struct SynthSummary {
    /// Instances in write order (study, series, slice).
    pub instances: Vec<SynthInstance>,
    /// Total size of the written files in bytes.
    pub bytes: u64,
}

/// Errors of [`synthesise`] and of parsing a [`SynthModality`].
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A modality string other than CT or MR.
    #[error("unknown synthetic modality {0:?} (expected CT or MR)")]
    UnknownModality(String),
    /// Options that cannot produce valid images.
    #[error("invalid synthesis options: {0}")]
    InvalidOptions(String),
    /// Creating an output directory failed.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Reading back a written file's size failed.
    #[error("cannot stat {}: {source}", path.display())]
    Stat {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Building the file meta group failed.
    #[error("cannot build the file meta group for {}: {source}", path.display())]
    Meta {
        /// The file that was about to be written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dicom_object::WithMetaError>,
    },
    /// Encoding or writing the DICOM file failed.
    #[error("cannot write DICOM file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dicom_object::WriteError>,
    },
}

// ---------------------------------------------------------------------------------------
// Deterministic hashing and UIDs
// ---------------------------------------------------------------------------------------

/// SHA-256 of the seed and the length-prefixed parts (unambiguous for any parts).
fn seeded_digest(seed: u64, parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"pacs-synth\0");
    ctx.update(&seed.to_be_bytes());
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A deterministic 64-bit value for the seed and parts.
fn seeded_u64(seed: u64, parts: &[&str]) -> u64 {
    let d = seeded_digest(seed, parts);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// A deterministic UID under the `2.25` arc: the decimal form of a 128-bit integer taken
/// from SHA-256 of the seed and the parts, shaped as a version-8 (custom) UUID.
/// The result has at most 44 characters, only digits and dots, and no leading zeros.
pub fn uid_from_seed(seed: u64, parts: &[&str]) -> String {
    let d = seeded_digest(seed, parts);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // UUID version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    format!("2.25.{}", u128::from_be_bytes(b))
}

fn implementation_class_uid() -> String {
    uid_from_seed(0, &["pacs-synth", "implementation-class-uid"])
}

/// Fast integer mixer (SplitMix64 finaliser) for per-pixel noise.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Position quantised to 0.01 mm, so noise does not depend on float round-off.
fn quantise(v: f64) -> u64 {
    (v * 100.0).round() as i64 as u64
}

/// Deterministic integer noise in `-amplitude..=amplitude` for a point (mm).
fn point_noise(amplitude: i32, salt: u64, x: u64, y: u64, z: u64) -> i32 {
    if amplitude <= 0 {
        return 0;
    }
    let h = mix64(x ^ mix64(y ^ mix64(z ^ salt)));
    (h % (2 * amplitude as u64 + 1)) as i32 - amplitude
}

// ---------------------------------------------------------------------------------------
// Geometry shared by writer and phantoms
// ---------------------------------------------------------------------------------------

/// An axis-aligned ellipsoid in patient coordinates (LPS, mm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ellipsoid {
    /// Centre (x, y, z) in mm.
    pub centre_mm: [f64; 3],
    /// Semi-axes along x, y, z in mm.
    pub semi_axes_mm: [f64; 3],
}

impl Ellipsoid {
    /// Analytic volume in millilitres (cm³).
    pub fn volume_ml(&self) -> f64 {
        let [a, b, c] = self.semi_axes_mm;
        4.0 / 3.0 * std::f64::consts::PI * a * b * c / 1000.0
    }

    /// Whether the point lies inside (or on) the ellipsoid.
    pub fn contains(&self, x: f64, y: f64, z: f64) -> bool {
        self.in_plane(x, y) + self.z_term(z) <= 1.0
    }

    fn z_term(&self, z: f64) -> f64 {
        let dz = (z - self.centre_mm[2]) / self.semi_axes_mm[2];
        dz * dz
    }

    fn in_plane(&self, x: f64, y: f64) -> f64 {
        let dx = (x - self.centre_mm[0]) / self.semi_axes_mm[0];
        let dy = (y - self.centre_mm[1]) / self.semi_axes_mm[1];
        dx * dx + dy * dy
    }
}

/// Pixel and slice placement of a synthetic volume.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    rows: usize,
    columns: usize,
    slices: usize,
    pixel_spacing: f64,
    slice_spacing: f64,
}

impl Geometry {
    fn new(opts: &SynthOptions) -> Self {
        Geometry {
            rows: usize::from(opts.rows),
            columns: usize::from(opts.columns),
            slices: opts.slices,
            pixel_spacing: opts.pixel_spacing_mm(),
            slice_spacing: opts.slice_spacing_mm(),
        }
    }

    fn x0(&self) -> f64 {
        -(self.columns as f64 - 1.0) * 0.5 * self.pixel_spacing
    }

    fn y0(&self) -> f64 {
        -(self.rows as f64 - 1.0) * 0.5 * self.pixel_spacing
    }

    fn z(&self, index: usize) -> f64 {
        ((self.slices as f64 - 1.0) * 0.5 - index as f64) * self.slice_spacing
    }

    fn position(&self, index: usize) -> [f64; 3] {
        [self.x0(), self.y0(), self.z(index)]
    }

    /// Fill `out` (row-major) with `f(x, y)` at every pixel centre of a slice.
    fn fill(&self, out: &mut [u16], mut f: impl FnMut(f64, f64) -> u16) {
        let (x0, y0) = (self.x0(), self.y0());
        for (r, row) in out.chunks_exact_mut(self.columns).enumerate() {
            let y = y0 + r as f64 * self.pixel_spacing;
            for (c, px) in row.iter_mut().enumerate() {
                *px = f(x0 + c as f64 * self.pixel_spacing, y);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// CT chest phantom
// ---------------------------------------------------------------------------------------

/// Tissue classes of the CT phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtTissue {
    /// Outside the body (-1000 HU).
    Air,
    /// Subcutaneous fat layer (-100 HU).
    Fat,
    /// Body soft tissue (40 HU).
    SoftTissue,
    /// Heart (soft tissue, 40 HU).
    Heart,
    /// Lung parenchyma (-850 HU).
    Lung,
    /// Vertebral body (700 HU).
    Bone,
}

impl CtTissue {
    /// Nominal HU of the tissue before noise.
    pub fn nominal_hu(self) -> i32 {
        match self {
            CtTissue::Air => -1000,
            CtTissue::Fat => -100,
            CtTissue::SoftTissue | CtTissue::Heart => 40,
            CtTissue::Lung => -850,
            CtTissue::Bone => 700,
        }
    }
}

/// Analytic CT chest phantom in patient coordinates (LPS, mm: +x patient left,
/// +y posterior, +z superior), centred on the origin like the written volume.
///
/// Precedence inside the body: lung, then bone, then heart, then fat layer, then soft
/// tissue; the lungs therefore always keep their full analytic ellipsoid volume.
#[derive(Debug, Clone, PartialEq)]
pub struct CtPhantom {
    /// Semi-axes (x, y) of the body's elliptic cylinder, which runs along all z.
    pub body_semi_axes_mm: [f64; 2],
    /// Thickness of the subcutaneous fat layer inside the body outline.
    pub fat_thickness_mm: f64,
    /// Right lung (at negative x) and left lung (positive x, slightly shorter).
    pub lungs: [Ellipsoid; 2],
    /// Heart, between the lungs, slightly to the left and anterior.
    pub heart: Ellipsoid,
    /// Centre (x, y) of the vertebral bone cylinder, which runs along all z.
    pub spine_centre_mm: [f64; 2],
    /// Radius of the vertebral bone cylinder.
    pub spine_radius_mm: f64,
    /// Amplitude of the deterministic noise added by [`CtPhantom::hu_at`] (± HU).
    pub noise_hu: i32,
}

impl CtPhantom {
    /// Phantom scaled to a volume of `columns` x `rows` pixels and `slices` slices.
    /// In-plane sizes are fractions of half the smaller field of view `w`
    /// (body 0.9w x 0.625w, lungs at x = ±0.45w with semi-axes 0.3w x 0.44w);
    /// the lungs' z semi-axis is min(0.35 * slab, 2w/3), so they lie entirely within
    /// the scanned slab (for at least 4 slices).
    pub fn for_volume(
        columns: u16,
        rows: u16,
        pixel_spacing_mm: f64,
        slices: usize,
        slice_spacing_mm: f64,
    ) -> Self {
        let w = 0.5 * f64::from(columns.min(rows)) * pixel_spacing_mm;
        let slab = slices as f64 * slice_spacing_mm;
        let lung_z = (0.35 * slab).min(2.0 * w / 3.0);
        let lung = |x: f64, z_scale: f64| Ellipsoid {
            centre_mm: [x, 0.0, 0.0],
            semi_axes_mm: [0.3 * w, 0.44 * w, lung_z * z_scale],
        };
        CtPhantom {
            body_semi_axes_mm: [0.9 * w, 0.625 * w],
            fat_thickness_mm: 0.05 * w,
            lungs: [lung(-0.45 * w, 1.0), lung(0.45 * w, 0.92)],
            heart: Ellipsoid {
                centre_mm: [0.06 * w, -0.15 * w, -0.3 * lung_z],
                semi_axes_mm: [0.16 * w, 0.18 * w, (0.45 * lung_z).min(0.3 * w)],
            },
            spine_centre_mm: [0.0, 0.42 * w],
            spine_radius_mm: 0.085 * w,
            noise_hu: 10,
        }
    }

    /// Whether (x, y) lies inside the body outline (any z).
    pub fn in_body(&self, x_mm: f64, y_mm: f64) -> bool {
        let [a, b] = self.body_semi_axes_mm;
        let (u, v) = (x_mm / a, y_mm / b);
        u * u + v * v <= 1.0
    }

    /// Tissue class at a point (no noise).
    pub fn tissue_at(&self, x_mm: f64, y_mm: f64, z_mm: f64) -> CtTissue {
        self.slice(z_mm).tissue(x_mm, y_mm)
    }

    /// HU at a point: the tissue's nominal HU plus deterministic noise of at most
    /// ± [`CtPhantom::noise_hu`]. Always an integer value, exactly what the written
    /// pixel at that position decodes to.
    pub fn hu_at(&self, x_mm: f64, y_mm: f64, z_mm: f64) -> f32 {
        self.slice(z_mm).hu(x_mm, y_mm) as f32
    }

    /// Analytic volume of both lung ellipsoids in ml.
    pub fn lung_volume_ml(&self) -> f64 {
        self.lungs.iter().map(Ellipsoid::volume_ml).sum()
    }

    /// Analytic volume in ml of the body cylinder over a z extent (all tissue inside the
    /// outline, including lungs). The written slab spans `slices * slice spacing`.
    pub fn body_volume_ml(&self, z_extent_mm: f64) -> f64 {
        let [a, b] = self.body_semi_axes_mm;
        std::f64::consts::PI * a * b * z_extent_mm / 1000.0
    }

    fn slice(&self, z: f64) -> CtSlice<'_> {
        CtSlice {
            phantom: self,
            lung_z: [self.lungs[0].z_term(z), self.lungs[1].z_term(z)],
            heart_z: self.heart.z_term(z),
            qz: quantise(z),
        }
    }
}

/// The phantom restricted to one z, with the z-dependent terms precomputed.
struct CtSlice<'a> {
    phantom: &'a CtPhantom,
    lung_z: [f64; 2],
    heart_z: f64,
    qz: u64,
}

impl CtSlice<'_> {
    fn tissue(&self, x: f64, y: f64) -> CtTissue {
        let p = self.phantom;
        if !p.in_body(x, y) {
            return CtTissue::Air;
        }
        if p.lungs[0].in_plane(x, y) + self.lung_z[0] <= 1.0
            || p.lungs[1].in_plane(x, y) + self.lung_z[1] <= 1.0
        {
            return CtTissue::Lung;
        }
        let (sx, sy) = (x - p.spine_centre_mm[0], y - p.spine_centre_mm[1]);
        if sx * sx + sy * sy <= p.spine_radius_mm * p.spine_radius_mm {
            return CtTissue::Bone;
        }
        if p.heart.in_plane(x, y) + self.heart_z <= 1.0 {
            return CtTissue::Heart;
        }
        let [a, b] = p.body_semi_axes_mm;
        let (u, v) = (x / (a - p.fat_thickness_mm), y / (b - p.fat_thickness_mm));
        if u * u + v * v > 1.0 {
            CtTissue::Fat
        } else {
            CtTissue::SoftTissue
        }
    }

    fn hu(&self, x: f64, y: f64) -> i32 {
        let noise = point_noise(self.phantom.noise_hu, 0, quantise(x), quantise(y), self.qz);
        self.tissue(x, y).nominal_hu() + noise
    }
}

// ---------------------------------------------------------------------------------------
// MR head phantom (T1-weighted look)
// ---------------------------------------------------------------------------------------

struct MrHeadPhantom {
    head: Ellipsoid,
    ventricles: [Ellipsoid; 2],
}

impl MrHeadPhantom {
    fn for_geometry(g: &Geometry) -> Self {
        let w = 0.5 * g.columns.min(g.rows) as f64 * g.pixel_spacing;
        let slab = g.slices as f64 * g.slice_spacing;
        let c = (0.5 * slab).min(0.75 * w);
        let ventricle = |x: f64| Ellipsoid {
            centre_mm: [x, -0.04 * w, 0.1 * c],
            semi_axes_mm: [0.05 * w, 0.22 * w, 0.25 * c],
        };
        MrHeadPhantom {
            head: Ellipsoid {
                centre_mm: [0.0, 0.0, 0.0],
                semi_axes_mm: [0.6 * w, 0.76 * w, c],
            },
            ventricles: [ventricle(-0.07 * w), ventricle(0.07 * w)],
        }
    }

    fn fill_slice(&self, g: &Geometry, z: f64, out: &mut [u16]) {
        let head_z = self.head.z_term(z);
        let vz = [self.ventricles[0].z_term(z), self.ventricles[1].z_term(z)];
        let qz = quantise(z);
        g.fill(out, |x, y| {
            let (qx, qy) = (quantise(x), quantise(y));
            let rho2 = self.head.in_plane(x, y) + head_z;
            let base: i32 = if rho2 > 1.0 {
                // background: low Rician-like noise only
                return point_noise(6, 1, qx, qy, qz).unsigned_abs() as u16;
            } else if rho2 > 0.94 * 0.94 {
                860 // scalp fat
            } else if rho2 > 0.87 * 0.87 {
                70 // skull
            } else if rho2 > 0.84 * 0.84 {
                190 // CSF around the brain
            } else if self.ventricles[0].in_plane(x, y) + vz[0] <= 1.0
                || self.ventricles[1].in_plane(x, y) + vz[1] <= 1.0
            {
                180 // ventricles
            } else if rho2 > 0.70 * 0.70 {
                560 // grey matter
            } else {
                760 // white matter
            };
            (base + point_noise(15, 2, qx, qy, qz)).clamp(0, MAX_STORED) as u16
        });
    }
}

// ---------------------------------------------------------------------------------------
// Patient, study and series attributes
// ---------------------------------------------------------------------------------------

const FAMILY_NAMES: &[&str] = &[
    "DOE",
    "SMITH",
    "JOHNSON",
    "GARCIA",
    "MILLER",
    "NGUYEN",
    "MUELLER",
    "ROSSI",
    "TANAKA",
    "SILVA",
    "KOWALSKI",
    "JOHANSSON",
    "OKAFOR",
    "PATEL",
    "DUBOIS",
    "MURPHY",
];
const FEMALE_NAMES: &[&str] = &[
    "JANE", "MARY", "ANNA", "SOFIA", "EMMA", "LENA", "CHLOE", "MAYA", "GRACE", "IRIS",
];
const MALE_NAMES: &[&str] = &[
    "JOHN", "JAMES", "PETER", "LUCAS", "DAVID", "OMAR", "HENRY", "LEO", "MARCO", "KENJI",
];
const REFERRING_PHYSICIANS: &[&str] = &[
    "WELBY^MARCUS^^DR",
    "QUINN^MICHAELA^^DR",
    "KILDARE^JAMES^^DR",
    "ROSS^DOUGLAS^^DR",
    "BAILEY^MIRANDA^^DR",
];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a valid YYYYMMDD date.
fn days_of_date(date: &str) -> Option<i64> {
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        date[0..4].parse::<i64>().ok()?,
        date[4..6].parse::<i64>().ok()?,
        date[6..8].parse::<i64>().ok()?,
    );
    let days = days_from_civil(y, m, d);
    // a day that does not exist comes back as another date
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

fn da(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

fn tm(seconds: u64) -> String {
    let s = seconds.min(86_399);
    format!("{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[(h % list.len() as u64) as usize]
}

/// Patient and study level attributes of one synthetic study.
struct StudyInfo {
    study_index: String,
    /// What the study's UIDs derive from: its index, and its date when one was given.
    uid_key: String,
    patient_name: String,
    patient_id: String,
    birth_date: String,
    sex: &'static str,
    age: String,
    study_date_days: i64,
    study_time_s: u64,
    accession: String,
    study_id: String,
    referring: &'static str,
    study_uid: String,
    frame_of_reference_uid: String,
}

impl StudyInfo {
    fn new(seed: u64, modality: SynthModality, study: usize, date: Option<&str>) -> Self {
        let study_index = study.to_string();
        let si = study_index.as_str();
        let m = modality.as_str();
        // The patient depends on (seed, study) only: a CT and an MR synthesised with the
        // same seed share patients, as a real PACS would see them.
        let p = seeded_u64(seed, &["patient", si]);
        let female = p & 1 == 0;
        let family = pick(FAMILY_NAMES, p >> 1);
        let given = pick(if female { FEMALE_NAMES } else { MALE_NAMES }, p >> 9);
        let middle = char::from(b'A' + ((p >> 17) % 26) as u8);
        let patient_name = match (p >> 25) % 3 {
            0 => format!("{family}^{given}"),
            1 => format!("{family}^{given}^^^"),
            _ => format!("{family}^{given}^{middle}"),
        };
        let birth_days = days_from_civil(1935, 1, 1) + ((p >> 32) % (65 * 365)) as i64; // 1935..2000

        let s = seeded_u64(seed, &["study", m, si]);
        let study_date_days = date
            .and_then(days_of_date)
            .unwrap_or(days_from_civil(2018, 1, 1) + (s % 2500) as i64);
        let uid_key = match date {
            Some(d) => format!("{si}@{d}"),
            None => study_index.clone(),
        };
        let uk = uid_key.as_str();
        let study_time_s = 7 * 3600 + (s >> 16) % (11 * 3600);
        let (by, bm, bd) = civil_from_days(birth_days);
        let (sy, sm, sd) = civil_from_days(study_date_days);
        let age = sy - by - i64::from((sm, sd) < (bm, bd));

        StudyInfo {
            patient_name,
            patient_id: format!("SYN-{seed}-{study}"),
            birth_date: da(birth_days),
            sex: if female { "F" } else { "M" },
            age: format!("{:03}Y", age.clamp(0, 999)),
            study_date_days,
            study_time_s,
            accession: format!("SYN{:010}", (s >> 20) % 10_000_000_000),
            study_id: format!("{}", 10_000 + (s >> 40) % 90_000),
            referring: pick(REFERRING_PHYSICIANS, s >> 50),
            study_uid: uid_from_seed(seed, &["study-instance-uid", m, uk]),
            frame_of_reference_uid: uid_from_seed(seed, &["frame-of-reference-uid", m, uk]),
            study_index,
            uid_key,
        }
    }
}

/// Format a decimal string (DS) value within 16 characters.
fn ds(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v }; // no "-0"
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for precision in (0..=12).rev() {
        let s = format!("{v:.precision$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        };
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0}")
}

/// Small helper to fill an object without repeating element boilerplate.
struct Builder(InMemDicomObject);

impl Builder {
    fn str(&mut self, tag: Tag, vr: VR, value: &str) -> &mut Self {
        self.0
            .put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        self
    }

    fn strs(&mut self, tag: Tag, vr: VR, values: &[&str]) -> &mut Self {
        let values: C<String> = values.iter().map(|v| (*v).to_owned()).collect();
        self.0
            .put(DataElement::new(tag, vr, PrimitiveValue::Strs(values)));
        self
    }

    fn ds(&mut self, tag: Tag, values: &[f64]) -> &mut Self {
        let values: C<String> = values.iter().map(|v| ds(*v)).collect();
        self.0
            .put(DataElement::new(tag, VR::DS, PrimitiveValue::Strs(values)));
        self
    }

    fn is(&mut self, tag: Tag, value: i64) -> &mut Self {
        self.str(tag, VR::IS, &value.to_string())
    }

    fn us(&mut self, tag: Tag, value: u16) -> &mut Self {
        self.0
            .put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }

    fn empty(&mut self, tag: Tag, vr: VR) -> &mut Self {
        self.0.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        self
    }
}

/// Everything except the per-instance attributes and the pixel data.
fn series_template(
    opts: &SynthOptions,
    geometry: &Geometry,
    study: &StudyInfo,
    series: usize,
    series_uid: &str,
) -> InMemDicomObject {
    let mut b = Builder(InMemDicomObject::new_empty());
    let series_time = study.study_time_s + 120 + 300 * series as u64;
    let study_date = da(study.study_date_days);
    let series_tm = tm(series_time);
    let pixel_spacing = geometry.pixel_spacing;
    let fov = f64::from(opts.columns.max(opts.rows)) * pixel_spacing;

    b.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100")
        .str(tags::INSTANCE_CREATION_DATE, VR::DA, &study_date)
        .str(tags::INSTANCE_CREATION_TIME, VR::TM, &series_tm)
        .str(tags::SOP_CLASS_UID, VR::UI, opts.modality.sop_class_uid())
        .str(tags::STUDY_DATE, VR::DA, &study_date)
        .str(tags::SERIES_DATE, VR::DA, &study_date)
        .str(tags::ACQUISITION_DATE, VR::DA, &study_date)
        .str(tags::CONTENT_DATE, VR::DA, &study_date)
        .str(tags::STUDY_TIME, VR::TM, &tm(study.study_time_s))
        .str(tags::SERIES_TIME, VR::TM, &series_tm)
        .str(tags::ACQUISITION_TIME, VR::TM, &series_tm)
        .str(tags::CONTENT_TIME, VR::TM, &series_tm)
        .str(tags::ACCESSION_NUMBER, VR::SH, &study.accession)
        .str(tags::MODALITY, VR::CS, opts.modality.as_str())
        .str(tags::MANUFACTURER, VR::LO, SYNTH_MANUFACTURER)
        .str(tags::INSTITUTION_NAME, VR::LO, "SYNTHETIC GENERAL HOSPITAL")
        .str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, study.referring)
        .str(tags::DEVICE_SERIAL_NUMBER, VR::LO, "SYN-0001")
        .str(tags::SOFTWARE_VERSIONS, VR::LO, "pacs-synth 1")
        .str(tags::PATIENT_NAME, VR::PN, &study.patient_name)
        .str(tags::PATIENT_ID, VR::LO, &study.patient_id)
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, &study.birth_date)
        .str(tags::PATIENT_SEX, VR::CS, study.sex)
        .str(tags::PATIENT_AGE, VR::AS, &study.age)
        .ds(tags::SLICE_THICKNESS, &[geometry.slice_spacing])
        .str(tags::PATIENT_POSITION, VR::CS, "HFS")
        .str(tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid)
        .str(tags::SERIES_INSTANCE_UID, VR::UI, series_uid)
        .str(tags::STUDY_ID, VR::SH, &study.study_id)
        .is(tags::SERIES_NUMBER, series as i64 + 1)
        .is(tags::ACQUISITION_NUMBER, 1)
        .ds(
            tags::IMAGE_ORIENTATION_PATIENT,
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        )
        .str(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &study.frame_of_reference_uid,
        )
        .empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO)
        .us(tags::SAMPLES_PER_PIXEL, 1)
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .us(tags::ROWS, opts.rows)
        .us(tags::COLUMNS, opts.columns)
        .ds(tags::PIXEL_SPACING, &[pixel_spacing, pixel_spacing])
        .us(tags::BITS_ALLOCATED, 16)
        .us(tags::BITS_STORED, 12)
        .us(tags::HIGH_BIT, 11)
        .us(tags::PIXEL_REPRESENTATION, 0)
        .str(tags::BURNED_IN_ANNOTATION, VR::CS, "NO")
        .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");

    match opts.modality {
        SynthModality::Ct => {
            let lung_kernel = series % 2 == 1;
            let (description, kernel) = if lung_kernel {
                ("AXIAL 1.25MM LUNG", "LUNG")
            } else {
                ("AXIAL 1.25MM STANDARD", "STANDARD")
            };
            b.strs(tags::IMAGE_TYPE, VR::CS, &["ORIGINAL", "PRIMARY", "AXIAL"])
                .str(tags::STATION_NAME, VR::SH, "SYNTHCT01")
                .str(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST SYNTH")
                .str(tags::SERIES_DESCRIPTION, VR::LO, description)
                .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, "SYNTH CT 64")
                .str(tags::BODY_PART_EXAMINED, VR::CS, "CHEST")
                .ds(tags::KVP, &[120.0])
                .ds(tags::DATA_COLLECTION_DIAMETER, &[500.0])
                .ds(tags::RECONSTRUCTION_DIAMETER, &[fov])
                .ds(tags::GANTRY_DETECTOR_TILT, &[0.0])
                .ds(tags::TABLE_HEIGHT, &[150.0])
                .str(tags::ROTATION_DIRECTION, VR::CS, "CW")
                .is(tags::EXPOSURE_TIME, 500)
                .is(tags::X_RAY_TUBE_CURRENT, 200)
                .is(tags::EXPOSURE, 100)
                .str(tags::FILTER_TYPE, VR::SH, "BODY FILTER")
                .is(tags::GENERATOR_POWER, 24)
                .ds(tags::FOCAL_SPOTS, &[1.2])
                .str(tags::CONVOLUTION_KERNEL, VR::SH, kernel)
                .ds(tags::WINDOW_CENTER, &[40.0])
                .ds(tags::WINDOW_WIDTH, &[400.0])
                .ds(tags::RESCALE_INTERCEPT, &[f64::from(CT_RESCALE_INTERCEPT)])
                .ds(tags::RESCALE_SLOPE, &[1.0])
                .str(tags::RESCALE_TYPE, VR::LO, "HU");
        }
        SynthModality::Mr => {
            b.strs(
                tags::IMAGE_TYPE,
                VR::CS,
                &["ORIGINAL", "PRIMARY", "M", "ND"],
            )
            .str(tags::STATION_NAME, VR::SH, "SYNTHMR01")
            .str(tags::STUDY_DESCRIPTION, VR::LO, "MR BRAIN SYNTH")
            .str(tags::SERIES_DESCRIPTION, VR::LO, "T1 AX BRAIN SYNTH")
            .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, "SYNTH MR 1.5T")
            .str(tags::BODY_PART_EXAMINED, VR::CS, "BRAIN")
            .str(tags::SCANNING_SEQUENCE, VR::CS, "SE")
            .strs(tags::SEQUENCE_VARIANT, VR::CS, &["SK", "SP"])
            .empty(tags::SCAN_OPTIONS, VR::CS)
            .str(tags::MR_ACQUISITION_TYPE, VR::CS, "2D")
            .str(tags::SEQUENCE_NAME, VR::SH, "se2d1")
            .ds(tags::REPETITION_TIME, &[500.0])
            .ds(tags::ECHO_TIME, &[12.0])
            .ds(tags::NUMBER_OF_AVERAGES, &[1.0])
            .ds(tags::IMAGING_FREQUENCY, &[63.87])
            .str(tags::IMAGED_NUCLEUS, VR::SH, "1H")
            .is(tags::ECHO_NUMBERS, 1)
            .ds(tags::MAGNETIC_FIELD_STRENGTH, &[1.5])
            .ds(tags::SPACING_BETWEEN_SLICES, &[geometry.slice_spacing])
            .is(tags::ECHO_TRAIN_LENGTH, 1)
            .ds(tags::PIXEL_BANDWIDTH, &[130.0])
            .str(tags::RECEIVE_COIL_NAME, VR::SH, "HEAD")
            .str(tags::TRANSMIT_COIL_NAME, VR::SH, "BODY")
            .ds(tags::FLIP_ANGLE, &[90.0])
            .ds(tags::WINDOW_CENTER, &[500.0])
            .ds(tags::WINDOW_WIDTH, &[1000.0]);
        }
    }
    b.0
}

// ---------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------

fn validate(opts: &SynthOptions) -> Result<(), SynthError> {
    if opts.rows == 0 || opts.columns == 0 {
        return Err(SynthError::InvalidOptions(format!(
            "image size must be positive, got {}x{}",
            opts.columns, opts.rows
        )));
    }
    if !(opts.lung_scale > 0.3 && opts.lung_scale <= 1.2) {
        return Err(SynthError::InvalidOptions(format!(
            "lung scale must be in (0.3, 1.2], got {}",
            opts.lung_scale
        )));
    }
    if let Some(date) = &opts.study_date {
        if days_of_date(date).is_none() {
            return Err(SynthError::InvalidOptions(format!(
                "study date must be a date YYYYMMDD, got {date:?}"
            )));
        }
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), SynthError> {
    fs::create_dir_all(path).map_err(|source| SynthError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Write the synthetic studies described by `opts` and list what was written.
///
/// Files go to `out/<study>/<series>/IM<nnnn>.dcm` (0-based study and series
/// directories, 1-based instance number padded to four digits) in Explicit VR Little
/// Endian. The output is a pure function of the options: the same seed yields
/// byte-identical files, different seeds yield different UIDs.
pub fn synthesise(opts: &SynthOptions) -> Result<SynthSummary, SynthError> {
    validate(opts)?;
    let geometry = Geometry::new(opts);
    let implementation_uid = implementation_class_uid();
    let ct = opts.ct_phantom();
    let mr = MrHeadPhantom::for_geometry(&geometry);
    let modality = opts.modality.as_str();
    let pixels_per_slice = geometry.rows * geometry.columns;

    let mut summary = SynthSummary {
        instances: Vec::with_capacity(opts.studies * opts.series_per_study * opts.slices),
        bytes: 0,
    };
    for study_index in 0..opts.studies {
        let study = StudyInfo::new(
            opts.seed,
            opts.modality,
            study_index,
            opts.study_date.as_deref(),
        );
        for series_index in 0..opts.series_per_study {
            let series_str = series_index.to_string();
            let dir = opts.out.join(&study.study_index).join(&series_str);
            create_dir(&dir)?;
            let series_uid = uid_from_seed(
                opts.seed,
                &["series-instance-uid", modality, &study.uid_key, &series_str],
            );
            let template = series_template(opts, &geometry, &study, series_index, &series_uid);

            for slice in 0..opts.slices {
                let number = slice + 1;
                let path = dir.join(format!("IM{number:04}.dcm"));
                let sop_uid = uid_from_seed(
                    opts.seed,
                    &[
                        "sop-instance-uid",
                        modality,
                        &study.uid_key,
                        &series_str,
                        &number.to_string(),
                    ],
                );
                let position = geometry.position(slice);
                let mut pixels = vec![0u16; pixels_per_slice];
                match opts.modality {
                    SynthModality::Ct => {
                        let s = ct.slice(position[2]);
                        geometry.fill(&mut pixels, |x, y| {
                            (s.hu(x, y) - CT_RESCALE_INTERCEPT).clamp(0, MAX_STORED) as u16
                        });
                    }
                    SynthModality::Mr => mr.fill_slice(&geometry, position[2], &mut pixels),
                }

                let mut b = Builder(template.clone());
                b.str(tags::SOP_INSTANCE_UID, VR::UI, &sop_uid)
                    .is(tags::INSTANCE_NUMBER, number as i64)
                    .ds(tags::IMAGE_POSITION_PATIENT, &position)
                    .ds(tags::SLICE_LOCATION, &[position[2]]);
                b.0.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::U16(C::from_vec(pixels)),
                ));
                let meta = FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .implementation_class_uid(implementation_uid.as_str())
                    .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
                let file = b.0.with_meta(meta).map_err(|e| SynthError::Meta {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                file.write_to_file(&path).map_err(|e| SynthError::Write {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                summary.bytes += fs::metadata(&path)
                    .map_err(|source| SynthError::Stat {
                        path: path.clone(),
                        source,
                    })?
                    .len();
                summary.instances.push(SynthInstance {
                    path,
                    study_instance_uid: study.study_uid.clone(),
                    series_instance_uid: series_uid.clone(),
                    sop_instance_uid: sop_uid,
                });
            }
        }
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn is_valid_uid(uid: &str) -> bool {
        !uid.is_empty()
            && uid.len() <= 64
            && uid.split('.').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| b.is_ascii_digit())
                    && (c == "0" || !c.starts_with('0'))
            })
    }

    #[test]
    fn follow_up_studies_of_one_patient_with_growing_lungs() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        for (date, scale) in [("20230105", 0.9), ("20230612", 1.0), ("20240110", 1.1)] {
            let opts = SynthOptions {
                studies: 1,
                slices: 4,
                rows: 32,
                columns: 32,
                seed: 7,
                study_date: Some(date.into()),
                lung_scale: scale,
                out: dir.path().join(date),
                ..SynthOptions::new(SynthModality::Ct)
            };
            let summary = synthesise(&opts).unwrap();
            let obj = dicom_object::open_file(&summary.instances[0].path).unwrap();
            let text = |tag| obj.element(tag).unwrap().to_str().unwrap().into_owned();
            assert_eq!(text(tags::STUDY_DATE), date);
            let base = SynthOptions {
                lung_scale: 1.0,
                ..opts.clone()
            };
            let ratio = opts.ct_phantom().lung_volume_ml() / base.ct_phantom().lung_volume_ml();
            assert!((ratio - scale * scale * scale).abs() < 1e-9, "{ratio}");
            seen.push((text(tags::PATIENT_ID), text(tags::STUDY_INSTANCE_UID)));
        }
        assert!(seen.iter().all(|(p, _)| *p == seen[0].0), "{seen:?}");
        assert_ne!(seen[0].1, seen[1].1);
        assert_ne!(seen[1].1, seen[2].1);
        for bad in [
            SynthOptions {
                study_date: Some("20230230".into()),
                ..SynthOptions::default()
            },
            SynthOptions {
                lung_scale: 1.5,
                ..SynthOptions::default()
            },
        ] {
            assert!(matches!(
                synthesise(&bad),
                Err(SynthError::InvalidOptions(_))
            ));
        }
    }

    fn small(modality: SynthModality, out: &Path, seed: u64) -> SynthOptions {
        SynthOptions {
            studies: 2,
            series_per_study: 2,
            slices: 3,
            rows: 48,
            columns: 64,
            seed,
            out: out.to_owned(),
            ..SynthOptions::new(modality)
        }
    }

    fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_owned();
                    files.insert(rel, fs::read(&path).unwrap());
                }
            }
        }
        files
    }

    fn ds_values(obj: &dicom_object::DefaultDicomObject, tag: Tag) -> Vec<f64> {
        obj.element(tag).unwrap().to_multi_float64().unwrap()
    }

    #[test]
    fn modality_parses() {
        assert_eq!("CT".parse::<SynthModality>().unwrap(), SynthModality::Ct);
        assert_eq!("ct".parse::<SynthModality>().unwrap(), SynthModality::Ct);
        assert_eq!("MR".parse::<SynthModality>().unwrap(), SynthModality::Mr);
        assert_eq!("mr".parse::<SynthModality>().unwrap(), SynthModality::Mr);
        assert!(matches!(
            "US".parse::<SynthModality>(),
            Err(SynthError::UnknownModality(_))
        ));
    }

    #[test]
    fn uids_are_valid_and_deterministic() {
        for seed in [0, 1, 42, u64::MAX] {
            for parts in [&[][..], &["a"][..], &["study", "CT", "0"][..]] {
                let uid = uid_from_seed(seed, parts);
                assert!(is_valid_uid(&uid), "{uid}");
                assert!(uid.starts_with("2.25."));
                assert_eq!(uid, uid_from_seed(seed, parts));
            }
        }
        assert_ne!(uid_from_seed(1, &["x"]), uid_from_seed(2, &["x"]));
        // length prefixes keep part boundaries unambiguous
        assert_ne!(
            uid_from_seed(1, &["ab", "c"]),
            uid_from_seed(1, &["a", "bc"])
        );
        assert!(is_valid_uid(&implementation_class_uid()));
    }

    #[test]
    fn ds_fits_sixteen_chars() {
        assert_eq!(ds(0.703125), "0.703125");
        assert_eq!(ds(-179.6484375), "-179.6484375");
        assert_eq!(ds(-0.0), "0");
        assert!(ds(1.0 / 3.0).len() <= 16);
        assert!(ds(-123_456.789_012_345_67).len() <= 16);
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-40_000, -1, 0, 59, 60, 11_016, 20_000, 30_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(da(days_from_civil(2024, 2, 29)), "20240229");
    }

    #[test]
    fn same_seed_gives_identical_files() {
        for modality in [SynthModality::Ct, SynthModality::Mr] {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let sa = synthesise(&small(modality, a.path(), 7)).unwrap();
            let sb = synthesise(&small(modality, b.path(), 7)).unwrap();
            let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
            assert_eq!(ta.len(), 12);
            assert_eq!(ta, tb);
            assert_eq!(sa.bytes, sb.bytes);
            assert_eq!(sa.bytes, ta.values().map(|v| v.len() as u64).sum::<u64>());
            assert!(ta.contains_key(Path::new("1/1/IM0003.dcm")));
            for (x, y) in sa.instances.iter().zip(&sb.instances) {
                assert_eq!(x.sop_instance_uid, y.sop_instance_uid);
                assert_eq!(x.path.strip_prefix(a.path()), y.path.strip_prefix(b.path()));
            }
        }
    }

    #[test]
    fn uids_are_distinct_across_studies_series_instances_and_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let s1 = synthesise(&small(SynthModality::Ct, &dir.path().join("a"), 1)).unwrap();
        let s2 = synthesise(&small(SynthModality::Ct, &dir.path().join("b"), 2)).unwrap();
        let mr = synthesise(&small(SynthModality::Mr, &dir.path().join("c"), 1)).unwrap();
        assert_eq!(s1.instances.len(), 12);

        let studies: HashSet<_> = s1.instances.iter().map(|i| &i.study_instance_uid).collect();
        let series: HashSet<_> = s1
            .instances
            .iter()
            .map(|i| &i.series_instance_uid)
            .collect();
        let sops: HashSet<_> = s1.instances.iter().map(|i| &i.sop_instance_uid).collect();
        assert_eq!((studies.len(), series.len(), sops.len()), (2, 4, 12));

        let mut all = HashSet::new();
        for i in s1
            .instances
            .iter()
            .chain(&s2.instances)
            .chain(&mr.instances)
        {
            for uid in [
                &i.study_instance_uid,
                &i.series_instance_uid,
                &i.sop_instance_uid,
            ] {
                assert!(is_valid_uid(uid), "{uid}");
            }
            all.insert(i.sop_instance_uid.clone());
        }
        assert_eq!(
            all.len(),
            36,
            "SOP instance UIDs collide across seeds/modalities"
        );
        for (x, y) in s1.instances.iter().zip(&s2.instances) {
            assert_ne!(x.study_instance_uid, y.study_instance_uid);
            assert_ne!(x.series_instance_uid, y.series_instance_uid);
        }
    }

    #[test]
    fn ct_file_reads_back_with_expected_values() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SynthOptions {
            slices: 12,
            seed: 99,
            out: dir.path().to_owned(),
            ..SynthOptions::new(SynthModality::Ct)
        };
        let summary = synthesise(&opts).unwrap();
        assert_eq!(summary.instances.len(), 12);
        let phantom = opts.ct_phantom();

        let k = 6;
        let inst = &summary.instances[k];
        assert!(inst.path.ends_with("0/0/IM0007.dcm"));
        let obj = dicom_object::open_file(&inst.path).unwrap();
        assert_eq!(
            obj.meta().transfer_syntax(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(
            obj.meta().media_storage_sop_class_uid(),
            uids::CT_IMAGE_STORAGE
        );
        assert_eq!(
            obj.meta().media_storage_sop_instance_uid(),
            inst.sop_instance_uid.as_str()
        );
        let text = |tag| obj.element(tag).unwrap().to_str().unwrap().into_owned();
        assert_eq!(text(tags::SOP_CLASS_UID), uids::CT_IMAGE_STORAGE);
        assert_eq!(text(tags::SOP_INSTANCE_UID), inst.sop_instance_uid);
        assert_eq!(text(tags::STUDY_INSTANCE_UID), inst.study_instance_uid);
        assert_eq!(text(tags::SERIES_INSTANCE_UID), inst.series_instance_uid);
        assert_eq!(text(tags::MODALITY), "CT");
        assert_eq!(text(tags::MANUFACTURER), SYNTH_MANUFACTURER);
        assert_eq!(text(tags::PATIENT_ID), "SYN-99-0");
        assert_eq!(text(tags::STUDY_DESCRIPTION), "CT CHEST SYNTH");
        assert_eq!(text(tags::BODY_PART_EXAMINED), "CHEST");
        assert_eq!(text(tags::RESCALE_TYPE), "HU");
        assert_eq!(text(tags::PHOTOMETRIC_INTERPRETATION), "MONOCHROME2");
        assert_eq!(text(tags::SPECIFIC_CHARACTER_SET), "ISO_IR 100");
        assert_eq!(text(tags::INSTANCE_NUMBER), "7");
        assert!(text(tags::PATIENT_NAME).contains('^'));

        let int = |tag| obj.element(tag).unwrap().to_int::<u16>().unwrap();
        assert_eq!((int(tags::ROWS), int(tags::COLUMNS)), (512, 512));
        assert_eq!(int(tags::BITS_ALLOCATED), 16);
        assert_eq!(int(tags::BITS_STORED), 12);
        assert_eq!(int(tags::HIGH_BIT), 11);
        assert_eq!(int(tags::PIXEL_REPRESENTATION), 0);
        assert_eq!(int(tags::SAMPLES_PER_PIXEL), 1);

        let slope = ds_values(&obj, tags::RESCALE_SLOPE)[0];
        let intercept = ds_values(&obj, tags::RESCALE_INTERCEPT)[0];
        assert_eq!((slope, intercept), (1.0, -1024.0));
        assert_eq!(ds_values(&obj, tags::WINDOW_CENTER), vec![40.0]);
        assert_eq!(ds_values(&obj, tags::WINDOW_WIDTH), vec![400.0]);
        assert_eq!(
            ds_values(&obj, tags::IMAGE_ORIENTATION_PATIENT),
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
        let spacing = ds_values(&obj, tags::PIXEL_SPACING);
        assert_eq!(spacing, vec![CT_PIXEL_SPACING_MM, CT_PIXEL_SPACING_MM]);
        let ipp = ds_values(&obj, tags::IMAGE_POSITION_PATIENT);
        assert_eq!(ipp, opts.image_position_patient(k).to_vec());
        assert_eq!(ds_values(&obj, tags::SLICE_LOCATION), vec![ipp[2]]);
        // volume centred on the origin
        assert!((ipp[0] + 511.0 / 2.0 * spacing[1]).abs() < 1e-9);
        assert!((ipp[1] + 511.0 / 2.0 * spacing[0]).abs() < 1e-9);

        // consecutive slices are SliceThickness apart
        let thickness = ds_values(&obj, tags::SLICE_THICKNESS)[0];
        assert_eq!(thickness, CT_SLICE_SPACING_MM);
        let next = dicom_object::open_file(&summary.instances[k + 1].path).unwrap();
        let ipp_next = ds_values(&next, tags::IMAGE_POSITION_PATIENT);
        assert!(((ipp[2] - ipp_next[2]).abs() - thickness).abs() < 1e-9);
        assert_eq!((ipp[0], ipp[1]), (ipp_next[0], ipp_next[1]));

        let pixels: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_multi_int()
            .unwrap();
        assert_eq!(pixels.len(), 512 * 512);
        let hu_at_mm = |x: f64, y: f64| {
            let col = ((x - ipp[0]) / spacing[1]).round() as usize;
            let row = ((y - ipp[1]) / spacing[0]).round() as usize;
            f64::from(pixels[row * 512 + col]) * slope + intercept
        };
        for lung in &phantom.lungs {
            let [lx, ly, _] = lung.centre_mm;
            assert!(
                hu_at_mm(lx, ly) < -700.0,
                "lung centre {}",
                hu_at_mm(lx, ly)
            );
        }
        assert_ne!(phantom.tissue_at(0.0, 0.0, ipp[2]), CtTissue::Lung);
        let centre = hu_at_mm(0.0, 0.0);
        assert!((-200.0..=200.0).contains(&centre), "body centre {centre}");
        assert!(hu_at_mm(ipp[0], ipp[1]) < -900.0, "corner should be air");

        // every stored pixel is exactly the phantom's HU at the pixel centre
        for (i, &p) in pixels.iter().enumerate() {
            let x = ipp[0] + (i % 512) as f64 * spacing[1];
            let y = ipp[1] + (i / 512) as f64 * spacing[0];
            assert_eq!(
                f64::from(p) * slope + intercept,
                f64::from(phantom.hu_at(x, y, ipp[2]))
            );
        }
    }

    #[test]
    fn mr_file_reads_back_with_expected_values() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SynthOptions {
            out: dir.path().to_owned(),
            ..SynthOptions::new(SynthModality::Mr)
        };
        let summary = synthesise(&opts).unwrap();
        assert_eq!(summary.instances.len(), 30);
        let obj = dicom_object::open_file(&summary.instances[15].path).unwrap();
        let text = |tag| obj.element(tag).unwrap().to_str().unwrap().into_owned();
        assert_eq!(text(tags::SOP_CLASS_UID), uids::MR_IMAGE_STORAGE);
        assert_eq!(
            obj.meta().media_storage_sop_class_uid(),
            uids::MR_IMAGE_STORAGE
        );
        assert_eq!(text(tags::MODALITY), "MR");
        assert_eq!(text(tags::BODY_PART_EXAMINED), "BRAIN");
        assert_eq!(text(tags::SERIES_DESCRIPTION), "T1 AX BRAIN SYNTH");
        assert!(obj.element(tags::RESCALE_SLOPE).is_err());
        let int = |tag| obj.element(tag).unwrap().to_int::<u16>().unwrap();
        assert_eq!((int(tags::ROWS), int(tags::COLUMNS)), (256, 256));
        let pixels: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_multi_int()
            .unwrap();
        let at = |row: usize, col: usize| pixels[row * 256 + col];
        assert!(at(0, 0) < 20, "background {}", at(0, 0));
        assert!(at(128, 128) > 400, "brain centre {}", at(128, 128));
        assert!(pixels.iter().all(|&p| p <= 4095));
    }

    #[test]
    fn lungs_lie_inside_the_body_and_the_slab() {
        for slices in [8, 100, 300] {
            let p = CtPhantom::for_volume(512, 512, CT_PIXEL_SPACING_MM, slices, 1.25);
            let half_slab = (slices as f64 - 1.0) * 0.5 * 1.25;
            for lung in &p.lungs {
                let [cx, cy, cz] = lung.centre_mm;
                let [a, b, c] = lung.semi_axes_mm;
                assert!(cz.abs() + c <= half_slab, "lung leaves the slab ({slices})");
                for step in 0..360 {
                    let t = f64::from(step).to_radians();
                    let (x, y) = (cx + a * t.cos(), cy + b * t.sin());
                    assert!(p.in_body(x, y));
                    // just inside the ellipsoid outline, at its widest z, is lung
                    let (xi, yi) = (cx + 0.999 * a * t.cos(), cy + 0.999 * b * t.sin());
                    assert_eq!(p.tissue_at(xi, yi, cz), CtTissue::Lung);
                    // the fat layer never reaches a lung
                    let [ba, bb] = p.body_semi_axes_mm;
                    let (u, v) = (x / (ba - p.fat_thickness_mm), y / (bb - p.fat_thickness_mm));
                    assert!(u * u + v * v < 1.0);
                }
            }
        }
    }

    #[test]
    fn lung_volume_matches_voxel_count() {
        let opts = SynthOptions::new(SynthModality::Ct);
        let p = opts.ct_phantom();
        let g = Geometry::new(&opts);
        let mut lung_voxels = 0u64;
        let mut body_voxels = 0u64;
        let mut slice = vec![0u16; g.rows * g.columns];
        for k in 0..g.slices {
            let z = g.z(k);
            g.fill(&mut slice, |x, y| {
                let inside = p.in_body(x, y);
                if inside {
                    body_voxels += 1;
                }
                u16::from(inside && p.hu_at(x, y, z) < -500.0)
            });
            lung_voxels += slice.iter().map(|&v| u64::from(v)).sum::<u64>();
        }
        let voxel_ml = g.pixel_spacing * g.pixel_spacing * g.slice_spacing / 1000.0;
        let counted = lung_voxels as f64 * voxel_ml;
        let analytic = p.lung_volume_ml();
        assert!(
            (counted - analytic).abs() / analytic < 0.02,
            "counted {counted} ml, analytic {analytic} ml"
        );
        let slab = g.slices as f64 * g.slice_spacing;
        let body = body_voxels as f64 * voxel_ml;
        assert!((body - p.body_volume_ml(slab)).abs() / body < 0.01);
    }

    #[test]
    fn thresholds_separate_lung_and_body() {
        let p = CtPhantom::for_volume(512, 512, CT_PIXEL_SPACING_MM, 300, 1.25);
        let mut hit = [false; 6];
        for i in 0..200_000u32 {
            let x = (f64::from(i % 613) - 306.0) * 0.61;
            let y = (f64::from(i % 587) - 293.0) * 0.43;
            let z = (f64::from(i % 499) - 249.0) * 0.75;
            let hu = p.hu_at(x, y, z);
            assert_eq!(hu, hu.round());
            let tissue = p.tissue_at(x, y, z);
            hit[tissue as usize] = true;
            assert!((hu - tissue.nominal_hu() as f32).abs() <= 10.0);
            match tissue {
                CtTissue::Lung => assert!(hu < -500.0),
                CtTissue::Air => assert!(hu < -900.0),
                _ => assert!(hu > -200.0),
            }
        }
        assert!(hit.iter().all(|&h| h), "every tissue sampled: {hit:?}");
    }
}
