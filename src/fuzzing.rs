//! Entry points for the fuzz targets in `fuzz/` (not part of the node's API): the node's own
//! code on bytes from the network, without sockets, storage writes or index inserts.
//!
//! - [`ingest`]: what ingest does with a received object before storing it (parse for the
//!   index and the metadata, locate the pixel data, hash): a data set as C-STORE hands it over,
//!   in a transfer syntax the input picks, or a Part 10 file as STOW-RS hands it over;
//! - [`dicom_json`]: the node's DICOM JSON writer (the metadata WADO-RS serves) on whatever
//!   dicom-object parses out of the input;
//! - [`qido`]: a QIDO-RS request through the DICOMweb stack to the node's archive, over a
//!   SQLite index that holds a few synthetic series.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;

use crate::ingest::{self, Incoming, IncomingData, Origin};

/// libFuzzer's panic hook aborts on every panic, caught or not. The one place the node catches
/// a panic on purpose (dicom-parser's lazy reader in `parse::check_value_lengths`) is let
/// through; every other panic still aborts.
fn contained_panics_unwind() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !ingest::parse::in_contained_walk() {
                abort(info)
            }
        }));
    });
}

/// The transfer syntaxes an association can negotiate: what a C-STORE data set may be in.
fn transfer_syntax(knob: u8) -> &'static str {
    let all = pacs_dimse::server::ACCEPTED_TRANSFER_SYNTAXES;
    all[usize::from(knob) % all.len()]
}

const SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.2";
const SOP_INSTANCE: &str = "1.2.3.4.5.6.7.8.9";

/// Ingest up to the storage write. `data[0]`: bit 7 set, the rest is a Part 10 file (STOW-RS);
/// clear, the rest is a data set in the transfer syntax bits 0-5 pick (C-STORE), delivered in
/// one fragment or, with bit 6, in fragments of 1000 bytes.
#[doc(hidden)]
pub fn ingest(data: &[u8]) {
    contained_panics_unwind();
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let incoming = if knobs & 0x80 != 0 {
        match Incoming::from_part10(Bytes::copy_from_slice(rest), Origin::Http) {
            Ok(incoming) => incoming,
            Err(_) => return,
        }
    } else {
        let fragments = if knobs & 0x40 != 0 {
            rest.chunks(1000).map(Bytes::copy_from_slice).collect()
        } else {
            vec![Bytes::copy_from_slice(rest)]
        };
        Incoming {
            sop_class_uid: SOP_CLASS.into(),
            sop_instance_uid: SOP_INSTANCE.into(),
            transfer_syntax_uid: transfer_syntax(knobs & 0x3f).into(),
            origin: Origin::Dimse {
                calling_ae_title: "FUZZ".into(),
            },
            data: IncomingData::Dataset(fragments),
            expected_study: None,
        }
    };
    // as `Ingest::ingest` does: a C-STORE data set gets a file meta group in front
    let (prefix, dataset_offset) = match &incoming.data {
        IncomingData::Part10 { dataset_offset, .. } => (Vec::new(), *dataset_offset),
        _ => match ingest::part10_prefix(&incoming) {
            Ok(prefix) => {
                let offset = prefix.len() as u64;
                (prefix, offset)
            }
            Err(_) => return,
        },
    };
    let Ok(parsed) = ingest::analyse(
        &prefix,
        &incoming.data,
        &incoming.transfer_syntax_uid,
        dataset_offset,
        // the node's default --max-instance-mb
        2048 << 20,
    ) else {
        return;
    };
    let _ = crate::uid::Uid::parse(&parsed.sop_instance_uid);
    if let Ok(record) = parsed.finish() {
        let _ = crate::uid::Uid::parse(&record.study_instance_uid);
        let _ = crate::uid::Uid::parse(&record.series_instance_uid);
    }
}

