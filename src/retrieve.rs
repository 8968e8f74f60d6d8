//! C-MOVE and C-GET in the archive: which instances an identifier selects (PS3.4 C.4.2.2.1,
//! C.6), and reading them back in a transfer syntax the receiver accepted.

use std::sync::Arc;

use bytes::Bytes;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pacs_dimse::command::status;
use pacs_dimse::{InstanceSource, OutgoingInstance};

use crate::index::Index;
use crate::storage::Storage;

const EXPLICIT_VR_LE: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;
const IMPLICIT_VR_LE: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
const PATIENT_ROOT_MOVE: &str = uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
const PATIENT_ROOT_GET: &str = uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;

/// Native (uncompressed) transfer syntaxes other than the two little endian ones: the
/// objects can be re-encoded without decoding pixels. (Big Endian is retired, still stored.)
#[allow(deprecated)]
const OTHER_NATIVE: &[&str] = &[
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
];

fn text(identifier: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<String> {
    identifier
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.split('\\')
                .map(|v| v.trim_matches(['\0', ' ']).to_string())
                .filter(|v| !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The instances a C-MOVE or C-GET identifier selects, in series and instance order. Errors
/// are (status, comment): A900 for an identifier that does not fit the information model,
/// C000 when the index fails.
pub async fn resolve(
    index: &dyn Index,
    sop_class_uid: &str,
    identifier: &InMemDicomObject,
) -> Result<Vec<OutgoingInstance>, (u16, String)> {
    let mismatch = |why: String| (status::IDENTIFIER_DOES_NOT_MATCH, why);
    let level = text(identifier, tags::QUERY_RETRIEVE_LEVEL)
        .into_iter()
        .next()
        .ok_or_else(|| mismatch("Query/Retrieve Level (0008,0052) is missing".into()))?;
    let patient_root = sop_class_uid == PATIENT_ROOT_MOVE || sop_class_uid == PATIENT_ROOT_GET;
    let patient_ids = text(identifier, tags::PATIENT_ID);
    let studies = text(identifier, tags::STUDY_INSTANCE_UID);
    let series = text(identifier, tags::SERIES_INSTANCE_UID);
    let instances = text(identifier, tags::SOP_INSTANCE_UID);
    // PS3.4 C.4.2.2.1: the unique key of the retrieve level is required (a list of UIDs is
    // allowed); keys of the levels above narrow it; keys below the level are not allowed.
    let (required, name, below): (&Vec<String>, &str, &[&Vec<String>]) = match level.as_str() {
        "PATIENT" if patient_root => (&patient_ids, "Patient ID", &[&studies, &series, &instances]),
        "PATIENT" => return Err(mismatch("the Study Root model has no PATIENT level".into())),
        "STUDY" => (&studies, "Study Instance UID", &[&series, &instances]),
        "SERIES" => (&series, "Series Instance UID", &[&instances]),
        "IMAGE" => (&instances, "SOP Instance UID", &[]),
        other => return Err(mismatch(format!("unknown Query/Retrieve Level {other:?}"))),
    };
    if required.is_empty() {
        return Err(mismatch(format!("{name} is required at the {level} level")));
    }
    if below.iter().any(|keys| !keys.is_empty()) {
        return Err(mismatch(format!(
            "keys below the {level} level are not allowed"
        )));
    }
    if level == "PATIENT" && patient_ids.len() > 1 {
        return Err(mismatch("Patient ID must have a single value".into()));
    }
    let filter = crate::index::InstanceFilter {
        patient_ids,
        studies,
        series,
        instances,
    };
    let rows = index
        .instances_in(&filter, false)
        .await
        .map_err(|e| (status::UNABLE_TO_PROCESS, e.to_string()))?;
    Ok(rows
        .into_iter()
        .map(|(i, _)| OutgoingInstance {
            sop_class_uid: i.sop_class_uid,
            sop_instance_uid: i.sop_instance_uid,
            transfer_syntax_uid: i.transfer_syntax_uid,
            handle: i.object_key,
            size_bytes: i.size_bytes.max(0) as u64,
        })
        .collect())
}

/// Reads stored instances for C-STORE sub-operations, converting them when the receiver did
/// not accept the stored transfer syntax.
pub struct ArchiveSource {
    pub storage: Storage,
}

impl ArchiveSource {
    pub fn new(storage: Storage) -> Arc<Self> {
        Arc::new(ArchiveSource { storage })
    }
}

#[async_trait::async_trait]
impl InstanceSource for ArchiveSource {
    fn transfer_syntaxes(&self, instance: &OutgoingInstance) -> Vec<String> {
        let stored = instance.transfer_syntax_uid.as_str();
        let mut out = vec![stored.to_string()];
        let convertible = stored == EXPLICIT_VR_LE
            || stored == IMPLICIT_VR_LE
            || OTHER_NATIVE.contains(&stored)
            || crate::pixels::can_decode(stored);
        if convertible {
            for ts in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
                if ts != stored {
                    out.push(ts.to_string());
                }
            }
        }
        out
    }

    async fn load(
        &self,
        instance: &OutgoingInstance,
        transfer_syntax_uid: &str,
    ) -> Result<Bytes, String> {
        let part10 = self
            .storage
            .get(&instance.handle)
            .await
            .map_err(|e| format!("cannot read {}: {e}", instance.sop_instance_uid))?;
        if transfer_syntax_uid == instance.transfer_syntax_uid {
            let start = dataset_offset(&part10).ok_or_else(|| {
                format!(
                    "stored object of {} is not a Part 10 file",
                    instance.sop_instance_uid
                )
            })?;
            return Ok(part10.slice(start..));
        }
        let target = transfer_syntax_uid.to_string();
        let uid = instance.sop_instance_uid.clone();
        tokio::task::spawn_blocking(move || convert(&part10, &target))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot convert {uid} to {transfer_syntax_uid}: {e}"))
    }
}

/// Re-encodes a Part 10 object's data set in Explicit or Implicit VR Little Endian, decoding
/// compressed pixel data.
fn convert(part10: &[u8], target: &str) -> Result<Bytes, String> {
    let explicit = crate::pixels::transcode_to_explicit_le(part10).map_err(|e| e.to_string())?;
    let start = dataset_offset(&explicit).ok_or("transcoded object lacks its meta group")?;
    if target == EXPLICIT_VR_LE {
        return Ok(Bytes::from(explicit).slice(start..));
    }
    if target != IMPLICIT_VR_LE {
        return Err(format!("cannot convert to {target}"));
    }
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };
    let obj = InMemDicomObject::read_dataset_with_ts(
        &explicit[start..],
        &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(explicit.len() - start);
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| e.to_string())?;
    Ok(Bytes::from(out))
}

/// Where the data set starts in a Part 10 file.
fn dataset_offset(part10: &[u8]) -> Option<usize> {
    crate::ingest::read_part10_meta(part10)
        .ok()
        .map(|(_, offset)| offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::meta::FileMetaTableBuilder;

    #[test]
    fn finds_the_data_set_after_the_meta_group() {
        let mut dataset = InMemDicomObject::new_empty();
        dataset.put(DataElement::new(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::from("X"),
        ));
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
            .media_storage_sop_instance_uid("1.2.3")
            .transfer_syntax(EXPLICIT_VR_LE)
            .build()
            .unwrap();
        let mut file = Vec::new();
        dataset
            .clone()
            .with_exact_meta(meta)
            .write_all(&mut file)
            .unwrap();
        let mut expected = Vec::new();
        dataset
            .write_dataset_with_ts(
                &mut expected,
                &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .unwrap();
        let start = dataset_offset(&file).unwrap();
        assert_eq!(&file[start..], &expected[..]);
        assert_eq!(dataset_offset(b"not dicom"), None);
    }
}
