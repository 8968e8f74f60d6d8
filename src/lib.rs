//! The PACS node's core: configuration, the index, object storage, ingest and the wiring that
//! puts the DIMSE (`pacs-dimse`) and HTTP (`pacs-dicomweb`) front-ends in front of them.

pub mod admin_api;
pub mod ae_registry;
pub mod ai;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod deid;
pub mod dicomweb_service;
pub mod dimse_service;
pub mod documents;
pub mod export;
pub mod find;
pub mod fsck;
#[doc(hidden)]
pub mod fuzzing;
pub mod http_server;
pub mod index;
pub mod ingest;
pub mod measurements;
pub mod metrics;
pub mod node;
pub mod nodes;
pub mod ops;
pub mod pixels;
pub mod query;
pub mod retrieve;
pub mod storage;
pub mod tls;
pub mod uid;