/// The node's DICOM JSON of an object dicom-object reads whole (pixel data included), once
/// ingest's checks let it through (as a stored object would have been). `data[0]`: bit 7 set,
/// the rest is a Part 10 file; clear, a data set in the transfer syntax bits 0-5 pick.
#[doc(hidden)]
pub fn dicom_json(data: &[u8]) {
    use dicom_encoding::TransferSyntaxIndex;
    use std::io::{Cursor, Read};
    contained_panics_unwind();
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let lengths_fit = |bytes: &[u8], ts: &str| {
        ingest::parse::check_value_lengths(Cursor::new(bytes), ts, bytes.len() as u64).is_ok()
    };
    let object = if knobs & 0x80 != 0 {
        let Ok((meta, offset)) = ingest::read_part10_meta(rest) else {
            return;
        };
        let ts = meta
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_string();
        if ts == dicom_dictionary_std::uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
            || !lengths_fit(&rest[offset..], &ts)
        {
            return;
        }
        match dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(rest)
        {
            Ok(file) => file.into_inner(),
            Err(_) => return,
        }
    } else {
        let mut ts = transfer_syntax(knobs & 0x3f);
        let mut bytes = rest.to_vec();
        if ts == dicom_dictionary_std::uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
            // as parse_deflated: inflated, then read as Explicit VR Little Endian
            let mut inflated = Vec::new();
            let inflating = flate2::read::DeflateDecoder::new(rest)
                .take(1 << 24)
                .read_to_end(&mut inflated);
            if inflating.is_err() {
                return;
            }
            bytes = inflated;
            ts = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;
        }
        let Some(ts_entry) = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts) else {
            return;
        };
        if !lengths_fit(&bytes, ts) {
            return;
        }
        match dicom_object::InMemDicomObject::read_dataset_with_ts(&bytes[..], ts_entry) {
            Ok(object) => object,
            Err(_) => return,
        }
    };
    if let Ok(json) = ingest::parse::metadata_value(&object) {
        serde_json::to_vec(&json).expect("a serde_json::Value serialises");
    }
}

/// What the QIDO-RS target queries: the node's DICOMweb application over a SQLite index with
/// a few synthetic series (made once per process, in a temporary directory left behind).
struct QidoArchive {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
}

fn qido_archive() -> &'static QidoArchive {
    static ARCHIVE: OnceLock<QidoArchive> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::Builder::new()
            .prefix("pacs-fuzz-qido-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let app = runtime.block_on(async {
            let index = crate::index::open(&dir.join("index.sqlite").to_string_lossy())
                .await
                .expect("a SQLite index");
            let storage = crate::storage::Storage::open(&crate::storage::StorageConfig::Local {
                root: dir.join("objects"),
            })
            .expect("local storage");
            let ingest = Arc::new(ingest::Ingest::new(
                index,
                storage,
                ingest::DuplicatePolicy::Keep,
            ));
            for (modality, seed) in [
                (pacs_synth::SynthModality::Ct, 1),
                (pacs_synth::SynthModality::Mr, 2),
            ] {
                let mut opts = pacs_synth::SynthOptions::new(modality);
                opts.series_per_study = 2;
                opts.slices = 3;
                opts.rows = 8;
                opts.columns = 8;
                opts.seed = seed;
                opts.out = dir.join("synth");
                let summary = pacs_synth::synthesise(&opts).expect("synthetic series");
                for instance in summary.instances {
                    let bytes = std::fs::read(&instance.path).expect("a synthetic file");
                    let incoming =
                        Incoming::from_part10(bytes.into(), Origin::Http).expect("a Part 10 file");
                    ingest.ingest(incoming).await.expect("ingested");
                }
            }
            let archive = crate::dicomweb_service::DicomWebArchive {
                ingest,
                config: crate::dicomweb_service::DicomWebArchiveConfig { max_results: 50 },
                audit: crate::audit::Audit::disabled("PACS"),
            };
            pacs_dicomweb::app(
                Arc::new(archive),
                pacs_dicomweb::DicomWebConfig::default(),
                Vec::new(),
            )
        });
        QidoArchive { runtime, app }
    })
}

