//! Running a model folder on a volume with ONNX Runtime: orientation, resampling and
//! normalisation as the manifest says, the session run, and the output turned back into one
//! mask per label on the source slices.
//!
//! ONNX Runtime is a shared library loaded at run time (`ort`'s `load-dynamic`): from
//! `ORT_DYLIB_PATH`, else from the PyPI `onnxruntime` wheel that `python3` can import
//! (docs/ai-models.md). Nothing is downloaded at build time.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::value::{DynValue, TensorRef};

use crate::model::{
    Interpretation, LabelSpec, Layout, Model, Normalisation, Orientation, Resample,
};
use crate::volume::{AxisMap, PatientDirection, Volume, VolumeError};

/// The ONNX Runtime release the `ort` version in Cargo.toml is built against (API 1.31);
/// `pip install onnxruntime==1.31.1` provides it.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime not found: {0}. Set ORT_DYLIB_PATH to libonnxruntime.so, or install the \
         wheel with `python3 -m pip install onnxruntime=={ONNXRUNTIME_VERSION}` (docs/ai-models.md)"
    )]
    RuntimeNotFound(String),
    #[error("cannot load ONNX Runtime from {}: {message}", path.display())]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("model {model}: ONNX Runtime: {message}")]
    Ort { model: String, message: String },
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

/// How sessions are created.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// The ONNX Runtime library; `None` looks for it ([`locate_onnxruntime`]).
    pub dylib_path: Option<PathBuf>,
    /// Threads used within one operator; 0 lets ONNX Runtime choose (one per core).
    pub intra_threads: usize,
    /// Attempt the CUDA execution provider (needs the `onnxruntime-gpu` build of the library,
    /// CUDA and cuDNN); when it cannot be registered the session runs on the CPU and a warning
    /// is logged.
    pub cuda: bool,
    pub cuda_device: i32,
}

/// Finds the ONNX Runtime library: `ORT_DYLIB_PATH` if set, else the library inside the
/// `onnxruntime` Python package (`<site-packages>/onnxruntime/capi/libonnxruntime.so.<version>`).
pub fn locate_onnxruntime() -> Result<PathBuf, InferenceError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(InferenceError::RuntimeNotFound(format!(
                "ORT_DYLIB_PATH is {}, which is not a file",
                path.display()
            )))
        };
    }
    let script = "import onnxruntime, os; \
                  print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))";
    let mut tried = Vec::new();
    for python in ["python3", "python"] {
        match std::process::Command::new(python)
            .args(["-c", script])
            .output()
        {
            Ok(out) if out.status.success() => {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if let Some(lib) = runtime_library_in(&dir) {
                    return Ok(lib);
                }
                tried.push(format!("{python}: no libonnxruntime in {}", dir.display()));
            }
            Ok(_) => tried.push(format!("{python} cannot import onnxruntime")),
            Err(e) => tried.push(format!("{python}: {e}")),
        }
    }
    Err(InferenceError::RuntimeNotFound(format!(
        "ORT_DYLIB_PATH is not set ({})",
        tried.join("; ")
    )))
}

/// The main library in a wheel's `capi` folder (not `libonnxruntime_providers_*.so`).
fn runtime_library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || (n.starts_with("libonnxruntime.") && n.ends_with(".dylib"))
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    // prefer the versioned file over a bare `libonnxruntime.so` symlink
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

struct Runtime {
    environment: ort::environment::Environment,
    path: PathBuf,
}

/// Why loading failed, kept for every later caller (the library is loaded once per process).
#[derive(Debug, Clone)]
enum InitFailure {
    NotFound(String),
    Load { path: PathBuf, message: String },
}

static RUNTIME: OnceLock<Result<Runtime, InitFailure>> = OnceLock::new();

