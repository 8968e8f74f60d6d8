//! DIMSE front-end of the PACS node: association negotiation, PDUs and DIMSE messages (PS3.7,
//! PS3.8) on top of `dicom-ul`. It knows the protocol, not the archive: everything it needs from
//! the archive goes through the [`DimseService`] trait.

pub mod command;
pub mod dataset;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod nesting;
pub mod pdata;
pub mod scu;
pub mod server;
pub mod service;
pub mod sop_classes;
mod spill_room;
pub mod tls;

pub use server::{DimseConfig, DimseServer, TlsListener};
pub use service::{
    AssociationGrant, AssociationPeer, AssociationRefusal, DimseService, FindOutcome, FindRequest,
    IdentityOffer, InstanceSource, OfferedIdentity, Operation, OutgoingInstance, ReceivedDataset,
    RetrieveOutcome, RetrieveReport, RetrieveRequest, StoreOutcome, StoreRequest,
};
