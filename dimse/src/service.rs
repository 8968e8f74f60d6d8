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
    /// Whether the association runs over TLS (the DIMSE TLS listener, PS3.15 Annex B).
    pub tls: bool,
}

/// A user identity offered in an A-ASSOCIATE-RQ (PS3.7 D.3.3.7, the User Identity sub-item of
/// PS3.8 9.3.2.3). Its `Debug` never prints passcodes or tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum OfferedIdentity {
    /// User Identity Type 1: a username alone.
    Username(String),
    /// User Identity Type 2: a username and its passcode.
    UsernamePasscode { username: String, passcode: String },
    /// User Identity Type 5: a JSON Web Token.
    Jwt(String),
    /// Kerberos (3), SAML (4) or another type this node does not support: the type number. An
    /// identity of a supported type whose fields are not UTF-8 text (or whose username or token
    /// is empty) is reported here too, with its type number.
    Unsupported(u8),
}

impl std::fmt::Debug for OfferedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OfferedIdentity::Username(username) => {
                f.debug_tuple("Username").field(username).finish()
            }
            OfferedIdentity::UsernamePasscode { username, .. } => f
                .debug_struct("UsernamePasscode")
                .field("username", username)
                .field("passcode", &"<redacted>")
                .finish(),
            OfferedIdentity::Jwt(_) => f.debug_tuple("Jwt").field(&"<redacted>").finish(),
            OfferedIdentity::Unsupported(kind) => f.debug_tuple("Unsupported").field(kind).finish(),
        }
    }
}

impl OfferedIdentity {
    /// The User-Identity-Type field (PS3.7 Table D.3-14): 1 username, 2 username and
    /// passcode, 3 Kerberos, 4 SAML, 5 JWT.
    pub fn type_number(&self) -> u8 {
        match self {
            OfferedIdentity::Username(_) => 1,
            OfferedIdentity::UsernamePasscode { .. } => 2,
            OfferedIdentity::Jwt(_) => 5,
            OfferedIdentity::Unsupported(kind) => *kind,
        }
    }
}

/// The User Identity sub-item of an A-ASSOCIATE-RQ: the identity and whether the requestor asked
/// for a positive response (a User Identity sub-item in the A-ASSOCIATE-AC, PS3.7 D.3.3.7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityOffer {
    pub identity: OfferedIdentity,
    pub positive_response_requested: bool,
}

/// Why an association is refused (sent as A-ASSOCIATE-RJ, PS3.8 9.3.4, Table 9-21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssociationRefusal {
    /// rejected-permanent, source DICOM UL service-user (1), reason 3
    CallingAeTitleNotRecognized,
    /// rejected-permanent, source DICOM UL service-user (1), reason 7
    CalledAeTitleNotRecognized,
    /// The offered user identity was refused (or none was offered where one is required):
    /// rejected-permanent, source DICOM UL service-provider, ACSE related function (2), reason 1
    /// no-reason-given (PS3.7 D.3.3.7).
    AuthenticationFailed,
}

/// What an accepted association may do, decided once by
/// [`DimseService::authorize_association`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationGrant {
    /// The authenticated user the association acts for (None: the calling AE itself).
    pub user: Option<String>,
    /// The DIMSE operations it may perform; others are refused with the operation's refused
    /// status (0124 Not Authorized for C-ECHO and C-STORE; C-FIND, C-MOVE and C-GET likewise).
    pub operations: Vec<Operation>,
    /// The Server Response of the A-ASSOCIATE-AC User Identity sub-item (PS3.7 D.3.3.7.2),
    /// sent only when the offer asked for a positive response and the identity was accepted
    /// (`user` is Some): empty for the username types; for a JWT it may be empty too.
    pub server_response: Vec<u8>,
}

impl AssociationGrant {
    /// A grant for the calling AE itself (no user), with these operations.
    pub fn for_ae(operations: Vec<Operation>) -> Self {
        AssociationGrant {
            user: None,
            operations,
            server_response: Vec::new(),
        }
    }

