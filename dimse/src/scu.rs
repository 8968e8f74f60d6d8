//! The node as an association requestor: C-ECHO and the storage SCU that C-MOVE and the
//! administrators' "send to AE" use.
//!
//! The storage SCU opens up to `associations` associations to the destination, each taking the
//! next instance from a shared queue, so a slow instance never holds up the others. An instance
//! whose association broke is sent again on a new association, up to `retries` times; a
//! refusal by the receiver (a DIMSE failure status) is final. Every instance gets exactly one
//! [`InstanceResult`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dicom_dictionary_std::uids;
use dicom_ul::association::client::AsyncTlsStream;
use dicom_ul::association::{AsyncAssociation, AsyncClientAssociation};
use dicom_ul::pdu::PresentationContextNegotiated;
use dicom_ul::{ClientAssociationOptions, Pdu};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;
use tracing::{debug, info, warn};

use crate::command::{field, status, Command, Request};
use crate::pdata::{send_message, Assembled, Reassembler};
use crate::server::Transport;
use crate::service::{InstanceSource, OutgoingInstance, RemoteAe};

/// Uncompressed transfer syntaxes every storage SCP accepts (PS3.5 10.1, A.2); kept under
/// these names for the node's code that imports them from here.
pub const EXPLICIT_VR_LE: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;
pub const IMPLICIT_VR_LE: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
const VERIFICATION: &str = uids::VERIFICATION;
/// PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..=255.
const MAX_PRESENTATION_CONTEXTS: usize = 128;

/// How the storage SCU behaves.
#[derive(Debug, Clone)]
pub struct StoreScuOptions {
    /// This node's AE title, sent as the calling AE title.
    pub calling_ae_title: String,
    /// Largest PDU this node receives.
    pub max_pdu_length: u32,
    /// Associations used at once.
    pub associations: usize,
    /// How many times an instance is sent again after its association failed.
    pub retries: u32,
    /// Time allowed to connect, and to wait for each response.
    pub timeout: Duration,
    /// Set for the sub-operations of a C-MOVE: the mover's AE title and message ID.
    pub move_originator: Option<(String, u16)>,
    /// What the node trusts and presents when the destination is to be reached over TLS
    /// (`RemoteAe::tls`); without it such a destination cannot be reached.
    pub tls: Option<Arc<ClientConfig>>,
}

impl StoreScuOptions {
    pub fn new(calling_ae_title: impl Into<String>) -> Self {
        StoreScuOptions {
            calling_ae_title: calling_ae_title.into(),
            max_pdu_length: 116_794,
            associations: 1,
            retries: 2,
            timeout: Duration::from_secs(30),
            move_originator: None,
            tls: None,
        }
    }
}

/// How one instance fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceResult {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    /// The receiver's C-STORE status, or None when the instance could not be sent at all.
    pub status: Option<u16>,
    /// What went wrong (the receiver's Error Comment, or why it could not be sent).
    pub error: Option<String>,
    /// Times it was sent (more than one after association failures).
    pub attempts: u32,
}

/// The three kinds of sub-operation result that C-MOVE and C-GET count (PS3.4 C.4.2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOperation {
    Completed,
    Warning,
    Failed,
}

impl InstanceResult {
    pub fn kind(&self) -> SubOperation {
        match self.status {
            Some(status::SUCCESS) => SubOperation::Completed,
            Some(s) if status::is_warning(s) => SubOperation::Warning,
            _ => SubOperation::Failed,
        }
    }
}

/// Runs a C-ECHO against a remote AE (over TLS with `tls` when the AE is marked so); returns
/// the status and the round-trip time of the whole exchange (connect, associate, echo,
/// release).
pub async fn echo(
    remote: &RemoteAe,
    calling_ae_title: &str,
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let work = async {
        let options = ClientAssociationOptions::new()
            .calling_ae_title(calling_ae_title)
            .called_ae_title(remote.ae_title.as_str())
            .with_abstract_syntax(VERIFICATION);
        match establish(options, remote, tls.as_ref()).await? {
            Client::Plain(association) => echo_on(association, remote).await,
            Client::Tls(association) => echo_on(association, remote).await,
        }
    };
    let status = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer from {} within {timeout:?}", remote.ae_title))??;
    Ok((status, started.elapsed()))
}

