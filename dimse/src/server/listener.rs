//! The association acceptor: the TCP listener, the limit on concurrent associations (busy
//! rejection), the ARTIM timer, and association negotiation (access control on the AE titles and
//! the peer's address, the presentation contexts offered, SCP/SCU role selection). An accepted
//! association is handed to [`super::session::Session`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};

use super::session::Session;
use crate::service::{AssociationPeer, AssociationRefusal, DimseService};

/// Transfer syntaxes accepted for storage and stored as received (PS3.5 Annex A). Explicit VR
/// Big Endian is retired (hence `allow(deprecated)`) but still sent by old modalities.
#[allow(deprecated)]
pub const ACCEPTED_TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::JPEG2000MC_LOSSLESS,
    uids::JPEG2000MC,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
    uids::RLE_LOSSLESS,
    uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
];

/// Query/Retrieve Information Models - FIND (PS3.4 C.6): Patient Root, Study Root.
pub const FIND_SOP_CLASSES: &[&str] = &[
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
];

/// Query/Retrieve Information Models - MOVE (PS3.4 C.6): Patient Root, Study Root.
pub const MOVE_SOP_CLASSES: &[&str] = &[
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE,
];

/// Query/Retrieve Information Models - GET (PS3.4 C.6): Patient Root, Study Root.
pub const GET_SOP_CLASSES: &[&str] = &[
    uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
    uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET,
];

/// Settings of the DIMSE front-end.
#[derive(Debug, Clone)]
pub struct DimseConfig {
    pub ae_title: String,
    pub listen: SocketAddr,
    /// Maximum PDU length this node receives.
    pub max_pdu_length: u32,
    /// Associations served at once; more are rejected (transient, local limit exceeded).
    pub max_associations: usize,
    /// An association with no PDU for this long is aborted.
    pub idle_timeout: Duration,
    /// ARTIM: time allowed between TCP connect and A-ASSOCIATE-RQ (PS3.8 9.1.5).
    pub artim_timeout: Duration,
    /// Data sets larger than this are spilled to a temporary file while being received.
    pub spill_threshold: usize,
    /// Where spilled data sets go.
    pub spill_dir: std::path::PathBuf,
    /// Associations a C-MOVE opens to its destination at once.
    pub move_associations: usize,
}

/// A running DIMSE front-end.
pub struct DimseServer {
    config: Arc<DimseConfig>,
    listener: TcpListener,
    service: Arc<dyn DimseService>,
}

static ASSOCIATION_IDS: AtomicU64 = AtomicU64::new(1);

impl DimseServer {
    pub async fn bind(
        config: DimseConfig,
        service: Arc<dyn DimseService>,
    ) -> std::io::Result<DimseServer> {
        let listener = TcpListener::bind(config.listen).await?;
        std::fs::create_dir_all(&config.spill_dir)?;
        Ok(DimseServer {
            config: Arc::new(config),
            listener,
            service,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then stops accepting and lets in-flight
    /// associations finish for at most `grace`; what is still running after that is dropped
    /// (its socket closed), which never leaves a half-stored instance behind because stores
    /// commit atomically.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let limit = Arc::new(Semaphore::new(self.config.max_associations));
        let mut tasks = JoinSet::new();
        info!(addr = %self.config.listen, aet = %self.config.ae_title, "DIMSE listening");
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = socket.set_nodelay(true);
                    let permit = limit.clone().try_acquire_owned();
                    let config = self.config.clone();
                    let service = self.service.clone();
                    let id = ASSOCIATION_IDS.fetch_add(1, Ordering::Relaxed);
                    let span = info_span!("association", id, peer = %peer);
                    tasks.spawn(async move {
                        match permit {
                            Ok(_permit) => handle_connection(socket, peer, id, config, service).await,
                            Err(_) => reject_busy(socket, peer).await,
                        }
                    }.instrument(span));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!(
            in_flight = tasks.len(),
            "DIMSE stopped accepting; waiting for associations"
        );
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!(
                remaining = tasks.len(),
                "grace period over; closing remaining associations"
            );
            tasks.abort_all();
        }
    }
}

/// Association options for one connection: the access policy needs the peer's address, which
/// dicom-ul's access control hook does not see, so each connection gets its own policy value.
type Options = ServerAssociationOptions<'static, PolicyCheck, RoleNegotiation>;

/// SCP/SCU role selection (PS3.7 D.3.3.4): a C-GET requestor proposes the SCP role for the
/// storage SOP classes it wants to receive; it gets it. Other SOP classes keep the default
/// roles.
pub struct RoleNegotiation;

impl dicom_ul::association::server::Negotiation for RoleNegotiation {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<dicom_ul::pdu::RequestorRoles> {
        let uid = sop_class_uid.trim_end_matches(['\0', ' ']);
        crate::sop_classes::STORAGE_SOP_CLASSES
            .iter()
            .any(|(u, _)| *u == uid)
            .then_some(dicom_ul::pdu::RequestorRoles {
                scu: scu_role,
                scp: scp_role,
            })
    }
}

fn build_options(config: &DimseConfig, policy: PolicyCheck) -> Options {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(policy)
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .with_negotiation(RoleNegotiation)
        .with_abstract_syntax(uids::VERIFICATION);
    for uid in FIND_SOP_CLASSES
        .iter()
        .chain(MOVE_SOP_CLASSES)
        .chain(GET_SOP_CLASSES)
    {
        options = options.with_abstract_syntax(*uid);
    }
    for (uid, _) in crate::sop_classes::STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    for ts in ACCEPTED_TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*ts);
    }
    options
}

