//! The association acceptor: TCP listener, association negotiation and the per-association
//! message loop that dispatches each DIMSE message to its service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PDataValue, PDataValueType, PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::command::{field, status, Command, Request, Response, SubOperationCounts};
use crate::scu::{InstanceResult, SubOperation};
use crate::service::{
    AssociationPeer, AssociationRefusal, DimseService, FindOutcome, FindRequest, Operation,
    OutgoingInstance, ReceivedDataset, RetrieveOutcome, RetrieveRequest, StoreRequest,
};

/// Transfer syntaxes accepted for storage and stored as received (PS3.5 Annex A).
pub const ACCEPTED_TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",     // Explicit VR Little Endian
    "1.2.840.10008.1.2",       // Implicit VR Little Endian
    "1.2.840.10008.1.2.2",     // Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  // JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  // JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.92",  // JPEG 2000 Part 2 Multi-component Lossless Only
    "1.2.840.10008.1.2.4.93",  // JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201", // HTJ2K Lossless
    "1.2.840.10008.1.2.4.202", // HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203", // HTJ2K
    "1.2.840.10008.1.2.5",     // RLE Lossless
    "1.2.840.10008.1.2.1.98",  // Encapsulated Uncompressed Explicit VR Little Endian
];

const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Query/Retrieve Information Models - FIND (PS3.4 C.6).
pub const FIND_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.2.1.1", // Patient Root
    "1.2.840.10008.5.1.4.1.2.2.1", // Study Root
];

/// Query/Retrieve Information Models - MOVE (PS3.4 C.6).
pub const MOVE_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.2.1.2", // Patient Root
    "1.2.840.10008.5.1.4.1.2.2.2", // Study Root
];
/// Query/Retrieve Information Models - GET (PS3.4 C.6).
pub const GET_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.2.1.3", // Patient Root
    "1.2.840.10008.5.1.4.1.2.2.3", // Study Root
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
        .with_abstract_syntax(VERIFICATION);
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
    let mut session = Session {
        id,
        config,
        service,
        peer: who,
    };
    session.run(&mut association).await;
}

fn association_calling_ae<S>(a: &dicom_ul::association::AsyncServerAssociation<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use dicom_ul::association::Association;
    a.peer_ae_title().trim().to_string()
}

type Assoc = dicom_ul::association::AsyncServerAssociation<TcpStream>;

/// Incoming data set being assembled from P-DATA fragments.
enum Incoming {
    Memory {
        fragments: Vec<bytes::Bytes>,
        len: usize,
    },
    File {
        file: tokio::fs::File,
        path: tempfile::TempPath,
        len: u64,
    },
}

struct Pending {
    command: Command,
    context_id: u8,
    data: Incoming,
}

struct Session {
    id: u64,
    config: Arc<DimseConfig>,
    service: Arc<dyn DimseService>,
    peer: AssociationPeer,
}

