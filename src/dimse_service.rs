//! The archive behind the DIMSE front-end: association policy and C-STORE into ingest.
//!
//! Who may associate and do what is decided once per association, in
//! [`NodeDimseService::authorize_association`]: by the user identity the requestor offered when
//! users are configured, else by the calling AE's registry entry. Every DIMSE status the node
//! answers for a C-STORE is decided in [`store_status`].

use std::sync::Arc;

use pacs_dimse::command::status;
use pacs_dimse::{
    AssociationGrant, AssociationPeer, AssociationRefusal, DimseService, FindOutcome, FindRequest,
    IdentityOffer, InstanceSource, OfferedIdentity, Operation, ReceivedDataset, RetrieveOutcome,
    RetrieveRequest, StoreOutcome, StoreRequest,
};
use tracing::{debug, info, warn};

use crate::ae_registry::AeRegistry;
use crate::audit::{
    types as audit_types, AuditEvent, EventKind, ObjectRef, Outcome, Participant, StoredNote,
    StudyRef,
};
use crate::config::RemoteAe;
use crate::ingest::{Incoming, IncomingData, Ingest, IngestError, IngestOutcome, Ingested};

/// Who may associate and do what.
pub struct AePolicy {
    /// Refuse calling AE titles that are not in the registry.
    pub require_known_ae: bool,
    pub registry: Arc<AeRegistry>,
}

impl AePolicy {
    fn find(&self, title: &str) -> Option<RemoteAe> {
        self.registry.get(title)
    }
}

/// What an AE not in the registry may do when `--require-known-ae` is off: send and verify,
/// never query or retrieve (secure by default: the archive's contents are not handed to any AE
/// title that asks). The `write` permission's operations, by the one table
/// (`crate::auth::permissions::DIMSE_OPERATIONS`): C-ECHO and C-STORE.
pub fn unknown_ae_operations() -> Vec<Operation> {
    use crate::auth::permissions::dimse_operations;
    use pacs_dicomweb::{Permission, Permissions};
    dimse_operations(Permissions::of(&[Permission::Write]))
}

/// The operations a registered AE may perform: its `allow` list, and what its roles permit
/// (the same table as for users, `crate::auth::permissions`).
pub fn ae_operations(ae: &RemoteAe) -> Vec<Operation> {
    use crate::auth::permissions::{dimse_operations, operation_named, permissions_of};
    let by_roles = dimse_operations(permissions_of(&ae.roles));
    let mut operations: Vec<Operation> = ae
        .allow
        .iter()
        .filter_map(|name| operation_named(name))
        .collect();
    for op in by_roles {
        if !operations.contains(&op) {
            operations.push(op);
        }
    }
    operations
}

/// How long the answer to a refused user identity takes, at least.
pub const REFUSAL_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// Checks the user identity a requestor offers (PS3.7 D.3.3.7).
#[async_trait::async_trait]
pub trait DimseAuthenticator: Send + Sync {
    /// The user and the DIMSE operations its roles permit, or None when the identity is refused.
    async fn authenticate(&self, offer: &OfferedIdentity) -> Option<(String, Vec<Operation>)>;
    /// Whether any user or identity provider is configured (if not, offers are ignored and the AE
    /// decides, as before).
    async fn configured(&self) -> bool;
}

/// No users: identity offers are ignored, the calling AE decides.
pub struct NoUsers;

#[async_trait::async_trait]
impl DimseAuthenticator for NoUsers {
    async fn authenticate(&self, _offer: &OfferedIdentity) -> Option<(String, Vec<Operation>)> {
        None
    }

    async fn configured(&self) -> bool {
        false
    }
}

/// The node's users, keys and identity provider (`crate::auth`), for DIMSE.
#[async_trait::async_trait]
impl DimseAuthenticator for crate::auth::NodeAuth {
    async fn authenticate(&self, offer: &OfferedIdentity) -> Option<(String, Vec<Operation>)> {
        let (user, permissions) = self.authenticate_user(offer).await?;
        Some((
            user,
            crate::auth::permissions::dimse_operations(permissions),
        ))
    }

    async fn configured(&self) -> bool {
        crate::auth::NodeAuth::configured(self).await
    }
}

