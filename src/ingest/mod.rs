//! Ingest: the one path every received instance takes, whichever front-end received it
//! (C-STORE or STOW-RS). Validate, parse, hash, store the object durably, then commit
//! its index row; only then is the sender told it succeeded.

#[cfg(test)]
mod commit_outcome;
pub mod parse;
pub mod sr;

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use dicom_object::meta::FileMetaTableBuilder;
use tracing::{debug, info, warn};

use crate::index::{Index, IndexError, InsertOutcome, StoredInstance};
use crate::storage::{Storage, StorageError};
use crate::uid::Uid;

/// What to do when an instance arrives under a SOP Instance UID that is already stored with
/// different content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// Keep what is stored and answer with a warning.
    Keep,
    /// Replace what is stored with the new object.
    Overwrite,
}

impl std::str::FromStr for DuplicatePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(DuplicatePolicy::Keep),
            "overwrite" => Ok(DuplicatePolicy::Overwrite),
            other => Err(format!(
                "unknown duplicate policy {other:?} (keep or overwrite)"
            )),
        }
    }
}

/// The data set of an incoming instance.
pub enum IncomingData {
    /// A data set without file meta group, encoded in `transfer_syntax_uid` (as C-STORE
    /// delivers it), in the fragments it arrived in.
    Dataset(Vec<Bytes>),
    /// The same, in a file (large objects spilled to disk while receiving).
    DatasetFile(PathBuf),
    /// A complete Part 10 file (as STOW-RS delivers it), stored as received; its data set
    /// starts at `dataset_offset`.
    Part10 { bytes: Bytes, dataset_offset: u64 },
    /// The same, in a file (a large STOW-RS part spilled to disk while receiving).
    Part10File { path: PathBuf, dataset_offset: u64 },
}

impl IncomingData {
    /// Its length in bytes (a file's from its metadata).
    pub fn byte_len(&self) -> std::io::Result<u64> {
        Ok(match self {
            IncomingData::Dataset(fragments) => fragments.iter().map(|f| f.len() as u64).sum(),
            IncomingData::Part10 { bytes, .. } => bytes.len() as u64,
            IncomingData::DatasetFile(path) | IncomingData::Part10File { path, .. } => {
                std::fs::metadata(path)?.len()
            }
        })
    }
}

/// Who stored an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A DIMSE peer, by the calling AE title it gave in its A-ASSOCIATE-RQ (PS3.8 9.3.2):
    /// chosen by the peer, so never proof of anything. Recorded as Source Application Entity
    /// Title in the stored file meta (PS3.10 7.1).
    Dimse { calling_ae_title: String },
    /// An HTTP request (STOW-RS) without an identity that means something to ingest.
    Http,
    /// An authenticated AI worker (it presented the worker token): what it stores is AI
    /// output, which never triggers AI work itself.
    AiWorker,
}

impl Origin {
    /// The calling AE title of a DIMSE sender; empty otherwise.
    pub fn source_ae(&self) -> &str {
        match self {
            Origin::Dimse { calling_ae_title } => calling_ae_title,
            Origin::Http | Origin::AiWorker => "",
        }
    }

    pub fn is_ai_output(&self) -> bool {
        matches!(self, Origin::AiWorker)
    }
}

impl From<&pacs_dicomweb::Identity> for Origin {
    fn from(identity: &pacs_dicomweb::Identity) -> Origin {
        // the ai-worker permission is what makes a caller's objects AI output
        if identity.is_ai_worker() {
            Origin::AiWorker
        } else {
            Origin::Http
        }
    }
}

pub struct Incoming {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Who sent it.
    pub origin: Origin,
    pub data: IncomingData,
    /// The study the instance must belong to (STOW-RS to /studies/{study}).
    pub expected_study: Option<String>,
}

/// The File Meta Information of a Part 10 file (PS3.10 7.1: 128-byte preamble, "DICM", group
/// 0002) and where its data set starts.
pub fn read_part10_meta(
    bytes: &[u8],
) -> Result<(dicom_object::meta::FileMetaTable, usize), String> {
    let (meta, offset) = read_part10_meta_from(Cursor::new(bytes))?;
    usize::try_from(offset)
        .map(|offset| (meta, offset))
        .map_err(|e| e.to_string())
}