enum Flow {
    Continue,
    Abort(&'static str),
    /// The peer aborted or closed the connection.
    Closed,
}

impl Session {
    async fn run(&mut self, association: &mut Assoc) {
        let mut command_bytes: Vec<u8> = Vec::new();
        let mut pending: Option<Pending> = None;
        loop {
            let pdu =
                match tokio::time::timeout(self.config.idle_timeout, association.receive()).await {
                    Err(_) => {
                        warn!("idle timeout; aborting association");
                        abort(
                            association,
                            AbortRQServiceProviderReason::ReasonNotSpecified,
                        )
                        .await;
                        return;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "association ended by a receive error");
                        abort(association, AbortRQServiceProviderReason::UnrecognizedPdu).await;
                        return;
                    }
                    Ok(Ok(pdu)) => pdu,
                };
            match pdu {
                Pdu::PData { data } => {
                    for value in data {
                        match self
                            .on_pdata(association, value, &mut command_bytes, &mut pending)
                            .await
                        {
                            Flow::Continue => {}
                            Flow::Closed => {
                                info!("association ended by the peer during an operation");
                                let _ = association.inner_stream().shutdown().await;
                                return;
                            }
                            Flow::Abort(why) => {
                                warn!(reason = why, "aborting association");
                                abort(
                                    association,
                                    AbortRQServiceProviderReason::UnexpectedPduParameter,
                                )
                                .await;
                                return;
                            }
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if pending.is_some() {
                        warn!("release requested in the middle of a data set; data discarded");
                    }
                    let _ = association.send(&Pdu::ReleaseRP).await;
                    let _ = association.inner_stream().shutdown().await;
                    info!("association released");
                    return;
                }
                Pdu::AbortRQ { source } => {
                    info!(?source, "association aborted by peer");
                    return;
                }
                other => {
                    warn!(pdu = ?pdu_name(&other), "unexpected PDU");
                    abort(association, AbortRQServiceProviderReason::UnexpectedPdu).await;
                    return;
                }
            }
        }
    }

    async fn on_pdata(
        &mut self,
        association: &mut Assoc,
        value: PDataValue,
        command_bytes: &mut Vec<u8>,
        pending: &mut Option<Pending>,
    ) -> Flow {
        match value.value_type {
            PDataValueType::Command => {
                if pending.is_some() {
                    return Flow::Abort("command fragment while a data set was expected");
                }
                command_bytes.extend_from_slice(&value.data);
                if command_bytes.len() > 1 << 20 {
                    return Flow::Abort("command set larger than 1 MiB");
                }
                if !value.is_last {
                    return Flow::Continue;
                }
                let bytes = std::mem::take(command_bytes);
                let command = match Command::decode(&bytes) {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "undecodable command set");
                        return Flow::Abort("undecodable command set");
                    }
                };
                if command.has_dataset {
                    *pending = Some(Pending {
                        command,
                        context_id: value.presentation_context_id,
                        data: Incoming::Memory {
                            fragments: Vec::new(),
                            len: 0,
                        },
                    });
                    Flow::Continue
                } else {
                    self.dispatch(association, value.presentation_context_id, command, None)
                        .await
                }
            }
            PDataValueType::Data => {
                let Some(p) = pending.as_mut() else {
                    return Flow::Abort("data fragment without a command");
                };
                if p.context_id != value.presentation_context_id {
                    return Flow::Abort("data fragment on another presentation context");
                }
                let is_last = value.is_last;
                if let Err(e) = self.append(&mut p.data, value.data).await {
                    warn!(error = %e, "cannot buffer incoming data set");
                    return Flow::Abort("cannot buffer incoming data set");
                }
                if !is_last {
                    return Flow::Continue;
                }
                let p = pending.take().expect("pending data set");
                let dataset = match p.data {
                    Incoming::Memory { fragments, .. } => ReceivedDataset::Memory(fragments),
                    Incoming::File {
                        mut file,
                        path,
                        len,
                    } => {
                        use tokio::io::AsyncWriteExt;
                        if let Err(e) = file.flush().await {
                            warn!(error = %e, "cannot flush spilled data set");
                            return Flow::Abort("cannot buffer incoming data set");
                        }
                        ReceivedDataset::File { path, len }
                    }
                };
                self.dispatch(association, p.context_id, p.command, Some(dataset))
                    .await
            }
        }
    }

    /// Keeps a fragment: in memory (as it came, no copy) up to the spill threshold, then in a
    /// temporary file.
    async fn append(&self, data: &mut Incoming, bytes: Vec<u8>) -> std::io::Result<()> {
        match data {
            Incoming::Memory { fragments, len } => {
                if *len + bytes.len() <= self.config.spill_threshold {
                    *len += bytes.len();
                    fragments.push(bytes::Bytes::from(bytes));
                    return Ok(());
                }
                let temp = tempfile::NamedTempFile::new_in(&self.config.spill_dir)?;
                let (std_file, path) = temp.into_parts();
                let mut file = tokio::fs::File::from_std(std_file);
                for fragment in fragments.iter() {
                    file.write_all(fragment).await?;
                }
                file.write_all(&bytes).await?;
                let len = (*len + bytes.len()) as u64;
                debug!(len, "spilling large data set to disk");
                *data = Incoming::File { file, path, len };
                Ok(())
            }
            Incoming::File { file, len, .. } => {
                file.write_all(&bytes).await?;
                *len += bytes.len() as u64;
                Ok(())
            }
        }
    }

