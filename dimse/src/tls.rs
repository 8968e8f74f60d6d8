//! DIMSE over TLS: secure transport as PS3.15 Annex B has it. The acceptor takes a rustls
//! [`ServerConfig`] for its TLS listener and the SCU a [`ClientConfig`] for AEs reached over
//! TLS; the node builds both (src/tls.rs: BCP 195 / RFC 9325 protocol versions and cipher
//! suites, certificates reloaded when their files change), so this crate knows only the
//! transport.

pub use tokio_rustls::rustls::{ClientConfig, ServerConfig};