/// The access policy applied to an A-ASSOCIATE-RQ: the Called AE Title must be ours, then the
/// archive decides on the calling AE and its address. A refusal is answered with
/// A-ASSOCIATE-RJ, rejected-permanent, source service-user (PS3.8 Table 9-21).
pub struct PolicyCheck {
    service: Arc<dyn DimseService>,
    address: SocketAddr,
}

impl AccessControl for PolicyCheck {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let peer = AssociationPeer {
            calling_ae_title: calling_ae_title.trim().to_string(),
            called_ae_title: called_ae_title.trim().to_string(),
            address: self.address,
        };
        let verdict = if peer.called_ae_title != this_ae_title.trim() {
            Err(AssociationRefusal::CalledAeTitleNotRecognized)
        } else {
            self.service.authorize_association(&peer)
        };
        verdict.map_err(|refusal| {
            warn!(
                peer = %self.address,
                calling = %peer.calling_ae_title,
                called = %peer.called_ae_title,
                ?refusal,
                "association rejected"
            );
            refusal_reason(refusal)
        })
    }
}

async fn reject_busy(mut socket: TcpStream, peer: SocketAddr) {
    warn!(%peer, "association refused: too many concurrent associations");
    let pdu = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    // Read the request first so the peer sees a reply to it rather than a reset.
    let mut scratch = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        socket.read(&mut scratch).await
    })
    .await;
    if dicom_ul::write_pdu(&mut buf, &pdu).is_ok() {
        let _ = socket.write_all(&buf).await;
    }
    let _ = socket.shutdown().await;
}

async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    id: u64,
    config: Arc<DimseConfig>,
    service: Arc<dyn DimseService>,
) {
    let options = build_options(
        &config,
        PolicyCheck {
            service: service.clone(),
            address: peer,
        },
    );
    // ARTIM (PS3.8 9.1.5): the A-ASSOCIATE-RQ must arrive within this time of the connection.
    // (Not dicom-ul's read timeout, which would also apply to every later PDU.)
    let mut association =
        match tokio::time::timeout(config.artim_timeout, options.establish_async(socket)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                warn!(%peer, error = %e, "association not established");
                return;
            }
            Err(_) => {
                warn!(%peer, "no association request within the ARTIM timeout");
                return;
            }
        };
    let who = AssociationPeer {
        calling_ae_title: association_calling_ae(&association),
        called_ae_title: association.called_ae_title().trim().to_string(),
        address: peer,
    };
    let accepted = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    info!(calling = %who.calling_ae_title, contexts = accepted, "association accepted");
    Session::new(id, config, service, who)
        .run(&mut association)
        .await;
}

fn association_calling_ae<S>(a: &dicom_ul::association::AsyncServerAssociation<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use dicom_ul::association::Association;
    a.peer_ae_title().trim().to_string()
}

/// Maps a policy refusal to the A-ASSOCIATE-RJ reason (PS3.8 Table 9-21).
pub fn refusal_reason(refusal: AssociationRefusal) -> AssociationRJServiceUserReason {
    match refusal {
        AssociationRefusal::CallingAeTitleNotRecognized => {
            AssociationRJServiceUserReason::CallingAETitleNotRecognized
        }
        AssociationRefusal::CalledAeTitleNotRecognized => {
            AssociationRJServiceUserReason::CalledAETitleNotRecognized
        }
    }
}
