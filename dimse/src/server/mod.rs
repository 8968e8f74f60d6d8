//! The association acceptor (the node as SCP), one module per concern:
//!
//! - [`listener`]: TCP listener, busy rejection, ARTIM, association negotiation and access
//!   control;
//! - [`session`]: the per-association loop, P-DATA reassembly and spill to file, dispatch;
//! - `echo`, `store`, `find`, `retrieve`: the services (Verification, Storage, Query/Retrieve
//!   FIND, MOVE and GET).

mod echo;
mod find;
pub mod listener;
mod retrieve;
pub(crate) mod session;
mod store;

pub use listener::{
    refusal_reason, DimseConfig, DimseServer, PolicyCheck, RoleNegotiation,
    ACCEPTED_TRANSFER_SYNTAXES, FIND_SOP_CLASSES, GET_SOP_CLASSES, MOVE_SOP_CLASSES,
};