/// One QIDO-RS request. `data[0]` picks the resource (studies, series, instances, each
/// across the archive or within a stored study or series, or within one that is not there)
/// and the Accept header; the rest is the query string.
#[doc(hidden)]
pub fn qido(data: &[u8]) -> Option<StatusCode> {
    let (&knobs, query) = data.split_first()?;
    let query = std::str::from_utf8(query).ok()?;
    let archive = qido_archive();
    // the UIDs the synthetic CT series got (seed 1), and one that matches nothing
    let (study, series) = synthetic_uids();
    let path = match knobs % 8 {
        0 => "/studies".to_string(),
        1 => "/series".to_string(),
        2 => "/instances".to_string(),
        3 => format!("/studies/{study}/series"),
        4 => format!("/studies/{study}/instances"),
        5 => format!("/studies/{study}/series/{series}/instances"),
        6 => "/studies/1.2.3/series".to_string(),
        _ => "/studies/1.2.3/series/1.2.3.4/instances".to_string(),
    };
    let accept = match (knobs >> 3) & 3 {
        0 => "application/dicom+json",
        1 => "application/json",
        2 => "*/*",
        _ => "multipart/related; type=\"application/dicom+xml\"",
    };
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("/dicom-web{path}?{query}"))
        .header(header::ACCEPT, accept)
        .body(Body::empty())
        .ok()?;
    archive.runtime.block_on(async {
        use tower::ServiceExt;
        let Ok(response) = archive.app.clone().oneshot(request).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a response body in memory");
        if status == StatusCode::OK {
            let value: serde_json::Value =
                serde_json::from_slice(&body).expect("the QIDO-RS response is JSON");
            assert!(value.is_array(), "the QIDO-RS response is an array");
        }
        Some(status)
    })
}

/// The Study and Series Instance UIDs of the first synthetic CT series.
fn synthetic_uids() -> &'static (String, String) {
    static UIDS: OnceLock<(String, String)> = OnceLock::new();
    UIDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut opts = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Ct);
        opts.slices = 1;
        opts.rows = 8;
        opts.columns = 8;
        opts.seed = 1;
        opts.out = dir.path().to_path_buf();
        let summary = pacs_synth::synthesise(&opts).expect("a synthetic instance");
        let i = &summary.instances[0];
        (i.study_instance_uid.clone(), i.series_instance_uid.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic_file() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Mr);
        opts.slices = 1;
        opts.rows = 4;
        opts.columns = 4;
        opts.out = dir.path().to_path_buf();
        let summary = pacs_synth::synthesise(&opts).unwrap();
        std::fs::read(&summary.instances[0].path).unwrap()
    }

    #[test]
    fn objects_run_through_the_ingest_and_json_harnesses() {
        let file = synthetic_file();
        let (_, offset) = ingest::read_part10_meta(&file).unwrap();
        let mut part10 = vec![0x80];
        part10.extend_from_slice(&file);
        ingest(&part10);
        dicom_json(&part10);
        // the data set alone, in each transfer syntax (only Explicit VR Little Endian parses)
        for knobs in 0..0x80 {
            let mut dataset = vec![knobs];
            dataset.extend_from_slice(&file[offset..]);
            ingest(&dataset);
            dicom_json(&dataset);
        }
        ingest(&[]);
        dicom_json(&[0x80]);
    }

    /// A fuzz target's harness, by the target's name.
    type Harness = (&'static str, fn(&[u8]));

    /// The inputs the fuzz targets once failed on (fuzz/regressions/<target>/) run through.
    #[test]
    fn regression_inputs_run_through_the_harnesses() {
        let targets: [Harness; 3] = [
            ("ingest", ingest),
            ("dicom_json", dicom_json),
            ("qido", |data| {
                qido(data);
            }),
        ];
        for (target, harness) in targets {
            let dir = format!("{}/fuzz/regressions/{target}", env!("CARGO_MANIFEST_DIR"));
            for entry in std::fs::read_dir(dir).into_iter().flatten() {
                harness(&std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }

    #[test]
    fn queries_run_through_the_qido_harness() {
        assert_eq!(qido(b"\0"), Some(StatusCode::OK));
        assert_eq!(qido(b"\x05limit=1&includefield=all"), Some(StatusCode::OK));
        assert_eq!(
            qido(b"\0StudyDate=yesterday"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(qido(b"\x18"), Some(StatusCode::NOT_ACCEPTABLE));
        assert_eq!(qido(b"\0a b"), None);
    }
}
