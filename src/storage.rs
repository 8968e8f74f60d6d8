//! Object storage for stored DICOM files, through `object_store` only: a local folder by
//! default, any S3-compatible store by configuration.
//!
//! Keys are built from validated UIDs (see [`crate::uid`]) plus the object's SHA-256, so a key
//! can never leave the store's root, and replacing an instance writes a new object instead of
//! overwriting the one the index still points to.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use crate::uid::Uid;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid storage configuration: {0}")]
    Config(String),
}

/// Where objects go.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local {
        root: PathBuf,
    },
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        allow_http: bool,
        /// Each request's timeout, and the time its retries may take (`--storage-timeout-ms`):
        /// an unreachable store fails a store within it instead of holding it for minutes.
        timeout: std::time::Duration,
    },
}

/// The default of `--storage-timeout-ms`.
pub const DEFAULT_S3_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl StorageConfig {
    /// The same store with `timeout` for S3 requests (a local store has none).
    pub fn with_timeout(self, timeout: std::time::Duration) -> StorageConfig {
        match self {
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
                ..
            } => StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
                timeout,
            },
            local => local,
        }
    }
}

/// An object as listed: its key, size and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub last_modified: std::time::SystemTime,
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// For the local backend: its root, so that written files can be fsynced.
    local_root: Option<PathBuf>,
    description: String,
}

/// Objects above this size are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

impl Storage {
    pub fn open(config: &StorageConfig) -> Result<Storage, StorageError> {
        match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root)?;
                let root = root.canonicalize()?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
                Ok(Storage {
                    store: crate::metrics::storage::metered(Arc::new(store)),
                    description: format!("file://{}", root.display()),
                    local_root: Some(root),
                })
            }
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
                timeout,
            } => {
                let retry = object_store::RetryConfig {
                    retry_timeout: *timeout,
                    ..Default::default()
                };
                let client = object_store::ClientOptions::new()
                    .with_timeout(*timeout)
                    .with_connect_timeout(*timeout.min(&std::time::Duration::from_secs(5)));
                // (the client options first: they hold allow_http too)
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http);
                if let Some(e) = endpoint {
                    // MinIO and most S3-compatible servers want path-style requests.
                    builder = builder
                        .with_endpoint(e)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(k) = access_key_id {
                    builder = builder.with_access_key_id(k);
                }
                if let Some(s) = secret_access_key {
                    builder = builder.with_secret_access_key(s);
                }
                let store = builder.build()?;
                Ok(Storage {
                    store: crate::metrics::storage::metered(Arc::new(store)),
                    local_root: None,
                    description: format!("s3://{bucket}"),
                })
            }
        }
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Whether the store answers (`/readyz`): one HEAD of a key that does not exist, which a
    /// reachable store answers "not found" (S3: the bucket exists and the credentials are
    /// good); for the local backend, the root must also be a readable directory.
    pub async fn probe(&self) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root {
            let _listing = tokio::fs::read_dir(root).await?;
        }
        match self.store.head(&ObjectPath::from(".readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The key of an instance's object.
    pub fn instance_key(study: &Uid, series: &Uid, instance: &Uid, sha256_hex: &str) -> String {
        debug_assert!(sha256_hex.chars().all(|c| c.is_ascii_hexdigit()));
        format!(
            "{}/{}/{}.{}.dcm",
            study.as_str(),
            series.as_str(),
            instance.as_str(),
            &sha256_hex[..16.min(sha256_hex.len())]
        )
    }

    /// Writes an object held in memory (as consecutive chunks, so that a header and a body
    /// need not be copied together) and makes it durable before returning.
    pub async fn put(&self, key: &str, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        let path = ObjectPath::from(key);
        let payload: PutPayload = chunks.into_iter().collect();
        let started = std::time::Instant::now();
        self.store.put(&path, payload).await?;
        let written = started.elapsed();
        self.sync(key).await?;
        tracing::debug!(
            write_us = written.as_micros() as u64,
            sync_us = (started.elapsed() - written).as_micros() as u64,
            "object stored"
        );
        Ok(())
    }

    /// Writes an object from `prefix` followed by the contents of a file, in parts, without
    /// holding the whole object in memory; durable before returning.
    pub async fn put_file(
        &self,
        key: &str,
        prefix: Vec<u8>,
        file: &Path,
    ) -> Result<(), StorageError> {
        let path = ObjectPath::from(key);
        let len = tokio::fs::metadata(file).await?.len() + prefix.len() as u64;
        if len <= MULTIPART_THRESHOLD {
            let data = tokio::fs::read(file).await?;
            return self
                .put(key, vec![Bytes::from(prefix), Bytes::from(data)])
                .await;
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.write(&prefix);
        let mut f = tokio::fs::File::open(file).await?;
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            use tokio::io::AsyncReadExt;
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        self.sync(key).await
    }

    /// For the local backend, fsyncs the file and its directory so that a rename that
    /// `object_store` did is on disk (object_store itself does not fsync). S3 acknowledges a
    /// PUT only once it is durable.
    async fn sync(&self, key: &str) -> Result<(), StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(key);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let started = std::time::Instant::now();
            std::fs::File::open(&file)?.sync_all()?;
            let file_synced = started.elapsed();
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            tracing::debug!(
                file_fsync_us = file_synced.as_micros() as u64,
                dir_fsync_us = (started.elapsed() - file_synced).as_micros() as u64,
                "object synced"
            );
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        Ok(self
            .store
            .get(&ObjectPath::from(key))
            .await?
            .bytes()
            .await?)
    }

    /// An object as a stream of chunks (a large object is never held whole).
    /// An object as a stream of large chunks read one after the other, so that a large object
    /// is never held whole. (object_store's own stream of a local file reads 8 KiB at a time,
    /// each on a blocking thread: several times slower than the disk.)
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, StorageError>>, StorageError>
    {
        use futures::StreamExt;
        const READ_CHUNK: u64 = 4 * 1024 * 1024;
        let path = ObjectPath::from(key);
        let size = self.store.head(&path).await?.size;
        let store = self.store.clone();
        Ok(futures::stream::unfold(0u64, move |offset| {
            let (store, path) = (store.clone(), path.clone());
            async move {
                if offset >= size {
                    return None;
                }
                let end = (offset + READ_CHUNK).min(size);
                let chunk = store
                    .get_range(&path, offset..end)
                    .await
                    .map_err(StorageError::from);
                Some((chunk, end))
            }
        })
        // polled again after its end by some consumers (the compression layer): fused, not a panic
        .fuse()
        .boxed())
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        Ok(self.store.get_range(&ObjectPath::from(key), range).await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// For the local backend, the folder objects are kept in.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// Objects one after the other, with their size and time (maintenance: `pacs fsck`).
    /// object_store leaves out a local store's staging files (`<key>#<n>`).
    pub fn list(&self) -> futures::stream::BoxStream<'static, Result<ListedObject, StorageError>> {
        use futures::StreamExt;
        self.store
            .list(None)
            .map(|m| {
                let m = m?;
                Ok(ListedObject {
                    key: m.location.to_string(),
                    size: m.size,
                    last_modified: m.last_modified.into(),
                })
            })
            .boxed()
    }

    /// Every key in the store (for verification and maintenance; not for hot paths).
    pub async fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        use futures::TryStreamExt;
        let metas: Vec<_> = self.store.list(None).try_collect().await?;
        let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        Ok(keys)
    }
}
