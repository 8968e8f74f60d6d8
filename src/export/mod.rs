//! De-identified export as a durable job (table `exports`, `crate::index::exports`): studies
//! named by UID or by a QIDO-style filter are read from storage, de-identified
//! ([`crate::deid`]) and written to a ZIP archive kept in the data directory, sent to a
//! registered AE with C-STORE, or posted to a STOW-RS endpoint. Progress is recorded as it
//! goes; a job left running by a stopped node is marked failed at start (its partial output is
//! not trusted), queued ones run. See docs/deid.md.

pub mod api;
pub mod zip_archive;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pacs_dimse::scu::{StoreScuOptions, SubOperation};
use pacs_dimse::{InstanceSource, OutgoingInstance};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ae_registry::AeRegistry;
use crate::deid::{Deidentifier, Identities, Options, Pseudonymizer};
use crate::index::{Index, InstanceFilter, LocatedInstance};
use crate::storage::Storage;

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    /// A ZIP archive kept in the data directory (`GET /api/exports/{id}/archive`).
    Zip,
    /// A registered AE, by C-STORE.
    Ae { title: String },
    /// A STOW-RS endpoint (the studies resource URL), multipart/related POSTs.
    Stow { url: String },
}

impl Destination {
    pub fn describe(&self) -> String {
        match self {
            Destination::Zip => "zip".into(),
            Destination::Ae { title } => format!("ae:{title}"),
            Destination::Stow { url } => format!("stow:{url}"),
        }
    }
}

/// The body of `POST /api/exports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// Study Instance UIDs.
    #[serde(default)]
    pub studies: Vec<String>,
    /// Or a QIDO-RS study filter: attribute keyword (or tag) → value, e.g. PatientID,
    /// StudyDate (a range), ModalitiesInStudy.
    #[serde(default)]
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub options: Options,
    pub destination: Destination,
    /// Record original ↔ pseudonym in the re-identification table [default: true].
    #[serde(default = "yes")]
    pub reidentification: bool,
}

fn yes() -> bool {
    true
}

/// What the audit trail is told when an export ends ([`Exporter::on_finished`]).
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub id: i64,
    pub requested_by: String,
    /// The permissions the requester held (the identity carries permissions, not roles).
    pub roles: Vec<String>,
    pub address: String,
    pub destination: String,
    pub studies: Vec<StudyReport>,
    /// succeeded, failed or cancelled
    pub outcome: String,
    pub error: String,
    pub instances_done: i64,
    pub instances_failed: i64,
}

/// One exported study, with its original identifiers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StudyReport {
    pub original_patient_id: String,
    pub original_study_instance_uid: String,
    /// SOP Class UID → instances exported.
    pub sop_classes: BTreeMap<String, u64>,
}

/// The hook called once per finished export.
pub type FinishedHook = Arc<dyn Fn(&ExportReport) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no de-identification secret is configured (--deid-secret, PACS_DEID_SECRET or deid_secret in the configuration file): exports are refused")]
    NoSecret,
    #[error("{0}")]
    Invalid(String),
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
}

/// The export service.
pub struct Exporter {
    pub index: Arc<dyn Index>,
    pub storage: Storage,
    /// None without a secret: every export is refused.
    pub pseudonyms: Option<Arc<Pseudonymizer>>,
    /// Where ZIP archives are kept (`<data-dir>/exports`).
    pub exports_dir: PathBuf,
    pub registry: Arc<AeRegistry>,
    pub ae_title: String,
    pub scu_timeout: Duration,
    pub tls_client: Option<Arc<pacs_dimse::tls::ClientConfig>>,
    pub http: reqwest::Client,
    /// Called when an export ends (the audit trail's Data Export event).
    pub on_finished: Option<FinishedHook>,
    running: Mutex<HashSet<i64>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Progress of one running export, written to the index every few instances.
#[derive(Default)]
struct Progress {
    done: i64,
    failed: i64,
    bytes: i64,
    errors: Vec<serde_json::Value>,
    studies: BTreeMap<String, StudyReport>,
    patients: BTreeMap<String, (String, String)>,
    study_uids: BTreeMap<String, String>,
}

const MAX_ERRORS: usize = 200;

impl Progress {
    fn ok(&mut self, ids: &Identities, bytes: usize) {
        self.done += 1;
        self.bytes += bytes as i64;
        let study = self
            .studies
            .entry(ids.study_instance_uid.clone())
            .or_insert_with(|| StudyReport {
                original_patient_id: ids.patient_id.clone(),
                original_study_instance_uid: ids.study_instance_uid.clone(),
                sop_classes: BTreeMap::new(),
            });
        *study
            .sop_classes
            .entry(ids.sop_class_uid.clone())
            .or_insert(0) += 1;
        self.patients.insert(
            ids.patient_id.clone(),
            (ids.new_patient_id.clone(), ids.patient_name.clone()),
        );
        self.patients.insert(
            format!("\0name\0{}", ids.patient_name),
            (ids.new_patient_name.clone(), String::new()),
        );
        self.study_uids.insert(
            ids.study_instance_uid.clone(),
            ids.new_study_instance_uid.clone(),
        );
    }

