//! Storage SCP (PS3.4 Annex B): C-STORE.

use tracing::warn;

use super::session::{Message, Session};
use crate::command::{field, status, Response};
use crate::service::{Operation, StoreRequest};

impl Session {
    /// Hands a C-STORE-RQ and its data set to the archive and answers with its status.
    pub(super) async fn store(&mut self, request: Message) -> Response {
        let Message {
            command,
            abstract_syntax,
            transfer_syntax,
            dataset,
            ..
        } = request;
        let mut rsp = Response::to(&command, field::C_STORE_RSP, status::SUCCESS);
        let fail = |mut rsp: Response, code: u16, why: &str| {
            rsp.status = code;
            rsp.error_comment = Some(why.to_string());
            rsp
        };
        if !self.grant.permits(Operation::Store) {
            warn!(
                calling = %self.peer.calling_ae_title,
                user = self.grant.user.as_deref(),
                "C-STORE not permitted"
            );
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
            user: self.grant.user.clone(),
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid: transfer_syntax,
            dataset,
        };
        let received = request.dataset.len();
        let outcome = self.service.store(request).await;
        if matches!(
            crate::metrics::status_class(outcome.status),
            "success" | "warning"
        ) {
            self.counted.received(received);
        }
        rsp.status = outcome.status;
        rsp.error_comment = outcome.error_comment;
        rsp
    }
}