    async fn dispatch(
        &mut self,
        association: &mut Assoc,
        context_id: u8,
        command: Command,
        dataset: Option<ReceivedDataset>,
    ) -> Flow {
        let context = association
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.id == context_id && pc.reason == PresentationContextResultReason::Acceptance
            })
            .map(|pc| (pc.abstract_syntax.clone(), pc.transfer_syntax.clone()));
        let Some((abstract_syntax, transfer_syntax)) = context else {
            return Flow::Abort("message on a presentation context that was not accepted");
        };
        let response = match command.command_field {
            field::C_ECHO_RQ => {
                let status = if self.service.may_perform(&self.peer, Operation::Echo) {
                    status::SUCCESS
                } else {
                    warn!(calling = %self.peer.calling_ae_title, "C-ECHO not permitted");
                    status::NOT_AUTHORIZED
                };
                let mut rsp = Response::to(&command, field::C_ECHO_RSP, status);
                if rsp.affected_sop_class_uid.is_none() {
                    rsp.affected_sop_class_uid = Some(abstract_syntax);
                }
                rsp
            }
            field::C_STORE_RQ => {
                self.store(&command, abstract_syntax, transfer_syntax, dataset)
                    .await
            }
            field::C_FIND_RQ => {
                return self
                    .find(
                        association,
                        context_id,
                        &command,
                        abstract_syntax,
                        transfer_syntax,
                        dataset,
                    )
                    .await
            }
            field::C_MOVE_RQ | field::C_GET_RQ => {
                return self
                    .retrieve(
                        association,
                        context_id,
                        &command,
                        abstract_syntax,
                        transfer_syntax,
                        dataset,
                    )
                    .await
            }
            // a C-CANCEL for an operation that has already finished: nothing to do
            field::C_CANCEL_RQ => return Flow::Continue,
            other => {
                warn!(
                    command_field = format!("{other:#06x}"),
                    "unsupported DIMSE command"
                );
                let mut rsp =
                    Response::to(&command, other | 0x8000, status::UNRECOGNIZED_OPERATION);
                rsp.error_comment = Some("operation not supported by this node".into());
                rsp
            }
        };
        self.send_response(association, context_id, &response, None)
            .await
    }

    async fn store(
        &mut self,
        command: &Command,
        abstract_syntax: String,
        transfer_syntax: String,
        dataset: Option<ReceivedDataset>,
    ) -> Response {
        let mut rsp = Response::to(command, field::C_STORE_RSP, status::SUCCESS);
        let fail = |mut rsp: Response, code: u16, why: &str| {
            rsp.status = code;
            rsp.error_comment = Some(why.to_string());
            rsp
        };
        if !self.service.may_perform(&self.peer, Operation::Store) {
            warn!(calling = %self.peer.calling_ae_title, "C-STORE not permitted");
            return fail(
                rsp,
                status::NOT_AUTHORIZED,
                "C-STORE not permitted for this AE",
            );
        }
        let Some(dataset) = dataset else {
            return fail(rsp, status::CANNOT_UNDERSTAND, "C-STORE without a data set");
        };
        let Some(sop_instance_uid) = command.affected_sop_instance_uid.clone() else {
            return fail(
                rsp,
                status::CANNOT_UNDERSTAND,
                "missing Affected SOP Instance UID",
            );
        };
        let sop_class_uid = command
            .affected_sop_class_uid
            .clone()
            .unwrap_or_else(|| abstract_syntax.clone());
        if sop_class_uid != abstract_syntax {
            // PS3.7 9.1.1.1: the Affected SOP Class must be the context's abstract syntax.
            return fail(
                rsp,
                status::DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "Affected SOP Class differs from the presentation context",
            );
        }
        let request = StoreRequest {
            association_id: self.id,
            calling_ae_title: self.peer.calling_ae_title.clone(),
            peer: self.peer.address,
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid: transfer_syntax,
            dataset,
        };
        let outcome = self.service.store(request).await;
        rsp.status = outcome.status;
        rsp.error_comment = outcome.error_comment;
        rsp
    }
}

