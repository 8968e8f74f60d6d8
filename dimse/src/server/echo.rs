//! Verification SCP (PS3.4 Annex A): C-ECHO.

use tracing::warn;

use super::session::{Message, Session};
use crate::command::{field, status, Response};
use crate::service::Operation;

impl Session {
    /// Answers a C-ECHO-RQ: Success, or Not Authorized when the AE may not echo.
    pub(super) fn echo(&self, request: &Message) -> Response {
        let status = if self.grant.permits(Operation::Echo) {
            status::SUCCESS
        } else {
            warn!(
                calling = %self.peer.calling_ae_title,
                user = self.grant.user.as_deref(),
                "C-ECHO not permitted"
            );
            status::NOT_AUTHORIZED
        };
        let mut rsp = Response::to(&request.command, field::C_ECHO_RSP, status);
        if rsp.affected_sop_class_uid.is_none() {
            rsp.affected_sop_class_uid = Some(request.abstract_syntax.clone());
        }
        rsp
    }
}
