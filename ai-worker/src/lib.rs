//! The AI worker of the PACS node: leases analysis jobs from a node over HTTP, fetches the series
//! through WADO-RS, runs an ONNX model on the assembled volume and writes the result back as a
//! DICOM Segmentation and a TID 1500 SR measurement report through STOW-RS.

pub mod analysis;
pub mod dicom_out;
pub mod inference;
pub mod measure;
pub mod model;
pub mod node_client;
pub mod postprocess;
pub mod volume;
pub mod worker;
