//! The association acceptor: the TCP listener, the limit on concurrent associations (busy
//! rejection), the ARTIM timer, what is negotiated (the presentation contexts offered, SCP/SCU
//! role selection) and who may associate (the Called AE Title, then the archive's decision on
//! the calling AE, its address and its user identity). The protocol itself is in
//! [`super::association`]; an accepted association is handed to [`super::session::Session`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PresentationContextResultReason,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, info_span, warn, Instrument};

use super::association::{check_request, AcceptorSettings, Association, Requested, Transport};
use super::session::Session;
use crate::metrics::{calling_ae_of_raw_request, DimseMetrics, Rejection};
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
    /// Free space a spill file must leave on the file system of `spill_dir`: a data set that
    /// would eat into it is discarded as it arrives and answered A700, like one over
    /// `max_instance_bytes`.
    pub spill_min_free_bytes: u64,
    /// Associations a C-MOVE opens to its destination at once.
    pub move_associations: usize,
    /// Whether the plain TCP listener on `listen` runs (it can be switched off when TLS is on).
    pub plain: bool,
    /// The TLS listener (PS3.15 Annex B), when configured.
    pub tls: Option<TlsListener>,
    /// What the node trusts and presents when it connects to an AE over TLS (C-MOVE
    /// destinations); None: such destinations fail.
    pub tls_client: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Associations served at once for one peer address; more are rejected like those past
    /// `max_associations`.
    pub max_associations_per_host: usize,
    /// Largest data set a C-STORE may carry, in bytes: a larger one is discarded as it
    /// arrives and answered A700 (Out of Resources), the association goes on.
    pub max_instance_bytes: u64,
}

/// Read buffer under a TLS stream: what one socket read takes at most.
const TLS_READ_BUFFER: usize = 256 * 1024;

/// The DIMSE TLS listener: where, and the certificate it presents.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub config: Arc<tokio_rustls::rustls::ServerConfig>,
}

/// A running DIMSE front-end.
pub struct DimseServer {
    config: Arc<DimseConfig>,
    settings: Arc<AcceptorSettings>,
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    service: Arc<dyn DimseService>,
    metrics: Arc<DimseMetrics>,
}

/// A connection as accepted, before any byte was read.
enum Accepted {
    Plain(TcpStream),
    Tls(TcpStream, TlsAcceptor),
}

static ASSOCIATION_IDS: AtomicU64 = AtomicU64::new(1);

impl DimseServer {
    /// Binds the listeners the configuration asks for: the plain one on `listen` (unless
    /// `plain` is off) and the TLS one (when `tls` is set).
    pub async fn bind(
        config: DimseConfig,
        service: Arc<dyn DimseService>,
    ) -> std::io::Result<DimseServer> {
        let plain = match config.plain {
            true => Some(TcpListener::bind(config.listen).await?),
            false => None,
        };
        let tls = match &config.tls {
            Some(tls) => Some((
                TcpListener::bind(tls.listen).await?,
                TlsAcceptor::from(tls.config.clone()),
            )),
            None => None,
        };
        std::fs::create_dir_all(&config.spill_dir)?;
        Ok(DimseServer {
            settings: Arc::new(acceptor_settings(&config)),
            config: Arc::new(config),
            plain,
            tls,
            service,
            metrics: DimseMetrics::new(),
        })
    }

    /// The plain listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.plain {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::Error::other("the plain DIMSE listener is off")),
        }
    }

    /// The TLS listener's address.
    pub fn tls_local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.tls {
            Some((listener, _)) => listener.local_addr(),
            None => Err(std::io::Error::other("no DIMSE TLS listener")),
        }
    }

    /// Serves until `shutdown` turns true, then stops accepting and lets in-flight
    /// associations finish for at most `grace`; what is still running after that is dropped
    /// (its socket closed), which never leaves a half-stored instance behind because stores
    /// commit atomically.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let limit = Arc::new(Semaphore::new(self.config.max_associations));
        let hosts = Arc::new(HostLimit::new(self.config.max_associations_per_host));
        let mut tasks = JoinSet::new();
        if let Some(plain) = &self.plain {
            info!(addr = %self.config.listen, local = ?plain.local_addr().ok(), aet = %self.config.ae_title, "DIMSE listening");
        }
        if let Some((tls, _)) = &self.tls {
            info!(local = ?tls.local_addr().ok(), aet = %self.config.ae_title, "DIMSE TLS listening");
        }
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                accepted = accept(self.plain.as_ref()) => accepted.map(|(s, p)| (Accepted::Plain(s), p)),
                accepted = accept_tls(self.tls.as_ref()) => accepted,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let (connection, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // both limits are taken before anything is read: a peer holding many connections
            // open gets a rejection for each one past its share
            let admitted = match limit.clone().try_acquire_owned() {
                Ok(total) => hosts.try_acquire(peer.ip()).map(|host| (total, host)),
                Err(_) => None,
            };
            let config = self.config.clone();
            let settings = self.settings.clone();
            let service = self.service.clone();
            let metrics = self.metrics.clone();
            let id = ASSOCIATION_IDS.fetch_add(1, Ordering::Relaxed);
            let tls = matches!(connection, Accepted::Tls(..));
            // association_id: in every log line of the association (and its audit records)
            let span = info_span!("association", association_id = id, peer = %peer, tls);
            tasks.spawn(
                async move {
                    let context = Context {
                        id,
                        config,
                        settings,
                        service,
                        metrics,
                    };
                    handle_connection(connection, peer, context, admitted).await
                }
                .instrument(span),
            );
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

/// The next connection on `listener`; never, when there is no listener.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => {
            let (socket, peer) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            Ok((socket, peer))
        }
        None => std::future::pending().await,
    }
}