/// Loads ONNX Runtime once per process (the first call's library wins) and returns its path.
pub fn init_runtime(options: &RuntimeOptions) -> Result<PathBuf, InferenceError> {
    let runtime = RUNTIME.get_or_init(|| {
        let path = match &options.dylib_path {
            Some(p) => p.clone(),
            None => match locate_onnxruntime() {
                Ok(p) => p,
                Err(InferenceError::RuntimeNotFound(m)) => return Err(InitFailure::NotFound(m)),
                Err(e) => return Err(InitFailure::NotFound(e.to_string())),
            },
        };
        let load_failure = |e: &dyn std::fmt::Display| InitFailure::Load {
            path: path.clone(),
            message: e.to_string(),
        };
        let environment = ort::init_from(&path)
            .map_err(|e| load_failure(&e))?
            .with_name("pacs-ai-worker")
            .with_telemetry(false)
            .build()
            .map_err(|e| load_failure(&e))?;
        tracing::info!(path = %path.display(), "ONNX Runtime loaded");
        Ok(Runtime { environment, path })
    });
    match runtime {
        Ok(r) => Ok(r.path.clone()),
        Err(InitFailure::NotFound(m)) => Err(InferenceError::RuntimeNotFound(m.clone())),
        Err(InitFailure::Load { path, message }) => Err(InferenceError::RuntimeLoad {
            path: path.clone(),
            message: message.clone(),
        }),
    }
}

/// One label's mask on the source volume, `[slice][row][col]` like [`Volume::voxels`].
#[derive(Debug, Clone)]
pub struct LabelMask {
    pub label: LabelSpec,
    pub mask: Vec<bool>,
}

/// Wall-clock time of each stage of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Orientation, resampling, normalisation.
    pub preprocess: Duration,
    /// The ONNX Runtime session run.
    pub inference: Duration,
    /// Output decoding, resampling back, mapping onto the source slices, label post-processing.
    pub postprocess: Duration,
}

/// The masks of one run, in manifest label order.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub masks: Vec<LabelMask>,
    pub timings: Timings,
}

/// A model with its ONNX Runtime session.
pub struct Runner {
    model: Model,
    session: Mutex<Session>,
    execution_provider: &'static str,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("model", &self.model.name())
            .field("execution_provider", &self.execution_provider)
            .finish()
    }
}

