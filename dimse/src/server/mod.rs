//! The association acceptor (the node as SCP), one module per concern:
//!
//! - [`listener`]: TCP listener, busy rejection, ARTIM, what is negotiated and who may
//!   associate (AE titles, address, user identity);
//! - [`association`]: the Upper Layer protocol of the acceptor: A-ASSOCIATE-RQ in, -AC or -RJ
//!   out (with the User Identity response, PS3.7 D.3.3.7), then the PDUs of the association;
//! - [`pdu_reader`]: PDUs off the wire, each parsed once it has arrived whole;
//! - [`session`]: the per-association loop, P-DATA reassembly and spill to file, dispatch;
//! - `echo`, `store`, `find`, `retrieve`: the services (Verification, Storage, Query/Retrieve
//!   FIND, MOVE and GET).

pub mod association;
mod echo;
mod find;
pub mod listener;
pub mod pdu_reader;
mod retrieve;
pub(crate) mod session;
mod store;

pub use association::Transport;
pub use listener::{
    acceptor_settings, rejection, DimseConfig, DimseServer, TlsListener,
    ACCEPTED_TRANSFER_SYNTAXES, FIND_SOP_CLASSES, GET_SOP_CLASSES, MOVE_SOP_CLASSES,
};
