//! What the HTTP front-end needs from the archive, in the words of PS3.18 rather than of the
//! index. The node implements [`Archive`].

use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::identity::Identity;

/// Errors the archive reports; [`crate::error`] maps each to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Unavailable(String),
    /// A byte range that starts at or past the end of a value of `length` bytes (every range
    /// of an empty value): RFC 9110 15.5.17.
    #[error("range not satisfiable: the value has {length} bytes")]
    RangeNotSatisfiable { length: u64 },
    #[error("{0}")]
    Internal(String),
}

/// QIDO-RS search levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchLevel {
    Study,
    Series,
    Instance,
}

/// A QIDO-RS search, as parsed from the URL.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub level: SearchLevel,
    pub study: Option<String>,
    pub series: Option<String>,
    /// Matching keys: (keyword or tag, value).
    pub filters: Vec<(String, String)>,
    /// `includefield` values (keywords or tags); contains "all" for everything.
    pub include: Vec<String>,
    pub fuzzy: bool,
    pub limit: Option<usize>,
    pub offset: usize,
    /// Root URL of this service (for Retrieve URL).
    pub base_url: String,
}

#[derive(Debug, Clone)]
pub struct SearchResponse {
    /// DICOM JSON datasets.
    pub datasets: Vec<serde_json::Value>,
    /// More results exist beyond the limit.
    pub truncated: bool,
    /// The limit that applied.
    pub limit: usize,
}

/// A study, a series of it, or an instance of that series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub study: String,
    pub series: Option<String>,
    pub instance: Option<String>,
}

/// A stored instance, as retrieval needs it.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    pub study: String,
    pub series: String,
    pub instance: String,
    pub transfer_syntax_uid: String,
    pub size: u64,
    /// Where the archive keeps it: opaque to the front-end, handed back to read it.
    pub handle: String,
}

/// Metadata of a scope: a DICOM JSON array and a strong validator for it.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub json: Bytes,
    pub etag: String,
}

/// Frames of one instance, as stored.
#[derive(Debug, Clone)]
pub struct StoredFrames {
    pub transfer_syntax_uid: String,
    pub frames: Vec<Bytes>,
}

/// A bulk data value (or part of it).
#[derive(Debug, Clone)]
pub struct BulkData {
    pub bytes: Bytes,
    /// Length of the whole value.
    pub total_len: u64,
    /// The part of the value `bytes` holds.
    pub range: Range<u64>,
}

/// Rendering parameters (PS3.18 8.3.5.1).
#[derive(Debug, Clone, Default)]
pub struct RenderRequest {
    pub frame: Option<u32>,
    pub window: Option<(f64, f64)>,
    pub viewport: Option<(u32, u32)>,
    /// An image is wanted as PNG rather than JPEG.
    pub png: bool,
    pub quality: Option<u8>,
    /// The client's Accept ranges: an image is rendered only when they accept image/jpeg or
    /// image/png, an encapsulated document only when they accept its own media type.
    pub accept: Vec<crate::media::MediaRange>,
    /// `/thumbnail` rather than `/rendered`.
    pub thumbnail: bool,
}

impl RenderRequest {
    /// Whether the client accepts a response of `media_type` (`type/subtype`).
    pub fn accepts(&self, media_type: &str) -> bool {
        crate::media::accepts(&self.accept, &media_type.to_ascii_lowercase())
    }

    /// Whether the client accepts a rendered image (JPEG or PNG).
    pub fn accepts_image(&self) -> bool {
        self.accepts("image/jpeg") || self.accepts("image/png")
    }
}

/// What `/rendered` answers, with its media type: a rendered image, or an encapsulated
/// document as it is, in its own media type (PS3.18 8.3.5, rendered resources).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bytes: Bytes,
    pub media_type: String,
}

/// The outcome of storing one STOW-RS part.
#[derive(Debug, Clone)]
pub enum StoreResult {
    Stored {
        sop_class_uid: String,
        sop_instance_uid: String,
        study_instance_uid: String,
        series_instance_uid: String,
        /// A warning reason (PS3.18 Table 10.5.3-2), e.g. 0xB006 when a duplicate was kept.
        warning: Option<u16>,
    },
    Failed {
        sop_class_uid: Option<String>,
        sop_instance_uid: Option<String>,
        /// Failure reason (PS3.18 Table 10.5.3-3 / PS3.4 B.2.3 status).
        reason: u16,
        message: String,
    },
    /// Not stored for want of a resource of the archive, not for anything in the object:
    /// its failure reason is A700 (Refused: Out of Resources, PS3.4 B.2.3); when no part was
    /// stored the response is 507 Insufficient Storage (the object store full or unreachable)
    /// or 503 Service Unavailable (the index), so that the sender tries again later.
    OutOfResources {
        sop_class_uid: String,
        sop_instance_uid: String,
        lacking: Lacking,
        message: String,
    },
}