async fn echo_on<S: Transport>(
    mut association: AsyncClientAssociation<S>,
    remote: &RemoteAe,
) -> Result<u16, String> {
    no_delay(&mut association);
    let pc = association
        .presentation_contexts()
        .iter()
        .find(|pc| accepted(pc))
        .map(|pc| pc.id)
        .ok_or_else(|| format!("{} did not accept Verification", remote.ae_title))?;
    let request = Request {
        command_field: field::C_ECHO_RQ,
        message_id: 1,
        affected_sop_class_uid: VERIFICATION.into(),
        affected_sop_instance_uid: None,
        has_dataset: false,
        move_originator: None,
    };
    send_message(&mut association, pc, &request.encode(), None).await?;
    let response = receive_command(&mut association).await?;
    let _ = association.release().await;
    Ok(response.status.unwrap_or(status::PROCESSING_FAILURE))
}

/// An association the node requested: over TCP, or over TLS (PS3.15 Annex B).
/// (Moved once, right after the association is established: its size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Client {
    Plain(AsyncClientAssociation<TcpStream>),
    Tls(AsyncClientAssociation<AsyncTlsStream>),
}

/// Requests an association with `remote`: over TLS when it is marked so (its host is the
/// name its certificate must carry), else over TCP.
async fn establish(
    options: ClientAssociationOptions<'_>,
    remote: &RemoteAe,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Client, String> {
    let address = (remote.host.as_str(), remote.port);
    let failed = |e: dicom_ul::association::Error| {
        format!(
            "association with {}{} failed: {e}",
            remote.ae_title,
            if remote.tls { " over TLS" } else { "" }
        )
    };
    if !remote.tls {
        return options
            .establish_async(address)
            .await
            .map(Client::Plain)
            .map_err(failed);
    }
    let Some(config) = tls else {
        return Err(format!(
            "{} is to be reached over TLS, and this node has no TLS client configuration",
            remote.ae_title
        ));
    };
    options
        .tls_config(config.clone())
        .server_name(remote.host.as_str())
        .establish_tls_async(address)
        .await
        .map(Client::Tls)
        .map_err(failed)
}

/// TCP_NODELAY on the connection underneath: small PDUs must not wait for Nagle.
fn no_delay<S: Transport>(association: &mut AsyncClientAssociation<S>) {
    if let Some(tcp) = association.inner_stream().tcp() {
        let _ = tcp.set_nodelay(true);
    }
}

fn accepted(pc: &PresentationContextNegotiated) -> bool {
    pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance
}

fn trim(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// The accepted presentation context to send an instance on: the first of `transfer_syntaxes`
/// (preferred first) that a context for the instance's SOP class accepted.
pub fn choose_context(
    contexts: &[PresentationContextNegotiated],
    sop_class_uid: &str,
    transfer_syntaxes: &[String],
) -> Option<(u8, String)> {
    transfer_syntaxes.iter().find_map(|ts| {
        contexts
            .iter()
            .find(|pc| {
                accepted(pc)
                    && trim(&pc.abstract_syntax) == sop_class_uid
                    && trim(&pc.transfer_syntax) == ts.as_str()
            })
            .map(|pc| (pc.id, ts.clone()))
    })
}

/// Receives the next command set (a response), skipping any data set that follows one.
async fn receive_command<A, S>(association: &mut A) -> Result<Command, String>
where
    A: AsyncAssociation<S> + Send,
    S: Transport,
{
    let mut reassembler = Reassembler::default();
    let mut with_data: Option<Command> = None;
    loop {
        let pdu = AsyncAssociation::receive(association)
            .await
            .map_err(|e| format!("association broke: {e}"))?;
        match pdu {
            Pdu::PData { data } => {
                for value in data {
                    match reassembler.push(value).map_err(|e| e.to_string())? {
                        Assembled::Command { command, .. } if !command.has_dataset => {
                            return Ok(command)
                        }
                        // a response with a data set: it counts once the data set (of no use
                        // to this SCU) is over
                        Assembled::Command { command, .. } => with_data = Some(command),
                        Assembled::Partial => {}
                        Assembled::Data { last, .. } => {
                            if let (true, Some(command)) = (last, with_data.take()) {
                                return Ok(command);
                            }
                        }
                    }
                }
            }
            Pdu::AbortRQ { .. } => return Err("association aborted by the receiver".into()),
            Pdu::ReleaseRQ => return Err("the receiver released the association".into()),
            _ => return Err("unexpected PDU from the receiver".into()),
        }
    }
}

/// The presentation contexts to propose for a set of instances: per SOP class, one context
/// per compressed transfer syntax they are stored in, and one with the uncompressed syntaxes
/// (which every instance that can be decoded can be sent in).
fn proposed_contexts(
    instances: &[OutgoingInstance],
    source: &dyn InstanceSource,
) -> Vec<(String, Vec<String>)> {
    let mut by_class: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for instance in instances {
        let entry = by_class.entry(&instance.sop_class_uid).or_default();
        for ts in source.transfer_syntaxes(instance) {
            if !entry.contains(&ts) {
                entry.push(ts);
            }
        }
    }
    let mut contexts = Vec::new();
    // uncompressed contexts first, so that every SOP class gets one within the limit
    for (class, syntaxes) in &by_class {
        let plain: Vec<String> = [EXPLICIT_VR_LE, IMPLICIT_VR_LE]
            .iter()
            .filter(|ts| syntaxes.iter().any(|s| s == *ts))
            .map(|s| s.to_string())
            .collect();
        if !plain.is_empty() {
            contexts.push((class.to_string(), plain));
        }
    }
    for (class, syntaxes) in &by_class {
        for ts in syntaxes {
            if ts != EXPLICIT_VR_LE && ts != IMPLICIT_VR_LE {
                contexts.push((class.to_string(), vec![ts.clone()]));
            }
        }
    }
    contexts.truncate(MAX_PRESENTATION_CONTEXTS);
    contexts
}

struct Shared {
    queue: Mutex<VecDeque<(OutgoingInstance, u32)>>,
    alive: AtomicUsize,
    cancel: Arc<AtomicBool>,
    results: mpsc::UnboundedSender<InstanceResult>,
    contexts: Vec<(String, Vec<String>)>,
    destination: RemoteAe,
    options: StoreScuOptions,
    source: Arc<dyn InstanceSource>,
    message_ids: std::sync::atomic::AtomicU16,
}

impl Shared {
    fn pop(&self) -> Option<(OutgoingInstance, u32)> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn give_back(&self, item: (OutgoingInstance, u32)) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_front(item);
    }

    fn report(
        &self,
        instance: &OutgoingInstance,
        status: Option<u16>,
        error: Option<String>,
        attempts: u32,
    ) {
        let _ = self.results.send(InstanceResult {
            sop_instance_uid: instance.sop_instance_uid.clone(),
            sop_class_uid: instance.sop_class_uid.clone(),
            status,
            error,
            attempts,
        });
    }
}

/// Sends instances to `destination` and reports one [`InstanceResult`] per instance on
/// `results`. Stops taking new instances once `cancel` is set; the instances not sent by then
/// get no result (the caller counts them as remaining).
pub async fn send_instances(
    destination: RemoteAe,
    options: StoreScuOptions,
    instances: Vec<OutgoingInstance>,
    source: Arc<dyn InstanceSource>,
    results: mpsc::UnboundedSender<InstanceResult>,
    cancel: Arc<AtomicBool>,
) {
    if instances.is_empty() {
        return;
    }
    let contexts = proposed_contexts(&instances, source.as_ref());
    let workers = options.associations.clamp(1, instances.len());
    let shared = Arc::new(Shared {
        queue: Mutex::new(instances.into_iter().map(|i| (i, 0)).collect()),
        alive: AtomicUsize::new(workers),
        cancel,
        results,
        contexts,
        destination,
        options,
        source,
        message_ids: std::sync::atomic::AtomicU16::new(1),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(worker(shared.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn connect(shared: &Shared) -> Result<Client, String> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(shared.options.calling_ae_title.as_str())
        .called_ae_title(shared.destination.ae_title.as_str())
        .max_pdu_length(shared.options.max_pdu_length);
    for (class, syntaxes) in &shared.contexts {
        options = options.with_presentation_context(
            class.as_str(),
            syntaxes.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    tokio::time::timeout(
        shared.options.timeout,
        establish(options, &shared.destination, shared.options.tls.as_ref()),
    )
    .await
    .map_err(|_| {
        format!(
            "no association with {} within {:?}",
            shared.destination.ae_title, shared.options.timeout
        )
    })?
}

/// What a worker does after an association ended.
enum Next {
    /// Nothing left to send (or cancelled): the association was released.
    Done,
    /// The association broke: another one is opened.
    Reconnect,
    /// Too many failures: the worker stops.
    GiveUp,
}

async fn worker(shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        if shared.cancel.load(Ordering::SeqCst)
            || shared
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            break;
        }
        let next = match connect(&shared).await {
            Ok(Client::Plain(association)) => send_on(&shared, association, &mut failures).await,
            Ok(Client::Tls(association)) => send_on(&shared, association, &mut failures).await,
            Err(e) => {
                failures += 1;
                if failures > shared.options.retries {
                    warn!(destination = %shared.destination.ae_title, error = %e, "storage SCU gives up");
                    give_up(&shared, &e);
                    return;
                }
                warn!(destination = %shared.destination.ae_title, error = %e, attempt = failures, "cannot associate; retrying");
                tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(failures))).await;
                continue;
            }
        };
        match next {
            Next::Done => break,
            Next::Reconnect => continue,
            Next::GiveUp => return,
        }
    }
    shared.alive.fetch_sub(1, Ordering::SeqCst);
    info!(destination = %shared.destination.ae_title, "storage SCU worker done");
}

/// Sends instances from the queue on one association until the queue is empty, the transfer
/// is cancelled or the association breaks.
async fn send_on<S: Transport>(
    shared: &Arc<Shared>,
    mut association: AsyncClientAssociation<S>,
    failures: &mut u32,
) -> Next {
    no_delay(&mut association);
    debug!(destination = %shared.destination.ae_title, "storage association established");
    // The next instance is read while the destination stores the current one: one
    // C-STORE is outstanding at a time (no asynchronous operations window is negotiated,
    // PS3.7 D.3.3.3), so the read would otherwise add to every round trip.
    let mut ahead: Option<Loading> = None;
    loop {
        if shared.cancel.load(Ordering::SeqCst) {
            if let Some(a) = ahead.take() {
                a.forget();
            }
            let _ = association.release().await;
            return Next::Done;
        }
        let contexts = association.presentation_contexts();
        let current = match ahead.take() {
            Some(a) => a,
            None => match shared.pop() {
                Some(item) => start_loading(shared, contexts, item),
                None => {
                    let _ = association.release().await;
                    return Next::Done;
                }
            },
        };
        ahead = shared
            .pop()
            .map(|item| start_loading(shared, contexts, item));
        let (instance, attempts, context, data) = match current.ready().await {
            Ok(ready) => ready,
            Err((instance, attempts, why)) => {
                shared.report(&instance, None, Some(why), attempts);
                continue;
            }
        };
        let message_id = shared.message_ids.fetch_add(1, Ordering::Relaxed);
        let request = store_request(
            &instance,
            message_id,
            shared.options.move_originator.clone(),
        );
        let exchange = async {
            send_message(&mut association, context, &request.encode(), Some(&data)).await?;
            receive_command(&mut association).await
        };
        let outcome = tokio::time::timeout(shared.options.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no C-STORE response within {:?}",
                    shared.options.timeout
                ))
            });
        match outcome {
            Ok(response) => {
                let status = response.status.unwrap_or(status::PROCESSING_FAILURE);
                shared.report(&instance, Some(status), None, attempts + 1);
            }
            Err(e) => {
                // the instance read ahead goes back first, then this one in front of it
                if let Some(a) = ahead.take() {
                    shared.give_back(a.forget());
                }
                let attempts = attempts + 1;
                if attempts > shared.options.retries {
                    shared.report(&instance, None, Some(e.clone()), attempts);
                } else {
                    warn!(sop_instance_uid = %instance.sop_instance_uid, error = %e, "sending again on a new association");
                    shared.give_back((instance, attempts));
                }
                let _ = association.abort().await;
                *failures += 1;
                if *failures > shared.options.retries * 4 + 4 {
                    give_up(shared, &e);
                    return Next::GiveUp;
                }
                return Next::Reconnect;
            }
        }
    }
}

