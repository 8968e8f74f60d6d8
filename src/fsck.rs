//! Reconciliation of the object store with the index: `pacs fsck`, and a bounded pass when
//! `pacs serve` starts (docs/faults.md).
//!
//! What a crash or a fault can leave: staging files of the local store (object_store writes
//! `<key>#<n>` and renames it into place; a kill between the two leaves it), the node's own
//! spill files (`<data-dir>/tmp`), objects with no index row (written, then the commit failed
//! with an unknown outcome, or the process died before it), and rows whose object is missing
//! or differs from its SHA-256. Anything younger than the grace period is left alone: an
//! ingest may be under way.
//!
//! Repair re-indexes an unindexed object through the ordinary ingest (so its row is complete:
//! attributes, metadata, frame positions), with the `keep` duplicate policy: a copy of what is
//! indexed, or a different object under an indexed SOP Instance UID, is removed, as ingest
//! would have discarded it (it was never acknowledged: a sender hears Success only after the
//! commit). An object that is no valid DICOM instance, staging files and spill files are
//! removed. A row whose object is missing is removed (and logged); a row whose object differs
//! from its SHA-256 is only reported, for the object to be restored from a copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tracing::{info, warn};

use crate::index::Index;
use crate::ingest::{DuplicatePolicy, Incoming, Ingest, IngestError, IngestOutcome, Origin};
use crate::storage::{ListedObject, Storage, StorageError};

/// Below this age an unindexed object, a staging file or a spill file may belong to an ingest
/// under way, and is left alone (`pacs fsck --grace-secs`; the start-up pass uses this one).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// Objects up to this size are re-indexed from memory; larger ones through a temporary file.
const IN_MEMORY: u64 = 64 * 1024 * 1024;

/// Objects listed per index lookup.
const LOOKUP_BATCH: usize = 500;

/// The bounds of the start-up pass (`--startup-fsck-objects`, `--startup-fsck-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupPass {
    /// Objects looked at, at most; 0: no pass.
    pub max_objects: u64,
    pub max_time: Duration,
}

/// What one run looks at and does.
#[derive(Debug, Clone)]
pub struct Options {
    pub repair: bool,
    pub grace: Duration,
    /// Also check every row: its object is there and has the indexed size and SHA-256 (reads
    /// every object; not done at start-up).
    pub check_rows: bool,
    pub max_objects: Option<u64>,
    pub max_time: Option<Duration>,
    /// The node's spill folder (`<data-dir>/tmp`), whose old files are garbage.
    pub spill_dir: Option<PathBuf>,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub staging_files: u64,
    pub spill_files: u64,
    pub orphans: u64,
    pub missing_objects: u64,
    pub mismatches: u64,
    /// Findings repaired (`--repair`).
    pub repaired: u64,
    /// Operations that failed (the store or the index unavailable...): the run is incomplete.
    pub errors: u64,
    pub objects_seen: u64,
    pub rows_checked: u64,
    /// Unindexed objects and staging files younger than the grace period, left alone.
    pub young: u64,
    /// The bounds (`max_objects`, `max_time`) stopped the run before the end.
    pub cut_short: bool,
}

impl Report {
    pub fn findings(&self) -> u64 {
        self.staging_files
            + self.spill_files
            + self.orphans
            + self.missing_objects
            + self.mismatches
    }

    /// `pacs fsck`'s exit status: 0 clean, 1 something found (repaired or not), 2 an
    /// operational error.
    pub fn exit_code(&self) -> u8 {
        match (self.errors, self.findings()) {
            (0, 0) => 0,
            (0, _) => 1,
            _ => 2,
        }
    }