/// What the archive lacked to store an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lacking {
    /// The object store: full, or not reachable.
    Storage,
    /// The index: not reachable, or not answering in time, or a commit whose outcome is
    /// unknown.
    Index,
}

pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// One STOW-RS part as received: a Part 10 object, in memory when small, else in a temporary
/// file that is deleted when this value is dropped (so that a 2 GB object never needs 2 GB of
/// memory, as with C-STORE).
#[derive(Debug)]
pub enum ReceivedPart {
    Memory(Bytes),
    File { path: tempfile::TempPath, len: u64 },
}

impl ReceivedPart {
    pub fn len(&self) -> u64 {
        match self {
            ReceivedPart::Memory(b) => b.len() as u64,
            ReceivedPart::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every method that reads or writes receives the caller's [`Identity`] (for the audit trail
/// and per-caller permissions); an implementation may not need it yet, but it is always there.
#[async_trait::async_trait]
pub trait Archive: Send + Sync + 'static {
    /// Counts of what the archive holds, as JSON.
    async fn statistics(&self, identity: &Identity) -> Result<serde_json::Value, ArchiveError>;

    async fn search(
        &self,
        request: SearchRequest,
        identity: &Identity,
    ) -> Result<SearchResponse, ArchiveError>;

    /// Instances of a scope, in series then instance order. NotFound when there are none.
    async fn instances(
        &self,
        scope: &Scope,
        identity: &Identity,
    ) -> Result<Vec<InstanceInfo>, ArchiveError>;

    /// The stored object of an instance, as a stream (a large object is never held whole).
    async fn read_instance(
        &self,
        instance: &InstanceInfo,
        identity: &Identity,
    ) -> Result<ByteStream, ArchiveError>;

    /// Whether an instance stored in `transfer_syntax_uid` can be converted to Explicit VR
    /// Little Endian.
    fn can_transcode(&self, transfer_syntax_uid: &str) -> bool;

    /// The instance re-encoded in Explicit VR Little Endian (a whole Part 10 file).
    async fn read_instance_explicit_le(
        &self,
        instance: &InstanceInfo,
        identity: &Identity,
    ) -> Result<Bytes, ArchiveError>;

    /// Metadata of a scope, from what ingest kept: never reads stored objects.
    /// `instance_base` is the URL prefix BulkDataURIs are made absolute with
    /// (`{base}/studies/{study}/series/{series}/instances/{instance}/` is appended per instance).
    async fn metadata(
        &self,
        scope: &Scope,
        base_url: &str,
        identity: &Identity,
    ) -> Result<Metadata, ArchiveError>;

    /// Frames (1-based numbers) as stored, read by ranges from the stored object.
    async fn frames(
        &self,
        scope: &Scope,
        numbers: &[u32],
        identity: &Identity,
    ) -> Result<StoredFrames, ArchiveError>;

    /// Frames decoded to native pixel data.
    async fn decoded_frames(
        &self,
        scope: &Scope,
        numbers: &[u32],
        identity: &Identity,
    ) -> Result<Vec<Bytes>, ArchiveError>;

    /// A bulk data value of an instance (`path` as in its BulkDataURI, e.g. `7FE00010`), or the
    /// part of it in `range`.
    async fn bulkdata(
        &self,
        scope: &Scope,
        path: &str,
        range: Option<Range<u64>>,
        identity: &Identity,
    ) -> Result<BulkData, ArchiveError>;

    /// Renders an instance (or, for a series or study scope, a representative instance): an
    /// image to JPEG or PNG, an encapsulated document (PDF, CDA, STL...) to its own bytes.
    /// NotAcceptable when the request's Accept ranges take neither.
    async fn render(
        &self,
        scope: &Scope,
        request: &RenderRequest,
        identity: &Identity,
    ) -> Result<Rendered, ArchiveError>;

    /// Stores one Part 10 object received by STOW-RS; `study` is the study in the request URL,
    /// which the instance must belong to. The part is within the instance limit.
    async fn store(
        &self,
        object: ReceivedPart,
        study: Option<&str>,
        identity: &Identity,
    ) -> StoreResult;
}
