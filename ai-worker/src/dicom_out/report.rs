//! The human-readable report of an analysis: an Encapsulated PDF (PS3.3 A.45.1, SOP Class
//! 1.2.840.10008.5.1.4.1.1.104.1) in the source's Study, whose one page shows the model name
//! and version, a key image with the segments drawn over it, and the table of measurements.
//! The TID 1500 report keeps the full measurements for machines; this one is for the
//! radiologist, and OHIF shows it (through WADO-RS `/rendered`, PS3.18 8.3.5).
//!
//! Not here: laying out the page (`report_pdf`).

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::dataset::{self, is, new_uid, text, truncate, DataSetExt, Timestamp};
use super::report_pdf::{self, KeyImage, Page, Row};
use super::seg::check_source;
use super::{Algorithm, Equipment, OutputError, SegmentInput, SourceSeries};
use crate::measure::SegmentMeasurements;
use crate::model::Code;

/// Concept Name of the document (PS3.16 CID 7000 "Diagnostic Imaging Report Document Title").
const DIAGNOSTIC_IMAGING_REPORT: (&str, &str, &str) =
    ("18748-4", "LN", "Diagnostic Imaging Report");
/// MIME Type of Encapsulated Document (0042,0012).
pub const PDF_MIME_TYPE: &str = "application/pdf";

/// What the report shows besides the segments and their measurements.
#[derive(Debug, Clone, Copy)]
pub struct ReportSources<'a> {
    /// The source voxels, `[slice][row][col]` with the column fastest (the volume's order,
    /// rescaled: Hounsfield units for CT), for the key image.
    pub voxels: &'a [f32],
    /// The Segmentation and the TID 1500 report the document summarises: referenced in its
    /// Source Instance Sequence with the key image's source instance.
    pub segmentation: &'a InMemDicomObject,
    pub measurement_report: &'a InMemDicomObject,
}

