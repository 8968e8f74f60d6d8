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
    Move,
    Get,
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

/// A C-MOVE or C-GET request: the information model (SOP Class) and the identifier.
#[derive(Debug)]
pub struct RetrieveRequest {
    pub association_id: u64,
    pub calling_ae_title: String,
    pub peer: SocketAddr,
    pub sop_class_uid: String,
    pub identifier: dicom_object::InMemDicomObject,
}

/// One stored instance to send as a C-STORE sub-operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingInstance {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// The transfer syntax the object is stored in.
    pub transfer_syntax_uid: String,
    /// Where the archive finds it (opaque to this crate).
    pub handle: String,
    pub size_bytes: u64,
}

/// The instances a C-MOVE or C-GET identifier selects, or a failure status (PS3.4 C.4.2.1.5).
#[derive(Debug)]
pub enum RetrieveOutcome {
    Instances(Vec<OutgoingInstance>),
    Failed { status: u16, comment: String },
}

/// A remote AE that instances can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAe {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

/// Reads stored instances for sending, in a transfer syntax the receiver accepted.
#[async_trait::async_trait]
pub trait InstanceSource: Send + Sync + 'static {
    /// The transfer syntaxes the instance can be sent in, preferred first: the stored one,
    /// then the uncompressed ones it can be converted to.
    fn transfer_syntaxes(&self, instance: &OutgoingInstance) -> Vec<String>;

    /// The instance's data set (no File Meta Information) encoded in `transfer_syntax_uid`,
    /// which is one of [`InstanceSource::transfer_syntaxes`].
    async fn load(
        &self,
        instance: &OutgoingInstance,
        transfer_syntax_uid: &str,
    ) -> Result<bytes::Bytes, String>;
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

    /// Resolves a C-MOVE or C-GET identifier into the instances to send.
    async fn retrieve(&self, request: RetrieveRequest) -> RetrieveOutcome;

    /// The address of a C-MOVE destination, if `ae_title` is a known AE that may receive
    /// moves and has a host and port (else the C-MOVE is refused with A801).
    fn move_destination(&self, ae_title: &str) -> Option<RemoteAe>;

    /// Where sub-operations read the instances from.
    fn instance_source(&self) -> std::sync::Arc<dyn InstanceSource>;
}