pub struct NodeDimseService {
    pub ingest: Arc<Ingest>,
    pub policy: AePolicy,
    /// Checks offered user identities.
    pub users: Arc<dyn DimseAuthenticator>,
    /// Most matches one C-FIND returns.
    pub find_limit: usize,
    pub source: Arc<dyn InstanceSource>,
    /// Where refused associations, queries, stores and retrievals are recorded.
    pub audit: crate::audit::Audit,
    /// The operations each user identity was last granted, for the audit trail's RoleIDCodes.
    pub user_access: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl NodeDimseService {
    /// Checks an offered identity with the configured users.
    async fn authenticate(&self, offer: &IdentityOffer) -> Option<(String, Vec<Operation>)> {
        match offer.identity {
            // Kerberos, SAML and types this node does not know are never accepted
            OfferedIdentity::Unsupported(_) => None,
            _ => self.users.authenticate(&offer.identity).await,
        }
    }
}

impl NodeDimseService {
    /// The calling AE first: a registered AE with `check_host` only from its host, an unknown
    /// one not at all under `--require-known-ae`. Then, when users are configured and an
    /// identity is offered, the user's permissions; otherwise the AE's `allow` list, or
    /// [`unknown_ae_operations`] for an AE not in the registry.
    async fn decide_association(
        &self,
        peer: &AssociationPeer,
        offer: Option<&IdentityOffer>,
    ) -> Result<AssociationGrant, AssociationRefusal> {
        let ae = self.policy.find(&peer.calling_ae_title);
        // an AE marked `tls` is known only over TLS: on the plain port it is a stranger that
        // uses its title (PS3.15 Annex B: the secure transport is what its entry relies on)
        if ae.as_ref().is_some_and(|ae| ae.tls) && !peer.tls {
            warn!(calling = %peer.calling_ae_title, peer = %peer.address, "AE registered for TLS only called the plain DIMSE port");
            return Err(AssociationRefusal::CallingAeTitleNotRecognized);
        }
        match &ae {
            Some(ae) if ae.check_host => {
                let host_ok = ae
                    .host
                    .as_deref()
                    .is_some_and(|h| host_matches(h, peer.address.ip()));
                if !host_ok {
                    warn!(calling = %peer.calling_ae_title, peer = %peer.address, "calling AE connected from a host it is not configured for");
                    return Err(AssociationRefusal::CallingAeTitleNotRecognized);
                }
            }
            Some(_) => {}
            None if self.policy.require_known_ae => {
                return Err(AssociationRefusal::CallingAeTitleNotRecognized)
            }
            None => {}
        }
        let offer = match offer {
            Some(offer) if self.users.configured().await => Some(offer),
            _ => None,
        };
        let ae_operations = match &ae {
            Some(ae) => ae_operations(ae),
            None => unknown_ae_operations(),
        };
        if let Some(offer) = offer {
            let started = tokio::time::Instant::now();
            // the offer's Debug names the user, never a passcode or token
            return match self.authenticate(offer).await {
                Some((user, mut operations)) => {
                    // A user name alone proves nothing (PS3.7 D.3.3.7 type 1): it names who
                    // works at the AE, for the logs, and never grants more than the AE has.
                    if matches!(offer.identity, OfferedIdentity::Username(_)) {
                        operations.retain(|op| ae_operations.contains(op));
                    }
                    self.note_user_access(&user, &operations);
                    Ok(AssociationGrant {
                        user: Some(user),
                        operations,
                        server_response: Vec::new(),
                    })
                }
                None => {
                    warn!(calling = %peer.calling_ae_title, peer = %peer.address, identity = ?offer.identity, "user identity refused");
                    // Every refusal takes as long: guessing is slowed, and how long a check
                    // took (a token refused at once, a password after Argon2) tells nothing.
                    tokio::time::sleep_until(started + REFUSAL_TIME).await;
                    Err(AssociationRefusal::AuthenticationFailed)
                }
            };
        }
        let operations = ae_operations;
        Ok(AssociationGrant::for_ae(operations))
    }

    /// The requesting side of a DIMSE event: the user the association acts for (at its AE),
    /// or the calling AE.
    fn requestor(&self, calling_ae: &str, user: Option<&str>, address: &str) -> Participant {
        let mut participant = match user {
            Some(user) => Participant {
                alternative_user_id: Some(calling_ae.to_string()),
                ..Participant::user(user, Some(address))
            }
            .requestor(),
            None => Participant::ae(calling_ae, Some(address)).requestor(),
        };
        for role in self.access_of(calling_ae, user) {
            participant = participant.role(crate::audit::Code::access_role(&role));
        }
        participant
    }