impl Session {
    /// C-FIND SCP (PS3.4 C.4.1): one Pending response per match, each with its identifier,
    /// then the final status.
    async fn find(
        &mut self,
        association: &mut Assoc,
        context_id: u8,
        command: &Command,
        abstract_syntax: String,
        transfer_syntax: String,
        dataset: Option<ReceivedDataset>,
    ) -> Flow {
        let final_response = |status: u16, comment: Option<String>| {
            let mut rsp = Response::to(command, field::C_FIND_RSP, status);
            rsp.affected_sop_class_uid = Some(abstract_syntax.clone());
            rsp.affected_sop_instance_uid = None;
            rsp.error_comment = comment;
            rsp
        };
        use dicom_encoding::TransferSyntaxIndex;
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&transfer_syntax);
        if ts.is_none() {
            let rsp = final_response(
                status::UNABLE_TO_PROCESS,
                Some("unknown transfer syntax".into()),
            );
            return self
                .send_response(association, context_id, &rsp, None)
                .await;
        }
        let outcome = if !self.service.may_perform(&self.peer, Operation::Find) {
            warn!(calling = %self.peer.calling_ae_title, "C-FIND not permitted");
            FindOutcome::Failed {
                status: status::NOT_AUTHORIZED,
                comment: "C-FIND not permitted for this AE".into(),
            }
        } else {
            match read_identifier(dataset, &transfer_syntax) {
                Ok(identifier) => {
                    self.service
                        .find(FindRequest {
                            association_id: self.id,
                            calling_ae_title: self.peer.calling_ae_title.clone(),
                            peer: self.peer.address,
                            sop_class_uid: abstract_syntax.clone(),
                            identifier,
                        })
                        .await
                }
                Err(comment) => FindOutcome::Failed {
                    status: status::UNABLE_TO_PROCESS,
                    comment,
                },
            }
        };
        let matches = match outcome {
            FindOutcome::Matches(m) => m,
            FindOutcome::Failed { status, comment } => {
                return self
                    .send_response(
                        association,
                        context_id,
                        &final_response(status, Some(comment)),
                        None,
                    )
                    .await;
            }
        };
        let ts = ts.expect("transfer syntax checked above");
        info!(matches = matches.len(), "C-FIND");
        for identifier in matches {
            let mut bytes = Vec::new();
            if let Err(e) = identifier.write_dataset_with_ts(&mut bytes, ts) {
                warn!(error = %e, "cannot encode a C-FIND identifier");
                let rsp = final_response(
                    status::UNABLE_TO_PROCESS,
                    Some("cannot encode a match".into()),
                );
                return self
                    .send_response(association, context_id, &rsp, None)
                    .await;
            }
            let mut pending = final_response(status::PENDING, None);
            pending.has_dataset = true;
            if let Flow::Abort(why) = self
                .send_response(association, context_id, &pending, Some(bytes))
                .await
            {
                return Flow::Abort(why);
            }
            match poll_cancel(association, command.message_id).await {
                Poll::Nothing => {}
                Poll::Cancel => {
                    info!("C-FIND cancelled by the peer");
                    return self
                        .send_response(
                            association,
                            context_id,
                            &final_response(status::CANCEL, None),
                            None,
                        )
                        .await;
                }
                Poll::Abort(why) => return Flow::Abort(why),
                Poll::Closed => return Flow::Closed,
            }
        }
        self.send_response(
            association,
            context_id,
            &final_response(status::SUCCESS, None),
            None,
        )
        .await
    }

    /// Sends a response command and, when given, its data set, in fragments that fit the
    /// peer's maximum PDU length.
    async fn send_response(
        &mut self,
        association: &mut Assoc,
        context_id: u8,
        response: &Response,
        dataset: Option<Vec<u8>>,
    ) -> Flow {
        match crate::scu::send_message(
            association,
            context_id,
            response.encode(),
            dataset.as_deref(),
        )
        .await
        {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Abort("cannot send response"),
        }
    }
}

async fn abort(association: &mut Assoc, reason: AbortRQServiceProviderReason) {
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), association.send(&pdu)).await;
    let _ = association.inner_stream().shutdown().await;
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "unknown",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
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

/// Decodes a C-FIND, C-MOVE or C-GET identifier.
fn read_identifier(
    dataset: Option<ReceivedDataset>,
    transfer_syntax: &str,
) -> Result<dicom_object::InMemDicomObject, String> {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax}"))?;
    match dataset {
        Some(ReceivedDataset::Memory(fragments)) => {
            let bytes: Vec<u8> = fragments.iter().flat_map(|f| f.iter().copied()).collect();
            dicom_object::InMemDicomObject::read_dataset_with_ts(&bytes[..], ts)
                .map_err(|e| format!("unreadable identifier: {e}"))
        }
        Some(ReceivedDataset::File { .. }) => Err("identifier larger than 32 MiB".into()),
        None => Err("request without an identifier".into()),
    }
}

