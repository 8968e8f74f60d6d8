//! What the DIMSE front-end counts, through the `metrics` facade: the node installs the
//! recorder and serves `/metrics`; without one every handle is a no-op.
//!
//! Handles are made once, when the server binds (the gauge, the latency histograms) or when an
//! association is accepted (its calling AE's counters), so a message costs an atomic add and
//! no label is built per PDU. Calling AE titles come from the network: at most
//! [`MAX_AE_LABELS`] distinct ones become label values, later ones count under `_other`, so a
//! peer inventing titles cannot grow the exposition without bound.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString};

use crate::command::{field, status};

/// Metrics of this crate: name, kind, help (the node describes them and documents them).
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        ASSOCIATIONS_ACTIVE,
        "gauge",
        "DIMSE associations established and not yet ended",
    ),
    (
        ASSOCIATIONS_ACCEPTED,
        "counter",
        "DIMSE associations accepted, by calling AE title",
    ),
    (
        ASSOCIATIONS_REJECTED,
        "counter",
        "DIMSE associations refused (A-ASSOCIATE-RJ), by reason and calling AE title",
    ),
    (
        REQUEST_DURATION,
        "histogram",
        "DIMSE operations (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) from the complete request to the final response, by operation and status class",
    ),
    (
        RECEIVED_INSTANCES,
        "counter",
        "Instances received and stored (success or warning status), by protocol (dimse, stow) and calling AE title",
    ),
    (
        RECEIVED_BYTES,
        "counter",
        "Bytes of the instances counted in pacs_received_instances_total (DIMSE: the data set as received; STOW-RS: the part)",
    ),
];

pub const ASSOCIATIONS_ACTIVE: &str = "pacs_dimse_associations_active";
pub const ASSOCIATIONS_ACCEPTED: &str = "pacs_dimse_associations_accepted_total";
pub const ASSOCIATIONS_REJECTED: &str = "pacs_dimse_associations_rejected_total";
pub const REQUEST_DURATION: &str = "pacs_dimse_request_duration_seconds";
/// Shared with the DICOMweb front-end (STOW-RS), which counts under `protocol="stow"`.
pub const RECEIVED_INSTANCES: &str = "pacs_received_instances_total";
pub const RECEIVED_BYTES: &str = "pacs_received_bytes_total";

/// Distinct calling AE titles that become label values.
pub const MAX_AE_LABELS: usize = 512;
/// The label value of titles past [`MAX_AE_LABELS`].
pub const OTHER_AE: &str = "_other";

/// Why an association was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Past `max_associations` or `max_associations_per_host` (transient, local limit exceeded).
    Busy,
    /// A protocol version or application context this node does not speak.
    Protocol,
    /// The Called AE Title is not this node's.
    CalledAeTitle,
    /// The archive refused the calling AE (unknown, wrong host, TLS required).
    CallingAeTitle,
    /// The offered user identity was refused (PS3.7 D.3.3.7).
    Authentication,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Busy => "busy",
            Rejection::Protocol => "protocol",
            Rejection::CalledAeTitle => "called_ae_title",
            Rejection::CallingAeTitle => "calling_ae_title",
            Rejection::Authentication => "authentication",
        }
    }
}

/// The operations timed, in [`DimseMetrics::durations`]' order.
const OPERATIONS: [(u16, &str); 5] = [
    (field::C_ECHO_RQ, "C-ECHO"),
    (field::C_STORE_RQ, "C-STORE"),
    (field::C_FIND_RQ, "C-FIND"),
    (field::C_MOVE_RQ, "C-MOVE"),
    (field::C_GET_RQ, "C-GET"),
];

/// Status classes (PS3.7 Annex C), in [`DimseMetrics::durations`]' order.
const STATUS_CLASSES: [&str; 4] = ["success", "warning", "failure", "cancel"];

/// The class of a final DIMSE status (PS3.7 C.1-C.4): 0000 success; 0001, 0107, 0116 and Bxxx
/// warning; FE00 cancel; anything else failure.
pub fn status_class(code: u16) -> &'static str {
    STATUS_CLASSES[class_index(code)]
}

fn class_index(code: u16) -> usize {
    match code {
        status::SUCCESS => 0,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => 1,
        status::CANCEL => 3,
        _ => 2,
    }
}

/// Whether a status is a final one (not Pending, FF00 / FF01).
pub fn is_final(code: u16) -> bool {
    !matches!(code, 0xFF00 | 0xFF01)
}

/// The server's handles, made when it binds.
pub(crate) struct DimseMetrics {
    active: Gauge,
    /// `[operation][status class]`
    durations: Vec<[Histogram; 4]>,
    labels: AeLabels,
}

