//! Query/Retrieve MOVE and GET SCPs (PS3.4 C.4.2, C.4.3): C-MOVE and C-GET, whose
//! sub-operations are C-STOREs, to the move destination on associations of their own (through
//! [`crate::scu`]) or back to the requestor on the same association.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::association::{Association, Transport};
use super::session::{encode_identifier, read_identifier, Flow, Interrupt, Message, Poll, Session};
use crate::command::{field, status, Command, Response, SubOperationCounts};
use crate::pdata;
use crate::scu::{InstanceResult, StoreScuOptions, SubOperation};
use crate::service::{
    InstanceSource, Operation, OutgoingInstance, RemoteAe, RetrieveOutcome, RetrieveReport,
    RetrieveRequest,
};

/// Builds the C-MOVE-RSP or C-GET-RSP of a running retrieve.
type ResponseFn<'a> =
    dyn Fn(u16, Option<SubOperationCounts>, Option<String>) -> Response + Sync + 'a;

impl Session {
    /// C-MOVE SCP (PS3.4 C.4.2.2) and C-GET SCP (PS3.4 C.4.3.2): resolve the identifier, send
    /// every instance as a C-STORE sub-operation (to the move destination on associations of
    /// their own, or back on this association for C-GET), with a Pending response after each,
    /// then the final status with the counts and the Failed SOP Instance UID List.
    pub(super) async fn retrieve<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        request: Message,
    ) -> Flow {
        let Message {
            context_id,
            command,
            abstract_syntax,
            transfer_syntax,
            dataset,
        } = request;
        let command = &command;
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
        let calling = self.peer.calling_ae_title.clone();
        let user = self.grant.user.clone();
        let refuse = |status: u16, comment: String| {
            warn!(
                %calling,
                user = user.as_deref(),
                status = format!("{status:#06x}"),
                %comment,
                "{name} refused"
            );
            response(status, None, Some(comment))
        };
        if !self.grant.permits(operation) {
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
        let requested = identifier.clone();
        let outcome = self
            .service
            .retrieve(RetrieveRequest {
                association_id: self.id,
                calling_ae_title: self.peer.calling_ae_title.clone(),
                peer: self.peer.address,
                user: self.grant.user.clone(),
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
        let reported_destination = destination.clone();
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
        self.service
            .retrieve_finished(RetrieveReport {
                association_id: self.id,
                calling_ae_title: self.peer.calling_ae_title.clone(),
                peer: self.peer.address,
                user: self.grant.user.clone(),
                sop_class_uid: abstract_syntax.clone(),
                identifier: requested,
                destination: reported_destination,
                stored_sop_classes: std::mem::take(&mut tally.stored_sop_classes),
                failed: tally.failed,
                cancelled,
            })
            .await;
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
        self.send_response(association, context_id, &rsp, identifier.as_deref())
            .await
    }

    /// C-MOVE sub-operations: the storage SCU sends to the destination while this loop relays
    /// its progress as Pending responses and watches for a C-CANCEL. Ok(true) when cancelled.
    #[allow(clippy::too_many_arguments)]
    async fn move_to<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        context_id: u8,
        command: &Command,
        destination: RemoteAe,
        instances: Vec<OutgoingInstance>,
        tally: &mut Tally,
        response: &ResponseFn<'_>,
    ) -> Result<bool, Flow> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut options = StoreScuOptions::new(self.config.ae_title.clone());
        options.associations = self.config.move_associations;
        options.max_pdu_length = self.config.max_pdu_length;
        options.move_originator = Some((self.peer.calling_ae_title.clone(), command.message_id));
        options.tls = self.config.tls_client.clone();
        let sender = tokio::spawn(crate::scu::send_instances(
            destination,
            options,
            instances,
            self.service.instance_source(),
            tx,
            cancel.clone(),
        ));
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
                        Ok(pdu) => self.interpret_during_operation(pdu, command.message_id),
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

    /// C-GET sub-operations on this association, one at a time (this node negotiates no
    /// asynchronous operations window, PS3.7 D.3.3.3, so one C-STORE is outstanding at most):
    /// C-STORE-RQ, wait for its C-STORE-RSP (watching for a C-CANCEL), then a Pending C-GET-RSP.
    /// While the requestor stores one instance, the next one is read from the archive.
    /// Ok(true) when cancelled.
    async fn get_back<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        context_id: u8,
        command: &Command,
        instances: Vec<OutgoingInstance>,
        tally: &mut Tally,
        response: &ResponseFn<'_>,
    ) -> Result<bool, Flow> {
        let source = self.service.instance_source();
        let mut message_id = command.message_id.wrapping_add(1000);
        let mut cancelled = false;
        let mut queue = instances.into_iter();
        let mut next = queue.next().map(|i| prepare(association, &source, i));
        // The Pending C-GET-RSP after a sub-operation goes out in the same write as the next
        // C-STORE-RQ (or alone when there is none to send): the same messages in the same order,
        // one system call and one wake-up of the peer fewer per instance.
        let mut deferred: Option<Vec<u8>> = None;
        let outcome = loop {
            let Some(current) = next.take() else {
                break Ok(cancelled);
            };
            match self.poll_cancel(association, command.message_id).await {
                Poll::Nothing => {}
                Poll::Cancel => {
                    info!("C-GET cancelled by the peer");
                    cancelled = true;
                }
                Poll::Abort(why) => break Err(Flow::Abort(why)),
                Poll::Closed => break Err(Flow::Closed),
            }
            if cancelled {
                current.forget();
                break Ok(true);
            }
            // read the next instance while this one travels
            next = queue.next().map(|i| prepare(association, &source, i));
            let result = match current.ready().await {
                Err(result) => result,
                Ok((instance, context, data)) => {
                    message_id = message_id.wrapping_add(1);
                    let before = deferred.take();
                    let sent = self
                        .get_one(
                            association,
                            before.as_deref().map(|rsp| (context_id, rsp)),
                            &instance,
                            context,
                            &data,
                            message_id,
                            &mut cancelled,
                        )
                        .await;
                    match sent {
                        Ok(result) => result,
                        Err(flow) => break Err(flow),
                    }
                }
            };
            if let Some(rsp) = deferred.take() {
                // the instance could not be sent: the earlier Pending response goes alone
                if let Flow::Abort(why) = self
                    .send_all(association, &[pending_only(context_id, &rsp)])
                    .await
                {
                    break Err(Flow::Abort(why));
                }
            }
            tally.add(&result);
            if tally.done() < tally.total && !cancelled {
                deferred = Some(response(status::PENDING, Some(tally.counts(true)), None).encode());
            }
        };
        if let Some(n) = next.take() {
            n.forget();
        }
        let cancelled = outcome?;
        if let Some(rsp) = deferred.take() {
            if let Flow::Abort(why) = self
                .send_all(association, &[pending_only(context_id, &rsp)])
                .await
            {
                return Err(Flow::Abort(why));
            }
        }
        Ok(cancelled)
    }

    /// Sends one C-STORE-RQ back to the C-GET requestor and waits for its C-STORE-RSP; a
    /// C-CANCEL may come first (it sets `cancelled`, the store still completes).
    #[allow(clippy::too_many_arguments)]
    async fn get_one<S: Transport>(
        &mut self,
        association: &mut Association<S>,
        before: Option<(u8, &[u8])>,
        instance: &OutgoingInstance,
        context: u8,
        data: &[u8],
        message_id: u16,
        cancelled: &mut bool,
    ) -> Result<InstanceResult, Flow> {
        let request = crate::scu::store_request(instance, message_id, None);
        let command = request.encode();
        let mut messages = Vec::with_capacity(2);
        if let Some((context_id, rsp)) = before {
            messages.push(pending_only(context_id, rsp));
        }
        messages.push(pdata::Outgoing {
            context_id: context,
            command: &command,
            data: Some(data),
        });
        if association.send_messages(&messages).await.is_err() {
            return Err(Flow::Closed);
        }
        loop {
            let pdu = match tokio::time::timeout(self.config.idle_timeout, association.receive())
                .await
            {
                Ok(Ok(pdu)) => pdu,
                Ok(Err(_)) => return Err(Flow::Closed),
                Err(_) => return Err(Flow::Abort("no C-STORE response within the idle timeout")),
            };
            let commands = match self.commands_during_operation(pdu) {
                Ok(c) => c,
                Err(Interrupt::Abort(why)) => return Err(Flow::Abort(why)),
                Err(Interrupt::Closed) => return Err(Flow::Closed),
            };
            for c in commands {
                match c.command_field {
                    field::C_CANCEL_RQ => *cancelled = true,
                    field::C_STORE_RSP if c.message_id_being_responded_to == Some(message_id) => {
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

/// A response command set without a data set, as a message to send.
fn pending_only(context_id: u8, command: &[u8]) -> pdata::Outgoing<'_> {
    pdata::Outgoing {
        context_id,
        command,
        data: None,
    }
}

/// An instance of a C-GET on its way: its presentation context chosen and its data being read,
/// or the reason it cannot be sent.
enum Prepared {
    Loading {
        instance: OutgoingInstance,
        context: u8,
        data: JoinHandle<Result<bytes::Bytes, String>>,
    },
    Failed(InstanceResult),
}

impl Prepared {
    /// Waits for the data: the instance, its context and data set, or its failed result.
    async fn ready(self) -> Result<(OutgoingInstance, u8, bytes::Bytes), InstanceResult> {
        match self {
            Prepared::Failed(result) => Err(result),
            Prepared::Loading {
                instance,
                context,
                data,
            } => match data.await {
                Ok(Ok(bytes)) => Ok((instance, context, bytes)),
                Ok(Err(e)) => Err(failed(&instance, e)),
                Err(e) => Err(failed(
                    &instance,
                    format!("reading the instance failed: {e}"),
                )),
            },
        }
    }

    /// Drops an instance that will not be sent, stopping its read.
    fn forget(self) {
        if let Prepared::Loading { data, .. } = self {
            data.abort();
        }
    }
}

fn failed(instance: &OutgoingInstance, why: String) -> InstanceResult {
    InstanceResult {
        sop_instance_uid: instance.sop_instance_uid.clone(),
        sop_class_uid: instance.sop_class_uid.clone(),
        status: None,
        error: Some(why),
        attempts: 0,
    }
}

/// Chooses the presentation context for a C-GET sub-operation and starts reading the instance
/// in a transfer syntax that context accepted.
fn prepare<S: Transport>(
    association: &Association<S>,
    source: &Arc<dyn InstanceSource>,
    instance: OutgoingInstance,
) -> Prepared {
    // The requestor must have taken the SCP role for this SOP class (PS3.4 C.4.3.1.3).
    if !association.requestor_is_scp(&instance.sop_class_uid) {
        let why = format!(
            "the requestor did not negotiate the SCP role for {}",
            instance.sop_class_uid
        );
        return Prepared::Failed(failed(&instance, why));
    }
    let syntaxes = source.transfer_syntaxes(&instance);
    let Some((context, ts)) = crate::scu::choose_context(
        association.presentation_contexts(),
        &instance.sop_class_uid,
        &syntaxes,
    ) else {
        let why = format!(
            "no accepted presentation context for {} in a transfer syntax this instance can be sent in",
            instance.sop_class_uid
        );
        return Prepared::Failed(failed(&instance, why));
    };
    let source = source.clone();
    let loading = instance.clone();
    let data = tokio::spawn(async move { source.load(&loading, &ts).await });
    Prepared::Loading {
        instance,
        context,
        data,
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
    stored_sop_classes: Vec<String>,
}

impl Tally {
    fn new(total: usize) -> Self {
        Tally {
            total,
            completed: 0,
            failed: 0,
            warning: 0,
            failed_uids: Vec::new(),
            stored_sop_classes: Vec::new(),
        }
    }

    fn add(&mut self, result: &InstanceResult) {
        if result.kind() != SubOperation::Failed {
            self.stored_sop_classes.push(result.sop_class_uid.clone());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_status_follows_the_counts() {
        let counts = |completed, failed, warning| SubOperationCounts {
            remaining: None,
            completed,
            failed,
            warning,
        };
        assert_eq!(retrieve_status(&counts(3, 0, 0), false), status::SUCCESS);
        assert_eq!(
            retrieve_status(&counts(2, 1, 0), false),
            status::SUBOPERATIONS_WITH_FAILURES
        );
        assert_eq!(
            retrieve_status(&counts(0, 0, 1), false),
            status::SUBOPERATIONS_WITH_FAILURES
        );
        assert_eq!(
            retrieve_status(&counts(0, 3, 0), false),
            status::UNABLE_TO_PERFORM_SUBOPERATIONS
        );
        assert_eq!(retrieve_status(&counts(3, 0, 0), true), status::CANCEL);
    }
}
