//! Checks that the index and the object store of a node agree: every indexed instance has its
//! object, every object is indexed, and each object's SHA-256 is the one indexed.

use std::collections::BTreeSet;
use std::path::Path;

use pacs::index::StoredInstance;

/// The index URL a node started by the harness uses.
pub fn index_url(data_dir: &Path, database_url: Option<&str>) -> String {
    match database_url {
        Some(url) => url.to_string(),
        None => data_dir.join("index.sqlite").to_string_lossy().into_owned(),
    }
}

/// Opens the node's index and local object store and checks they hold the same instances.
/// Returns what is indexed.
pub async fn verify_consistent(data_dir: &Path, database_url: Option<&str>) -> Vec<StoredInstance> {
    let index = pacs::index::open(&index_url(data_dir, database_url))
        .await
        .expect("open index");
    let instances = index.all_instances().await.expect("list instances");
    let objects_dir = data_dir.join("objects");
    let storage = pacs::storage::Storage::open(&pacs::storage::StorageConfig::Local {
        root: objects_dir.clone(),
    })
    .expect("open storage");
    let keys: BTreeSet<String> = storage
        .list_keys()
        .await
        .expect("list objects")
        .into_iter()
        .collect();
    let indexed: BTreeSet<String> = instances.iter().map(|i| i.object_key.clone()).collect();
    assert_eq!(keys, indexed, "object store and index disagree");
    for instance in &instances {
        let bytes = std::fs::read(objects_dir.join(&instance.object_key)).expect("read object");
        assert_eq!(
            bytes.len() as i64,
            instance.size_bytes,
            "size of {}",
            instance.object_key
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        assert_eq!(
            hex::encode(digest.as_ref()),
            instance.sha256,
            "sha256 of {}",
            instance.object_key
        );
        assert_eq!(
            &bytes[128..132],
            b"DICM",
            "{} is not a Part 10 file",
            instance.object_key
        );
    }
    instances
}

/// SOP Instance UIDs of what is indexed.
pub fn uids(instances: &[StoredInstance]) -> BTreeSet<String> {
    instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect()
}

/// Files left in the node's temporary directory (spilled data sets must not outlive a store).
pub fn temp_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("tmp"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One reference entry of `tests/peers/list_files.py`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct FileInfo {
    pub path: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Whether the data set has the Study and Series Instance UIDs an archive needs.
    pub has_study_and_series: bool,
}

/// Lists files with pydicom (an independent reader).
pub fn list_files(files: &[std::path::PathBuf]) -> Vec<FileInfo> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/list_files.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(files)
        .output()
        .expect("run list_files.py");
    assert!(
        out.status.success(),
        "list_files.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("list_files.py output")
}