impl DimseMetrics {
    pub(crate) fn new() -> Arc<DimseMetrics> {
        let durations = OPERATIONS
            .iter()
            .map(|(_, op)| {
                STATUS_CLASSES.map(|class| {
                    metrics::histogram!(REQUEST_DURATION, "operation" => *op, "status" => class)
                })
            })
            .collect();
        Arc::new(DimseMetrics {
            active: metrics::gauge!(ASSOCIATIONS_ACTIVE),
            durations,
            labels: AeLabels::default(),
        })
    }

    /// An association was refused; `calling` when it was read.
    pub(crate) fn rejected(&self, reason: Rejection, calling: &str) {
        let ae = self.labels.get(calling);
        metrics::counter!(ASSOCIATIONS_REJECTED, "reason" => reason.label(), "calling_ae" => ae)
            .increment(1);
    }

    /// An association was accepted: the active gauge goes up until the returned value is
    /// dropped, and it holds the calling AE's counters.
    pub(crate) fn accepted(&self, calling: &str) -> AssociationMetrics {
        let ae = self.labels.get(calling);
        metrics::counter!(ASSOCIATIONS_ACCEPTED, "calling_ae" => ae.clone()).increment(1);
        self.active.increment(1.0);
        AssociationMetrics {
            active: self.active.clone(),
            instances: metrics::counter!(RECEIVED_INSTANCES, "protocol" => "dimse", "calling_ae" => ae.clone()),
            bytes: metrics::counter!(RECEIVED_BYTES, "protocol" => "dimse", "calling_ae" => ae),
        }
    }

    /// One operation's time, from its complete request to its final response.
    pub(crate) fn operation(&self, command_field: u16, final_status: u16, took: Duration) {
        if let Some(op) = OPERATIONS.iter().position(|(f, _)| *f == command_field) {
            self.durations[op][class_index(final_status)].record(took.as_secs_f64());
        }
    }
}

/// One association's share: its calling AE's counters, and its place in the active gauge.
pub(crate) struct AssociationMetrics {
    active: Gauge,
    instances: Counter,
    bytes: Counter,
}

impl AssociationMetrics {
    /// An instance stored (success or warning), `bytes` its data set as received.
    pub(crate) fn received(&self, bytes: u64) {
        self.instances.increment(1);
        self.bytes.increment(bytes);
    }
}

impl Drop for AssociationMetrics {
    fn drop(&mut self) {
        self.active.decrement(1.0);
    }
}

/// The calling AE titles that are label values: the first [`MAX_AE_LABELS`] seen.
#[derive(Default)]
struct AeLabels {
    seen: Mutex<HashSet<Arc<str>>>,
}

impl AeLabels {
    fn get(&self, title: &str) -> SharedString {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = seen.get(title) {
            return SharedString::from(known.clone());
        }
        if seen.len() >= MAX_AE_LABELS {
            return SharedString::const_str(OTHER_AE);
        }
        let title: Arc<str> = Arc::from(title);
        seen.insert(title.clone());
        SharedString::from(title)
    }
}

/// The Calling AE Title of a raw A-ASSOCIATE-RQ (PS3.8 Table 9-11: bytes 27-42), when `pdu`
/// starts with one; for the busy rejection, which answers without parsing the request.
pub(crate) fn calling_ae_of_raw_request(pdu: &[u8]) -> Option<&str> {
    if pdu.first() != Some(&0x01) || pdu.len() < 42 {
        return None;
    }
    std::str::from_utf8(&pdu[26..42]).ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_follow_ps3_7_annex_c() {
        assert_eq!(status_class(0x0000), "success");
        assert_eq!(status_class(0xB000), "warning");
        assert_eq!(status_class(0xB007), "warning");
        assert_eq!(status_class(0x0001), "warning");
        assert_eq!(status_class(0xFE00), "cancel");
        assert_eq!(status_class(0xA700), "failure");
        assert_eq!(status_class(0xC000), "failure");
        assert_eq!(status_class(0x0124), "failure");
        assert!(!is_final(0xFF00) && !is_final(0xFF01) && is_final(0xFE00));
    }

    #[test]
    fn ae_labels_are_bounded() {
        let labels = AeLabels::default();
        for i in 0..MAX_AE_LABELS {
            assert_eq!(&*labels.get(&format!("AE{i}")), format!("AE{i}"));
        }
        assert_eq!(&*labels.get("ONE_TOO_MANY"), OTHER_AE);
        // titles already seen keep their own value
        assert_eq!(&*labels.get("AE7"), "AE7");
    }

    #[test]
    fn calling_ae_title_of_a_raw_request() {
        let mut pdu = vec![0x01, 0, 0, 0, 0, 0x44, 0, 1, 0, 0];
        pdu.extend_from_slice(b"PACS            ");
        pdu.extend_from_slice(b"CT1             ");
        assert_eq!(calling_ae_of_raw_request(&pdu), Some("CT1"));
        assert_eq!(calling_ae_of_raw_request(&pdu[..30]), None);
        pdu[0] = 0x02;
        assert_eq!(calling_ae_of_raw_request(&pdu), None);
    }
}
