//! The audit trail (issue 13). On this branch only its forwarding to a syslog collector; the
//! events, their XML and their storage in the index come with the audit branch.

pub mod syslog;
