//! The archive behind the DIMSE front-end: association policy and C-STORE into ingest.
//!
//! Every DIMSE status the node answers for a C-STORE is decided in [`store_status`].

use std::sync::Arc;

use pacs_dimse::command::status;
use pacs_dimse::{
    AssociationPeer, AssociationRefusal, DimseService, FindOutcome, FindRequest, InstanceSource,
    Operation, ReceivedDataset, RetrieveOutcome, RetrieveRequest, StoreOutcome, StoreRequest,
};
use tracing::{debug, info, warn};

use crate::ae_registry::AeRegistry;
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

pub struct NodeDimseService {
    pub ingest: Arc<Ingest>,
    pub policy: AePolicy,
    /// Most matches one C-FIND returns.
    pub find_limit: usize,
    pub source: Arc<dyn InstanceSource>,
}

#[async_trait::async_trait]
impl DimseService for NodeDimseService {
    fn authorize_association(&self, peer: &AssociationPeer) -> Result<(), AssociationRefusal> {
        match self.policy.find(&peer.calling_ae_title) {
            Some(ae) if ae.check_host => {
                let host_ok = ae
                    .host
                    .as_deref()
                    .is_some_and(|h| host_matches(h, peer.address.ip()));
                if host_ok {
                    Ok(())
                } else {
                    warn!(calling = %peer.calling_ae_title, peer = %peer.address, "calling AE connected from a host it is not configured for");
                    Err(AssociationRefusal::CallingAeTitleNotRecognized)
                }
            }
            Some(_) => Ok(()),
            None if self.policy.require_known_ae => {
                Err(AssociationRefusal::CallingAeTitleNotRecognized)
            }
            None => Ok(()),
        }
    }

    fn may_perform(&self, peer: &AssociationPeer, operation: Operation) -> bool {
        let name = match operation {
            Operation::Echo => "echo",
            Operation::Store => "store",
            Operation::Find => "find",
            Operation::Move => "move",
            Operation::Get => "get",
        };
        let allowed = match self.policy.find(&peer.calling_ae_title) {
            Some(ae) => ae.allow.iter().any(|a| a == name),
            // Without --require-known-ae, unknown AEs may do everything (a C-MOVE still
            // needs a registered destination).
            None => !self.policy.require_known_ae,
        };
        if !allowed {
            warn!(calling = %peer.calling_ae_title, peer = %peer.address, operation = name, "operation refused");
        }
        allowed
    }

    async fn store(&self, request: StoreRequest) -> StoreOutcome {
        let started = std::time::Instant::now();
        let size = request.dataset.len();
        let data = match request.dataset {
            ReceivedDataset::Memory(bytes) => IncomingData::Dataset(bytes),
            ReceivedDataset::File { ref path, .. } => IncomingData::DatasetFile(path.to_path_buf()),
        };
        let incoming = Incoming {
            sop_class_uid: request.sop_class_uid,
            sop_instance_uid: request.sop_instance_uid.clone(),
            transfer_syntax_uid: request.transfer_syntax_uid,
            origin: crate::ingest::Origin::Dimse {
                calling_ae_title: request.calling_ae_title,
            },
            data,
            expected_study: None,
        };
        // `request.dataset` (and a spilled temporary file) lives until the store is done.
        let result = self.ingest.ingest(incoming).await;
        let outcome = store_status(&result);
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
        match crate::retrieve::resolve(index, &request.sop_class_uid, &request.identifier).await {
            Ok(instances) => RetrieveOutcome::Instances(instances),
            Err((status, comment)) => RetrieveOutcome::Failed { status, comment },
        }
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
        })
    }

    fn instance_source(&self) -> Arc<dyn InstanceSource> {
        self.source.clone()
    }

    async fn find(&self, request: FindRequest) -> FindOutcome {
        let started = std::time::Instant::now();
        let index = self.ingest.index().as_ref();
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
                FindOutcome::Matches(matches)
            }
            Err((status, comment)) => {
                warn!(calling = %request.calling_ae_title, status = format!("{status:#06x}"), %comment, "C-FIND refused");
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
        Err(IngestError::Storage(e)) => {
            StoreOutcome::with_status(status::OUT_OF_RESOURCES, format!("storage: {e}"))
        }
        Err(IngestError::Index(e)) => {
            StoreOutcome::with_status(status::OUT_OF_RESOURCES, format!("index: {e}"))
        }
    }
}
