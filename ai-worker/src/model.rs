//! Model folders: an `.onnx` file and its manifest `model.toml` (docs/ai-models.md).

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::volume::Volume;

/// A coded concept (PS3.3 8.8): code value, coding scheme designator ("SCT", "DCM"), meaning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

/// One output label of a model, as the manifest describes it and the SEG writes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelSpec {
    /// Label value in the model's output (1-based for argmax outputs; 1 for a sigmoid output).
    pub value: u32,
    pub name: String,
    /// Display colour as sRGB 0-255; the SEG stores it as CIELab (PS3.3 C.10.7.1.1).
    pub color: [u8; 3],
    /// Segmented Property Category Code Sequence (0062,0003).
    pub category: Code,
    /// Segmented Property Type Code Sequence (0062,000F).
    pub property_type: Code,
}

/// The manifest file of a model folder.
pub const MANIFEST_FILE: &str = "model.toml";

/// `model.toml`: what a model is, which series it accepts, and how to feed it and read it
/// (docs/ai-models.md describes every field).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name, as routing rules and jobs name it ("deepbrain", "ct-classical").
    pub name: String,
    pub version: String,
    /// Family or task ("brain-extraction", "ct-body-lung-bone").
    pub family: String,
    pub description: String,
    /// True for a hand-written (not learned) algorithm expressed as an ONNX graph, which results
    /// must not present as the output of a learned model.
    pub classical: bool,
    /// The ONNX file in the folder; by default the folder's only `.onnx` file.
    #[serde(default)]
    pub file: Option<String>,
    /// Licence of the model (SPDX identifier or a short text).
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub accepts: Accepts,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub labels: Vec<LabelEntry>,
}

/// Which series a model accepts. A series is accepted when its Modality is listed (or the list
/// is empty) and, when `body_parts` or `series_description` is given, its BodyPartExamined is
/// listed or its SeriesDescription matches (either suffices). Case is ignored for both lists.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepts {
    #[serde(default)]
    pub modalities: Vec<String>,
    #[serde(default)]
    pub body_parts: Vec<String>,
    /// Regular expression (Rust `regex` syntax) searched in SeriesDescription.
    #[serde(default)]
    pub series_description: Option<String>,
}

/// Order of a 5-D tensor: N batch, C channel, D/H/W the three spatial axes in the order the
/// `orientation` gives (the last spatial axis varies fastest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    #[serde(rename = "NDHWC")]
    Ndhwc,
    #[serde(rename = "NCDHW")]
    Ncdhw,
}

/// Voxel axes the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Orientation {
    /// `[slice][row][col]` as the series is stored (sorted along the slice normal).
    AsStored,
    /// Axes towards the patient's right, anterior, superior: NIfTI's RAS+ (nearest axes).
    Ras,
    /// Axes towards the patient's left, posterior, superior: DICOM's patient axes.
    Lps,
}

/// How the oriented volume is brought to the model's grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Resample {
    /// The model takes any size: voxels as they are.
    Native,
    /// A fixed grid, reached as `skimage.transform.resize(..., mode='constant',
    /// anti_aliasing=True)` does (Gaussian blur on shrinking axes, linear interpolation with
    /// +0.5 pixel centres, clip); outputs are resized back the same way.
    Fixed { size: [usize; 3] },
}

/// Intensity normalisation applied after resampling.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalisation {
    /// Modality values (HU for CT) as they are.
    None,
    /// Divided by the maximum (deepbrain: not min-max scaling).
    DivideByMax,
    /// Clipped to `[min, max]` and scaled to `[0, 1]`.
    Window { min: f32, max: f32 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the input tensor.
    pub name: String,
    pub layout: Layout,
    pub orientation: Orientation,
    pub resample: Resample,
    pub normalisation: Normalisation,
}

/// How the output tensor becomes label masks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Interpretation {
    /// One probability channel per label (label value v = channel v - 1); a voxel belongs to a
    /// label when its probability, resized back, exceeds `threshold`. Labels may overlap.
    Sigmoid { threshold: f32 },
    /// Scores per class, channel 0 the background: each voxel gets the label of its highest
    /// score (scores resized back first).
    Argmax,
    /// One channel holding the label value of each voxel (resized back by nearest neighbour).
    Labels,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Name of the output tensor.
    pub name: String,
    pub layout: Layout,
    pub interpretation: Interpretation,
}

/// Post-processing of one label's mask, in this order: fill holes, remove small components,
/// keep the largest component (`crate::postprocess`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostprocessSpec {
    /// Fill background regions not connected to the volume border (3-D, 6-connected background).
    #[serde(default)]
    pub fill_holes: bool,
    /// Fill holes slice by slice (2-D, 4-connected background in each slice).
    #[serde(default)]
    pub fill_holes_per_slice: bool,
    /// Remove 26-connected components of fewer voxels than this.
    #[serde(default)]
    pub min_component_voxels: u64,
    /// Keep only the largest 26-connected component.
    #[serde(default)]
    pub keep_largest_component: bool,
}

/// One `[[labels]]` entry: the label as the SEG writes it, and its post-processing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelEntry {
    #[serde(flatten)]
    pub spec: LabelSpec,
    #[serde(default)]
    pub postprocess: PostprocessSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid manifest {}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("model folder {}: {message}", dir.display())]
    Folder { dir: PathBuf, message: String },
}

