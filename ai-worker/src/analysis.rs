//! One job's computation, between fetching the series and storing the results: Part 10 bytes in,
//! a Segmentation and its TID 1500 report out (as Part 10 bytes), with the measurements and
//! the time each step took. CPU-bound; the worker runs it on a blocking thread.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use serde_json::json;

use crate::dicom_out::{self, Algorithm, Equipment, ReportSources, SegmentInput, SourceSeries};
use crate::inference::{InferenceError, Runner};
use crate::measure::{measure, SegmentMeasurements};
use crate::volume::Volume;

/// Why a job did not produce results, and whether trying again could help.
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub message: String,
    /// false: the series itself cannot be analysed (missing slices, a non-image SOP class, pixel
    /// data that cannot be decoded...): the job fails for good instead of being retried.
    pub retryable: bool,
}

impl From<crate::node_client::ClientError> for JobFailure {
    fn from(e: crate::node_client::ClientError) -> JobFailure {
        JobFailure {
            retryable: e.is_transient(),
            message: e.to_string(),
        }
    }
}

impl JobFailure {
    pub fn permanent(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn transient(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            retryable: true,
        }
    }
}

/// What identifies a job's outputs: the same job run again gives the same UIDs.
#[derive(Debug, Clone)]
pub struct OutputIdentity {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub model: String,
    pub model_version: String,
    pub run: i64,
}

impl OutputIdentity {
    /// A UID under 2.25 from a name-based (SHA-1, version 5) UUID of the job and `what`
    /// (PS3.5 B.2 allows any UUID there).
    fn uid(&self, what: &str) -> String {
        let name = format!(
            "pacs-ai-worker/{}/{}/{}/{}/{}/{what}",
            self.study_instance_uid,
            self.series_instance_uid,
            self.model,
            self.model_version,
            self.run
        );
        let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
        format!("2.25.{}", uuid.as_u128())
    }

    fn description(&self, algorithm: &Algorithm, kind: &str) -> String {
        let base = algorithm.series_description(kind);
        if self.run > 1 {
            format!("{base} run {}", self.run)
        } else {
            base
        }
    }
}

/// Wall-clock time of each step.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimings {
    /// Parsing the Part 10 files, decoding pixels, stacking the volume.
    pub assemble: Duration,
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
    pub measure: Duration,
    /// Building and encoding the SEG, the SR and the PDF report.
    pub encode: Duration,
}

/// The results of one analysis.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Part 10 bytes of the Segmentation, the TID 1500 report and the PDF report; empty when
    /// no label found anything.
    pub objects: Vec<Vec<u8>>,
    pub result: serde_json::Value,
    pub timings: StepTimings,
}

/// Milliseconds with microsecond precision, for the job's result record.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl StepTimings {
    pub fn to_json(self) -> serde_json::Value {
        json!({
            "assemble_ms": ms(self.assemble),
            "preprocess_ms": ms(self.preprocess),
            "inference_ms": ms(self.inference),
            "postprocess_ms": ms(self.postprocess),
            "measure_ms": ms(self.measure),
            "encode_ms": ms(self.encode),
        })
    }
}

/// Parses one fetched instance (a Part 10 file).
fn parse_instance(
    bytes: &Bytes,
) -> Result<dicom_object::FileDicomObject<dicom_object::InMemDicomObject>, String> {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(std::io::Cursor::new(bytes.as_ref()))
        .map_err(|e| e.to_string())
}

/// The source series' SeriesNumber, for numbering the outputs after it.
fn series_number(volume: &Volume) -> i32 {
    volume
        .first_instance
        .get(tags::SERIES_NUMBER)
        .and_then(|e| e.to_int::<i32>().ok())
        .unwrap_or(0)
}