    /// A failed instance, named by its exported SOP Instance UID (the requester may not see
    /// identified data).
    fn fail(&mut self, new_uid: &str, why: &str) {
        self.failed += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors
                .push(serde_json::json!({ "sop_instance_uid": new_uid, "error": why }));
        }
    }
}

/// Reads stored instances de-identified, for C-STORE to an AE.
struct DeidSource {
    storage: Storage,
    deid: Deidentifier,
    /// SOP Instance UIDs (exported) → identities, filled as instances are loaded.
    loaded: Mutex<BTreeMap<String, (Identities, usize)>>,
    bytes: AtomicU64,
}

#[async_trait::async_trait]
impl InstanceSource for DeidSource {
    fn transfer_syntaxes(&self, instance: &OutgoingInstance) -> Vec<String> {
        vec![instance.transfer_syntax_uid.clone()]
    }

    async fn load(&self, instance: &OutgoingInstance, _ts: &str) -> Result<Bytes, String> {
        let part10 = self
            .storage
            .get(&instance.handle)
            .await
            .map_err(|e| format!("cannot read the stored object: {e}"))?;
        let deid = self.deid.clone();
        let (file, ids) = tokio::task::spawn_blocking(move || deid.deidentify_part10(&part10))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let (_, offset) = crate::ingest::read_part10_meta(&file)?;
        self.bytes.fetch_add(file.len() as u64, Ordering::Relaxed);
        let len = file.len();
        self.loaded
            .lock()
            .expect("loaded")
            .insert(instance.sop_instance_uid.clone(), (ids, len));
        Ok(Bytes::from(file).slice(offset..))
    }
}