    /// A registered AE's roles and the operations its `allow` list names (an association's
    /// identity is the AE unless a user is given; a user's own roles are not looked up here).
    fn access_of(&self, calling_ae: &str, user: Option<&str>) -> Vec<String> {
        match (user, self.policy.find(calling_ae)) {
            (None, Some(ae)) => ae.roles.iter().chain(&ae.allow).cloned().collect(),
            (Some(user), _) => self
                .user_access
                .lock()
                .expect("user access lock")
                .get(user)
                .cloned()
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// Keeps what a user identity was granted (the DIMSE operations, named as in `allow`).
    fn note_user_access(&self, user: &str, operations: &[Operation]) {
        let names = operations
            .iter()
            .map(|op| format!("{op:?}").to_ascii_lowercase())
            .collect();
        let mut access = self.user_access.lock().expect("user access lock");
        if access.len() >= 10_000 {
            access.clear();
        }
        access.insert(user.to_string(), names);
    }
}

/// An identifier as an Explicit VR Little Endian data set: the query of a Query message.
fn identifier_bytes(identifier: &dicom_object::InMemDicomObject) -> Vec<u8> {
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    let mut bytes = Vec::new();
    if let Some(ts) = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN)
    {
        if let Err(e) = identifier.write_dataset_with_ts(&mut bytes, ts) {
            warn!(error = %e, "cannot encode a C-FIND identifier for the audit trail");
        }
    }
    bytes
}

fn identifier_text(identifier: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    identifier
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

impl NodeDimseService {
    /// A refused association as a Security Alert (Node Authentication), a refused user
    /// identity as a failed User Authentication too.
    async fn audit_refusal(
        &self,
        peer: &AssociationPeer,
        offer: Option<&IdentityOffer>,
        refusal: AssociationRefusal,
    ) {
        let address = peer.address.ip().to_string();
        let why = match refusal {
            AssociationRefusal::CallingAeTitleNotRecognized => {
                "association refused: calling AE title not recognized"
            }
            AssociationRefusal::CalledAeTitleNotRecognized => {
                "association refused: called AE title not recognized"
            }
            AssociationRefusal::AuthenticationFailed => {
                "association refused: user identity not accepted"
            }
        };
        let user = offer.and_then(|o| match &o.identity {
            OfferedIdentity::Username(u) => Some(u.clone()),
            OfferedIdentity::UsernamePasscode { username, .. } => Some(username.clone()),
            _ => None,
        });
        if refusal == AssociationRefusal::AuthenticationFailed {
            self.audit
                .record(
                    AuditEvent::new(EventKind::UserAuthentication)
                        .type_code(audit_types::login())
                        .failed(Outcome::MinorFailure, why)
                        .participant(
                            Participant::user(user.as_deref().unwrap_or("unknown"), Some(&address))
                                .requestor(),
                        )
                        .participant(Participant::node(&self.audit.node_ae)),
                )
                .await;
        }
        self.audit
            .record(
                AuditEvent::new(EventKind::SecurityAlert)
                    .type_code(audit_types::node_authentication())
                    .failed(Outcome::MinorFailure, why)
                    .participant(
                        Participant::ae(&peer.calling_ae_title, Some(&address)).requestor(),
                    )
                    .participant(Participant::node(&self.audit.node_ae))
                    .object(
                        ObjectRef::node(&peer.calling_ae_title)
                            .detail("CalledAETitle", peer.called_ae_title.clone()),
                    ),
            )
            .await;
    }
}

#[async_trait::async_trait]
impl DimseService for NodeDimseService {
    /// [`NodeDimseService::decide_association`]; a refusal is recorded as a Security Alert
    /// (Node Authentication), a refused user identity as a failed User Authentication too.
    async fn authorize_association(
        &self,
        peer: &AssociationPeer,
        offer: Option<&IdentityOffer>,
    ) -> Result<AssociationGrant, AssociationRefusal> {
        let decided = self.decide_association(peer, offer).await;
        let address = peer.address.ip().to_string();
        match &decided {
            Err(refusal) => self.audit_refusal(peer, offer, *refusal).await,
            Ok(grant) if grant.user.is_some() => {
                self.audit
                    .record(
                        AuditEvent::new(EventKind::UserAuthentication)
                            .type_code(audit_types::login())
                            .participant(self.requestor(
                                &peer.calling_ae_title,
                                grant.user.as_deref(),
                                &address,
                            ))
                            .participant(Participant::node(&self.audit.node_ae)),
                    )
                    .await;
            }
            Ok(_) => {}
        }
        decided
    }

    async fn association_refused(
        &self,
        peer: &AssociationPeer,
        offer: Option<&IdentityOffer>,
        refusal: AssociationRefusal,
    ) {
        self.audit_refusal(peer, offer, refusal).await;
    }

    async fn store(&self, request: StoreRequest) -> StoreOutcome {
        let started = std::time::Instant::now();
        let size = request.dataset.len();
        let data = match request.dataset {
            ReceivedDataset::Memory(bytes) => IncomingData::Dataset(bytes),
            ReceivedDataset::File { ref path, .. } => IncomingData::DatasetFile(path.to_path_buf()),
        };
        let sop_class_uid = request.sop_class_uid.clone();
        let incoming = Incoming {
            sop_class_uid: request.sop_class_uid,
            sop_instance_uid: request.sop_instance_uid.clone(),
            transfer_syntax_uid: request.transfer_syntax_uid,
            origin: crate::ingest::Origin::Dimse {
                calling_ae_title: request.calling_ae_title.clone(),
            },
            data,
            expected_study: None,
        };
        // `request.dataset` (and a spilled temporary file) lives until the store is done.
        let result = self.ingest.ingest(incoming).await;
        let outcome = store_status(&result);
        let (patient_id, patient_name, study_uid) = match &result {
            Ok(i) => (
                i.patient_id.clone(),
                i.patient_name.clone(),
                i.study_instance_uid.clone(),
            ),
            Err(_) => Default::default(),
        };
        self.audit
            .stored(StoredNote {
                event: EventKind::InstancesTransferred,
                association_id: request.association_id,
                calling_ae_title: request.calling_ae_title.clone(),
                user: request.user.clone(),
                address: request.peer.ip().to_string(),
                patient_id,
                patient_name,
                study_uid,
                sop_class_uid,
                sop_instance_uid: request.sop_instance_uid.clone(),
                success: result.is_ok(),
                roles: self.access_of(&request.calling_ae_title, request.user.as_deref()),
            })
            .await;
        match &result {
            Ok(o) => info!(
                sop_instance_uid = %request.sop_instance_uid,
                bytes = size,
                ms = started.elapsed().as_millis() as u64,
                outcome = ?o.outcome,
                "C-STORE"
            ),
            Err(e) => {
                warn!(sop_instance_uid = %request.sop_instance_uid, error = %e, status = format!("{:#06x}", outcome.status), "C-STORE failed")
            }
        }
        outcome
    }

    async fn retrieve(&self, request: RetrieveRequest) -> RetrieveOutcome {
        let index = self.ingest.index().as_ref();
        let resolved =
            crate::retrieve::resolve(index, &request.sop_class_uid, &request.identifier).await;
        // Begin Transferring (110102): what the C-MOVE or C-GET is about to send, to whom
        let address = request.peer.ip().to_string();
        let mut study = StudyRef::new(&identifier_text(
            &request.identifier,
            dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
        ));
        let mut event = AuditEvent::new(EventKind::BeginTransferring)
            .participant(self.requestor(
                &request.calling_ae_title,
                request.user.as_deref(),
                &address,
            ))
            .participant(Participant::node(&self.audit.node_ae).source())
            .object(ObjectRef::query(
                &request.sop_class_uid,
                identifier_bytes(&request.identifier),
            ));
        match &resolved {
            Ok(instances) => {
                for i in instances {
                    study.add(&i.sop_class_uid, 1);
                }
            }
            Err((status, comment)) => {
                event = event.failed(
                    Outcome::MinorFailure,
                    format!("refused with status {status:#06x}: {comment}"),
                );
            }
        }
        let patient = identifier_text(&request.identifier, dicom_dictionary_std::tags::PATIENT_ID);
        if !patient.is_empty() {
            event = event.patient(&patient, "");
        }
        self.audit.record(event.study(study)).await;
        match resolved {
            Ok(instances) => RetrieveOutcome::Instances(instances),
            Err((status, comment)) => RetrieveOutcome::Failed { status, comment },
        }
    }

    /// DICOM Instances Transferred (110104): what the C-MOVE or C-GET stored, and where.
    async fn retrieve_finished(&self, report: pacs_dimse::RetrieveReport) {
        let address = report.peer.ip().to_string();
        let study_uid = identifier_text(
            &report.identifier,
            dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
        );
        let mut study = StudyRef::new(&study_uid);
        for class in &report.stored_sop_classes {
            study.add(class, 1);
        }
        let requestor = self.requestor(&report.calling_ae_title, report.user.as_deref(), &address);
        let mut event = AuditEvent::new(EventKind::InstancesTransferred)
            .participant(Participant::node(&self.audit.node_ae).source());
        event = match &report.destination {
            Some(d) => event
                .participant(requestor)
                .participant(Participant::ae(&d.ae_title, Some(&d.host)).destination()),
            None => event.participant(requestor.destination()),
        };
        let patient = identifier_text(&report.identifier, dicom_dictionary_std::tags::PATIENT_ID);
        let patient = match self.ingest.index().study_patient(&study_uid).await {
            Ok(Some(p)) if !study_uid.is_empty() => p,
            _ => (patient, String::new()),
        };
        event = event
            .patient(&patient.0, &patient.1)
            .study(study)
            .object(ObjectRef::query(
                &report.sop_class_uid,
                identifier_bytes(&report.identifier),
            ));
        if report.failed > 0 || report.cancelled {
            event = event.failed(
                Outcome::MinorFailure,
                format!(
                    "{} sub-operations failed{}",
                    report.failed,
                    if report.cancelled { ", cancelled" } else { "" }
                ),
            );
        }
        self.audit.record(event).await;
    }

    fn move_destination(&self, ae_title: &str) -> Option<pacs_dimse::service::RemoteAe> {
        let ae = self.policy.find(ae_title)?;
        if !ae.move_destination {
            return None;
        }
        Some(pacs_dimse::service::RemoteAe {
            ae_title: ae.title,
            host: ae.host?,
            port: ae.port?,
            tls: ae.tls,
        })
    }

    fn instance_source(&self) -> Arc<dyn InstanceSource> {
        self.source.clone()
    }

    async fn find(&self, request: FindRequest) -> FindOutcome {
        let started = std::time::Instant::now();
        let index = self.ingest.index().as_ref();
        let mut event = AuditEvent::new(EventKind::Query)
            .participant(self.requestor(
                &request.calling_ae_title,
                request.user.as_deref(),
                &request.peer.ip().to_string(),
            ))
            .participant(Participant::node(&self.audit.node_ae))
            .object(
                ObjectRef::query(
                    &request.sop_class_uid,
                    identifier_bytes(&request.identifier),
                )
                .detail(
                    "TransferSyntax",
                    dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
                ),
            );
        let patient = identifier_text(&request.identifier, dicom_dictionary_std::tags::PATIENT_ID);
        if !patient.is_empty() && !patient.contains(['*', '?']) {
            event = event.patient(&patient, "");
        }
        let study = identifier_text(
            &request.identifier,
            dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
        );
        if !study.is_empty() && !study.contains('\\') {
            event = event.study(StudyRef::new(&study));
        }
        let result = crate::find::find(
            index,
            &request.sop_class_uid,
            &request.identifier,
            self.find_limit,
        )
        .await;
        match result {
            Ok(matches) => {
                debug!(
                    calling = %request.calling_ae_title,
                    matches = matches.len(),
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    "C-FIND matched"
                );
                self.audit.record(event).await;
                FindOutcome::Matches(matches)
            }
            Err((status, comment)) => {
                warn!(calling = %request.calling_ae_title, status = format!("{status:#06x}"), %comment, "C-FIND refused");
                event = event.failed(
                    Outcome::MinorFailure,
                    format!("refused with status {status:#06x}: {comment}"),
                );
                self.audit.record(event).await;
                FindOutcome::Failed { status, comment }
            }
        }
    }
}

fn host_matches(configured: &str, ip: std::net::IpAddr) -> bool {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = configured.parse::<std::net::IpAddr>() {
        return addr == ip;
    }
    (configured, 0)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.ip() == ip))
        .unwrap_or(false)
}

/// The C-STORE status for an ingest result (PS3.4 B.2.3).
pub fn store_status(result: &Result<Ingested, IngestError>) -> StoreOutcome {
    match result.as_ref().map(|i| &i.outcome) {
        Ok(IngestOutcome::Stored | IngestOutcome::AlreadyStored | IngestOutcome::Replaced) => {
            StoreOutcome::success()
        }
        // The new object was discarded in favour of the stored one.
        Ok(IngestOutcome::KeptExisting) => StoreOutcome::with_status(
            status::WARNING_ELEMENTS_DISCARDED,
            "duplicate SOP Instance UID: stored object kept",
        ),
        Err(IngestError::CannotUnderstand(why)) => {
            StoreOutcome::with_status(status::CANNOT_UNDERSTAND, why.clone())
        }
        Err(IngestError::DoesNotMatch(why)) => {
            StoreOutcome::with_status(status::DATASET_DOES_NOT_MATCH_SOP_CLASS, why.clone())
        }
        // PS3.4 B.2.3: A7xx Refused: Out of Resources (the node's size limit)
        Err(IngestError::TooLarge(why)) => {
            StoreOutcome::with_status(status::OUT_OF_RESOURCES, why.clone())
        }
        Err(IngestError::Storage(e)) => {
            StoreOutcome::with_status(status::OUT_OF_RESOURCES, format!("storage: {e}"))
        }
        Err(IngestError::Index(e)) => {
            StoreOutcome::with_status(status::OUT_OF_RESOURCES, format!("index: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// alice/secret may echo and find; bob's JWT "bob.jwt" may echo.
    struct TwoUsers;

    #[async_trait::async_trait]
    impl DimseAuthenticator for TwoUsers {
        async fn authenticate(&self, offer: &OfferedIdentity) -> Option<(String, Vec<Operation>)> {
            match offer {
                OfferedIdentity::UsernamePasscode { username, passcode }
                    if username == "alice" && passcode == "secret" =>
                {
                    Some(("alice".into(), vec![Operation::Echo, Operation::Find]))
                }
                OfferedIdentity::Jwt(token) if token == "bob.jwt" => {
                    Some(("bob".into(), vec![Operation::Echo]))
                }
                OfferedIdentity::Unsupported(_) => panic!("unsupported types are not passed on"),
                _ => None,
            }
        }

        async fn configured(&self) -> bool {
            true
        }
    }

    fn ae(title: &str, allow: &[&str], host: Option<&str>, check_host: bool) -> RemoteAe {
        RemoteAe {
            title: title.into(),
            host: host.map(String::from),
            port: None,
            description: String::new(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            move_destination: false,
            check_host,
            roles: Vec::new(),
            tls: false,
        }
    }

    async fn service(
        dir: &std::path::Path,
        require_known_ae: bool,
        users: Arc<dyn DimseAuthenticator>,
    ) -> NodeDimseService {
        let index = crate::index::open(&dir.join("index.sqlite").to_string_lossy())
            .await
            .unwrap();
        let storage = crate::storage::Storage::open(&crate::storage::StorageConfig::Local {
            root: dir.join("objects"),
        })
        .unwrap();
        let registry = AeRegistry::open(
            index.clone(),
            &[
                ae("WS", &["echo", "find", "move"], None, false),
                ae("PINNED", &["echo", "store"], Some("192.0.2.10"), true),
                RemoteAe {
                    tls: true,
                    ..ae("SECURE", &["echo", "find"], None, false)
                },
            ],
        )
        .await
        .unwrap();
        NodeDimseService {
            audit: crate::audit::Audit::disabled("PACS"),
            ingest: Arc::new(Ingest::new(
                index,
                storage.clone(),
                crate::ingest::DuplicatePolicy::Keep,
            )),
            policy: AePolicy {
                require_known_ae,
                registry,
            },
            users,
            find_limit: 100,
            source: crate::retrieve::ArchiveSource::new(storage),
            user_access: Default::default(),
        }
    }

    fn peer(calling: &str) -> AssociationPeer {
        AssociationPeer {
            calling_ae_title: calling.into(),
            called_ae_title: "PACS".into(),
            address: "127.0.0.1:40000".parse().unwrap(),
            tls: false,
        }
    }

    fn offer(identity: OfferedIdentity) -> IdentityOffer {
        IdentityOffer {
            identity,
            positive_response_requested: true,
        }
    }

    fn alice(passcode: &str) -> IdentityOffer {
        offer(OfferedIdentity::UsernamePasscode {
            username: "alice".into(),
            passcode: passcode.into(),
        })
    }

    #[tokio::test]
    async fn the_calling_ae_decides_without_users() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path(), false, Arc::new(NoUsers)).await;
        // an unknown AE may echo and store, never query or retrieve
        let grant = s
            .authorize_association(&peer("STRANGER"), None)
            .await
            .unwrap();
        assert_eq!(
            grant,
            AssociationGrant::for_ae(vec![Operation::Echo, Operation::Store])
        );
        // a registered AE gets its allow list
        let grant = s.authorize_association(&peer("WS"), None).await.unwrap();
        assert_eq!(
            grant.operations,
            [Operation::Echo, Operation::Find, Operation::Move]
        );
        // an AE pinned to another host is refused
        assert_eq!(
            s.authorize_association(&peer("PINNED"), None).await,
            Err(AssociationRefusal::CallingAeTitleNotRecognized)
        );
        // without users, an offered identity is ignored
        let grant = s
            .authorize_association(&peer("STRANGER"), Some(&alice("wrong")))
            .await
            .unwrap();
        assert_eq!(grant.user, None);
        assert_eq!(grant.operations, [Operation::Echo, Operation::Store]);

        let s = service(dir.path(), true, Arc::new(NoUsers)).await;
        assert_eq!(
            s.authorize_association(&peer("STRANGER"), None).await,
            Err(AssociationRefusal::CallingAeTitleNotRecognized)
        );
        assert!(s.authorize_association(&peer("WS"), None).await.is_ok());
    }

    #[tokio::test]
    async fn an_ae_marked_tls_is_accepted_only_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path(), false, Arc::new(NoUsers)).await;
        // on the plain port it is refused, even though unknown AEs may echo there
        assert_eq!(
            s.authorize_association(&peer("SECURE"), None).await,
            Err(AssociationRefusal::CallingAeTitleNotRecognized)
        );
        let over_tls = AssociationPeer {
            tls: true,
            ..peer("SECURE")
        };
        let grant = s.authorize_association(&over_tls, None).await.unwrap();
        assert_eq!(grant.operations, [Operation::Echo, Operation::Find]);
        // other AEs may use either port
        let ws = AssociationPeer {
            tls: true,
            ..peer("WS")
        };
        assert!(s.authorize_association(&ws, None).await.is_ok());
    }

    #[tokio::test]
    async fn an_offered_identity_decides_when_users_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let s = service(dir.path(), false, Arc::new(TwoUsers)).await;
        let grant = s
            .authorize_association(&peer("STRANGER"), Some(&alice("secret")))
            .await
            .unwrap();
        assert_eq!(
            grant,
            AssociationGrant {
                user: Some("alice".into()),
                operations: vec![Operation::Echo, Operation::Find],
                server_response: Vec::new(),
            }
        );
        let bob = offer(OfferedIdentity::Jwt("bob.jwt".into()));
        let grant = s
            .authorize_association(&peer("WS"), Some(&bob))
            .await
            .unwrap();
        assert_eq!(grant.user.as_deref(), Some("bob"));
        assert_eq!(grant.operations, [Operation::Echo]);
        for refused in [
            alice("wrong"),
            offer(OfferedIdentity::Username("alice".into())),
            offer(OfferedIdentity::Unsupported(3)),
            offer(OfferedIdentity::Unsupported(4)),
        ] {
            assert_eq!(
                s.authorize_association(&peer("WS"), Some(&refused)).await,
                Err(AssociationRefusal::AuthenticationFailed),
                "{refused:?}"
            );
        }
        // no offer: the AE rules
        let grant = s
            .authorize_association(&peer("STRANGER"), None)
            .await
            .unwrap();
        assert_eq!(grant.operations, [Operation::Echo, Operation::Store]);
        // the AE's host check still applies to a user
        assert_eq!(
            s.authorize_association(&peer("PINNED"), Some(&alice("secret")))
                .await,
            Err(AssociationRefusal::CallingAeTitleNotRecognized)
        );
        // and so does --require-known-ae
        let s = service(dir.path(), true, Arc::new(TwoUsers)).await;
        assert_eq!(
            s.authorize_association(&peer("STRANGER"), Some(&alice("secret")))
                .await,
            Err(AssociationRefusal::CallingAeTitleNotRecognized)
        );
    }
}
