//! One established association: the loop that receives PDUs, puts DIMSE messages back together
//! (with [`Reassembler`]), keeps large data sets in a temporary file while they arrive, and hands
//! each complete message to its service (echo, store, find, move/get). Also what the services
//! share: sending responses, watching for a C-CANCEL while an operation runs, reading an
//! identifier.

use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{AbortRQServiceProviderReason, AbortRQSource, PresentationContextResultReason};
use dicom_ul::Pdu;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::association::{pdu_name, Association, ReceiveError, Transport};
use super::listener::DimseConfig;
use crate::command::{field, status, Command, Response};
use crate::metrics::{AssociationMetrics, DimseMetrics};
use crate::pdata::{Assembled, Outgoing, Reassembler};
use crate::service::{AssociationGrant, AssociationPeer, DimseService, ReceivedDataset};

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
    /// Over `max_instance_bytes`, or no room to spill it: what came so far was dropped (a
    /// spill file deleted), the rest is read and dropped too, and the request answered A700.
    Discarded { len: u64, why: Discard },
}

/// Why a data set was discarded as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    TooLarge,
    NoRoom,
}

impl Incoming {
    fn len(&self) -> u64 {
        match self {
            Incoming::Memory { len, .. } => *len as u64,
            Incoming::File { len, .. } | Incoming::Discarded { len, .. } => *len,
        }
    }
}

/// A request whose data set is still arriving.
struct Pending {
    command: Command,
    context_id: u8,
    data: Incoming,
    /// When its command set was complete.
    since: std::time::Instant,
}

/// What a service tells the loop after a message.
pub(super) enum Flow {
    Continue,
    Abort(&'static str),
    /// The peer aborted or closed the connection.
    Closed,
}

pub(crate) struct Session {
    pub(super) id: u64,
    pub(super) config: Arc<DimseConfig>,
    pub(super) service: Arc<dyn DimseService>,
    pub(super) peer: AssociationPeer,
    /// What the association may do, decided when it was accepted.
    pub(super) grant: AssociationGrant,
    /// The one reassembler of this association: the message loop and the services watching
    /// for a C-CANCEL (or, for C-GET, a C-STORE-RSP) share it, so a command split across PDUs
    /// is never lost between them.
    pub(super) reassembler: Reassembler,
    pending: Option<Pending>,
    metrics: Arc<DimseMetrics>,
    /// The calling AE's counters (and this association's place in the active gauge).
    pub(super) counted: AssociationMetrics,
    /// The status of the last final response sent: what the operation's time is recorded under.
    last_final_status: Option<u16>,
}

impl Session {
    pub(super) fn new(
        id: u64,
        config: Arc<DimseConfig>,
        service: Arc<dyn DimseService>,
        peer: AssociationPeer,
        grant: AssociationGrant,
        metrics: Arc<DimseMetrics>,
        counted: AssociationMetrics,
    ) -> Self {
        Session {
            id,
            config,
            service,
            peer,
            grant,
            reassembler: Reassembler::default(),
            pending: None,
            metrics,
            counted,
            last_final_status: None,
        }
    }