/// A model folder: the ONNX file and its manifest.
#[derive(Debug, Clone)]
pub struct Model {
    pub dir: PathBuf,
    pub onnx_path: PathBuf,
    pub manifest: Manifest,
    series_description: Option<Regex>,
}

impl Model {
    /// Reads and checks `dir/model.toml` and finds the ONNX file.
    pub fn load(dir: impl AsRef<Path>) -> Result<Model, ModelError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| ModelError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ModelError::Manifest {
            path: path.clone(),
            message,
        };
        manifest.validate().map_err(invalid)?;
        let series_description = manifest
            .accepts
            .series_description
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| invalid(format!("accepts.series_description: {e}")))?;
        let onnx_path = match &manifest.file {
            Some(file) => dir.join(file),
            None => {
                let entries = std::fs::read_dir(&dir).map_err(|source| ModelError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
                    .collect();
                if found.len() != 1 {
                    return Err(ModelError::Folder {
                        dir,
                        message: format!(
                            "{} .onnx files and no `file` in the manifest",
                            found.len()
                        ),
                    });
                }
                found.remove(0)
            }
        };
        if !onnx_path.is_file() {
            return Err(ModelError::Folder {
                dir,
                message: format!("{} is missing", onnx_path.display()),
            });
        }
        Ok(Model {
            dir,
            onnx_path,
            manifest,
            series_description,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// The labels as the SEG writes them, in manifest order.
    pub fn labels(&self) -> Vec<LabelSpec> {
        self.manifest
            .labels
            .iter()
            .map(|l| l.spec.clone())
            .collect()
    }

    /// Whether the model accepts a series with these attributes (see [`Accepts`]).
    pub fn accepts(
        &self,
        modality: &str,
        body_part: Option<&str>,
        series_description: Option<&str>,
    ) -> bool {
        let a = &self.manifest.accepts;
        let listed =
            |list: &[String], v: &str| list.iter().any(|x| x.eq_ignore_ascii_case(v.trim()));
        if !a.modalities.is_empty() && !listed(&a.modalities, modality) {
            return false;
        }
        if a.body_parts.is_empty() && self.series_description.is_none() {
            return true;
        }
        body_part.is_some_and(|b| listed(&a.body_parts, b))
            || self
                .series_description
                .as_ref()
                .zip(series_description)
                .is_some_and(|(re, d)| re.is_match(d))
    }

    /// [`Model::accepts`] on the first instance of a volume.
    pub fn accepts_volume(&self, volume: &Volume) -> bool {
        use dicom_dictionary_std::tags;
        self.accepts(
            &volume.modality,
            volume.attribute(tags::BODY_PART_EXAMINED).as_deref(),
            volume.attribute(tags::SERIES_DESCRIPTION).as_deref(),
        )
    }
}

impl Manifest {
    /// Consistency checks that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [
            ("name", &self.name),
            ("version", &self.version),
            ("input.name", &self.input.name),
            ("output.name", &self.output.name),
        ] {
            if v.trim().is_empty() {
                return Err(format!("{what} is empty"));
            }
        }
        if self.labels.is_empty() {
            return Err("no [[labels]]".into());
        }
        let mut values: Vec<u32> = self.labels.iter().map(|l| l.spec.value).collect();
        values.sort_unstable();
        if values[0] == 0 {
            return Err("label value 0 is the background".into());
        }
        if values.windows(2).any(|w| w[0] == w[1]) {
            return Err("label values must be unique".into());
        }
        if let Resample::Fixed { size } = self.input.resample {
            if size.contains(&0) {
                return Err("input.resample.size must be positive".into());
            }
        }
        if let Normalisation::Window { min, max } = self.input.normalisation {
            if min.partial_cmp(&max) != Some(std::cmp::Ordering::Less) {
                return Err("input.normalisation window needs min < max".into());
            }
        }
        if let Interpretation::Sigmoid { threshold } = self.output.interpretation {
            if !(0.0..=1.0).contains(&threshold) {
                return Err("output.interpretation.threshold must lie in [0, 1]".into());
            }
        }
        Ok(())
    }
}

/// Loads every model folder (a subfolder holding `model.toml`) of `models_dir`, sorted by name.
/// A folder with an invalid manifest is an error: a worker should not start half-configured.
pub fn load_all(models_dir: impl AsRef<Path>) -> Result<Vec<Model>, ModelError> {
    let models_dir = models_dir.as_ref();
    let entries = std::fs::read_dir(models_dir).map_err(|source| ModelError::Io {
        path: models_dir.to_path_buf(),
        source,
    })?;
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ModelError::Io {
            path: models_dir.to_path_buf(),
            source,
        })?;
        let dir = entry.path();
        if dir.is_dir() && dir.join(MANIFEST_FILE).is_file() {
            models.push(Model::load(&dir)?);
        }
    }
    models.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    if let Some(w) = models.windows(2).find(|w| w[0].name() == w[1].name()) {
        return Err(ModelError::Folder {
            dir: w[1].dir.clone(),
            message: format!("a second model named {:?}", w[1].name()),
        });
    }
    Ok(models)
}