/// Runs `runner` on the fetched instances of one series and builds the outputs.
pub fn analyse(
    instances: Vec<Bytes>,
    runner: &Runner,
    equipment: &Equipment,
    identity: &OutputIdentity,
) -> Result<Outputs, JobFailure> {
    let mut timings = StepTimings::default();
    let start = Instant::now();
    if instances.is_empty() {
        return Err(JobFailure::permanent("the series has no instances"));
    }
    let mut objects = Vec::with_capacity(instances.len());
    for (i, bytes) in instances.iter().enumerate() {
        let obj = parse_instance(bytes).map_err(|e| {
            JobFailure::permanent(format!(
                "instance {} of the series is not DICOM: {e}",
                i + 1
            ))
        })?;
        objects.push(obj);
    }
    drop(instances);
    let volume =
        Volume::from_instances(objects).map_err(|e| JobFailure::permanent(e.to_string()))?;
    timings.assemble = start.elapsed();
    if volume.series_instance_uid != identity.series_instance_uid {
        return Err(JobFailure::permanent(format!(
            "the node sent series {} for series {}",
            volume.series_instance_uid, identity.series_instance_uid
        )));
    }

    let segmentation = runner.segment(&volume).map_err(|e| match e {
        InferenceError::Volume(_) | InferenceError::Model { .. } => {
            JobFailure::permanent(e.to_string())
        }
        other => JobFailure::transient(other.to_string()),
    })?;
    timings.preprocess = segmentation.timings.preprocess;
    timings.inference = segmentation.timings.inference;
    timings.postprocess = segmentation.timings.postprocess;

    let start = Instant::now();
    let measurements: Vec<SegmentMeasurements> = segmentation
        .masks
        .iter()
        .map(|m| measure(&m.mask, &volume))
        .collect();
    timings.measure = start.elapsed();

    let model = runner.model();
    let algorithm = Algorithm {
        name: model.name().to_string(),
        version: model.version().to_string(),
        family: if model.manifest.classical {
            Algorithm::histogram_analysis()
        } else {
            Algorithm::artificial_intelligence()
        },
        classical: model.manifest.classical,
    };
    let segments_json: Vec<serde_json::Value> = segmentation
        .masks
        .iter()
        .zip(&measurements)
        .enumerate()
        .map(|(i, (m, measured))| {
            json!({
                "segment_number": i + 1,
                "label": m.label.name,
                "measurements": measured,
            })
        })
        .collect();
    let mut result = json!({
        "model": model.name(),
        "model_version": model.version(),
        "execution_provider": runner.execution_provider(),
        "source_instances": volume.slices.len(),
        "shape": volume.shape(),
        "segments": segments_json,
    });

    // Every label empty: nothing to segment or report (a Segmentation needs a frame).
    if segmentation
        .masks
        .iter()
        .all(|m| !m.mask.iter().any(|&v| v))
    {
        result["stored"] = json!([]);
        result["note"] = json!("no label found any voxel: no SEG or SR written");
        return Ok(Outputs {
            objects: Vec::new(),
            result,
            timings,
        });
    }

    let start = Instant::now();
    let source = SourceSeries::from_volume(&volume);
    let inputs: Vec<SegmentInput<'_>> = segmentation
        .masks
        .iter()
        .map(|m| SegmentInput {
            label: &m.label,
            mask: &m.mask,
        })
        .collect();
    let base_number = series_number(&volume).clamp(0, 99_999);
    let encode_error = |e: dicom_out::OutputError| JobFailure::permanent(e.to_string());
    let seg =
        dicom_out::build_segmentation(&source, &algorithm, equipment, base_number + 1000, &inputs)
            .map_err(encode_error)?;
    let seg_series = identity.uid("SEG series");
    let seg_instance = identity.uid("SEG instance");
    let seg = dicom_out::reidentify(
        seg,
        &seg_series,
        &seg_instance,
        &identity.description(&algorithm, "SEG"),
    )
    .map_err(encode_error)?;
    let sr = dicom_out::build_measurement_report(
        &source,
        &algorithm,
        equipment,
        base_number + 2000,
        &seg,
        &measurements,
    )
    .map_err(encode_error)?;
    let sr_series = identity.uid("SR series");
    let sr_instance = identity.uid("SR instance");
    let sr = dicom_out::reidentify(
        sr,
        &sr_series,
        &sr_instance,
        &identity.description(&algorithm, "SR"),
    )
    .map_err(encode_error)?;
    let report = dicom_out::build_report(
        &source,
        &algorithm,
        equipment,
        base_number + 3000,
        &inputs,
        &measurements,
        ReportSources {
            voxels: &volume.voxels,
            segmentation: &seg,
            measurement_report: &sr,
        },
    )
    .map_err(encode_error)?;
    let report_series = identity.uid("report series");
    let report_instance = identity.uid("report instance");
    let report = dicom_out::reidentify(
        report,
        &report_series,
        &report_instance,
        &identity.description(&algorithm, "Report"),
    )
    .map_err(encode_error)?;
    let objects = vec![
        dicom_out::to_part10_bytes(&seg).map_err(encode_error)?,
        dicom_out::to_part10_bytes(&sr).map_err(encode_error)?,
        dicom_out::to_part10_bytes(&report).map_err(encode_error)?,
    ];
    timings.encode = start.elapsed();
    result["stored"] = json!([
        {"kind": "SEG", "series_instance_uid": seg_series, "sop_instance_uid": seg_instance},
        {"kind": "SR", "series_instance_uid": sr_series, "sop_instance_uid": sr_instance},
        {"kind": "REPORT", "series_instance_uid": report_series, "sop_instance_uid": report_instance},
    ]);
    Ok(Outputs {
        objects,
        result,
        timings,
    })
}