/// An instance taken from the queue, its presentation context chosen and its data set being
/// read, or the reason it cannot be sent on this association.
enum Loading {
    Reading {
        instance: OutgoingInstance,
        attempts: u32,
        context: u8,
        data: JoinHandle<Result<bytes::Bytes, String>>,
    },
    Unsendable {
        instance: OutgoingInstance,
        attempts: u32,
        why: String,
    },
}

type Ready = (OutgoingInstance, u32, u8, bytes::Bytes);

impl Loading {
    /// The instance with its context and data set, or why it cannot be sent.
    async fn ready(self) -> Result<Ready, (OutgoingInstance, u32, String)> {
        match self {
            Loading::Unsendable {
                instance,
                attempts,
                why,
            } => Err((instance, attempts, why)),
            Loading::Reading {
                instance,
                attempts,
                context,
                data,
            } => match data.await {
                Ok(Ok(bytes)) => Ok((instance, attempts, context, bytes)),
                Ok(Err(e)) => Err((instance, attempts, e)),
                Err(e) => Err((
                    instance,
                    attempts,
                    format!("reading the instance failed: {e}"),
                )),
            },
        }
    }

    /// Stops the read; the queue item is handed back unchanged.
    fn forget(self) -> (OutgoingInstance, u32) {
        match self {
            Loading::Reading {
                instance,
                attempts,
                data,
                ..
            } => {
                data.abort();
                (instance, attempts)
            }
            Loading::Unsendable {
                instance, attempts, ..
            } => (instance, attempts),
        }
    }
}