    pub fn permits(&self, operation: Operation) -> bool {
        self.operations.contains(&operation)
    }
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
    /// The authenticated user the association acts for (the grant's), if any.
    pub user: Option<String>,
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
    /// The authenticated user the association acts for (the grant's), if any.
    pub user: Option<String>,
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
    /// The authenticated user the association acts for (the grant's), if any.
    pub user: Option<String>,
    pub sop_class_uid: String,
    pub identifier: dicom_object::InMemDicomObject,
}

/// What the sub-operations of a C-MOVE or C-GET did, told to
/// [`DimseService::retrieve_finished`] once they are over.
#[derive(Debug, Clone)]
pub struct RetrieveReport {
    pub association_id: u64,
    pub calling_ae_title: String,
    pub peer: SocketAddr,
    pub user: Option<String>,
    /// The information model (SOP Class) and the identifier of the request.
    pub sop_class_uid: String,
    pub identifier: dicom_object::InMemDicomObject,
    /// The C-MOVE destination (None: C-GET, sent back on the association).
    pub destination: Option<RemoteAe>,
    /// The SOP Class UID of each instance stored (completed or with a warning).
    pub stored_sop_classes: Vec<String>,
    pub failed: usize,
    pub cancelled: bool,
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
    /// Connect to it over TLS (PS3.15 Annex B); the host is the name its certificate must carry.
    pub tls: bool,
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
    /// Decides whether an association may be established and what it may do: the calling AE
    /// title, the peer's address and the user identity it offered, if any (PS3.7 D.3.3.7).
    /// Called once per A-ASSOCIATE-RQ, after the Called AE Title was found to be this node's
    /// and before the A-ASSOCIATE-AC is sent.
    async fn authorize_association(
        &self,
        peer: &AssociationPeer,
        offer: Option<&IdentityOffer>,
    ) -> Result<AssociationGrant, AssociationRefusal>;

    /// Told of an association the listener refused itself, before asking
    /// [`DimseService::authorize_association`] (a Called AE Title that is not this node's), so
    /// that every refusal can be recorded.
    async fn association_refused(
        &self,
        _peer: &AssociationPeer,
        _offer: Option<&IdentityOffer>,
        _refusal: AssociationRefusal,
    ) {
    }

    /// Stores one instance. Must answer Success only once the object and its index row are
    /// durable.
    async fn store(&self, request: StoreRequest) -> StoreOutcome;

    /// Answers a C-FIND.
    async fn find(&self, request: FindRequest) -> FindOutcome;

    /// Resolves a C-MOVE or C-GET identifier into the instances to send.
    async fn retrieve(&self, request: RetrieveRequest) -> RetrieveOutcome;

    /// Told when the sub-operations of a C-MOVE or C-GET are over (for an audit trail),
    /// before the final response is sent. Not called when the association was aborted or
    /// closed during them. By default, nothing.
    async fn retrieve_finished(&self, report: RetrieveReport) {
        let _ = report;
    }

    /// The address of a C-MOVE destination, if `ae_title` is a known AE that may receive
    /// moves and has a host and port (else the C-MOVE is refused with A801).
    fn move_destination(&self, ae_title: &str) -> Option<RemoteAe>;

    /// Where sub-operations read the instances from.
    fn instance_source(&self) -> std::sync::Arc<dyn InstanceSource>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_passcode_or_token() {
        let offer = IdentityOffer {
            identity: OfferedIdentity::UsernamePasscode {
                username: "alice".into(),
                passcode: "s3cr3t".into(),
            },
            positive_response_requested: true,
        };
        let shown = format!("{offer:?} {:#?}", offer.identity);
        assert!(
            shown.contains("alice") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        let shown = format!("{:?}", OfferedIdentity::Jwt("eyJhbGciOi.x.y".into()));
        assert!(!shown.contains("eyJ"), "{shown}");
        assert_eq!(
            format!("{:?}", OfferedIdentity::Username("bob".into())),
            "Username(\"bob\")"
        );
        assert_eq!(
            format!("{:?}", OfferedIdentity::Unsupported(3)),
            "Unsupported(3)"
        );
    }
}