/// [`read_part10_meta`] from a reader positioned at the start of the file.
fn read_part10_meta_from<R: Read + Seek>(
    mut reader: R,
) -> Result<(dicom_object::meta::FileMetaTable, u64), String> {
    let no_prefix = || "not a DICOM Part 10 file (no DICM prefix)".to_string();
    let mut head = [0u8; 132];
    reader.read_exact(&mut head).map_err(|_| no_prefix())?;
    if &head[128..] != b"DICM" {
        return Err(no_prefix());
    }
    // no file meta element may claim more bytes than the file holds (the reader would
    // allocate it first); the group is small, its first MiB is plenty to check
    let mut meta_bytes = Vec::new();
    (&mut reader)
        .take(1024 * 1024)
        .read_to_end(&mut meta_bytes)
        .map_err(|e| e.to_string())?;
    if !meta_lengths_fit(&meta_bytes) {
        return Err("file meta group: a value runs past the end of the data".into());
    }
    // the file meta reader reads the prefix itself
    reader
        .seek(SeekFrom::Start(128))
        .map_err(|e| e.to_string())?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut reader)
        .map_err(|e| format!("file meta group: {e}"))?;
    let offset = reader.stream_position().map_err(|e| e.to_string())?;
    Ok((meta, offset))
}

/// Whether every element of the file meta group (from just after "DICM") fits in `meta`.
/// dicom-object reserves and zero-fills an element's declared length before reading it (a
/// 4-byte STOW-RS part claiming a 3 GiB Transfer Syntax UID cost 3 GiB; found by the ingest
/// fuzz target), so the group is walked first as `FileMetaTable::from_reader` walks it:
/// (0002,0000), then elements until its value is used up. What the walk cannot follow is left
/// to `from_reader` to refuse.
fn meta_lengths_fit(meta: &[u8]) -> bool {
    use dicom_core::header::{HasLength, Header};
    use dicom_encoding::decode::Decode;
    let decoder = dicom_encoding::decode::file_header_decoder();
    let mut cursor = Cursor::new(meta);
    let Ok((header, _)) = decoder.decode_header(&mut cursor) else {
        return true;
    };
    let mut group_length = [0u8; 4];
    if header.tag() != dicom_dictionary_std::tags::FILE_META_INFORMATION_GROUP_LENGTH
        || header.length().0 != 4
        || cursor.read_exact(&mut group_length).is_err()
    {
        return true;
    }
    let group_length = u32::from_le_bytes(group_length);
    let mut walked = 0u32;
    while walked < group_length {
        let Ok((header, header_len)) = decoder.decode_header(&mut cursor) else {
            return true;
        };
        let Some(len) = header.length().get() else {
            return true;
        };
        let left = meta.len() as u64 - cursor.position().min(meta.len() as u64);
        if u64::from(len) > left {
            return false;
        }
        cursor.set_position(cursor.position() + u64::from(len));
        walked = walked.saturating_add(header_len as u32).saturating_add(len);
    }
    true
}

impl Incoming {
    /// An incoming Part 10 file: its identity and transfer syntax come from its file meta
    /// group (PS3.10 7.1), which must be there.
    pub fn from_part10(bytes: Bytes, origin: Origin) -> Result<Incoming, IngestError> {
        let (meta, dataset_offset) = read_part10_meta_from(Cursor::new(&bytes[..]))
            .map_err(IngestError::CannotUnderstand)?;
        Ok(Incoming::with_meta(
            &meta,
            origin,
            IncomingData::Part10 {
                bytes,
                dataset_offset,
            },
        ))
    }

    /// An incoming Part 10 file on disk (a spilled STOW-RS part), as [`Incoming::from_part10`].
    /// Its file meta group is read here: call from blocking code.
    pub fn from_part10_file(path: PathBuf, origin: Origin) -> Result<Incoming, IngestError> {
        let file = std::fs::File::open(&path)
            .map_err(|e| IngestError::CannotUnderstand(format!("cannot read the object: {e}")))?;
        let (meta, dataset_offset) = read_part10_meta_from(std::io::BufReader::new(file))
            .map_err(IngestError::CannotUnderstand)?;
        Ok(Incoming::with_meta(
            &meta,
            origin,
            IncomingData::Part10File {
                path,
                dataset_offset,
            },
        ))
    }