/// Chooses the presentation context for an instance and starts reading it in a transfer
/// syntax that context accepted.
fn start_loading(
    shared: &Shared,
    contexts: &[PresentationContextNegotiated],
    (instance, attempts): (OutgoingInstance, u32),
) -> Loading {
    let syntaxes = shared.source.transfer_syntaxes(&instance);
    let Some((context, ts)) = choose_context(contexts, &instance.sop_class_uid, &syntaxes) else {
        let why = format!(
            "{} accepted no presentation context for SOP class {} in a transfer syntax this instance can be sent in",
            shared.destination.ae_title, instance.sop_class_uid
        );
        return Loading::Unsendable {
            instance,
            attempts,
            why,
        };
    };
    let source = shared.source.clone();
    let reading = instance.clone();
    let data = tokio::spawn(async move { source.load(&reading, &ts).await });
    Loading::Reading {
        instance,
        attempts,
        context,
        data,
    }
}

/// This worker stops; if it was the last one, nobody will send what is left, so it fails.
fn give_up(shared: &Shared, why: &str) {
    if shared.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
        while let Some((instance, attempts)) = shared.pop() {
            shared.report(&instance, None, Some(why.to_string()), attempts);
        }
    }
}

/// The C-STORE-RQ of one outgoing instance (PS3.7 9.3.1.1), for the storage SCU and for C-GET
/// sub-operations; `move_originator` names the C-MOVE a sub-operation belongs to.
pub(crate) fn store_request(
    instance: &OutgoingInstance,
    message_id: u16,
    move_originator: Option<(String, u16)>,
) -> Request {
    Request {
        command_field: field::C_STORE_RQ,
        message_id,
        affected_sop_class_uid: instance.sop_class_uid.clone(),
        affected_sop_instance_uid: Some(instance.sop_instance_uid.clone()),
        has_dataset: true,
        move_originator,
    }
}