    pub(super) async fn run<S: Transport>(&mut self, association: &mut Association<S>) {
        loop {
            let _ = quick_ack(association.stream());
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
                    Ok(Err(ReceiveError::Closed)) => {
                        info!("connection closed by the peer without release");
                        return;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "association ended by a receive error");
                        if let Some(reason) = e.abort_reason() {
                            abort(association, reason).await;
                        }
                        return;
                    }
                    Ok(Ok(pdu)) => pdu,
                };
            match pdu {
                Pdu::PData { data } => {
                    for value in data {
                        match self.on_pdata(association, value).await {
                            Flow::Continue => {}
                            Flow::Closed => {
                                info!("association ended by the peer during an operation");
                                association.shutdown().await;
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
                    if self.pending.is_some() {
                        warn!("release requested in the middle of a data set; data discarded");
                    }
                    let _ = association.send(&Pdu::ReleaseRP).await;
                    association.shutdown().await;
                    info!("association released");
                    return;
                }
                Pdu::AbortRQ { source } => {
                    info!(?source, "association aborted by peer");
                    return;
                }
                other => {
                    warn!(pdu = pdu_name(&other), "unexpected PDU");
                    let reason = match other {
                        Pdu::Unknown { .. } => AbortRQServiceProviderReason::UnrecognizedPdu,
                        _ => AbortRQServiceProviderReason::UnexpectedPdu,
                    };
                    abort(association, reason).await;
                    return;
                }
            }
        }
    }

    async fn on_pdata<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        value: dicom_ul::pdu::PDataValue,
    ) -> Flow {
        let assembled = match self.reassembler.push(value) {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "bad P-DATA");
                return Flow::Abort(e.reason());
            }
        };
        match assembled {
            Assembled::Partial => Flow::Continue,
            Assembled::Command {
                context_id,
                command,
            } => {
                if command.has_dataset {
                    self.pending = Some(Pending {
                        command,
                        context_id,
                        data: Incoming::Memory {
                            fragments: Vec::new(),
                            len: 0,
                        },
                        since: std::time::Instant::now(),
                    });
                    Flow::Continue
                } else {
                    self.dispatch(association, context_id, command, None).await
                }
            }
            Assembled::Data { bytes, last, .. } => {
                let Some(mut p) = self.pending.take() else {
                    return Flow::Abort("data fragment without a command");
                };
                let len = p.data.len().saturating_add(bytes.len() as u64);
                if len > self.config.max_instance_bytes {
                    if !matches!(p.data, Incoming::Discarded { .. }) {
                        warn!(
                            limit = self.config.max_instance_bytes,
                            "data set larger than the limit: discarding it as it arrives"
                        );
                    }
                    // dropping the old value drops the fragments and deletes a spill file
                    p.data = Incoming::Discarded {
                        len,
                        why: Discard::TooLarge,
                    };
                } else if let Err(e) = self.append(&mut p.data, bytes).await {
                    // no room on disk (the reserve, or a failed write): the request is answered
                    // A700 and the association goes on
                    warn!(error = %e, "cannot buffer incoming data set: discarding it");
                    p.data = Incoming::Discarded {
                        len,
                        why: Discard::NoRoom,
                    };
                }
                if !last {
                    self.pending = Some(p);
                    return Flow::Continue;
                }
                let dataset = match p.data {
                    Incoming::Discarded { len, why } => {
                        return self.refuse_discarded(association, p, len, why).await;
                    }
                    Incoming::Memory { fragments, .. } => ReceivedDataset::Memory(fragments),
                    Incoming::File {
                        mut file,
                        path,
                        len,
                    } => {
                        if let Err(e) = file.flush().await {
                            warn!(error = %e, "cannot flush spilled data set");
                            return Flow::Abort("cannot buffer incoming data set");
                        }
                        ReceivedDataset::File { path, len }
                    }
                };
                let received = p.since.elapsed();
                let dispatched = std::time::Instant::now();
                let flow = self
                    .dispatch(association, p.context_id, p.command, Some(dataset))
                    .await;
                debug!(
                    receive_us = received.as_micros() as u64,
                    dispatch_us = dispatched.elapsed().as_micros() as u64,
                    "data set received and handled"
                );
                flow
            }
        }
    }

    /// Answers a request whose data set was discarded as it arrived (over `max_instance_bytes`,
    /// or no room to spill it): A700, Out of Resources (PS3.4 B.2.3 for C-STORE; C.4.1.1.4,
    /// C.4.2.1.5 for the others), the reason in the Error Comment. Nothing was handed to the
    /// archive.
    async fn refuse_discarded<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        pending: Pending,
        len: u64,
        why: Discard,
    ) -> Flow {
        let limit = self.config.max_instance_bytes;
        warn!(
            bytes = len,
            limit,
            reason = ?why,
            sop_instance_uid = pending.command.affected_sop_instance_uid.as_deref(),
            "data set refused (A700)"
        );
        let command = &pending.command;
        let mut rsp = Response::to(
            command,
            command.command_field | 0x8000,
            status::OUT_OF_RESOURCES,
        );
        // Error Comment is LO: 64 characters
        rsp.error_comment = Some(match why {
            Discard::TooLarge => format!("data set larger than the limit of {limit} bytes"),
            Discard::NoRoom => "no disk space to receive the data set".to_string(),
        });
        let flow = self
            .send_response(association, pending.context_id, &rsp, None)
            .await;
        self.last_final_status = None;
        self.metrics.operation(
            command.command_field,
            status::OUT_OF_RESOURCES,
            pending.since.elapsed(),
        );
        flow
    }

    /// Keeps a fragment: in memory (as it came, no copy) up to the spill threshold, then in a
    /// temporary file.
    async fn append(&self, data: &mut Incoming, bytes: bytes::Bytes) -> std::io::Result<()> {
        match data {
            Incoming::Memory { fragments, len } => {
                if *len + bytes.len() <= self.config.spill_threshold {
                    *len += bytes.len();
                    fragments.push(bytes);
                    return Ok(());
                }
                crate::spill_room::check(&self.config.spill_dir, self.config.spill_min_free_bytes)?;
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
                if crate::spill_room::crosses_check_point(*len, bytes.len()) {
                    crate::spill_room::check(
                        &self.config.spill_dir,
                        self.config.spill_min_free_bytes,
                    )?;
                }
                file.write_all(&bytes).await?;
                *len += bytes.len() as u64;
                Ok(())
            }
            Incoming::Discarded { len, .. } => {
                *len = len.saturating_add(bytes.len() as u64);
                Ok(())
            }
        }
    }

    /// Hands a complete request to its service ([`Self::serve`]) and records how long it took,
    /// under the status of its final response.
    async fn dispatch<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        context_id: u8,
        command: Command,
        dataset: Option<ReceivedDataset>,
    ) -> Flow {
        let started = std::time::Instant::now();
        let command_field = command.command_field;
        self.last_final_status = None;
        let flow = self.serve(association, context_id, command, dataset).await;
        if let Some(code) = self.last_final_status.take() {
            self.metrics
                .operation(command_field, code, started.elapsed());
        }
        flow
    }

    async fn serve<S: Transport>(
        &mut self,
        association: &mut Association<S>,
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
        let request = Message {
            context_id,
            command,
            abstract_syntax,
            transfer_syntax,
            dataset,
        };
        let response = match request.command.command_field {
            field::C_ECHO_RQ => self.echo(&request),
            field::C_STORE_RQ => self.store(request).await,
            field::C_FIND_RQ => return self.find(association, request).await,
            field::C_MOVE_RQ | field::C_GET_RQ => return self.retrieve(association, request).await,
            // a C-CANCEL for an operation that has already finished: nothing to do
            field::C_CANCEL_RQ => return Flow::Continue,
            other => {
                warn!(
                    command_field = format!("{other:#06x}"),
                    "unsupported DIMSE command"
                );
                let mut rsp = Response::to(
                    &request.command,
                    other | 0x8000,
                    status::UNRECOGNIZED_OPERATION,
                );
                rsp.error_comment = Some("operation not supported by this node".into());
                rsp
            }
        };
        self.send_response(association, context_id, &response, None)
            .await
    }

    /// Sends a response command and, when given, its data set, in fragments that fit the
    /// peer's maximum PDU length.
    pub(super) async fn send_response<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        context_id: u8,
        response: &Response,
        dataset: Option<&[u8]>,
    ) -> Flow {
        if crate::metrics::is_final(response.status) {
            self.last_final_status = Some(response.status);
        }
        let command = response.encode();
        let message = Outgoing {
            context_id,
            command: &command,
            data: dataset,
        };
        match association.send_messages(&[message]).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Abort("cannot send response"),
        }
    }

    /// Sends several messages in as few writes as possible.
    pub(super) async fn send_all<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        messages: &[Outgoing<'_>],
    ) -> Flow {
        match association.send_messages(messages).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Abort("cannot send response"),
        }
    }

    /// The command sets of a PDU received while an operation runs (PS3.7 9.3: nothing but a
    /// C-CANCEL-RQ, and for C-GET the C-STORE-RSPs of its sub-operations, may come then).
    pub(super) fn commands_during_operation(
        &mut self,
        pdu: Pdu,
    ) -> Result<Vec<Command>, Interrupt> {
        match pdu {
            Pdu::PData { data } => {
                let mut commands = Vec::new();
                for value in data {
                    match self.reassembler.push(value) {
                        Ok(Assembled::Partial) => {}
                        Ok(Assembled::Command { command, .. }) => commands.push(command),
                        Ok(Assembled::Data { .. }) => {
                            return Err(Interrupt::Abort("data set while an operation runs"))
                        }
                        Err(e) => return Err(Interrupt::Abort(e.reason())),
                    }
                }
                Ok(commands)
            }
            Pdu::AbortRQ { .. } => Err(Interrupt::Closed),
            Pdu::ReleaseRQ => Err(Interrupt::Abort(
                "release requested while an operation runs",
            )),
            _ => Err(Interrupt::Abort("unexpected PDU while an operation runs")),
        }
    }

    /// Interprets a PDU received while an operation runs, where only a C-CANCEL for it is
    /// expected (this node negotiates no asynchronous operations, PS3.7 D.3.3.3).
    pub(super) fn interpret_during_operation(&mut self, pdu: Pdu, message_id: u16) -> Poll {
        let commands = match self.commands_during_operation(pdu) {
            Ok(c) => c,
            Err(Interrupt::Abort(why)) => return Poll::Abort(why),
            Err(Interrupt::Closed) => return Poll::Closed,
        };
        let mut poll = Poll::Nothing;
        for c in commands {
            if c.command_field != field::C_CANCEL_RQ {
                return Poll::Abort("a new request while an operation runs");
            }
            if c.message_id_being_responded_to
                .is_none_or(|id| id == message_id)
            {
                poll = Poll::Cancel;
            }
        }
        poll
    }

    /// Checks, without waiting, whether the peer sent something (a C-CANCEL) while an
    /// operation runs: the receive is polled once. The association reads PDUs into its own
    /// buffer, so a PDU only partly arrived is kept for the next call.
    ///
    /// (Not `tokio::time::timeout(Duration::ZERO, ..)`: tokio rounds a deadline up to the next
    /// millisecond tick, so each such check waited up to 1 ms, once per C-GET sub-operation and
    /// per C-FIND match.)
    pub(super) async fn poll_cancel<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        message_id: u16,
    ) -> Poll {
        match receive_now(association).await {
            None => Poll::Nothing,
            Some(Ok(pdu)) => self.interpret_during_operation(pdu, message_id),
            Some(Err(_)) => Poll::Closed,
        }
    }
}

