//! What the DIMSE front-end needs from the archive behind it.
//!
//! The node implements [`DimseService`]; this crate never touches the index or the object store.

use std::net::SocketAddr;

/// Who is asking for an association.
#[derive(Debug, Clone)]
pub struct AssociationPeer {
    pub calling_ae_title: String,
    pub called_ae_title: String,
    pub address: SocketAddr,
}

/// Why an association is refused (sent as A-ASSOCIATE-RJ, PS3.8 9.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociationRefusal {
    CallingAeTitleNotRecognized,
    CalledAeTitleNotRecognized,
}

/// The DIMSE operations an AE may be allowed to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Echo,
    Store,
    Find,
}

/// A data set received with a C-STORE request, exactly as it came off the wire (no file meta
/// group). Small data sets stay in memory; larger ones are spilled to a temporary file so that a
/// 1 GB multi-frame object never needs 1 GB of heap.
#[derive(Debug)]
pub enum ReceivedDataset {
    /// The P-DATA fragments in order, unconcatenated (no copy).
    Memory(Vec<bytes::Bytes>),
    /// A temporary file that is deleted when this value is dropped.
    File { path: tempfile::TempPath, len: u64 },
}

impl ReceivedDataset {
    pub fn len(&self) -> u64 {
        match self {
            ReceivedDataset::Memory(v) => v.iter().map(|b| b.len() as u64).sum(),
            ReceivedDataset::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete C-STORE request.
#[derive(Debug)]
pub struct StoreRequest {
    pub association_id: u64,
    pub calling_ae_title: String,
    pub peer: SocketAddr,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub dataset: ReceivedDataset,
}

/// The archive's answer to a C-STORE: a status from PS3.4 B.2.3 and an optional comment.
#[derive(Debug, Clone)]
pub struct StoreOutcome {
    pub status: u16,
    pub error_comment: Option<String>,
}

impl StoreOutcome {
    pub fn success() -> Self {
        StoreOutcome {
            status: crate::command::status::SUCCESS,
            error_comment: None,
        }
    }

    pub fn with_status(status: u16, comment: impl Into<String>) -> Self {
        StoreOutcome {
            status,
            error_comment: Some(comment.into()),
        }
    }
}

/// A C-FIND request: the information model (SOP Class) and the identifier.
#[derive(Debug)]
pub struct FindRequest {
    pub association_id: u64,
    pub calling_ae_title: String,
    pub peer: SocketAddr,
    pub sop_class_uid: String,
    pub identifier: dicom_object::InMemDicomObject,
}

/// The archive's answer to a C-FIND: the matches (sent as Pending responses), or a failure
/// status (PS3.4 C.4.1.1.4).
#[derive(Debug)]
pub enum FindOutcome {
    Matches(Vec<dicom_object::InMemDicomObject>),
    Failed { status: u16, comment: String },
}

#[async_trait::async_trait]
pub trait DimseService: Send + Sync + 'static {
    /// Decides whether an association may be established (called and calling AE titles, peer
    /// host). Called once per association request.
    fn authorize_association(&self, peer: &AssociationPeer) -> Result<(), AssociationRefusal>;

    /// Whether the peer may perform the operation on an established association.
    fn may_perform(&self, peer: &AssociationPeer, operation: Operation) -> bool;

    /// Stores one instance. Must answer Success only once the object and its index row are
    /// durable.
    async fn store(&self, request: StoreRequest) -> StoreOutcome;

    /// Answers a C-FIND.
    async fn find(&self, request: FindRequest) -> FindOutcome;
}