    fn with_meta(
        meta: &dicom_object::meta::FileMetaTable,
        origin: Origin,
        data: IncomingData,
    ) -> Incoming {
        let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        Incoming {
            sop_class_uid: trim(meta.media_storage_sop_class_uid()),
            sop_instance_uid: trim(meta.media_storage_sop_instance_uid()),
            transfer_syntax_uid: trim(meta.transfer_syntax()),
            origin,
            data,
            expected_study: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Stored,
    /// The same bytes were already stored: nothing written.
    AlreadyStored,
    /// Different content under a stored SOP Instance UID; policy kept the stored one.
    KeptExisting,
    /// Different content under a stored SOP Instance UID; policy replaced it.
    Replaced,
}

/// What ingest did, and where the instance now is in the hierarchy (for a kept duplicate,
/// where the stored one is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub outcome: IngestOutcome,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// The instance's Patient ID and Patient's Name, as received (for the audit trail).
    pub patient_id: String,
    pub patient_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot understand the data set: {0}")]
    CannotUnderstand(String),
    #[error("data set does not match SOP class: {0}")]
    DoesNotMatch(String),
    /// Over the node's maximum instance size (`--max-instance-mb`), or a deflated data set
    /// that inflates past it: nothing was stored.
    #[error("{0}")]
    TooLarge(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

pub struct Ingest {
    index: Arc<dyn Index>,
    storage: Storage,
    policy: DuplicatePolicy,
    /// Largest instance taken, and what a deflated data set may inflate to.
    max_instance_bytes: u64,
}

/// Implementation Class UID written into the file meta of stored objects ("2.25." + a UUID as
/// an integer, PS3.5 B.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.94470164651386386541577462125155211471";
pub const IMPLEMENTATION_VERSION_NAME: &str = "PACS_RS_0_1";

const DEFLATED_EXPLICIT_VR_LE: &str =
    dicom_dictionary_std::uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;

impl Ingest {
    pub fn new(index: Arc<dyn Index>, storage: Storage, policy: DuplicatePolicy) -> Self {
        Ingest {
            index,
            storage,
            policy,
            max_instance_bytes: u64::MAX,
        }
    }

    /// The largest instance taken (`--max-instance-mb`): a larger one, or a deflated data set
    /// inflating past it, is refused with [`IngestError::TooLarge`] before anything is stored.
    pub fn with_max_instance_bytes(mut self, max: u64) -> Self {
        self.max_instance_bytes = max;
        self
    }

    pub fn index(&self) -> &Arc<dyn Index> {
        &self.index
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub async fn ingest(&self, incoming: Incoming) -> Result<Ingested, IngestError> {
        let sop_instance = Uid::parse(&incoming.sop_instance_uid)
            .map_err(|e| IngestError::CannotUnderstand(e.to_string()))?;
        let sop_class = Uid::parse(&incoming.sop_class_uid)
            .map_err(|e| IngestError::CannotUnderstand(e.to_string()))?
            .to_string();
        let received = incoming
            .data
            .byte_len()
            .map_err(|e| IngestError::CannotUnderstand(e.to_string()))?;
        if received > self.max_instance_bytes {
            return Err(IngestError::TooLarge(format!(
                "instance larger than the limit of {} bytes",
                self.max_instance_bytes
            )));
        }
        let max_inflated = self.max_instance_bytes;
        let (prefix, dataset_offset) = match &incoming.data {
            IncomingData::Part10 { dataset_offset, .. }
            | IncomingData::Part10File { dataset_offset, .. } => (Vec::new(), *dataset_offset),
            _ => {
                let prefix = part10_prefix(&incoming)?;
                let offset = prefix.len() as u64;
                (prefix, offset)
            }
        };

        let started = std::time::Instant::now();
        // Parsing and hashing are CPU work: keep them off the async workers.
        let origin = incoming.origin.clone();
        let incoming_expected_study = incoming.expected_study.clone();
        let ts = incoming.transfer_syntax_uid.clone();
        // An object held in memory is hashed on a second blocking thread while it is parsed:
        // the CPU is the same, the wait for both is shorter (a file is read once, by one).
        let hashing = match &incoming.data {
            IncomingData::Dataset(fragments) => Some(IncomingData::Dataset(fragments.clone())),
            IncomingData::Part10 {
                bytes,
                dataset_offset,
            } => Some(IncomingData::Part10 {
                bytes: bytes.clone(),
                dataset_offset: *dataset_offset,
            }),
            IncomingData::DatasetFile(_) | IncomingData::Part10File { .. } => None,
        }
        .map(|data| {
            let prefix = prefix.clone();
            tokio::task::spawn_blocking(move || content_hash(&prefix, &data))
        });
        let hashed_apart = hashing.is_some();
        let analysis = tokio::task::spawn_blocking(move || {
            let analysed = if hashed_apart {
                analyse_structure(&prefix, &incoming.data, &ts, dataset_offset, max_inflated)
            } else {
                analyse(&prefix, &incoming.data, &ts, dataset_offset, max_inflated)
            };
            (analysed.map(|a| (a, prefix)), incoming.data)
        });
        let task_failed = |e: tokio::task::JoinError| {
            IngestError::CannotUnderstand(format!("analysis task failed: {e}"))
        };
        let (analysed, data) = analysis.await.map_err(task_failed)?;
        let hashed = match hashing {
            Some(task) => Some(task.await.map_err(task_failed)?),
            None => None,
        };
        let (mut analysed, prefix) = analysed?;
        if let Some(hashed) = hashed {
            let (sha256, size) = hashed?;
            analysed.record.sha256 = sha256;
            analysed.record.size_bytes = size as i64;
        }
        let analysed_at = std::time::Instant::now();
        let (sop_in_dataset, class_in_dataset) = (
            analysed.sop_instance_uid.clone(),
            analysed.sop_class_uid.clone(),
        );
        let mut record = analysed
            .finish()
            .map_err(|e| IngestError::CannotUnderstand(e.to_string()))?;

        // PS3.4 B.2.3 (A900): the data set must be the instance the command announced.
        let rec = &mut record;
        if sop_in_dataset != sop_instance.as_str() {
            return Err(IngestError::DoesNotMatch(format!(
                "SOP Instance UID in data set ({sop_in_dataset}) differs from Affected SOP Instance UID ({sop_instance})"
            )));
        }
        if class_in_dataset != sop_class {
            return Err(IngestError::DoesNotMatch(format!(
                "SOP Class UID in data set ({class_in_dataset}) differs from Affected SOP Class UID"
            )));
        }
        let study = Uid::parse(&rec.study_instance_uid)
            .map_err(|e| IngestError::DoesNotMatch(format!("Study Instance UID: {e}")))?;
        if let Some(expected) = &incoming_expected_study {
            if expected != study.as_str() {
                return Err(IngestError::DoesNotMatch(format!(
                    "instance belongs to study {study}, not to {expected}"
                )));
            }
        }
        let series = Uid::parse(&rec.series_instance_uid)
            .map_err(|e| IngestError::DoesNotMatch(format!("Series Instance UID: {e}")))?;
        rec.source_ae = origin.source_ae().to_string();
        rec.ai_output = origin.is_ai_output();
        rec.object_key = Storage::instance_key(&study, &series, &sop_instance, &rec.sha256);

        let (patient_id, patient_name) = (rec.patient_id.clone(), rec.patient_name.clone());
        let at = |outcome, study: &str, series: &str| Ingested {
            outcome,
            study_instance_uid: study.to_string(),
            series_instance_uid: series.to_string(),
            patient_id: patient_id.clone(),
            patient_name: patient_name.clone(),
        };
        let at_existing = |outcome, existing: &StoredInstance| {
            at(
                outcome,
                &existing.study_instance_uid,
                &existing.series_instance_uid,
            )
        };
        // Keep (the default): no lookup first, so that a new instance costs one index round
        // trip; the insert says whether the SOP Instance UID was already there. The object key
        // holds the content's hash, so the same object sent again is written over itself
        // (atomically) and its row found; a different one is written beside it and removed.
        // Overwrite looks first: the same content again must not replace the row.
        if self.policy == DuplicatePolicy::Overwrite {
            if let Some(existing) = self.index.find_instance(sop_instance.as_str()).await? {
                if existing.sha256 == rec.sha256 {
                    return Ok(at_existing(IngestOutcome::AlreadyStored, &existing));
                }
            }
        }

        let key = rec.object_key.clone();
        let sha256 = rec.sha256.clone();
        let checked_at = std::time::Instant::now();
        match data {
            IncomingData::Dataset(fragments) => {
                let mut chunks = Vec::with_capacity(fragments.len() + 1);
                chunks.push(Bytes::from(prefix));
                chunks.extend(fragments);
                self.storage.put(&key, chunks).await?
            }
            IncomingData::DatasetFile(path) => self.storage.put_file(&key, prefix, &path).await?,
            IncomingData::Part10 { bytes, .. } => self.storage.put(&key, vec![bytes]).await?,
            IncomingData::Part10File { path, .. } => {
                self.storage.put_file(&key, Vec::new(), &path).await?
            }
        }
        let stored_at = std::time::Instant::now();

        let result = match self.policy {
            DuplicatePolicy::Overwrite => match self.index.replace_instance(record).await {
                Ok(Some(previous)) => {
                    self.forget_object(&previous, &key).await;
                    Ok(IngestOutcome::Replaced)
                }
                Ok(None) => Ok(IngestOutcome::Stored),
                Err(e) => Err(e),
            },
            DuplicatePolicy::Keep => match self.index.insert_instance(record).await {
                Ok(InsertOutcome::Inserted) => Ok(IngestOutcome::Stored),
                // Stored before (or by a concurrent store that won the race).
                Ok(InsertOutcome::AlreadyExists(existing)) => {
                    if existing.object_key != key {
                        self.delete_quietly(&key).await;
                    }
                    if existing.sha256 == sha256 {
                        return Ok(at_existing(IngestOutcome::AlreadyStored, &existing));
                    }
                    warn!(sop_instance_uid = %sop_instance, "different object under a stored SOP Instance UID; kept the stored one");
                    return Ok(at_existing(IngestOutcome::KeptExisting, &existing));
                }
                Err(e) => Err(e),
            },
        };
        let us = |a: std::time::Instant, b: std::time::Instant| (b - a).as_micros() as u64;
        debug!(
            analyse_us = us(started, analysed_at),
            finish_us = us(analysed_at, checked_at),
            store_us = us(checked_at, stored_at),
            index_us = us(stored_at, std::time::Instant::now()),
            "ingest timings"
        );
        match result {
            Ok(outcome) => {
                if outcome == IngestOutcome::Replaced {
                    warn!(sop_instance_uid = %sop_instance, "stored instance replaced by a different object");
                }
                Ok(at(outcome, study.as_str(), series.as_str()))
            }
            Err(IndexError::OutcomeUnknown(why)) => {
                // The row may be committed: deleting the object could leave the index pointing
                // at nothing. It is kept; the sender hears a failure and may send again (the
                // same key, found or indexed then), and `pacs fsck` (or the start-up pass)
                // indexes it if no row ever came.
                warn!(sop_instance_uid = %sop_instance, key, %why, "index commit outcome unknown: object kept for reconciliation");
                Err(IndexError::OutcomeUnknown(why).into())
            }
            Err(e) => {
                // Known not committed: remove the object so nothing unindexed remains, unless
                // a row points at it (a concurrent store of the same content won). When the
                // index cannot say, the object stays for reconciliation.
                match self.index.find_instance(sop_instance.as_str()).await {
                    Ok(row)
                        if row.as_ref().map(|s| s.object_key.as_str()) != Some(key.as_str()) =>
                    {
                        self.delete_quietly(&key).await
                    }
                    Ok(_) => {}
                    Err(lookup) => {
                        warn!(key, error = %lookup, "cannot tell whether an unindexed object is referenced: kept for reconciliation")
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Deletes the object a replaced row pointed to, before the store is answered: when the
    /// sender hears Success, the archive holds exactly what the index says.
    async fn forget_object(&self, previous: &StoredInstance, new_key: &str) {
        if previous.object_key == new_key {
            return;
        }
        let key = previous.object_key.as_str();
        match self.storage.delete(key).await {
            Ok(()) => info!(key, "replaced object deleted"),
            Err(e) => warn!(key, error = %e, "cannot delete replaced object"),
        }
    }

    async fn delete_quietly(&self, key: &str) {
        if let Err(e) = self.storage.delete(key).await {
            warn!(key, error = %e, "cannot delete an object that was not indexed");
        }
    }
}

/// The 128-byte preamble, "DICM" and the file meta group (PS3.10 7.1) of the stored object.
pub(crate) fn part10_prefix(incoming: &Incoming) -> Result<Vec<u8>, IngestError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(incoming.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(incoming.sop_instance_uid.as_str())
        .transfer_syntax(incoming.transfer_syntax_uid.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(incoming.origin.source_ae())
        .build()
        .map_err(|e| IngestError::CannotUnderstand(format!("file meta: {e}")))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| IngestError::CannotUnderstand(format!("file meta: {e}")))?;
    Ok(out)
}

/// A reader over `prefix` followed by the data set, without copying either.
fn part10_reader<'a>(
    prefix: &'a [u8],
    data: &'a IncomingData,
) -> std::io::Result<Box<dyn ReadSeek + 'a>> {
    Ok(match data {
        IncomingData::Dataset(fragments) => Box::new(Chain::new(
            Cursor::new(prefix),
            FragmentsReader::new(fragments),
        )?),
        IncomingData::DatasetFile(path) => {
            Box::new(Chain::new(Cursor::new(prefix), std::fs::File::open(path)?)?)
        }
        IncomingData::Part10 { bytes, .. } => Box::new(Cursor::new(&bytes[..])),
        IncomingData::Part10File { path, .. } => {
            Box::new(std::io::BufReader::new(std::fs::File::open(path)?))
        }
    })
}

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// Parses, checks and hashes an incoming instance: [`analyse_structure`] and [`content_hash`]
/// one after the other.
pub(crate) fn analyse(
    prefix: &[u8],
    data: &IncomingData,
    transfer_syntax_uid: &str,
    dataset_offset: u64,
    max_inflated: u64,
) -> Result<parse::Parsed, IngestError> {
    let mut parsed = analyse_structure(
        prefix,
        data,
        transfer_syntax_uid,
        dataset_offset,
        max_inflated,
    )?;
    let (sha256, size) = content_hash(prefix, data)?;
    parsed.record.sha256 = sha256;
    parsed.record.size_bytes = size as i64;
    Ok(parsed)
}

/// The SHA-256 (hex) and size of exactly the bytes that will be stored: `prefix`, then `data`.
pub(crate) fn content_hash(
    prefix: &[u8],
    data: &IncomingData,
) -> Result<(String, u64), IngestError> {
    let unreadable = |e: std::io::Error| IngestError::CannotUnderstand(e.to_string());
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prefix);
    let mut size = prefix.len() as u64;
    match data {
        IncomingData::Dataset(fragments) => {
            for fragment in fragments {
                ctx.update(fragment);
                size += fragment.len() as u64;
            }
        }
        IncomingData::Part10 { bytes, .. } => {
            ctx.update(bytes);
            size += bytes.len() as u64;
        }
        IncomingData::DatasetFile(path) | IncomingData::Part10File { path, .. } => {
            let mut f = std::fs::File::open(path).map_err(unreadable)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(unreadable)?;
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
                size += n as u64;
            }
        }
    }
    Ok((hex::encode(ctx.finish().as_ref()), size))
}

/// Parses and checks an incoming instance and locates its pixel data, without hashing it
/// (the record's `sha256` and `size_bytes` are left for [`content_hash`]).
pub(crate) fn analyse_structure(
    prefix: &[u8],
    data: &IncomingData,
    transfer_syntax_uid: &str,
    dataset_offset: u64,
    max_inflated: u64,
) -> Result<parse::Parsed, IngestError> {
    let unreadable = |e: std::io::Error| IngestError::CannotUnderstand(e.to_string());
    let parsed = if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LE {
        match data {
            IncomingData::Dataset(fragments) => parse::parse_deflated(
                FragmentsReader::new(fragments),
                transfer_syntax_uid,
                max_inflated,
            ),
            IncomingData::DatasetFile(path) => parse::parse_deflated(
                std::io::BufReader::new(std::fs::File::open(path).map_err(unreadable)?),
                transfer_syntax_uid,
                max_inflated,
            ),
            IncomingData::Part10 {
                bytes,
                dataset_offset,
            } => {
                let deflated = usize::try_from(*dataset_offset)
                    .ok()
                    .and_then(|offset| bytes.get(offset..))
                    .ok_or_else(|| {
                        IngestError::CannotUnderstand("data set offset past the end".into())
                    })?;
                parse::parse_deflated(deflated, transfer_syntax_uid, max_inflated)
            }
            IncomingData::Part10File {
                path,
                dataset_offset,
            } => {
                let mut file = std::fs::File::open(path).map_err(unreadable)?;
                file.seek(SeekFrom::Start(*dataset_offset))
                    .map_err(unreadable)?;
                parse::parse_deflated(
                    std::io::BufReader::new(file),
                    transfer_syntax_uid,
                    max_inflated,
                )
            }
        }
    } else {
        // sequences nested past the limit, and values claiming more than the data holds (the
        // parser would allocate them first), are refused before the parser sees them
        let mut reader = part10_reader(prefix, data).map_err(unreadable)?;
        let total = reader.seek(SeekFrom::End(0)).map_err(unreadable)?;
        reader
            .seek(SeekFrom::Start(dataset_offset))
            .map_err(unreadable)?;
        parse::check_nesting(
            std::io::BufReader::with_capacity(16 * 1024, reader),
            transfer_syntax_uid,
        )
        .and_then(|()| {
            let mut reader = part10_reader(prefix, data)
                .map_err(|e| parse::ParseError::Unreadable(e.to_string()))?;
            reader
                .seek(SeekFrom::Start(dataset_offset))
                .map_err(|e| parse::ParseError::Unreadable(e.to_string()))?;
            parse::check_value_lengths(
                std::io::BufReader::new(reader),
                transfer_syntax_uid,
                total.saturating_sub(dataset_offset),
            )
        })
        .and_then(|()| {
            parse::parse_part10(
                part10_reader(prefix, data)
                    .map_err(|e| parse::ParseError::Unreadable(e.to_string()))?,
            )
        })
    };
    let mut parsed = parsed.map_err(|e| match e {
        parse::ParseError::TooLarge(why) => IngestError::TooLarge(why),
        other => IngestError::CannotUnderstand(other.to_string()),
    })?;
    let size = prefix.len() as u64 + data.byte_len().map_err(unreadable)?;

    // Deflated data sets have no stable byte offsets to record.
    if transfer_syntax_uid != DEFLATED_EXPLICIT_VR_LE {
        let mut reader = part10_reader(prefix, data).map_err(unreadable)?;
        reader
            .seek(SeekFrom::Start(dataset_offset))
            .map_err(unreadable)?;
        let reader = std::io::BufReader::with_capacity(16 * 1024, reader);
        match parse::locate_pixel_data(reader, transfer_syntax_uid, dataset_offset, size) {
            Ok(Some(pixel)) => parsed.set_pixel_data(&pixel),
            Ok(None) => {}
            Err(e @ parse::ParseError::Truncated(_)) => {
                return Err(IngestError::CannotUnderstand(e.to_string()));
            }
            Err(e) => {
                // The object parsed up to its pixel data above; only the frame index is lost,
                // and frames can still be served by decoding the object.
                warn!(error = %e, "cannot index pixel data positions");
            }
        }
    }
    Ok(parsed)
}

/// `Read + Seek` over the fragments of a data set, without concatenating them.
struct FragmentsReader<'a> {
    fragments: &'a [Bytes],
    /// Start offset of each fragment.
    starts: Vec<u64>,
    len: u64,
    pos: u64,
}

impl<'a> FragmentsReader<'a> {
    fn new(fragments: &'a [Bytes]) -> Self {
        let mut starts = Vec::with_capacity(fragments.len());
        let mut len = 0u64;
        for f in fragments {
            starts.push(len);
            len += f.len() as u64;
        }
        FragmentsReader {
            fragments,
            starts,
            len,
            pos: 0,
        }
    }
}

impl Read for FragmentsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        // the fragment holding `pos`: the last one starting at or before it (empty fragments,
        // which P-DATA may carry, start where the next one does and hold nothing)
        let i = self
            .starts
            .partition_point(|start| *start <= self.pos)
            .saturating_sub(1);
        let (Some(fragment), Some(start)) = (self.fragments.get(i), self.starts.get(i)) else {
            return Ok(0);
        };
        let rest = usize::try_from(self.pos - start)
            .ok()
            .and_then(|offset| fragment.get(offset..))
            .unwrap_or_default();
        let n = buf.len().min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FragmentsReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }
}

/// `Read + Seek` over two sources one after the other.
struct Chain<A, B> {
    a: A,
    b: B,
    a_len: u64,
    pos: u64,
    b_len: u64,
}

impl<A: Read + Seek, B: Read + Seek> Chain<A, B> {
    fn new(mut a: A, mut b: B) -> std::io::Result<Self> {
        let a_len = a.seek(SeekFrom::End(0))?;
        a.seek(SeekFrom::Start(0))?;
        let b_len = b.seek(SeekFrom::End(0))?;
        b.seek(SeekFrom::Start(0))?;
        Ok(Chain {
            a,
            b,
            a_len,
            pos: 0,
            b_len,
        })
    }
}

impl<A: Read + Seek, B: Read + Seek> Read for Chain<A, B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if self.pos < self.a_len {
            self.a.read(buf)?
        } else {
            self.b.read(buf)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl<A: Read + Seek, B: Read + Seek> Seek for Chain<A, B> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let total = self.a_len + self.b_len;
        let target = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => total as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        let target = target as u64;
        if target < self.a_len {
            self.a.seek(SeekFrom::Start(target))?;
            self.b.seek(SeekFrom::Start(0))?;
        } else {
            self.a.seek(SeekFrom::Start(self.a_len))?;
            self.b.seek(SeekFrom::Start(target - self.a_len))?;
        }
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the ingest fuzz target: a Transfer Syntax UID claiming 3.5 GiB in a STOW-RS
    /// part of a few hundred bytes.
    #[test]
    fn a_file_meta_value_longer_than_the_data_is_refused_before_reading() {
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
            .media_storage_sop_instance_uid("1.2.3")
            .transfer_syntax("1.2.840.10008.1.2.1")
            .implementation_class_uid("1.2.3.4")
            .build()
            .unwrap();
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        meta.write(&mut file).unwrap();
        let (_, offset) = read_part10_meta(&file).unwrap();
        assert_eq!(offset, file.len());
        // (0002,0010) UI: its 2-byte length set to 0xFFFF, with a few bytes left
        let at = file
            .windows(4)
            .position(|w| w == [0x02, 0x00, 0x10, 0x00])
            .unwrap();
        file[at + 6..at + 8].copy_from_slice(&0xFFFFu16.to_le_bytes());
        let err = read_part10_meta(&file).unwrap_err();
        assert!(err.contains("runs past the end"), "{err}");
    }

    #[test]
    fn fragments_read_and_seek_like_one_buffer() {
        let fragments: Vec<Bytes> = ["ab", "", "cde", "f"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        let mut r = FragmentsReader::new(&fragments);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abcdef");
        r.seek(SeekFrom::Start(3)).unwrap();
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"de");
        r.seek(SeekFrom::Start(2)).unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"c");
        assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), 6);
        assert_eq!(r.read(&mut one).unwrap(), 0);
        // empty fragments anywhere (a peer may send empty PDVs) are no end of data
        let fragments: Vec<Bytes> = ["", "ab", "", "", "cd", "", "e", ""]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        let mut s = String::new();
        FragmentsReader::new(&fragments)
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "abcde");
        for at in 0..5u64 {
            let mut r = FragmentsReader::new(&fragments);
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut rest = String::new();
            r.read_to_string(&mut rest).unwrap();
            assert_eq!(rest, &"abcde"[at as usize..], "from {at}");
        }
    }

    #[test]
    fn chain_reads_and_seeks_across_the_boundary() {
        let mut c =
            Chain::new(Cursor::new(b"abc".to_vec()), Cursor::new(b"defg".to_vec())).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abcdefg");
        c.seek(SeekFrom::Start(2)).unwrap();
        let mut two = [0u8; 2];
        c.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"cd");
        assert_eq!(c.seek(SeekFrom::End(-1)).unwrap(), 6);
    }
}