/// The next connection on the TLS listener, with the acceptor that will do its handshake.
async fn accept_tls(
    listener: Option<&(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(Accepted, SocketAddr)> {
    let (socket, peer) = accept(listener.map(|(l, _)| l)).await?;
    match listener {
        Some((_, acceptor)) => Ok((Accepted::Tls(socket, acceptor.clone()), peer)),
        None => std::future::pending().await,
    }
}

/// Associations per peer address: a count per address, taken when a connection is accepted
/// and given back when it ends.
struct HostLimit {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One association's share of its address's limit; given back when dropped.
struct HostPermit {
    limit: Arc<HostLimit>,
    ip: IpAddr,
}

impl HostLimit {
    fn new(max: usize) -> Self {
        HostLimit {
            max: max.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<HostPermit> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(HostPermit {
            limit: self.clone(),
            ip,
        })
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let mut counts = self.limit.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
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

async fn reject_busy<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    peer: SocketAddr,
    metrics: &DimseMetrics,
) {
    warn!(%peer, "association refused: too many concurrent associations (in all, or from this address)");
    let pdu = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    // Read the request first so the peer sees a reply to it rather than a reset.
    let mut scratch = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        socket.read(&mut scratch).await
    })
    .await;
    let n = match read {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    metrics.rejected(
        Rejection::Busy,
        calling_ae_of_raw_request(&scratch[..n]).unwrap_or(""),
    );
    if dicom_ul::write_pdu(&mut buf, &pdu).is_ok() {
        let _ = socket.write_all(&buf).await;
    }
    let _ = socket.shutdown().await;
}

/// One connection: the TLS handshake (on the TLS listener) and the A-ASSOCIATE-RQ within the
/// ARTIM time, then the session; or, past a limit, the busy rejection.
async fn handle_connection(
    connection: Accepted,
    peer: SocketAddr,
    context: Context,
    admitted: Option<(OwnedSemaphorePermit, HostPermit)>,
) {
    // ARTIM (PS3.8 9.1.5): the A-ASSOCIATE-RQ must arrive, and be answered, within this time
    // of the connection; the TLS handshake counts against it.
    let deadline = tokio::time::Instant::now() + context.config.artim_timeout;
    match connection {
        Accepted::Plain(tcp) => serve_stream(tcp, peer, false, deadline, context, admitted).await,
        Accepted::Tls(tcp, acceptor) => {
            // rustls reads the socket 4 KiB at a time (its record buffer starts small again
            // after every record): a read buffer under it turns a C-STORE's megabytes into a
            // few large reads instead of thousands of small ones
            let buffered = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, tcp);
            match tokio::time::timeout_at(deadline, acceptor.accept(buffered)).await {
                Ok(Ok(tls)) => serve_stream(tls, peer, true, deadline, context, admitted).await,
                Ok(Err(e)) => warn!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => warn!(%peer, "no TLS handshake within the ARTIM timeout"),
            }
        }
    }
}

/// What every connection's task shares with the server.
struct Context {
    id: u64,
    config: Arc<DimseConfig>,
    settings: Arc<AcceptorSettings>,
    service: Arc<dyn DimseService>,
    metrics: Arc<DimseMetrics>,
}

/// An accepted stream (TCP, or TLS over TCP): the busy rejection past a limit, else the
/// association request by `deadline`, then the session.
async fn serve_stream<S: Transport>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    deadline: tokio::time::Instant,
    context: Context,
    admitted: Option<(OwnedSemaphorePermit, HostPermit)>,
) {
    let Context {
        id,
        config,
        settings,
        service,
        metrics,
    } = context;
    let Some(_permits) = admitted else {
        return reject_busy(stream, peer, &metrics).await;
    };
    let established = tokio::time::timeout_at(
        deadline,
        establish(
            stream,
            peer,
            tls,
            &config,
            &settings,
            service.as_ref(),
            &metrics,
        ),
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
        tls,
        "association accepted"
    );
    let counted = metrics.accepted(&who.calling_ae_title);
    Session::new(id, config, service, who, grant, metrics, counted)
        .run(&mut association)
        .await;
}

/// Reads the A-ASSOCIATE-RQ and answers it: the protocol checks, the Called AE Title, then the
/// archive's decision on the calling AE, its address and the user identity it offered
/// (PS3.7 D.3.3.7). None when the association was rejected or the connection ended.
async fn establish<S: Transport>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    config: &DimseConfig,
    settings: &AcceptorSettings,
    service: &dyn DimseService,
    metrics: &DimseMetrics,
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
        tls,
    };
    if let Err(rejection) = check_request(request.request()) {
        warn!(%peer, calling = %who.calling_ae_title, source = %rejection.source, "association rejected");
        metrics.rejected(Rejection::Protocol, &who.calling_ae_title);
        let _ = request.reject(rejection).await;
        return None;
    }
    let offer = request.identity().cloned();
    let verdict = if who.called_ae_title != config.ae_title.trim() {
        let refusal = AssociationRefusal::CalledAeTitleNotRecognized;
        service
            .association_refused(&who, offer.as_ref(), refusal)
            .await;
        Err(refusal)
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
            let reason = match refusal {
                AssociationRefusal::CallingAeTitleNotRecognized => Rejection::CallingAeTitle,
                AssociationRefusal::CalledAeTitleNotRecognized => Rejection::CalledAeTitle,
                AssociationRefusal::AuthenticationFailed => Rejection::Authentication,
            };
            metrics.rejected(reason, &who.calling_ae_title);
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
