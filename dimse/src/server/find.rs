//! Query/Retrieve FIND SCP (PS3.4 C.4.1): C-FIND.

use tracing::{info, warn};

use super::association::{Association, Transport};
use super::session::{read_identifier, Flow, Message, Poll, Session};
use crate::command::{field, status, Response};
use crate::pdata::Outgoing;
use crate::service::{FindOutcome, FindRequest, Operation};

/// Pending responses sent in one write, at most: few enough that a C-CANCEL sent right behind
/// the request stops the answer early, many enough that a hundred matches take a handful of
/// system calls rather than two hundred.
const RESPONSES_PER_WRITE: usize = 16;
/// Identifier bytes sent in one write, at most.
const BYTES_PER_WRITE: usize = 256 * 1024;

impl Session {
    /// C-FIND SCP (PS3.4 C.4.1): one Pending response per match, each with its identifier,
    /// then the final status. The responses go out in batches; a C-CANCEL is looked for before
    /// each batch.
    pub(super) async fn find<S: Transport>(
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
        let final_response = |status: u16, comment: Option<String>| {
            let mut rsp = Response::to(&command, field::C_FIND_RSP, status);
            rsp.affected_sop_class_uid = Some(abstract_syntax.clone());
            rsp.affected_sop_instance_uid = None;
            rsp.error_comment = comment;
            rsp
        };
        use dicom_encoding::TransferSyntaxIndex;
        let Some(ts) = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&transfer_syntax)
        else {
            let rsp = final_response(
                status::UNABLE_TO_PROCESS,
                Some("unknown transfer syntax".into()),
            );
            return self
                .send_response(association, context_id, &rsp, None)
                .await;
        };
        let outcome = if !self.grant.permits(Operation::Find) {
            warn!(
                calling = %self.peer.calling_ae_title,
                user = self.grant.user.as_deref(),
                "C-FIND not permitted"
            );
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
                            user: self.grant.user.clone(),
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
        info!(matches = matches.len(), "C-FIND");
        // every Pending response has the same command set
        let mut pending = final_response(status::PENDING, None);
        pending.has_dataset = true;
        let pending = pending.encode();
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(RESPONSES_PER_WRITE);
        let mut matches = matches.into_iter().peekable();
        while matches.peek().is_some() {
            match self.poll_cancel(association, command.message_id).await {
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
            batch.clear();
            let mut batch_bytes = 0;
            while batch.len() < RESPONSES_PER_WRITE && batch_bytes < BYTES_PER_WRITE {
                let Some(identifier) = matches.next() else {
                    break;
                };
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
                batch_bytes += bytes.len();
                batch.push(bytes);
            }
            let messages: Vec<Outgoing<'_>> = batch
                .iter()
                .map(|identifier| Outgoing {
                    context_id,
                    command: &pending,
                    data: Some(identifier),
                })
                .collect();
            if let Flow::Abort(why) = self.send_all(association, &messages).await {
                return Flow::Abort(why);
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
}