/// What arrived from the peer while an operation was running.
enum Poll {
    Nothing,
    /// A C-CANCEL-RQ for the running operation (PS3.7 9.3.2.3).
    Cancel,
    Abort(&'static str),
    Closed,
}

/// Interprets a PDU received while an operation runs: only a C-CANCEL for it is expected
/// (this node negotiates no asynchronous operations, PS3.7 D.3.3.3).
fn interpret_during_operation(pdu: Pdu, message_id: u16, partial: &mut Vec<u8>) -> Poll {
    match pdu {
        Pdu::PData { data } => {
            for value in data {
                if value.value_type != PDataValueType::Command {
                    return Poll::Abort("data set while an operation runs");
                }
                partial.extend_from_slice(&value.data);
                if !value.is_last {
                    continue;
                }
                let bytes = std::mem::take(partial);
                match Command::decode(&bytes) {
                    Ok(c) if c.command_field == field::C_CANCEL_RQ => {
                        if c.message_id_being_responded_to
                            .is_none_or(|id| id == message_id)
                        {
                            return Poll::Cancel;
                        }
                    }
                    Ok(_) => return Poll::Abort("a new request while an operation runs"),
                    Err(_) => return Poll::Abort("undecodable command set"),
                }
            }
            Poll::Nothing
        }
        Pdu::AbortRQ { .. } => Poll::Closed,
        Pdu::ReleaseRQ => Poll::Abort("release requested while an operation runs"),
        _ => Poll::Abort("unexpected PDU while an operation runs"),
    }
}

/// Checks, without waiting, whether the peer sent something (a C-CANCEL) while an operation
/// runs. dicom-ul reads PDUs into the association's own buffer, so a PDU only partly arrived
/// is kept for the next call.
async fn poll_cancel(association: &mut Assoc, message_id: u16) -> Poll {
    match tokio::time::timeout(Duration::ZERO, association.receive()).await {
        Err(_) => Poll::Nothing,
        Ok(Ok(pdu)) => interpret_during_operation(pdu, message_id, &mut Vec::new()),
        Ok(Err(_)) => Poll::Closed,
    }
}

/// Final status of a C-MOVE or C-GET from its sub-operation counts (PS3.4 C.4.2.1.5,
/// C.4.3.1.4): Success when all completed; Warning B000 when some failed or gave warnings;
/// A702 when none could be performed.
fn retrieve_status(counts: &SubOperationCounts, cancelled: bool) -> u16 {
    if cancelled {
        status::CANCEL
    } else if counts.failed == 0 && counts.warning == 0 {
        status::SUCCESS
    } else if counts.completed == 0 && counts.warning == 0 {
        status::UNABLE_TO_PERFORM_SUBOPERATIONS
    } else {
        status::SUBOPERATIONS_WITH_FAILURES
    }
}

fn clamp_u16(n: usize) -> u16 {
    n.min(u16::MAX as usize) as u16
}

/// Running tally of a retrieve's sub-operations.
struct Tally {
    total: usize,
    completed: usize,
    failed: usize,
    warning: usize,
    failed_uids: Vec<String>,
}

impl Tally {
    fn new(total: usize) -> Self {
        Tally {
            total,
            completed: 0,
            failed: 0,
            warning: 0,
            failed_uids: Vec::new(),
        }
    }

    fn add(&mut self, result: &InstanceResult) {
        match result.kind() {
            SubOperation::Completed => self.completed += 1,
            SubOperation::Warning => self.warning += 1,
            SubOperation::Failed => {
                self.failed += 1;
                self.failed_uids.push(result.sop_instance_uid.clone());
                warn!(
                    sop_instance_uid = %result.sop_instance_uid,
                    status = ?result.status.map(|s| format!("{s:#06x}")),
                    error = ?result.error,
                    "sub-operation failed"
                );
            }
        }
    }

    fn done(&self) -> usize {
        self.completed + self.failed + self.warning
    }