impl Exporter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: Arc<dyn Index>,
        storage: Storage,
        pseudonyms: Option<Arc<Pseudonymizer>>,
        exports_dir: PathBuf,
        registry: Arc<AeRegistry>,
        ae_title: String,
        tls_client: Option<Arc<pacs_dimse::tls::ClientConfig>>,
    ) -> Exporter {
        Exporter {
            index,
            storage,
            pseudonyms,
            exports_dir,
            registry,
            ae_title,
            scu_timeout: Duration::from_secs(30),
            tls_client,
            http: reqwest::Client::new(),
            on_finished: None,
            running: Mutex::new(HashSet::new()),
        }
    }

    /// Queues an export and starts it. The requester's name, permissions and address are kept
    /// with it.
    pub async fn submit(
        self: &Arc<Self>,
        request: ExportRequest,
        requested_by: &str,
        roles: &[String],
        address: &str,
    ) -> Result<i64, ExportError> {
        if self.pseudonyms.is_none() {
            return Err(ExportError::NoSecret);
        }
        if request.studies.is_empty() == request.query.is_none() {
            return Err(ExportError::Invalid(
                "name the studies to export with exactly one of \"studies\" or \"query\"".into(),
            ));
        }
        match &request.destination {
            Destination::Ae { title } if self.registry.get(title).is_none() => {
                return Err(ExportError::Invalid(format!("no registered AE {title}")))
            }
            Destination::Stow { url }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                return Err(ExportError::Invalid(format!(
                    "a STOW-RS URL must be http:// or https://, not {url}"
                )))
            }
            _ => {}
        }
        let value =
            serde_json::to_value(&request).map_err(|e| ExportError::Invalid(e.to_string()))?;
        let id = self
            .index
            .insert_export(
                &value,
                requested_by,
                roles,
                address,
                &request.destination.describe(),
                now_ms(),
            )
            .await?;
        info!(id, by = requested_by, destination = %request.destination.describe(), "export queued");
        self.spawn(id);
        Ok(id)
    }

    /// At start: interrupted exports failed, queued ones run.
    pub async fn recover(self: &Arc<Self>) -> Result<(), ExportError> {
        for id in self.index.recover_exports(now_ms()).await? {
            self.spawn(id);
        }
        Ok(())
    }

    fn spawn(self: &Arc<Self>, id: i64) {
        if !self.running.lock().expect("running").insert(id) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.run(id).await;
            me.running.lock().expect("running").remove(&id);
        });
    }

    pub fn archive_path(&self, id: i64) -> PathBuf {
        self.exports_dir.join(format!("export-{id}.zip"))
    }

    async fn run(&self, id: i64) {
        let mut progress = Progress::default();
        let result = self.execute(id, &mut progress).await;
        let (state, error) = match &result {
            Ok(true) if progress.failed == 0 => ("succeeded", String::new()),
            Ok(true) => (
                "failed",
                format!("{} of the instances could not be exported", progress.failed),
            ),
            Ok(false) => ("cancelled", "cancelled".to_string()),
            Err(e) => ("failed", e.clone()),
        };
        let archive = match self.index.export(id).await {
            Ok(Some(row)) if row.destination == "zip" && result.is_ok() => {
                self.archive_path(id).to_string_lossy().into_owned()
            }
            _ => String::new(),
        };
        let _ = self
            .index
            .export_progress(
                id,
                progress.done,
                progress.failed,
                progress.bytes,
                &serde_json::Value::from(progress.errors.clone()),
            )
            .await;
        let outcome = match self
            .index
            .finish_export(id, state, &error, &archive, now_ms())
            .await
        {
            Ok(true) => state,
            Ok(false) => "cancelled",
            Err(e) => {
                warn!(id, error = %e, "cannot record the end of the export");
                state
            }
        };
        if outcome == "cancelled" {
            let _ = std::fs::remove_file(self.archive_path(id));
        }
        info!(
            id,
            outcome,
            done = progress.done,
            failed = progress.failed,
            bytes = progress.bytes,
            "export finished"
        );
        if let (Some(hook), Ok(Some(row))) = (&self.on_finished, self.index.export(id).await) {
            hook(&ExportReport {
                id,
                requested_by: row.requested_by,
                roles: row.roles,
                address: row.address,
                destination: row.destination,
                studies: progress.studies.values().cloned().collect(),
                outcome: outcome.to_string(),
                error,
                instances_done: progress.done,
                instances_failed: progress.failed,
            });
        }
    }

    /// The instances an export names.
    async fn instances(&self, request: &ExportRequest) -> Result<Vec<LocatedInstance>, String> {
        let studies = match &request.query {
            None => request.studies.clone(),
            Some(filter) => {
                let keys: Vec<(String, String)> =
                    filter.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let query = crate::query::Query::parse(
                    crate::query::Level::Study,
                    &keys,
                    crate::query::Include::Defaults,
                    false,
                    100_000,
                    0,
                )
                .map_err(|e| format!("invalid query: {e}"))?;
                let found = query
                    .run(self.index.as_ref(), None)
                    .await
                    .map_err(|e| format!("query failed: {e}"))?;
                found
                    .datasets
                    .iter()
                    .filter_map(|d| d["0020000D"]["Value"][0].as_str().map(str::to_string))
                    .collect()
            }
        };
        if studies.is_empty() {
            return Ok(Vec::new());
        }
        let filter = InstanceFilter {
            studies,
            ..InstanceFilter::default()
        };
        let rows = self
            .index
            .instances_in(&filter, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|(i, _)| i).collect())
    }

    /// Writes progress; false when the export was cancelled.
    async fn checkpoint(&self, id: i64, p: &Progress) -> bool {
        self.index
            .export_progress(
                id,
                p.done,
                p.failed,
                p.bytes,
                &serde_json::Value::from(p.errors.clone()),
            )
            .await
            .unwrap_or(true)
    }

    /// Runs an export: Ok(true) when it went through (some instances may have failed),
    /// Ok(false) when cancelled.
    async fn execute(&self, id: i64, progress: &mut Progress) -> Result<bool, String> {
        let row = self
            .index
            .export(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the export disappeared")?;
        let request: ExportRequest =
            serde_json::from_value(row.request).map_err(|e| format!("invalid request: {e}"))?;
        let pseudonyms = self
            .pseudonyms
            .clone()
            .ok_or_else(|| ExportError::NoSecret.to_string())?;
        let instances = self.instances(&request).await?;
        if !self
            .index
            .start_export(id, instances.len() as i64, now_ms())
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(false);
        }
        if instances.is_empty() {
            return Err("nothing stored matches".into());
        }
        let deid = Deidentifier::new(request.options, pseudonyms);
        let went = match &request.destination {
            Destination::Zip => self.to_zip(id, &deid, &instances, progress).await?,
            Destination::Ae { title } => self.to_ae(id, title, &deid, &instances, progress).await?,
            Destination::Stow { url } => self.to_stow(id, url, &deid, &instances, progress).await?,
        };
        if request.reidentification {
            let now = now_ms();
            for (original, (pseudonym, _)) in &progress.patients {
                let (kind, original) = match original.strip_prefix("\0name\0") {
                    Some(name) => ("patient_name", name),
                    None => ("patient_id", original.as_str()),
                };
                if let Err(e) = self
                    .index
                    .put_reidentification(kind, original, pseudonym, id, now)
                    .await
                {
                    warn!(id, error = %e, "cannot record the re-identification table");
                }
            }
            for (original, pseudonym) in &progress.study_uids {
                let _ = self
                    .index
                    .put_reidentification("study_uid", original, pseudonym, id, now)
                    .await;
            }
        }
        Ok(went)
    }

    /// Reads and de-identifies one instance (a Part 10 file).
    async fn deidentified(
        &self,
        deid: &Deidentifier,
        instance: &LocatedInstance,
    ) -> Result<(Vec<u8>, Identities), String> {
        let part10 = self
            .storage
            .get(&instance.object_key)
            .await
            .map_err(|e| format!("cannot read the stored object: {e}"))?;
        let deid = deid.clone();
        tokio::task::spawn_blocking(move || deid.deidentify_part10(&part10))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn to_zip(
        &self,
        id: i64,
        deid: &Deidentifier,
        instances: &[LocatedInstance],
        progress: &mut Progress,
    ) -> Result<bool, String> {
        std::fs::create_dir_all(&self.exports_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.exports_dir.display()))?;
        let path = self.archive_path(id);
        let partial = path.with_extension("zip.partial");
        let file = std::fs::File::create(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let mut zip = zip_archive::ZipWriter::new(std::io::BufWriter::new(file));
        for (n, instance) in instances.iter().enumerate() {
            let new_uid = deid.map_uid(&instance.sop_instance_uid);
            match self.deidentified(deid, instance).await {
                Ok((bytes, ids)) => {
                    let name = format!(
                        "{}/{}/{}.dcm",
                        ids.new_study_instance_uid,
                        deid.map_uid(&ids.series_instance_uid),
                        ids.new_sop_instance_uid
                    );
                    zip.add(&name, &bytes)
                        .map_err(|e| format!("cannot write the archive: {e}"))?;
                    progress.ok(&ids, bytes.len());
                }
                Err(e) => progress.fail(&new_uid, &e),
            }
            if n % 10 == 9 && !self.checkpoint(id, progress).await {
                drop(zip);
                let _ = std::fs::remove_file(&partial);
                return Ok(false);
            }
        }
        zip.finish()
            .map_err(|e| format!("cannot write the archive: {e}"))?;
        std::fs::rename(&partial, &path)
            .map_err(|e| format!("cannot move the archive into place: {e}"))?;
        Ok(true)
    }

    async fn to_ae(
        &self,
        id: i64,
        title: &str,
        deid: &Deidentifier,
        instances: &[LocatedInstance],
        progress: &mut Progress,
    ) -> Result<bool, String> {
        let ae = self
            .registry
            .get(title)
            .ok_or_else(|| format!("no registered AE {title}"))?;
        let (Some(host), Some(port)) = (ae.host, ae.port) else {
            return Err(format!("AE {title} has no host and port"));
        };
        let remote = pacs_dimse::service::RemoteAe {
            ae_title: ae.title,
            host,
            port,
            tls: ae.tls,
        };
        let outgoing: Vec<OutgoingInstance> = instances
            .iter()
            .map(|i| OutgoingInstance {
                sop_class_uid: i.sop_class_uid.clone(),
                sop_instance_uid: deid.map_uid(&i.sop_instance_uid),
                transfer_syntax_uid: i.transfer_syntax_uid.clone(),
                handle: i.object_key.clone(),
                size_bytes: i.size_bytes.max(0) as u64,
            })
            .collect();
        let source = Arc::new(DeidSource {
            storage: self.storage.clone(),
            deid: deid.clone(),
            loaded: Mutex::new(BTreeMap::new()),
            bytes: AtomicU64::new(0),
        });
        let mut options = StoreScuOptions::new(self.ae_title.clone());
        options.associations = 2;
        options.retries = 2;
        options.timeout = self.scu_timeout;
        options.tls = self.tls_client.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let sender = tokio::spawn(pacs_dimse::scu::send_instances(
            remote,
            options,
            outgoing,
            source.clone(),
            tx,
            cancel.clone(),
        ));
        let mut n = 0usize;
        let mut cancelled = false;
        while let Some(result) = rx.recv().await {
            let loaded = source
                .loaded
                .lock()
                .expect("loaded")
                .remove(&result.sop_instance_uid);
            match (result.kind(), loaded) {
                (SubOperation::Failed, _) | (_, None) => progress.fail(
                    &result.sop_instance_uid,
                    result.error.as_deref().unwrap_or("C-STORE failed"),
                ),
                (_, Some((ids, len))) => progress.ok(&ids, len),
            }
            n += 1;
            if n.is_multiple_of(10) && !cancelled && !self.checkpoint(id, progress).await {
                cancel.store(true, Ordering::Relaxed);
                cancelled = true;
            }
        }
        let _ = sender.await;
        Ok(!cancelled)
    }

    async fn to_stow(
        &self,
        id: i64,
        url: &str,
        deid: &Deidentifier,
        instances: &[LocatedInstance],
        progress: &mut Progress,
    ) -> Result<bool, String> {
        const BATCH_BYTES: usize = 32 * 1024 * 1024;
        let boundary = format!("pacs-deid-{id}-{}", now_ms());
        let mut batch: Vec<(Vec<u8>, Identities)> = Vec::new();
        let mut size = 0usize;
        let mut iter = instances.iter().peekable();
        while let Some(instance) = iter.next() {
            let new_uid = deid.map_uid(&instance.sop_instance_uid);
            match self.deidentified(deid, instance).await {
                Ok((bytes, ids)) => {
                    size += bytes.len();
                    batch.push((bytes, ids));
                }
                Err(e) => progress.fail(&new_uid, &e),
            }
            if !batch.is_empty()
                && (size >= BATCH_BYTES || batch.len() >= 50 || iter.peek().is_none())
            {
                let mut body = Vec::with_capacity(size + batch.len() * 100);
                for (bytes, _) in &batch {
                    body.extend_from_slice(
                        format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n")
                            .as_bytes(),
                    );
                    body.extend_from_slice(bytes);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                let sent = self
                    .http
                    .post(url)
                    .header(
                        "Content-Type",
                        format!(
                            "multipart/related; type=\"application/dicom\"; boundary={boundary}"
                        ),
                    )
                    .header("Accept", "application/dicom+json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        for (bytes, ids) in &batch {
                            progress.ok(ids, bytes.len());
                        }
                    }
                    Ok(r) => {
                        let why = format!("STOW-RS answered {}", r.status());
                        for (_, ids) in &batch {
                            progress.fail(&ids.new_sop_instance_uid, &why);
                        }
                    }
                    Err(e) => {
                        let why = format!("STOW-RS request failed: {e}");
                        for (_, ids) in &batch {
                            progress.fail(&ids.new_sop_instance_uid, &why);
                        }
                    }
                }
                batch.clear();
                size = 0;
                if !self.checkpoint(id, progress).await {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