/// Asks the kernel to acknowledge received segments at once instead of delaying the ACK (up
/// to 40 ms on Linux). A C-STORE sender whose data set ends in a segment it holds back until
/// the previous one is acknowledged (Nagle) otherwise waits for that delayed ACK: measured at
/// one data set in ten with 256 KiB PDUs, one in two with 16 KiB PDUs. Linux clears the flag
/// again on its own, so it is set before every receive.
fn quick_ack<S: Transport>(stream: &S) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(tcp) = stream.tcp() {
        socket2::SockRef::from(tcp).set_tcp_quickack(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
    Ok(())
}

/// The next PDU if it has fully arrived, without waiting (the receive is polled once).
async fn receive_now<S: Transport>(
    association: &mut Association<S>,
) -> Option<Result<Pdu, ReceiveError>> {
    let mut receive = std::pin::pin!(association.receive());
    std::future::poll_fn(|cx| match std::future::Future::poll(receive.as_mut(), cx) {
        std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// A complete request and the presentation context it came on.
pub(super) struct Message {
    pub context_id: u8,
    pub command: Command,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    pub dataset: Option<ReceivedDataset>,
}

/// Why an operation stops early because of what the peer sent.
pub(super) enum Interrupt {
    Abort(&'static str),
    Closed,
}

/// What arrived from the peer while an operation was running.
pub(super) enum Poll {
    Nothing,
    /// A C-CANCEL-RQ for the running operation (PS3.7 9.3.2.3).
    Cancel,
    Abort(&'static str),
    Closed,
}

pub(super) async fn abort<S: Transport>(
    association: &mut Association<S>,
    reason: AbortRQServiceProviderReason,
) {
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), association.send(&pdu)).await;
    association.shutdown().await;
}

/// Decodes a C-FIND, C-MOVE or C-GET identifier.
pub(super) fn read_identifier(
    dataset: Option<ReceivedDataset>,
    transfer_syntax: &str,
) -> Result<dicom_object::InMemDicomObject, String> {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax}"))?;
    match dataset {
        Some(ReceivedDataset::Memory(fragments)) => {
            let bytes: Vec<u8> = fragments.concat();
            // dicom-object builds sequences by recursion: bound the nesting first
            crate::nesting::check_sequence_depth(
                std::io::Cursor::new(&bytes[..]),
                ts,
                crate::nesting::MAX_SEQUENCE_DEPTH,
            )
            .map_err(|e| format!("unreadable identifier: {e}"))?;
            crate::dataset::read_dataset(&bytes, ts)
                .map_err(|e| format!("unreadable identifier: {e}"))
        }
        Some(ReceivedDataset::File { .. }) => Err("identifier larger than 32 MiB".into()),
        None => Err("request without an identifier".into()),
    }
}

/// Encodes an identifier in the presentation context's transfer syntax.
pub(super) fn encode_identifier(
    obj: &dicom_object::InMemDicomObject,
    transfer_syntax: &str,
) -> Option<Vec<u8>> {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(transfer_syntax)?;
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, ts).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;
    use tokio::io::AsyncWriteExt;

    use tokio::net::TcpStream;

    type Client = dicom_ul::association::AsyncClientAssociation<TcpStream>;

    /// An established association: the acceptor's end (ours) and the requestor's (dicom-ul's).
    async fn pair() -> (Association<TcpStream>, Client) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            dicom_ul::ClientAssociationOptions::new()
                .with_abstract_syntax(uids::VERIFICATION)
                .establish_async(addr)
                .await
                .unwrap()
        });
        let (socket, _) = listener.accept().await.unwrap();
        let settings = super::super::association::tests::settings(&[uids::VERIFICATION]);
        let server = super::super::association::Requested::read(socket, &settings)
            .await
            .unwrap()
            .accept(&settings, None)
            .await
            .unwrap();
        (server, client.await.unwrap())
    }

    #[tokio::test]
    async fn quick_ack_is_set_on_the_socket() {
        let (server, _client) = pair().await;
        // a fresh connection may start in quick-ACK mode: leave it first, as Linux does
        #[cfg(target_os = "linux")]
        socket2::SockRef::from(server.stream())
            .set_tcp_quickack(false)
            .unwrap();
        quick_ack(server.stream()).unwrap();
        #[cfg(target_os = "linux")]
        assert!(socket2::SockRef::from(server.stream())
            .tcp_quickack()
            .unwrap());
    }

    #[tokio::test]
    async fn receive_now_does_not_wait_and_keeps_a_partial_pdu() {
        let (mut server, mut client) = pair().await;
        let peer = client.inner_stream();
        // nothing sent: no PDU, at once (a zero timeout waits for tokio's next 1 ms tick: a
        // thousand checks would take about a second)
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(receive_now(&mut server).await.is_none());
        }
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        // half a PDU: still nothing, and the half is kept for the next call
        let mut pdu = Vec::new();
        dicom_ul::write_pdu(
            &mut pdu,
            &Pdu::PData {
                data: vec![dicom_ul::pdu::PDataValue {
                    presentation_context_id: 1,
                    value_type: dicom_ul::pdu::PDataValueType::Command,
                    is_last: true,
                    data: vec![7; 40],
                }],
            },
        )
        .unwrap();
        peer.write_all(&pdu[..20]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(receive_now(&mut server).await.is_none());
        peer.write_all(&pdu[20..]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(Ok(Pdu::PData { data })) = receive_now(&mut server).await else {
            panic!("the PDU did not arrive whole");
        };
        assert_eq!(data[0].data, vec![7; 40]);
    }
}