/// Writes the report of `segments` (in the order of the Segmentation's Segment Numbers) with
/// `measurements[i]` for `segments[i]`, as a new Series numbered `series_number` (Modality
/// DOC) in the source's Study.
pub fn build_report(
    source: &SourceSeries,
    algorithm: &Algorithm,
    equipment: &Equipment,
    series_number: i32,
    segments: &[SegmentInput<'_>],
    measurements: &[SegmentMeasurements],
    sources: ReportSources<'_>,
) -> Result<FileDicomObject<InMemDicomObject>, OutputError> {
    check_source(source)?;
    if segments.is_empty() {
        return Err(OutputError::NoSegments);
    }
    if segments.len() != measurements.len() {
        return Err(OutputError::MeasurementCount {
            measurements: measurements.len(),
            segments: segments.len(),
        });
    }
    let expected = source.voxel_count();
    if sources.voxels.len() != expected {
        return Err(OutputError::Geometry(format!(
            "{} source voxels for {} slices of {} x {}",
            sources.voxels.len(),
            source.slices.len(),
            source.rows,
            source.columns
        )));
    }
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

    let at = Timestamp::now();
    let key = key_image(source, sources.voxels, segments, measurements);
    let page = page(
        source,
        algorithm,
        equipment,
        segments,
        measurements,
        &key,
        &at,
    );
    let mut document = report_pdf::render(&page);

    let mut obj = InMemDicomObject::new_empty();
    dataset::put_sop_common(&mut obj, uids::ENCAPSULATED_PDF_STORAGE, &new_uid(), &at);
    dataset::put_patient_study(&mut obj, source)?;
    dataset::put_equipment(&mut obj, equipment);
    // The model is the software that made the content; the worker is the device.
    obj.set_strs(
        tags::SOFTWARE_VERSIONS,
        [
            truncate(&equipment.software_versions, 64),
            truncate(&format!("{} {}", algorithm.name, algorithm.version), 64),
        ],
    );

    // Encapsulated Document Series module (C.24.1).
    obj.set_str(tags::MODALITY, "DOC");
    obj.set_str(tags::SERIES_INSTANCE_UID, new_uid());
    obj.set_str(tags::SERIES_NUMBER, is(series_number.into()));
    obj.set_str(
        tags::SERIES_DESCRIPTION,
        algorithm.series_description("Report"),
    );

    // SC Equipment module (C.8.6.1): made on a workstation, not digitised.
    obj.set_str(tags::CONVERSION_TYPE, "WSD");

    // Encapsulated Document module (C.24.2).
    obj.set_str(tags::INSTANCE_NUMBER, "1");
    obj.set_str(tags::CONTENT_DATE, at.date.clone());
    obj.set_str(tags::CONTENT_TIME, at.time.clone());
    obj.set_str(tags::ACQUISITION_DATE_TIME, "");
    // The page shows the patient's name and ID.
    obj.set_str(tags::BURNED_IN_ANNOTATION, "YES");
    obj.set_seq(
        tags::SOURCE_INSTANCE_SEQUENCE,
        source_instances(source, &key, &sources)?,
    );
    obj.set_str(tags::DOCUMENT_TITLE, page.title.clone());
    let (value, scheme, meaning) = DIAGNOSTIC_IMAGING_REPORT;
    obj.set_code(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        &Code {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        },
    );
    obj.set_str(tags::VERIFICATION_FLAG, "UNVERIFIED");
    obj.set_str(tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT, PDF_MIME_TYPE);
    // PS3.3 C.24.2.1: the length is that of the document itself; an odd-length document is
    // padded with one NUL byte to the even length of the value.
    obj.set_value(tags::ENCAPSULATED_DOCUMENT_LENGTH, document.len() as u32);
    if document.len() % 2 == 1 {
        document.push(0);
    }
    obj.set_bytes(tags::ENCAPSULATED_DOCUMENT, VR::OB, document);

    dataset::with_meta(obj)
}

/// The key image: the source slice where the largest segment has most pixels, with every
/// segment's pixels on it.
fn key_image(
    source: &SourceSeries,
    voxels: &[f32],
    segments: &[SegmentInput<'_>],
    measurements: &[SegmentMeasurements],
) -> KeyImage {
    let plane = source.rows * source.columns;
    // the first of equally large segments, and the first of equally large slices
    let largest = (0..segments.len())
        .rev()
        .max_by_key(|&i| measurements[i].voxel_count)
        .unwrap_or(0);
    let slice = (0..source.slices.len())
        .rev()
        .max_by_key(|&s| {
            segments[largest].mask[s * plane..(s + 1) * plane]
                .iter()
                .filter(|&&m| m)
                .count()
        })
        .unwrap_or(0);
    let pixels = voxels[slice * plane..(slice + 1) * plane].to_vec();
    let (center, width) = window(source, &pixels);
    KeyImage {
        rows: source.rows,
        columns: source.columns,
        pixel_spacing: source.pixel_spacing,
        slice,
        largest_segment: largest,
        window_center: center,
        window_width: width,
        pixels,
        overlays: segments
            .iter()
            .map(|s| {
                (
                    s.label.color,
                    s.mask[slice * plane..(slice + 1) * plane].to_vec(),
                )
            })
            .collect(),
    }
}

/// The source's first Window Center/Width (PS3.3 C.11.2), else the 1st to 99th percentile of
/// the key slice.
fn window(source: &SourceSeries, pixels: &[f32]) -> (f64, f64) {
    let first = |tag| {
        source
            .instance
            .get(tag)
            .and_then(|e| e.to_multi_float64().ok())
            .and_then(|v| v.first().copied())
            .filter(|v| v.is_finite())
    };
    if let (Some(c), Some(w)) = (first(tags::WINDOW_CENTER), first(tags::WINDOW_WIDTH)) {
        if w >= 1.0 {
            return (c, w);
        }
    }
    let mut sorted: Vec<f32> = pixels.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return (0.5, 1.0);
    }
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| f64::from(sorted[((sorted.len() - 1) as f64 * q).round() as usize]);
    let (lo, hi) = (at(0.01), at(0.99));
    ((lo + hi) / 2.0, (hi - lo).max(1.0))
}

/// Source Instance Sequence (0042,0013): the key image's source instance, the Segmentation
/// and the TID 1500 report.
fn source_instances(
    source: &SourceSeries,
    key: &KeyImage,
    sources: &ReportSources<'_>,
) -> Result<Vec<InMemDicomObject>, OutputError> {
    let reference = |class: &str, instance: &str| {
        let mut r = InMemDicomObject::new_empty();
        r.set_str(tags::REFERENCED_SOP_CLASS_UID, class);
        r.set_str(tags::REFERENCED_SOP_INSTANCE_UID, instance);
        r
    };
    let slice = &source.slices[key.slice];
    let mut items = vec![reference(&slice.sop_class_uid, &slice.sop_instance_uid)];
    for (obj, what) in [
        (sources.segmentation, "Segmentation"),
        (sources.measurement_report, "measurement report"),
    ] {
        let uid = |tag, name: &str| {
            text(obj, tag).ok_or_else(|| OutputError::Encode(format!("the {what} has no {name}")))
        };
        items.push(reference(
            &uid(tags::SOP_CLASS_UID, "SOPClassUID")?,
            &uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        ));
    }
    Ok(items)
}

/// Formats one measurement for the table: `decimals` after the point, "-" for what an empty
/// segment does not have.
fn number(value: f64, decimals: usize, present: bool) -> String {
    if present && value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".into()
    }
}

