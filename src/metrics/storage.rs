//! The object store, timed: [`metered`] wraps any `object_store` store so that every request
//! is recorded in `pacs_storage_operation_duration_seconds{operation}` and, when it fails, in
//! `pacs_storage_operation_errors_total{operation}`. A missing object (`NotFound`) or a
//! refused conditional write is an answer, not an error. Reads are timed to their first byte
//! (the body streams afterwards); a multipart upload's parts and completion count as
//! `put_part` and `put_multipart_complete`.
//!
//! Every method delegates to the wrapped store's own (so a local rename stays one atomic
//! rename, and S3 keeps its bulk deletes).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::FutureExt;
use metrics::{Counter, Histogram};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

#[derive(Clone, Copy)]
enum Op {
    Put,
    PutMultipart,
    PutPart,
    PutMultipartComplete,
    Get,
    GetRange,
    Head,
    Delete,
    List,
    Copy,
    Rename,
}

const OPERATIONS: [&str; 11] = [
    "put",
    "put_multipart",
    "put_part",
    "put_multipart_complete",
    "get",
    "get_range",
    "head",
    "delete",
    "list",
    "copy",
    "rename",
];

struct Handles([(Histogram, Counter); 11]);

impl Handles {
    fn record<T>(&self, op: Op, started: Instant, result: &Result<T>) {
        let (duration, errors) = &self.0[op as usize];
        duration.record(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            if !matches!(
                e,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotModified { .. }
            ) {
                errors.increment(1);
            }
        }
    }
}

/// `store`, with every request timed. Call after [`super::install`].
pub fn metered(store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    let handles = OPERATIONS.map(|op| {
        (
            metrics::histogram!(super::STORAGE_DURATION, "operation" => op),
            metrics::counter!(super::STORAGE_ERRORS, "operation" => op),
        )
    });
    Arc::new(MeteredStore {
        inner: store,
        handles: Arc::new(Handles(handles)),
    })
}

#[derive(Debug)]
struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    handles: Arc<Handles>,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handles")
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl MeteredStore {
    async fn timed<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.handles.record(op, started, &result);
        result
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.timed(Op::Put, self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self
            .timed(
                Op::PutMultipart,
                self.inner.put_multipart_opts(location, opts),
            )
            .await?;
        Ok(Box::new(MeteredUpload {
            inner: upload,
            handles: self.handles.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.timed(op, self.inner.get_opts(location, options)).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        self.timed(Op::GetRange, self.inner.get_range(location, range))
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.timed(Op::GetRange, self.inner.get_ranges(location, ranges))
            .await
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        self.timed(Op::Head, self.inner.head(location)).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.timed(Op::Delete, self.inner.delete(location)).await
    }

    fn delete_stream<'a>(
        &'a self,
        locations: BoxStream<'a, Result<Path>>,
    ) -> BoxStream<'a, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // a listing streams page by page: counted once, timed to its first page
        let started = Instant::now();
        let handles = self.handles.clone();
        let mut first = true;
        use futures::StreamExt;
        self.inner
            .list(prefix)
            .map(move |item| {
                if first || item.is_err() {
                    first = false;
                    handles.record(Op::List, started, &item);
                }
                item
            })
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.timed(Op::List, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.timed(Op::Copy, self.inner.copy(from, to)).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.timed(Op::Rename, self.inner.rename(from, to)).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.timed(Op::Copy, self.inner.copy_if_not_exists(from, to))
            .await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.timed(Op::Rename, self.inner.rename_if_not_exists(from, to))
            .await
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    handles: Arc<Handles>,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let started = Instant::now();
        let handles = self.handles.clone();
        self.inner
            .put_part(data)
            .map(move |result| {
                handles.record(Op::PutPart, started, &result);
                result
            })
            .boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.inner.complete().await;
        self.handles
            .record(Op::PutMultipartComplete, started, &result);
        result
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_timed_and_a_missing_object_is_no_error() {
        super::super::install();
        let dir = tempfile::tempdir().unwrap();
        let store = metered(Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
        ));
        let path = Path::from("a/b.dcm");
        store
            .put(&path, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&path).await.unwrap().bytes().await.unwrap(),
            &b"x"[..]
        );
        let errors_before = count(&super::super::render(), "errors_total", "head");
        assert!(store.head(&Path::from("missing")).await.is_err());
        let text = super::super::render();
        assert!(count(&text, "duration_seconds_count", "put") >= 1, "{text}");
        assert!(count(&text, "duration_seconds_count", "get") >= 1, "{text}");
        assert!(
            count(&text, "duration_seconds_count", "head") >= 1,
            "{text}"
        );
        assert_eq!(count(&text, "errors_total", "head"), errors_before);
    }

    fn count(text: &str, suffix: &str, op: &str) -> u64 {
        let prefix = format!("pacs_storage_operation_{suffix}{{operation=\"{op}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0)
    }
}
