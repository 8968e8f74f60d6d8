//! The association acceptor: the TCP listener, the limit on concurrent associations (busy
//! rejection), the ARTIM timer, what is negotiated (the presentation contexts offered, SCP/SCU
//! role selection) and who may associate (the Called AE Title, then the archive's decision on
//! the calling AE, its address and its user identity). The protocol itself is in
//! [`super::association`]; an accepted association is handed to [`super::session::Session`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PresentationContextResultReason,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};

use super::association::{check_request, AcceptorSettings, Association, Requested, Transport};
use super::session::Session;
use crate::service::{AssociationGrant, AssociationPeer, AssociationRefusal, DimseService};

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
    settings: Arc<AcceptorSettings>,
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
            settings: Arc::new(acceptor_settings(&config)),
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
                    let settings = self.settings.clone();
                    let service = self.service.clone();
                    let id = ASSOCIATION_IDS.fetch_add(1, Ordering::Relaxed);
                    let span = info_span!("association", id, peer = %peer);
                    tasks.spawn(async move {
                        match permit {
                            Ok(_permit) => handle_connection(socket, peer, id, config, settings, service).await,
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

/// What the acceptor negotiates (PS3.7 D.3.3): Verification, the Query/Retrieve models, every
/// storage SOP class, in the transfer syntaxes of [`ACCEPTED_TRANSFER_SYNTAXES`]; SCP/SCU role
/// selection (PS3.7 D.3.3.4) for the storage SOP classes, so that a C-GET requestor that
/// proposes the SCP role for the instances it wants to receive gets it.
pub fn acceptor_settings(config: &DimseConfig) -> AcceptorSettings {
    let abstract_syntaxes = std::iter::once(uids::VERIFICATION)
        .chain(FIND_SOP_CLASSES.iter().copied())
        .chain(MOVE_SOP_CLASSES.iter().copied())
        .chain(GET_SOP_CLASSES.iter().copied())
        .chain(
            crate::sop_classes::STORAGE_SOP_CLASSES
                .iter()
                .map(|(uid, _)| *uid),
        )
        .map(String::from)
        .collect();
    AcceptorSettings {
        max_pdu_length: config.max_pdu_length,
        abstract_syntaxes,
        transfer_syntaxes: ACCEPTED_TRANSFER_SYNTAXES
            .iter()
            .map(|ts| ts.to_string())
            .collect(),
        accepts_roles: is_storage_sop_class,
        implementation_class_uid: dicom_ul::IMPLEMENTATION_CLASS_UID.to_string(),
        implementation_version_name: dicom_ul::IMPLEMENTATION_VERSION_NAME.to_string(),
    }
}

fn is_storage_sop_class(uid: &str) -> bool {
    crate::sop_classes::STORAGE_SOP_CLASSES
        .iter()
        .any(|(u, _)| *u == uid)
}

async fn reject_busy<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, peer: SocketAddr) {
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

/// One connection: the A-ASSOCIATE-RQ within the ARTIM time, then the session.
async fn handle_connection<S: Transport>(
    stream: S,
    peer: SocketAddr,
    id: u64,
    config: Arc<DimseConfig>,
    settings: Arc<AcceptorSettings>,
    service: Arc<dyn DimseService>,
) {
    // ARTIM (PS3.8 9.1.5): the A-ASSOCIATE-RQ must arrive, and be answered, within this time
    // of the connection.
    let established = tokio::time::timeout(
        config.artim_timeout,
        establish(stream, peer, &config, &settings, service.as_ref()),
    )
    .await;
    let (mut association, who, grant) = match established {
        Ok(Some(x)) => x,
        Ok(None) => return,
        Err(_) => {
            warn!(%peer, "no association request within the ARTIM timeout");
            return;
        }
    };
    let accepted = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    info!(
        calling = %who.calling_ae_title,
        user = grant.user.as_deref(),
        contexts = accepted,
        "association accepted"
    );
    Session::new(id, config, service, who, grant)
        .run(&mut association)
        .await;
}

/// Reads the A-ASSOCIATE-RQ and answers it: the protocol checks, the Called AE Title, then the
/// archive's decision on the calling AE, its address and the user identity it offered
/// (PS3.7 D.3.3.7). None when the association was rejected or the connection ended.
async fn establish<S: Transport>(
    stream: S,
    peer: SocketAddr,
    config: &DimseConfig,
    settings: &AcceptorSettings,
    service: &dyn DimseService,
) -> Option<(Association<S>, AssociationPeer, AssociationGrant)> {
    let request = match Requested::read(stream, settings).await {
        Ok(r) => r,
        Err(e) => {
            warn!(%peer, error = %e, "association not established");
            return None;
        }
    };
    let who = AssociationPeer {
        calling_ae_title: request.request().calling_ae_title.trim().to_string(),
        called_ae_title: request.request().called_ae_title.trim().to_string(),
        address: peer,
    };
    if let Err(rejection) = check_request(request.request()) {
        warn!(%peer, calling = %who.calling_ae_title, source = %rejection.source, "association rejected");
        let _ = request.reject(rejection).await;
        return None;
    }
    let offer = request.identity().cloned();
    let verdict = if who.called_ae_title != config.ae_title.trim() {
        Err(AssociationRefusal::CalledAeTitleNotRecognized)
    } else {
        service.authorize_association(&who, offer.as_ref()).await
    };
    let grant = match verdict {
        Ok(grant) => grant,
        Err(refusal) => {
            // the offer's Debug shows the identity type and username, never a passcode or token
            warn!(
                %peer,
                calling = %who.calling_ae_title,
                called = %who.called_ae_title,
                identity = ?offer.as_ref().map(|o| &o.identity),
                ?refusal,
                "association rejected"
            );
            let _ = request.reject(rejection(refusal)).await;
            return None;
        }
    };
    // PS3.7 D.3.3.7.2: the User Identity sub-item is answered only when asked for, and only
    // for an identity that was accepted
    let response = offer
        .as_ref()
        .filter(|o| o.positive_response_requested && grant.user.is_some())
        .map(|_| grant.server_response.as_slice());
    match request.accept(settings, response).await {
        Ok(association) => Some((association, who, grant)),
        Err(e) => {
            warn!(%peer, error = %e, "association not established");
            None
        }
    }
}

/// The A-ASSOCIATE-RJ for a refusal (PS3.8 Table 9-21): always rejected-permanent.
pub fn rejection(refusal: AssociationRefusal) -> AssociationRJ {
    let source = match refusal {
        AssociationRefusal::CallingAeTitleNotRecognized => AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
        ),
        AssociationRefusal::CalledAeTitleNotRecognized => AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
        ),
        // PS3.7 D.3.3.7: source "DICOM UL service-provider (ACSE related function)", reason 1
        AssociationRefusal::AuthenticationFailed => AssociationRJSource::ServiceProviderASCE(
            AssociationRJServiceProviderASCEReason::NoReasonGiven,
        ),
    };
    AssociationRJ {
        result: AssociationRJResult::Permanent,
        source,
    }
}