impl Runner {
    /// Loads ONNX Runtime if needed and creates the model's session.
    pub fn new(model: Model, options: &RuntimeOptions) -> Result<Runner, InferenceError> {
        init_runtime(options)?;
        let runtime = match RUNTIME.get() {
            Some(Ok(r)) => r,
            _ => unreachable!("init_runtime succeeded"),
        };
        let ort_err = |e: &dyn std::fmt::Display| InferenceError::Ort {
            model: model.name().to_owned(),
            message: e.to_string(),
        };
        let mut builder = Session::builder(&runtime.environment).map_err(|e| ort_err(&e))?;
        if options.intra_threads > 0 {
            builder = builder
                .with_intra_threads(options.intra_threads)
                .map_err(|e| ort_err(&e))?;
        }
        let mut execution_provider = "CPU";
        if options.cuda {
            use ort::ep::ExecutionProvider;
            match ort::ep::CUDA::is_available() {
                Ok(true) => {
                    let cuda = ort::ep::CUDA::default()
                        .with_device_id(options.cuda_device)
                        .build()
                        .error_on_failure();
                    match builder.with_execution_providers([cuda]) {
                        Ok(b) => {
                            builder = b;
                            execution_provider = "CUDA";
                        }
                        Err(e) => {
                            tracing::warn!(model = model.name(), error = %e,
                                "CUDA execution provider could not be registered; running on the CPU");
                            builder = e.recover();
                        }
                    }
                }
                Ok(false) => tracing::warn!(
                    model = model.name(),
                    "CUDA requested but this ONNX Runtime build has no CUDA execution provider \
                     (install onnxruntime-gpu); running on the CPU"
                ),
                Err(e) => tracing::warn!(model = model.name(), error = %e,
                    "cannot query the CUDA execution provider; running on the CPU"),
            }
        }
        let session = builder
            .commit_from_file(&model.onnx_path)
            .map_err(|e| ort_err(&e))?;
        let has = |names: Vec<&str>, want: &str| names.contains(&want);
        let inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        if !has(inputs.clone(), &model.manifest.input.name) {
            return Err(InferenceError::Model {
                model: model.name().to_owned(),
                message: format!(
                    "the ONNX graph has no input {:?} (it has {inputs:?})",
                    model.manifest.input.name
                ),
            });
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !has(outputs.clone(), &model.manifest.output.name) {
            return Err(InferenceError::Model {
                model: model.name().to_owned(),
                message: format!(
                    "the ONNX graph has no output {:?} (it has {outputs:?})",
                    model.manifest.output.name
                ),
            });
        }
        Ok(Runner {
            model,
            session: Mutex::new(session),
            execution_provider,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// "CPU" or "CUDA".
    pub fn execution_provider(&self) -> &'static str {
        self.execution_provider
    }

    /// The model's masks with the manifest's post-processing applied.
    pub fn segment(&self, volume: &Volume) -> Result<Segmentation, InferenceError> {
        let mut seg = self.predict(volume)?;
        let start = Instant::now();
        let shape = volume.shape();
        for (m, entry) in seg.masks.iter_mut().zip(&self.model.manifest.labels) {
            let mask = std::mem::take(&mut m.mask);
            m.mask = crate::postprocess::apply(&entry.postprocess, mask, shape);
        }
        seg.timings.postprocess += start.elapsed();
        Ok(seg)
    }

    /// The model's masks as its output gives them (no post-processing).
    pub fn predict(&self, volume: &Volume) -> Result<Segmentation, InferenceError> {
        let model_err = |message: String| InferenceError::Model {
            model: self.model.name().to_owned(),
            message,
        };
        let ort_err = |e: ort::Error| InferenceError::Ort {
            model: self.model.name().to_owned(),
            message: e.to_string(),
        };
        let spec = &self.model.manifest;
        let start = Instant::now();
        let map = match spec.input.orientation {
            Orientation::AsStored => AxisMap::identity(volume.shape()),
            Orientation::Ras => volume.axis_map(PatientDirection::RAS)?,
            Orientation::Lps => volume.axis_map(PatientDirection::LPS)?,
        };
        let oriented_shape = map.shape();
        let oriented: Cow<[f32]> = if map.is_identity() {
            Cow::Borrowed(&volume.voxels)
        } else {
            Cow::Owned(map.from_source(&volume.voxels))
        };
        let (grid, x): ([usize; 3], Cow<[f32]>) =
            match (&spec.input.resample, &spec.input.normalisation) {
                (Resample::Native, Normalisation::None) => (oriented_shape, oriented),
                (resample, normalisation) => {
                    // float64 like the Python pipelines (nibabel's get_fdata, skimage), cast at the end
                    let mut x: Vec<f64> = oriented.iter().map(|&v| f64::from(v)).collect();
                    drop(oriented);
                    let grid = match resample {
                        Resample::Native => oriented_shape,
                        Resample::Fixed { size } => {
                            x = resize_like_skimage(&x, oriented_shape, *size);
                            *size
                        }
                    };
                    normalise(&mut x, normalisation).map_err(model_err)?;
                    (grid, Cow::Owned(x.into_iter().map(|v| v as f32).collect()))
                }
            };
        let [d, h, w] = grid.map(|n| n as i64);
        let tensor_shape = match spec.input.layout {
            Layout::Ndhwc => vec![1, d, h, w, 1],
            Layout::Ncdhw => vec![1, 1, d, h, w],
        };
        let input = TensorRef::from_array_view((tensor_shape, &*x)).map_err(ort_err)?;
        let preprocess = start.elapsed();

        let start = Instant::now();
        let (out_shape, out) = {
            let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let outputs = session
                .run(ort::inputs![spec.input.name.as_str() => input])
                .map_err(ort_err)?;
            let value = outputs
                .get(&spec.output.name)
                .ok_or_else(|| model_err(format!("no output {:?}", spec.output.name)))?;
            tensor_to_f32(value).map_err(model_err)?
        };
        drop(x);
        let inference = start.elapsed();

        let start = Instant::now();
        let output =
            ModelOutput::new(&out_shape, out, spec.output.layout, grid).map_err(model_err)?;
        // a channel on the oriented grid: resized back when the model ran on a fixed grid
        let back = |k: usize| -> Vec<f64> {
            let c: Vec<f64> = output.channel(k).map(f64::from).collect();
            match spec.input.resample {
                Resample::Native => c,
                Resample::Fixed { .. } => resize_like_skimage(&c, grid, oriented_shape),
            }
        };
        let labels = &spec.labels;
        let mut masks: Vec<Vec<bool>> = Vec::with_capacity(labels.len());
        match spec.output.interpretation {
            Interpretation::Sigmoid { threshold } => {
                for l in labels {
                    let k = l.spec.value as usize - 1;
                    if k >= output.channels {
                        return Err(model_err(format!(
                            "label {} needs output channel {k}, the output has {}",
                            l.spec.value, output.channels
                        )));
                    }
                    let t = f64::from(threshold);
                    masks.push(match spec.input.resample {
                        Resample::Native => output.channel(k).map(|p| f64::from(p) > t).collect(),
                        Resample::Fixed { .. } => back(k).into_iter().map(|p| p > t).collect(),
                    });
                }
            }
            Interpretation::Argmax => {
                let scores: Vec<Vec<f64>> = (0..output.channels).map(back).collect();
                let n = oriented_shape.iter().product::<usize>();
                let mut best = vec![0u32; n];
                for (i, b) in best.iter_mut().enumerate() {
                    let mut top = f64::NEG_INFINITY;
                    for (k, s) in scores.iter().enumerate() {
                        if s[i] > top {
                            top = s[i];
                            *b = k as u32;
                        }
                    }
                }
                for l in labels {
                    masks.push(best.iter().map(|&b| b == l.spec.value).collect());
                }
            }
            Interpretation::Labels => {
                if output.channels != 1 {
                    return Err(model_err(format!(
                        "a label-map output needs 1 channel, it has {}",
                        output.channels
                    )));
                }
                let values: Vec<f32> = match spec.input.resample {
                    Resample::Native => output.data,
                    Resample::Fixed { .. } => resize_nearest(&output.data, grid, oriented_shape),
                };
                for l in labels {
                    let v = l.spec.value as f32;
                    masks.push(values.iter().map(|&x| x.round() == v).collect());
                }
            }
        }
        let masks = masks
            .into_iter()
            .zip(labels)
            .map(|(m, l)| LabelMask {
                label: l.spec.clone(),
                mask: if map.is_identity() {
                    m
                } else {
                    map.to_source(&m)
                },
            })
            .collect();
        Ok(Segmentation {
            masks,
            timings: Timings {
                preprocess,
                inference,
                postprocess: start.elapsed(),
            },
        })
    }
}

fn tensor_to_f32(value: &DynValue) -> Result<(Vec<i64>, Vec<f32>), String> {
    if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
        return Ok((shape.to_vec(), data.to_vec()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
        return Ok((shape.to_vec(), data.iter().map(|&v| v as f32).collect()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i32>() {
        return Ok((shape.to_vec(), data.iter().map(|&v| v as f32).collect()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<u8>() {
        return Ok((shape.to_vec(), data.iter().map(|&v| f32::from(v)).collect()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<bool>() {
        return Ok((
            shape.to_vec(),
            data.iter().map(|&v| f32::from(u8::from(v))).collect(),
        ));
    }
    Err(format!(
        "the output is a {:?}, not a float, integer or boolean tensor",
        value.dtype()
    ))
}

/// A 5-D output tensor (batch 1) on the model's grid.
struct ModelOutput {
    data: Vec<f32>,
    layout: Layout,
    channels: usize,
    /// Voxels per channel.
    voxels: usize,
}

impl ModelOutput {
    fn new(
        shape: &[i64],
        data: Vec<f32>,
        layout: Layout,
        grid: [usize; 3],
    ) -> Result<Self, String> {
        let dims: Vec<usize> = shape.iter().map(|&v| v.max(0) as usize).collect();
        let (spatial, channels) = match (layout, dims.as_slice()) {
            (Layout::Ndhwc, &[1, d, h, w, c]) => ([d, h, w], c),
            (Layout::Ncdhw, &[1, c, d, h, w]) => ([d, h, w], c),
            _ => {
                return Err(format!(
                    "output shape {shape:?} does not fit layout {layout:?}"
                ))
            }
        };
        if spatial != grid {
            return Err(format!(
                "output grid {spatial:?} differs from the input grid {grid:?}"
            ));
        }
        Ok(ModelOutput {
            data,
            layout,
            channels,
            voxels: grid.iter().product(),
        })
    }

    /// The values of channel `k`, last spatial axis fastest.
    fn channel(&self, k: usize) -> Box<dyn Iterator<Item = f32> + '_> {
        match self.layout {
            Layout::Ncdhw => Box::new(
                self.data[k * self.voxels..(k + 1) * self.voxels]
                    .iter()
                    .copied(),
            ),
            Layout::Ndhwc => Box::new(self.data.iter().skip(k).step_by(self.channels).copied()),
        }
    }
}

fn normalise(x: &mut [f64], how: &Normalisation) -> Result<(), String> {
    match *how {
        Normalisation::None => {}
        Normalisation::DivideByMax => {
            // MODEL.md (deepbrain): divided by the maximum, not min-max scaled
            let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !(max.is_finite() && max > 0.0) {
                return Err(format!(
                    "cannot divide by the maximum intensity {max} (an empty or negative image)"
                ));
            }
            x.iter_mut().for_each(|v| *v /= max);
        }
        Normalisation::Window { min, max } => {
            let (lo, hi) = (f64::from(min), f64::from(max));
            x.iter_mut()
                .for_each(|v| *v = (v.clamp(lo, hi) - lo) / (hi - lo));
        }
    }
    Ok(())
}

/// Applies `f` to every line of a 3-D array along `axis`, writing lines of length `out_len`.
fn along_axis(
    data: &[f64],
    shape: [usize; 3],
    axis: usize,
    out_len: usize,
    mut f: impl FnMut(&[f64], &mut [f64]),
) -> Vec<f64> {
    let mut out_shape = shape;
    out_shape[axis] = out_len;
    let strides = |s: [usize; 3]| [s[1] * s[2], s[2], 1];
    let (si, so) = (strides(shape), strides(out_shape));
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let mut out = vec![0.0; out_shape.iter().product()];
    let mut line = vec![0.0; shape[axis]];
    let mut res = vec![0.0; out_len];
    for p in 0..shape[others[0]] {
        for q in 0..shape[others[1]] {
            let base_in = p * si[others[0]] + q * si[others[1]];
            let base_out = p * so[others[0]] + q * so[others[1]];
            for (k, v) in line.iter_mut().enumerate() {
                *v = data[base_in + k * si[axis]];
            }
            f(&line, &mut res);
            for (k, v) in res.iter().enumerate() {
                out[base_out + k * so[axis]] = *v;
            }
        }
    }
    out
}

/// `skimage.transform.resize(image, out_shape, order=1, mode='constant', cval=0, clip=True,
/// anti_aliasing=True, preserve_range=False)` on a float 3-D array, step by step as skimage
/// 0.26 does it (MODEL.md, "Pre- and post-processing"):
/// 1. for each axis that shrinks, `scipy.ndimage.gaussian_filter` with sigma = (in/out - 1)/2,
///    zero outside the array ('constant'), kernel truncated at 4 sigma;
/// 2. `scipy.ndimage.zoom(order=1, grid_mode=True, mode='grid-constant')`: linear interpolation
///    at input coordinate (o + 0.5) * in/out - 0.5, zero outside the array;
/// 3. clip to the input's [min, max] (widened to 0 when the zero padding is outside that range
///    and reaches the output, skimage's `_clip_warp_output`).
pub fn resize_like_skimage(data: &[f64], shape: [usize; 3], out_shape: [usize; 3]) -> Vec<f64> {
    assert_eq!(data.len(), shape.iter().product::<usize>());
    if data.is_empty() {
        return vec![0.0; out_shape.iter().product()];
    }
    let lo = data.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Blur and interpolation are linear and separable, and operations along different axes
    // commute, so each axis is blurred and resampled in turn (on an ever smaller array); the
    // result equals blurring all axes first and then interpolating, as scipy does.
    let mut cur = data.to_vec();
    let mut cur_shape = shape;
    for axis in 0..3 {
        let (n_in, n_out) = (shape[axis], out_shape[axis]);
        let sigma = ((n_in as f64 / n_out as f64 - 1.0) / 2.0).max(0.0);
        if sigma > 1e-15 {
            let kernel = gaussian_kernel(sigma);
            let r = (kernel.len() / 2) as isize;
            cur = along_axis(&cur, cur_shape, axis, n_in, |line, out| {
                let n = line.len() as isize;
                for (i, o) in out.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for (k, w) in kernel.iter().enumerate() {
                        let j = i as isize + k as isize - r;
                        if (0..n).contains(&j) {
                            acc += w * line[j as usize];
                        }
                    }
                    *o = acc;
                }
            });
        }
        if n_in == n_out {
            continue;
        }
        let scale = n_in as f64 / n_out as f64;
        let taps: Vec<(isize, f64)> = (0..n_out)
            .map(|o| {
                let x = (o as f64 + 0.5) * scale - 0.5;
                let x0 = x.floor();
                (x0 as isize, x - x0)
            })
            .collect();
        cur = along_axis(&cur, cur_shape, axis, n_out, |line, out| {
            let n = line.len() as isize;
            let at = |j: isize| {
                if (0..n).contains(&j) {
                    line[j as usize]
                } else {
                    0.0
                }
            };
            for (o, &(j, f)) in out.iter_mut().zip(&taps) {
                *o = (1.0 - f) * at(j) + f * at(j + 1);
            }
        });
        cur_shape[axis] = n_out;
    }
    let (mut clip_lo, mut clip_hi) = (lo, hi);
    if !(lo..=hi).contains(&0.0) {
        let out_lo = cur.iter().copied().fold(f64::INFINITY, f64::min);
        let out_hi = cur.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if (out_lo..=out_hi).contains(&0.0) {
            clip_lo = clip_lo.min(0.0);
            clip_hi = clip_hi.max(0.0);
        }
    }
    cur.iter_mut().for_each(|v| *v = v.clamp(clip_lo, clip_hi));
    cur
}

/// `scipy.ndimage._gaussian_kernel1d(sigma, 0, radius)` with radius = int(4 sigma + 0.5).
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut k: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Nearest-neighbour resampling with the same +0.5 pixel-centre convention (for label maps).
pub fn resize_nearest(data: &[f32], shape: [usize; 3], out_shape: [usize; 3]) -> Vec<f32> {
    let idx = |axis: usize| -> Vec<usize> {
        let scale = shape[axis] as f64 / out_shape[axis] as f64;
        (0..out_shape[axis])
            .map(|o| (((o as f64 + 0.5) * scale) as usize).min(shape[axis] - 1))
            .collect()
    };
    let (i0, i1, i2) = (idx(0), idx(1), idx(2));
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for &a in &i0 {
        for &b in &i1 {
            let row = (a * shape[1] + b) * shape[2];
            out.extend(i2.iter().map(|&c| data[row + c]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_interpolates_with_half_pixel_centres_and_zero_outside() {
        // 1-D along the last axis: [0, 10] -> 4 samples at x = -0.25, 0.25, 0.75, 1.25
        let out = resize_like_skimage(&[0.0, 10.0], [1, 1, 2], [1, 1, 4]);
        // -0.25: 0.75 * v[0] + 0.25 * 0 = 0; 0.25 -> 2.5; 0.75 -> 7.5; 1.25 -> 0.75 * 10 = 7.5
        assert_eq!(out, vec![0.0, 2.5, 7.5, 7.5]);
    }

    #[test]
    fn downsampling_blurs_first_and_keeps_a_constant_inside() {
        let data = vec![1.0; 9 * 9 * 9];
        let out = resize_like_skimage(&data, [9, 9, 9], [3, 3, 3]);
        // sigma = 1: the centre voxel sees no zero padding within 4 sigma? it does (radius 4),
        // so only check the range and the clip
        assert!(out.iter().all(|&v| v > 0.0 && v <= 1.0));
        let kernel = gaussian_kernel(1.0);
        assert_eq!(kernel.len(), 9);
        assert!((kernel.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn nearest_keeps_labels() {
        let out = resize_nearest(&[1.0, 2.0], [1, 1, 2], [1, 1, 4]);
        assert_eq!(out, vec![1.0, 1.0, 2.0, 2.0]);
    }
}