    /// The last line of `pacs fsck`.
    pub fn summary(&self) -> String {
        format!(
            "summary: {} objects, {} rows checked; {} findings ({} staging files, {} spill files, \
             {} unindexed objects, {} missing objects, {} hash mismatches), {} repaired, {} errors, \
             {} younger than the grace period left alone{}",
            self.objects_seen,
            self.rows_checked,
            self.findings(),
            self.staging_files,
            self.spill_files,
            self.orphans,
            self.missing_objects,
            self.mismatches,
            self.repaired,
            self.errors,
            self.young,
            if self.cut_short {
                "; stopped at its bounds before the end"
            } else {
                ""
            }
        )
    }
}

/// Runs one reconciliation; each finding is passed to `line` as one line, as found.
pub async fn run(
    index: Arc<dyn Index>,
    storage: Storage,
    options: &Options,
    line: &mut (dyn FnMut(&str) + Send + Sync),
) -> Report {
    let mut run = Run {
        // re-indexing is ingest with `keep`, whatever the node's policy (module comment)
        ingest: Ingest::new(index.clone(), storage.clone(), DuplicatePolicy::Keep),
        index,
        storage,
        options,
        report: Report::default(),
        started: Instant::now(),
        line,
    };
    run.staging_files().await;
    run.spill_files().await;
    let listed = run.objects().await;
    if options.check_rows && listed && !run.report.cut_short {
        run.rows().await;
    }
    run.report
}

/// The start-up pass: staging files and unindexed objects older than [`DEFAULT_GRACE`],
/// repaired, within `pass`'s bounds, in the background; logged.
pub fn spawn_startup_pass(index: Arc<dyn Index>, storage: Storage, pass: StartupPass) {
    if pass.max_objects == 0 {
        return;
    }
    tokio::spawn(async move {
        let options = Options {
            repair: true,
            grace: DEFAULT_GRACE,
            check_rows: false,
            max_objects: Some(pass.max_objects),
            max_time: Some(pass.max_time),
            spill_dir: None,
        };
        let mut log = |l: &str| warn!(finding = l, "start-up reconciliation");
        let report = run(index, storage, &options, &mut log).await;
        info!(
            findings = report.findings(),
            repaired = report.repaired,
            errors = report.errors,
            objects = report.objects_seen,
            complete = !report.cut_short,
            "start-up reconciliation pass done{}",
            if report.cut_short || report.errors > 0 {
                " (incomplete: run `pacs fsck --repair`)"
            } else {
                ""
            }
        );
    });
}

struct Run<'a> {
    index: Arc<dyn Index>,
    storage: Storage,
    ingest: Ingest,
    options: &'a Options,
    report: Report,
    started: Instant,
    line: &'a mut (dyn FnMut(&str) + Send + Sync),
}

/// A local store's staging file: `<name>#<digits>` (object_store's `LocalFileSystem`).
pub fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The SOP Instance UID in an object key (`study/series/instance.<hash>.dcm`,
/// [`Storage::instance_key`]).
pub fn instance_of_key(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?.strip_suffix(".dcm")?;
    let (uid, hash) = name.rsplit_once('.')?;
    (!hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(uid)
}

fn age(modified: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO)
}

/// Files under `dir` (recursively) that `keep` selects, with their age.
fn files_under(
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> std::io::Result<Vec<(PathBuf, Duration)>> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() && keep(&entry.file_name().to_string_lossy()) {
                let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
                found.push((entry.path(), age(modified)));
            }
        }
    }
    Ok(found)
}