    fn counts(&self, with_remaining: bool) -> SubOperationCounts {
        SubOperationCounts {
            remaining: with_remaining.then(|| clamp_u16(self.total - self.done())),
            completed: clamp_u16(self.completed),
            failed: clamp_u16(self.failed),
            warning: clamp_u16(self.warning),
        }
    }
}

impl Session {
    /// C-MOVE SCP (PS3.4 C.4.2.2) and C-GET SCP (PS3.4 C.4.3.2): resolve the identifier, send
    /// every instance as a C-STORE sub-operation (to the move destination on associations of
    /// their own, or back on this association for C-GET), with a Pending response after each,
    /// then the final status with the counts and the Failed SOP Instance UID List.
    async fn retrieve(
        &mut self,
        association: &mut Assoc,
        context_id: u8,
        command: &Command,
        abstract_syntax: String,
        transfer_syntax: String,
        dataset: Option<ReceivedDataset>,
    ) -> Flow {
        let is_move = command.command_field == field::C_MOVE_RQ;
        let (operation, rsp_field, name) = if is_move {
            (Operation::Move, field::C_MOVE_RSP, "C-MOVE")
        } else {
            (Operation::Get, field::C_GET_RSP, "C-GET")
        };
        let response =
            |status: u16, counts: Option<SubOperationCounts>, comment: Option<String>| {
                let mut rsp = Response::to(command, rsp_field, status);
                rsp.affected_sop_class_uid = Some(abstract_syntax.clone());
                rsp.affected_sop_instance_uid = None;
                rsp.error_comment = comment;
                rsp.suboperations = counts;
                rsp
            };
        let refuse = |status: u16, comment: String| {
            warn!(calling = %self.peer.calling_ae_title, status = format!("{status:#06x}"), %comment, "{name} refused");
            response(status, None, Some(comment))
        };
        if !self.service.may_perform(&self.peer, operation) {
            let rsp = refuse(
                status::NOT_AUTHORIZED,
                format!("{name} not permitted for this AE"),
            );
            return self
                .send_response(association, context_id, &rsp, None)
                .await;
        }
        let destination = if is_move {
            let Some(title) = command.move_destination.as_deref().map(str::trim) else {
                let rsp = refuse(
                    status::MOVE_DESTINATION_UNKNOWN,
                    "no Move Destination".into(),
                );
                return self
                    .send_response(association, context_id, &rsp, None)
                    .await;
            };
            match self.service.move_destination(title) {
                Some(d) => Some(d),
                None => {
                    let rsp = refuse(
                        status::MOVE_DESTINATION_UNKNOWN,
                        format!("unknown move destination {title}"),
                    );
                    return self
                        .send_response(association, context_id, &rsp, None)
                        .await;
                }
            }
        } else {
            None
        };
        let identifier = match read_identifier(dataset, &transfer_syntax) {
            Ok(i) => i,
            Err(comment) => {
                let rsp = refuse(status::UNABLE_TO_PROCESS, comment);
                return self
                    .send_response(association, context_id, &rsp, None)
                    .await;
            }
        };
        let outcome = self
            .service
            .retrieve(RetrieveRequest {
                association_id: self.id,
                calling_ae_title: self.peer.calling_ae_title.clone(),
                peer: self.peer.address,
                sop_class_uid: abstract_syntax.clone(),
                identifier,
            })
            .await;
        let instances = match outcome {
            RetrieveOutcome::Instances(i) => i,
            RetrieveOutcome::Failed { status, comment } => {
                let rsp = refuse(status, comment);
                return self
                    .send_response(association, context_id, &rsp, None)
                    .await;
            }
        };
        info!(
            instances = instances.len(),
            destination = ?destination.as_ref().map(|d| &d.ae_title),
            "{name} started"
        );
        let started = std::time::Instant::now();
        let mut tally = Tally::new(instances.len());
        let result = match destination {
            Some(destination) => {
                self.move_to(
                    association,
                    context_id,
                    command,
                    destination,
                    instances,
                    &mut tally,
                    &response,
                )
                .await
            }
            None => {
                self.get_back(
                    association,
                    context_id,
                    command,
                    instances,
                    &mut tally,
                    &response,
                )
                .await
            }
        };
        let cancelled = match result {
            Ok(cancelled) => cancelled,
            Err(flow) => return flow,
        };
        let status = retrieve_status(&tally.counts(false), cancelled);
        info!(
            completed = tally.completed,
            failed = tally.failed,
            warning = tally.warning,
            cancelled,
            ms = started.elapsed().as_millis() as u64,
            status = format!("{status:#06x}"),
            "{name} finished"
        );
        let mut rsp = response(status, Some(tally.counts(cancelled)), None);
        // PS3.4 C.4.2.1.5: the final response lists the instances whose sub-operation failed
        let identifier = if tally.failed > 0 {
            let mut list = dicom_object::InMemDicomObject::new_empty();
            list.put(dicom_core::DataElement::new(
                dicom_dictionary_std::tags::FAILED_SOP_INSTANCE_UID_LIST,
                dicom_core::VR::UI,
                dicom_core::PrimitiveValue::Strs(tally.failed_uids.iter().cloned().collect()),
            ));
            encode_identifier(&list, &transfer_syntax)
        } else {
            None
        };
        rsp.has_dataset = identifier.is_some();
        self.send_response(association, context_id, &rsp, identifier)
            .await
    }