/// What the page says.
fn page(
    source: &SourceSeries,
    algorithm: &Algorithm,
    equipment: &Equipment,
    segments: &[SegmentInput<'_>],
    measurements: &[SegmentMeasurements],
    key: &KeyImage,
    at: &Timestamp,
) -> Page {
    let attr = |tag| text(&source.instance, tag).unwrap_or_default();
    let date = |d: String| {
        if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
            format!("{}-{}-{}", &d[0..4], &d[4..6], &d[6..8])
        } else {
            d
        }
    };
    let unit = match source.modality.as_str() {
        "CT" => "HU",
        _ => "a.u.",
    };
    let slice = &source.slices[key.slice];
    let title = truncate(
        &format!(
            "{}Measurement report {} {}",
            if algorithm.classical { "" } else { "AI " },
            algorithm.name,
            algorithm.version
        ),
        64,
    );
    let rows = segments
        .iter()
        .zip(measurements)
        .enumerate()
        .map(|(i, (s, m))| {
            let any = m.voxel_count > 0;
            Row {
                color: s.label.color,
                cells: vec![
                    format!("{} {}", i + 1, s.label.name),
                    number(m.volume_ml, 2, true),
                    number(m.max_diameter_3d_mm, 1, any),
                    number(m.max_diameter_inplane_mm, 1, any),
                    m.voxel_count.to_string(),
                    m.components.to_string(),
                    number(m.mean, 1, any),
                    number(m.std_dev, 1, any),
                ],
            }
        })
        .collect();
    Page {
        title: title.clone(),
        lines: vec![
            format!(
                "Model: {} {} ({})",
                algorithm.name, algorithm.version, algorithm.family.meaning
            ),
            format!(
                "Patient: {}   ID: {}   Study date: {}   Accession: {}",
                attr(tags::PATIENT_NAME).replace('^', " ").trim(),
                attr(tags::PATIENT_ID),
                date(attr(tags::STUDY_DATE)),
                attr(tags::ACCESSION_NUMBER),
            ),
            format!(
                "Source: {} series {} \"{}\", {} slices of {} x {}",
                source.modality,
                attr(tags::SERIES_NUMBER),
                attr(tags::SERIES_DESCRIPTION),
                source.slices.len(),
                source.rows,
                source.columns
            ),
            format!(
                "Written {} {} by {} {} ({}); automatic result, not verified by a physician.",
                date(at.date.clone()),
                at.time.get(0..4).map(|t| format!("{}:{}", &t[0..2], &t[2..4])).unwrap_or_default(),
                equipment.model_name,
                equipment.software_versions,
                equipment.manufacturer,
            ),
        ],
        caption: format!(
            "Key image: slice {} of {} (SOP Instance {}), where {} is largest; window W {:.0} L {:.0}.",
            key.slice + 1,
            source.slices.len(),
            slice.sop_instance_uid,
            segments[key.largest_segment].label.name,
            key.window_width,
            key.window_center,
        ),
        header: [
            "Segment",
            "Volume",
            "Longest",
            "In-plane",
            "Voxels",
            "Compo-",
            "Mean",
            "Std dev",
        ]
        .map(String::from)
        .to_vec(),
        header_units: vec![
            String::new(),
            "mL".into(),
            "3D mm".into(),
            "mm".into(),
            String::new(),
            "nents".into(),
            unit.into(),
            unit.into(),
        ],
        rows,
        key: key.clone(),
        footer: format!(
            "Complete measurements (minimum, maximum and more) in the TID 1500 report \"{}\".",
            algorithm.series_description("SR")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_and_absent_values_are_dashes() {
        assert_eq!(number(79.72, 2, true), "79.72");
        assert_eq!(number(3.0, 1, true), "3.0");
        assert_eq!(number(3.0, 1, false), "-");
        assert_eq!(number(f64::NAN, 1, true), "-");
    }
}