impl Run<'_> {
    fn say(&mut self, text: String) {
        (self.line)(&text);
    }

    fn error(&mut self, text: String) {
        self.report.errors += 1;
        (self.line)(&format!("error: {text}"));
    }

    fn out_of_bounds(&mut self) -> bool {
        let objects = self
            .options
            .max_objects
            .is_some_and(|max| self.report.objects_seen >= max);
        let time = self
            .options
            .max_time
            .is_some_and(|max| self.started.elapsed() >= max);
        if objects || time {
            self.report.cut_short = true;
        }
        objects || time
    }

    /// Removes a garbage file when repairing; says what became of it.
    async fn remove_file(&mut self, path: &Path) -> &'static str {
        if !self.options.repair {
            return "found";
        }
        match tokio::fs::remove_file(path).await {
            Ok(()) => {
                self.report.repaired += 1;
                "removed"
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.report.repaired += 1;
                "removed"
            }
            Err(e) => {
                self.report.errors += 1;
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    "not removed: permission denied"
                } else {
                    "not removed"
                }
            }
        }
    }

    /// Staging files of a local store (an S3 store has none: an upload is visible whole or
    /// not at all).
    async fn staging_files(&mut self) {
        let Some(root) = self.storage.local_root().map(Path::to_path_buf) else {
            return;
        };
        let listed =
            tokio::task::spawn_blocking(move || files_under(&root, &|name| is_staging_file(name)))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let files = match listed {
            Ok(files) => files,
            Err(e) => return self.error(format!("cannot walk the object store's folder: {e}")),
        };
        for (path, age) in files {
            if age < self.options.grace {
                self.report.young += 1;
                continue;
            }
            self.report.staging_files += 1;
            let done = self.remove_file(&path).await;
            self.say(format!("staging-file {}: {done}", path.display()));
        }
    }

    /// Old files of the spill folder: data sets being received when the node stopped, never
    /// acknowledged.
    async fn spill_files(&mut self) {
        let Some(dir) = self.options.spill_dir.clone() else {
            return;
        };
        let listed = tokio::task::spawn_blocking(move || files_under(&dir, &|_| true))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let files = match listed {
            Ok(files) => files,
            Err(e) => return self.error(format!("cannot read the spill folder: {e}")),
        };
        for (path, age) in files {
            if age < self.options.grace {
                self.report.young += 1;
                continue;
            }
            self.report.spill_files += 1;
            let done = self.remove_file(&path).await;
            self.say(format!("spill-file {}: {done}", path.display()));
        }
    }

    /// Lists the store, finds the objects no row points to. False when the listing (or the
    /// index) failed.
    async fn objects(&mut self) -> bool {
        let mut stream = self.storage.list();
        let mut batch: Vec<ListedObject> = Vec::with_capacity(LOOKUP_BATCH);
        loop {
            let next = if self.out_of_bounds() {
                None
            } else {
                stream.next().await
            };
            let done = next.is_none();
            match next {
                Some(Ok(object)) => {
                    self.report.objects_seen += 1;
                    batch.push(object);
                    if batch.len() < LOOKUP_BATCH {
                        continue;
                    }
                }
                Some(Err(e)) => {
                    self.error(format!("cannot list the object store: {e}"));
                    return false;
                }
                None => {}
            }
            let objects = std::mem::take(&mut batch);
            if !objects.is_empty() && !self.unindexed(objects).await {
                return false;
            }
            if done {
                return true;
            }
        }
    }

    /// Looks a batch of listed objects up in the index; handles those no row points to.
    /// False when the index could not be asked.
    async fn unindexed(&mut self, objects: Vec<ListedObject>) -> bool {
        let uids: Vec<String> = objects
            .iter()
            .filter_map(|o| instance_of_key(&o.key).map(str::to_string))
            .collect();
        let indexed = match self.index.object_keys_of(&uids).await {
            Ok(found) => found,
            Err(e) => {
                self.error(format!("cannot look objects up in the index: {e}"));
                return false;
            }
        };
        for object in objects {
            let referenced = instance_of_key(&object.key)
                .and_then(|uid| indexed.get(uid))
                .is_some_and(|key| *key == object.key);
            if referenced {
                continue;
            }
            if age(object.last_modified) < self.options.grace {
                self.report.young += 1;
                continue;
            }
            self.report.orphans += 1;
            let done = if self.options.repair {
                self.reindex(&object).await
            } else {
                format!("unindexed ({} bytes)", object.size)
            };
            self.say(format!("orphan {}: {done}", object.key));
        }
        true
    }

    /// Re-indexes an unindexed object through ingest (module comment); says what happened.
    async fn reindex(&mut self, object: &ListedObject) -> String {
        // (a large object's temporary file lives as long as `_file`)
        let (incoming, _file) = match self.incoming(object).await {
            Ok(Ok(incoming)) => incoming,
            Ok(Err(why)) => return self.remove_invalid(object, &why).await,
            Err(e) => {
                self.report.errors += 1;
                return format!("not repaired: cannot read it: {e}");
            }
        };
        let uid = incoming.sop_instance_uid.clone();
        match self.ingest.ingest(incoming).await {
            Ok(ingested) => {
                // where the row now points: the object itself, or a copy at its proper key
                let row_key = match self.index.find_instance(&uid).await {
                    Ok(row) => row.map(|r| r.object_key),
                    Err(e) => {
                        self.report.errors += 1;
                        return format!("indexed, but cannot read its row back: {e}");
                    }
                };
                if row_key.as_deref() == Some(object.key.as_str()) {
                    self.report.repaired += 1;
                    info!(
                        key = object.key,
                        sop_instance_uid = uid,
                        "fsck: unindexed object re-indexed"
                    );
                    return "re-indexed".into();
                }
                let what = match ingested.outcome {
                    IngestOutcome::Stored | IngestOutcome::Replaced => "indexed at its own key",
                    IngestOutcome::AlreadyStored => "a copy of the indexed instance",
                    IngestOutcome::KeptExisting => {
                        "differs from the indexed instance of its SOP Instance UID (kept)"
                    }
                };
                match self.storage.delete(&object.key).await {
                    Ok(()) => {
                        self.report.repaired += 1;
                        info!(
                            key = object.key,
                            sop_instance_uid = uid,
                            what,
                            "fsck: unindexed object removed"
                        );
                        format!("{what}: removed")
                    }
                    Err(e) => {
                        self.report.errors += 1;
                        format!("{what}: not removed: {e}")
                    }
                }
            }
            Err(IngestError::CannotUnderstand(why) | IngestError::DoesNotMatch(why)) => {
                self.remove_invalid(object, &why).await
            }
            Err(IngestError::TooLarge(why)) => self.remove_invalid(object, &why).await,
            Err(e @ (IngestError::Storage(_) | IngestError::Index(_))) => {
                self.report.errors += 1;
                format!("not repaired: {e}")
            }
        }
    }

    async fn remove_invalid(&mut self, object: &ListedObject, why: &str) -> String {
        match self.storage.delete(&object.key).await {
            Ok(()) => {
                self.report.repaired += 1;
                warn!(
                    key = object.key,
                    why, "fsck: invalid unindexed object removed"
                );
                format!("not a valid DICOM instance ({why}): removed")
            }
            Err(e) => {
                self.report.errors += 1;
                format!("not a valid DICOM instance ({why}): not removed: {e}")
            }
        }
    }

    /// The object as an incoming Part 10 file, with the origin its file meta records
    /// (Source Application Entity Title, PS3.10 7.1). Inner Err: not a Part 10 file.
    async fn incoming(
        &self,
        object: &ListedObject,
    ) -> Result<Result<(Incoming, Option<tempfile::TempPath>), String>, StorageError> {
        let head = self
            .storage
            .get_range(&object.key, 0..object.size.min(1024 * 1024 + 132))
            .await?;
        let origin = match crate::ingest::read_part10_meta(&head) {
            Ok((meta, _)) => match meta.source_application_entity_title() {
                Some(ae) if !ae.trim_end_matches(['\0', ' ']).is_empty() => Origin::Dimse {
                    calling_ae_title: ae.trim_end_matches(['\0', ' ']).to_string(),
                },
                _ => Origin::Http,
            },
            Err(why) => return Ok(Err(why)),
        };
        if object.size <= IN_MEMORY {
            let bytes = self.storage.get(&object.key).await?;
            return Ok(Incoming::from_part10(bytes, origin)
                .map(|i| (i, None))
                .map_err(|e| e.to_string()));
        }
        let file = tempfile::NamedTempFile::new()?;
        let path = file.into_temp_path();
        {
            use tokio::io::AsyncWriteExt;
            let mut out = tokio::fs::File::create(&path).await?;
            let mut chunks = self.storage.get_stream(&object.key).await?;
            while let Some(chunk) = chunks.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
        }
        let file_path = path.to_path_buf();
        let incoming =
            tokio::task::spawn_blocking(move || Incoming::from_part10_file(file_path, origin))
                .await
                .map_err(std::io::Error::other)?;
        Ok(incoming.map(|i| (i, Some(path))).map_err(|e| e.to_string()))
    }

    /// Every row: its object there, with its size and SHA-256.
    async fn rows(&mut self) {
        let rows = match self.index.all_instances().await {
            Ok(rows) => rows,
            Err(e) => return self.error(format!("cannot read the index: {e}")),
        };
        for row in rows {
            self.report.rows_checked += 1;
            let (uid, key) = (row.sop_instance_uid.as_str(), row.object_key.as_str());
            match self.digest(key).await {
                Ok(Some((size, sha256))) => {
                    if sha256 != row.sha256 || size != row.size_bytes as u64 {
                        self.report.mismatches += 1;
                        self.say(format!(
                            "hash-mismatch {uid} {key}: indexed {} bytes sha256 {}, stored {size} bytes sha256 {sha256}: not repaired (restore the object from a copy)",
                            row.size_bytes, row.sha256
                        ));
                    }
                }
                Ok(None) => {
                    self.report.missing_objects += 1;
                    let done = if self.options.repair {
                        match self.index.delete_instance_row(uid, key).await {
                            Ok(_) => {
                                self.report.repaired += 1;
                                warn!(
                                    sop_instance_uid = uid,
                                    key,
                                    study = row.study_instance_uid,
                                    series = row.series_instance_uid,
                                    "fsck: index row of a missing object removed"
                                );
                                "row removed"
                            }
                            Err(e) => {
                                self.report.errors += 1;
                                warn!(sop_instance_uid = uid, key, error = %e, "fsck: cannot remove the row of a missing object");
                                "row not removed"
                            }
                        }
                    } else {
                        "found"
                    };
                    self.say(format!("missing-object {uid} {key}: {done}"));
                }
                Err(e) => self.error(format!("cannot read {key}: {e}")),
            }
        }
    }

    /// Size and SHA-256 of a stored object; None when there is none.
    async fn digest(&self, key: &str) -> Result<Option<(u64, String)>, StorageError> {
        let mut chunks = match self.storage.get_stream(key).await {
            Ok(s) => s,
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(StorageError::Store(object_store::Error::NotFound { .. })) => return Ok(None),
                Err(e) => return Err(e),
            };
            size += chunk.len() as u64;
            ctx.update(&chunk);
        }
        Ok(Some((size, hex::encode(ctx.finish().as_ref()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_files_are_named_with_a_number_after_a_hash() {
        assert!(is_staging_file("1.2.3.abcdef0123456789.dcm#1"));
        assert!(is_staging_file("x#42"));
        assert!(!is_staging_file("1.2.3.abcdef0123456789.dcm"));
        assert!(!is_staging_file("x#"));
        assert!(!is_staging_file("x#1a"));
    }

    #[test]
    fn the_instance_is_read_from_a_key() {
        assert_eq!(
            instance_of_key("1.2/1.2.3/1.2.3.4.0123456789abcdef.dcm"),
            Some("1.2.3.4")
        );
        assert_eq!(instance_of_key("1.2/1.2.3/readme.txt"), None);
        assert_eq!(instance_of_key("1.2/1.2.3/x.y.dcm"), None);
    }
}