    /// C-MOVE sub-operations: the storage SCU sends to the destination while this loop relays
    /// its progress as Pending responses and watches for a C-CANCEL. Ok(true) when cancelled.
    #[allow(clippy::too_many_arguments)]
    async fn move_to(
        &mut self,
        association: &mut Assoc,
        context_id: u8,
        command: &Command,
        destination: crate::service::RemoteAe,
        instances: Vec<OutgoingInstance>,
        tally: &mut Tally,
        response: &(dyn Fn(u16, Option<SubOperationCounts>, Option<String>) -> Response + Sync),
    ) -> Result<bool, Flow> {
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut options = crate::scu::StoreScuOptions::new(self.config.ae_title.clone());
        options.associations = self.config.move_associations;
        options.max_pdu_length = self.config.max_pdu_length;
        options.move_originator = Some((self.peer.calling_ae_title.clone(), command.message_id));
        let sender = tokio::spawn(crate::scu::send_instances(
            destination,
            options,
            instances,
            self.service.instance_source(),
            tx,
            cancel.clone(),
        ));
        let mut partial = Vec::new();
        let mut cancelled = false;
        let mut peer_gone = false;
        loop {
            tokio::select! {
                result = rx.recv() => {
                    let Some(result) = result else { break };
                    tally.add(&result);
                    if tally.done() < tally.total && !cancelled {
                        let rsp = response(status::PENDING, Some(tally.counts(true)), None);
                        if let Flow::Abort(why) = self.send_response(association, context_id, &rsp, None).await {
                            cancel.store(true, Ordering::SeqCst);
                            let _ = sender.await;
                            return Err(Flow::Abort(why));
                        }
                    }
                }
                pdu = association.receive(), if !peer_gone => {
                    let poll = match pdu {
                        Ok(pdu) => interpret_during_operation(pdu, command.message_id, &mut partial),
                        Err(_) => Poll::Closed,
                    };
                    match poll {
                        Poll::Nothing => {}
                        Poll::Cancel => {
                            info!("C-MOVE cancelled by the peer");
                            cancelled = true;
                            cancel.store(true, Ordering::SeqCst);
                        }
                        Poll::Abort(why) => {
                            cancel.store(true, Ordering::SeqCst);
                            let _ = sender.await;
                            return Err(Flow::Abort(why));
                        }
                        Poll::Closed => {
                            peer_gone = true;
                            cancel.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
        }
        let _ = sender.await;
        if peer_gone {
            return Err(Flow::Closed);
        }
        Ok(cancelled)
    }

    /// C-GET sub-operations on this association, one at a time: C-STORE-RQ, wait for its
    /// C-STORE-RSP (watching for a C-CANCEL), then a Pending C-GET-RSP. Ok(true) when
    /// cancelled.
    async fn get_back(
        &mut self,
        association: &mut Assoc,
        context_id: u8,
        command: &Command,
        instances: Vec<OutgoingInstance>,
        tally: &mut Tally,
        response: &(dyn Fn(u16, Option<SubOperationCounts>, Option<String>) -> Response + Sync),
    ) -> Result<bool, Flow> {
        let source = self.service.instance_source();
        let mut message_id = command.message_id.wrapping_add(1000);
        let mut cancelled = false;
        for instance in instances {
            match poll_cancel(association, command.message_id).await {
                Poll::Nothing => {}
                Poll::Cancel => {
                    info!("C-GET cancelled by the peer");
                    cancelled = true;
                }
                Poll::Abort(why) => return Err(Flow::Abort(why)),
                Poll::Closed => return Err(Flow::Closed),
            }
            if cancelled {
                break;
            }
            let result = self
                .get_one(
                    association,
                    command,
                    &source,
                    &instance,
                    &mut message_id,
                    &mut cancelled,
                )
                .await?;
            tally.add(&result);
            if tally.done() < tally.total && !cancelled {
                let rsp = response(status::PENDING, Some(tally.counts(true)), None);
                if let Flow::Abort(why) = self
                    .send_response(association, context_id, &rsp, None)
                    .await
                {
                    return Err(Flow::Abort(why));
                }
            }
        }
        Ok(cancelled)
    }

    async fn get_one(
        &mut self,
        association: &mut Assoc,
        command: &Command,
        source: &Arc<dyn crate::service::InstanceSource>,
        instance: &OutgoingInstance,
        message_id: &mut u16,
        cancelled: &mut bool,
    ) -> Result<InstanceResult, Flow> {
        let fail = |why: String| InstanceResult {
            sop_instance_uid: instance.sop_instance_uid.clone(),
            sop_class_uid: instance.sop_class_uid.clone(),
            status: None,
            error: Some(why),
            attempts: 0,
        };
        // The requestor must have taken the SCP role for this SOP class (PS3.4 C.4.3.1.3).
        if !requestor_is_scp(association, &instance.sop_class_uid) {
            return Ok(fail(format!(
                "the requestor did not negotiate the SCP role for {}",
                instance.sop_class_uid
            )));
        }
        let syntaxes = source.transfer_syntaxes(instance);
        let Some((context, ts)) = crate::scu::choose_context(
            association.presentation_contexts(),
            &instance.sop_class_uid,
            &syntaxes,
        ) else {
            return Ok(fail(format!(
                "no accepted presentation context for {} in a transfer syntax this instance can be sent in",
                instance.sop_class_uid
            )));
        };
        let data = match source.load(instance, &ts).await {
            Ok(d) => d,
            Err(e) => return Ok(fail(e)),
        };
        *message_id = message_id.wrapping_add(1);
        let request = Request {
            command_field: field::C_STORE_RQ,
            message_id: *message_id,
            affected_sop_class_uid: instance.sop_class_uid.clone(),
            affected_sop_instance_uid: Some(instance.sop_instance_uid.clone()),
            has_dataset: true,
            move_originator: None,
        };
        if crate::scu::send_message(association, context, request.encode(), Some(&data))
            .await
            .is_err()
        {
            return Err(Flow::Closed);
        }
        // wait for the C-STORE-RSP; a C-CANCEL may come first
        let mut partial = Vec::new();
        loop {
            let pdu = match tokio::time::timeout(self.config.idle_timeout, association.receive())
                .await
            {
                Ok(Ok(pdu)) => pdu,
                Ok(Err(_)) => return Err(Flow::Closed),
                Err(_) => return Err(Flow::Abort("no C-STORE response within the idle timeout")),
            };
            let Pdu::PData { data } = pdu else {
                return match interpret_during_operation(pdu, command.message_id, &mut partial) {
                    Poll::Abort(why) => Err(Flow::Abort(why)),
                    _ => Err(Flow::Closed),
                };
            };
            for value in data {
                if value.value_type != PDataValueType::Command {
                    return Err(Flow::Abort(
                        "data set while a C-STORE response was expected",
                    ));
                }
                partial.extend_from_slice(&value.data);
                if !value.is_last {
                    continue;
                }
                let bytes = std::mem::take(&mut partial);
                let Ok(c) = Command::decode(&bytes) else {
                    return Err(Flow::Abort("undecodable command set"));
                };
                match c.command_field {
                    field::C_CANCEL_RQ => *cancelled = true,
                    field::C_STORE_RSP if c.message_id_being_responded_to == Some(*message_id) => {
                        return Ok(InstanceResult {
                            sop_instance_uid: instance.sop_instance_uid.clone(),
                            sop_class_uid: instance.sop_class_uid.clone(),
                            status: Some(c.status.unwrap_or(status::PROCESSING_FAILURE)),
                            error: None,
                            attempts: 1,
                        });
                    }
                    _ => {
                        return Err(Flow::Abort(
                            "unexpected command while a C-STORE response was expected",
                        ))
                    }
                }
            }
        }
    }
}

fn requestor_is_scp(association: &Assoc, sop_class_uid: &str) -> bool {
    use dicom_ul::association::Association;
    use dicom_ul::pdu::UserVariableItem;
    association.user_variables().iter().any(|uv| {
        matches!(uv, UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles)
            if uid.trim_end_matches(['\0', ' ']) == sop_class_uid && roles.scp)
    })
}

fn encode_identifier(
    obj: &dicom_object::InMemDicomObject,
    transfer_syntax: &str,
) -> Option<Vec<u8>> {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(transfer_syntax)?;
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, ts).ok()?;
    Some(bytes)
}
