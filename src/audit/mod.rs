//! The audit trail: who saw or changed what, as DICOM audit messages (PS3.15 A.5, the IHE
//! ATNA vocabulary), stored in the index as a hash chain (`crate::index::audit`).
//!
//! # Recording an event
//!
//! Every part of the node holds an [`Audit`] (an `Arc`, cheap to clone) and calls
//! [`Audit::record`] with an [`AuditEvent`]: the event type ([`EventKind`]), its outcome, the
//! active participants, the patient, the studies (SOP classes and instance counts) and, for a
//! query, the query itself. `record` never blocks on the database: a background writer
//! receives events over a bounded channel and appends them in batches (every
//! [`BATCH_RECORDS`] records or [`BATCH_INTERVAL`], one transaction per batch). C-STORE
//! instances are noted with [`Audit::stored`] and grouped per association and study into one
//! DICOM Instances Transferred message per batch.
//!
//! The de-identified export (src/export) records its Data Export event like this:
//!
//! ```no_run
//! # async fn f(audit: &pacs::audit::Audit) {
//! use pacs::audit::{AuditEvent, EventKind, Outcome, Participant, StudyRef};
//! audit.record(
//!     AuditEvent::new(EventKind::Export)
//!         .outcome(Outcome::Success)
//!         .participant(Participant::user("alice", Some("192.0.2.7")).requestor())
//!         .participant(Participant::node("PACS").source())
//!         .participant(Participant::destination_media("research.zip"))
//!         .patient("PID-1", "DOE^JANE")
//!         .study(StudyRef::new("1.2.3").sop_class("1.2.840.10008.5.1.4.1.1.2", 300)),
//! )
//! .await;
//! # }
//! ```
//!
//! [`Audit::shutdown`] flushes what is pending, the Application Activity stop message last.

pub mod api;
pub mod syslog;
pub mod xml;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::index::audit::NewAuditRecord;
use crate::index::Index;

/// A batch is written once it holds this many records...
pub const BATCH_RECORDS: usize = 500;
/// ...or this long after its first record arrived.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Events waiting for the writer; `record` waits when it is full (nothing is dropped).
const CHANNEL: usize = 8192;

/// The event types the node records (PS3.15 A.5.3, CID 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// 110100: node start and stop.
    ApplicationActivity,
    /// 110114: login, logout, failed logins.
    UserAuthentication,
    /// 110112: QIDO-RS, C-FIND (and reading the audit trail).
    Query,
    /// 110103: WADO-RS metadata, frames, rendered, bulk data.
    InstancesAccessed,
    /// 110102: C-MOVE and C-GET about to send, a send to an AE started.
    BeginTransferring,
    /// 110104: C-STORE received, STOW-RS, WADO-RS retrieval of instances.
    InstancesTransferred,
    /// 110106: de-identified export (src/export).
    Export,
    /// 110113: refused associations, bad credentials, refused permissions, changes of AEs,
    /// routes, users, keys and configuration.
    SecurityAlert,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::ApplicationActivity,
        EventKind::UserAuthentication,
        EventKind::Query,
        EventKind::InstancesAccessed,
        EventKind::BeginTransferring,
        EventKind::InstancesTransferred,
        EventKind::Export,
        EventKind::SecurityAlert,
    ];

    /// The name `GET /api/audit?event=` takes and records carry.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ApplicationActivity => "application-activity",
            EventKind::UserAuthentication => "user-authentication",
            EventKind::Query => "query",
            EventKind::InstancesAccessed => "instances-accessed",
            EventKind::BeginTransferring => "begin-transferring",
            EventKind::InstancesTransferred => "instances-transferred",
            EventKind::Export => "export",
            EventKind::SecurityAlert => "security-alert",
        }
    }

    pub fn named(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// EventID (DCM).
    pub fn code(self) -> Code {
        match self {
            EventKind::ApplicationActivity => Code::dcm("110100", "Application Activity"),
            EventKind::UserAuthentication => Code::dcm("110114", "User Authentication"),
            EventKind::Query => Code::dcm("110112", "Query"),
            EventKind::InstancesAccessed => Code::dcm("110103", "DICOM Instances Accessed"),
            EventKind::BeginTransferring => {
                Code::dcm("110102", "Begin Transferring DICOM Instances")
            }
            EventKind::InstancesTransferred => Code::dcm("110104", "DICOM Instances Transferred"),
            EventKind::Export => Code::dcm("110106", "Export"),
            EventKind::SecurityAlert => Code::dcm("110113", "Security Alert"),
        }
    }

    /// The EventActionCode A.5.3 gives the event by default.
    fn default_action(self) -> Action {
        match self {
            EventKind::ApplicationActivity
            | EventKind::UserAuthentication
            | EventKind::Query
            | EventKind::BeginTransferring
            | EventKind::SecurityAlert => Action::Execute,
            EventKind::InstancesAccessed | EventKind::InstancesTransferred | EventKind::Export => {
                Action::Read
            }
        }
    }
}

/// A coded value (csd-code, codeSystemName, originalText).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub code: String,
    pub system: String,
    pub meaning: String,
}

impl Code {
    pub fn new(code: &str, system: &str, meaning: &str) -> Code {
        Code {
            code: code.into(),
            system: system.into(),
            meaning: meaning.into(),
        }
    }

    pub fn dcm(code: &str, meaning: &str) -> Code {
        Code::new(code, "DCM", meaning)
    }

    pub fn rfc3881(code: &str, meaning: &str) -> Code {
        Code::new(code, "RFC-3881", meaning)
    }

    /// A role or permission of the node's access model (src/auth/permissions.rs) as a
    /// RoleIDCode: PS3.15 A.5.1 lets RoleIDCode carry "the role(s) the user plays ... as
    /// assigned in role-based access control security", in a local coding scheme.
    pub fn access_role(name: &str) -> Code {
        Code::new(name, "PACS-ACCESS", &format!("PACS access: {name}"))
    }
}

/// Event type codes (CID 401 Audit Event Type codes, CID 403 Security Alert types).
pub mod types {
    use super::Code;
    pub fn application_start() -> Code {
        Code::dcm("110120", "Application Start")
    }
    pub fn application_stop() -> Code {
        Code::dcm("110121", "Application Stop")
    }
    pub fn login() -> Code {
        Code::dcm("110122", "Login")
    }
    pub fn logout() -> Code {
        Code::dcm("110123", "Logout")
    }
    pub fn node_authentication() -> Code {
        Code::dcm("110126", "Node Authentication")
    }
    pub fn network_configuration() -> Code {
        Code::dcm("110128", "Network Configuration")
    }
    pub fn security_configuration() -> Code {
        Code::dcm("110129", "Security Configuration")
    }
    pub fn software_configuration() -> Code {
        Code::dcm("110131", "Software Configuration")
    }
    pub fn use_of_restricted_function() -> Code {
        Code::dcm("110132", "Use of Restricted Function")
    }
    pub fn security_roles_changed() -> Code {
        Code::dcm("110136", "Security Roles Changed")
    }
    pub fn user_security_attributes_changed() -> Code {
        Code::dcm("110137", "User security Attributes Changed")
    }
}

/// EventActionCode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl Action {
    pub fn letter(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Delete => "D",
            Action::Execute => "E",
        }
    }
}

/// EventOutcomeIndicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0
    Success,
    /// 4
    MinorFailure,
    /// 8
    SeriousFailure,
    /// 12
    MajorFailure,
}

impl Outcome {
    pub fn indicator(self) -> i64 {
        match self {
            Outcome::Success => 0,
            Outcome::MinorFailure => 4,
            Outcome::SeriousFailure => 8,
            Outcome::MajorFailure => 12,
        }
    }
}

/// An ActiveParticipant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub user_id: String,
    pub alternative_user_id: Option<String>,
    pub user_name: Option<String>,
    pub requestor: bool,
    /// An IP address (NetworkAccessPointTypeCode 2) or a host name (1).
    pub address: Option<String>,
    pub roles: Vec<Code>,
    /// A user (as opposed to an AE or the node): what records' `user` column holds.
    pub is_user: bool,
    /// An AE title: what records' `ae` column holds.
    pub is_ae: bool,
    /// A MediaIdentifier (a file export).
    pub media: Option<Code>,
}

impl Participant {
    /// An authenticated user (or `anonymous`) at an address.
    pub fn user(name: &str, address: Option<&str>) -> Participant {
        Participant {
            user_id: name.to_string(),
            alternative_user_id: None,
            user_name: None,
            requestor: false,
            address: address.map(str::to_string),
            roles: Vec::new(),
            is_user: true,
            is_ae: false,
            media: None,
        }
    }

    /// A remote AE at an address.
    pub fn ae(title: &str, address: Option<&str>) -> Participant {
        Participant {
            is_user: false,
            is_ae: true,
            ..Participant::user(title, address)
        }
    }

    /// This node (its AE title), the process that reports.
    pub fn node(ae_title: &str) -> Participant {
        Participant {
            is_user: false,
            alternative_user_id: Some(std::process::id().to_string()),
            ..Participant::user(ae_title, None)
        }
    }

    /// A file or folder written (a ZIP export): Destination Media.
    pub fn destination_media(name: &str) -> Participant {
        Participant {
            is_user: false,
            roles: vec![Code::dcm("110154", "Destination Media")],
            media: Some(Code::dcm("110030", "USB Disk Emulation")),
            ..Participant::user(name, None)
        }
    }

    pub fn requestor(mut self) -> Self {
        self.requestor = true;
        self
    }

    pub fn role(mut self, role: Code) -> Self {
        self.roles.push(role);
        self
    }

    /// Role 110153 Source Role ID.
    pub fn source(self) -> Self {
        self.role(Code::dcm("110153", "Source Role ID"))
    }

    /// Role 110152 Destination Role ID.
    pub fn destination(self) -> Self {
        self.role(Code::dcm("110152", "Destination Role ID"))
    }

    /// Role 110150 Application.
    pub fn application(self) -> Self {
        self.role(Code::dcm("110150", "Application"))
    }

    /// Role 110151 Application Launcher.
    pub fn launcher(self) -> Self {
        self.role(Code::dcm("110151", "Application Launcher"))
    }

    pub fn with_user_name(mut self, name: &str) -> Self {
        self.user_name = Some(name.to_string());
        self
    }
}

/// A study in a message, with the SOP classes of its instances concerned and their counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyRef {
    pub uid: String,
    pub sop_classes: Vec<(String, u64)>,
    pub accession: Option<String>,
}

impl StudyRef {
    pub fn new(uid: &str) -> StudyRef {
        StudyRef {
            uid: uid.to_string(),
            ..Default::default()
        }
    }

    /// Adds `count` instances of a SOP class.
    pub fn sop_class(mut self, uid: &str, count: u64) -> Self {
        self.add(uid, count);
        self
    }

    pub fn add(&mut self, sop_class: &str, count: u64) {
        match self.sop_classes.iter_mut().find(|(c, _)| c == sop_class) {
            Some((_, n)) => *n += count,
            None => self.sop_classes.push((sop_class.to_string(), count)),
        }
    }

    pub fn instances(&self) -> u64 {
        self.sop_classes.iter().map(|(_, n)| n).sum()
    }
}

/// A participant object other than the patient and the studies: the query, a changed AE,
/// user, key, route or setting, a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub id: String,
    pub id_type: Code,
    /// ParticipantObjectTypeCode: 1 person, 2 system object, 3 organisation, 4 other.
    pub type_code: u8,
    /// ParticipantObjectTypeCodeRole.
    pub role: Option<u8>,
    pub name: Option<String>,
    /// ParticipantObjectQuery (base64 in the XML).
    pub query: Option<Vec<u8>>,
    /// ParticipantObjectDetail type/value pairs (values base64 in the XML).
    pub details: Vec<(String, Vec<u8>)>,
}

impl ObjectRef {
    /// A query: the SOP class it was made under, and the query itself (a C-FIND identifier,
    /// a QIDO query string).
    pub fn query(sop_class: &str, query: Vec<u8>) -> ObjectRef {
        ObjectRef {
            id: sop_class.to_string(),
            id_type: Code::dcm("110181", "SOP Class UID"),
            type_code: 2,
            role: Some(3),
            name: None,
            query: Some(query),
            details: Vec::new(),
        }
    }

    /// A node (an AE title, a host), e.g. a changed AE or one refused.
    pub fn node(id: &str) -> ObjectRef {
        ObjectRef {
            id: id.to_string(),
            id_type: Code::dcm("110182", "Node ID"),
            type_code: 2,
            role: Some(13),
            name: Some(id.to_string()),
            query: None,
            details: Vec::new(),
        }
    }

    /// A user or key (Security User Entity).
    pub fn user(id: &str) -> ObjectRef {
        ObjectRef {
            id: id.to_string(),
            id_type: Code::rfc3881("11", "User Identifier"),
            type_code: 1,
            role: Some(11),
            name: Some(id.to_string()),
            query: None,
            details: Vec::new(),
        }
    }

    /// A URI (a refused request's route, a setting).
    pub fn uri(uri: &str) -> ObjectRef {
        ObjectRef {
            id: uri.to_string(),
            id_type: Code::rfc3881("12", "URI"),
            type_code: 2,
            role: Some(13),
            name: Some(uri.to_string()),
            query: None,
            details: Vec::new(),
        }
    }

    pub fn detail(mut self, kind: &str, value: impl Into<Vec<u8>>) -> Self {
        self.details.push((kind.to_string(), value.into()));
        self
    }
}

/// One audit event: everything its message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub kind: EventKind,
    pub action: Action,
    pub type_code: Option<Code>,
    pub outcome: Outcome,
    pub outcome_description: Option<String>,
    /// When it happened (ms since the epoch); now when not set.
    pub time_ms: i64,
    pub participants: Vec<Participant>,
    /// (ID, name)
    pub patient: Option<(String, String)>,
    pub studies: Vec<StudyRef>,
    pub objects: Vec<ObjectRef>,
}

impl AuditEvent {
    pub fn new(kind: EventKind) -> AuditEvent {
        AuditEvent {
            kind,
            action: kind.default_action(),
            type_code: None,
            outcome: Outcome::Success,
            outcome_description: None,
            time_ms: crate::index::sqlite::now_ms(),
            participants: Vec::new(),
            patient: None,
            studies: Vec::new(),
            objects: Vec::new(),
        }
    }

    pub fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    pub fn type_code(mut self, code: Code) -> Self {
        self.type_code = Some(code);
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// A failure with its description.
    pub fn failed(mut self, outcome: Outcome, why: impl Into<String>) -> Self {
        self.outcome = outcome;
        self.outcome_description = Some(why.into());
        self
    }

    pub fn participant(mut self, p: Participant) -> Self {
        self.participants.push(p);
        self
    }

    pub fn patient(mut self, id: &str, name: &str) -> Self {
        if !id.is_empty() || !name.is_empty() {
            self.patient = Some((id.to_string(), name.to_string()));
        }
        self
    }

    pub fn study(mut self, study: StudyRef) -> Self {
        if !study.uid.is_empty() {
            self.studies.push(study);
        }
        self
    }

    pub fn object(mut self, object: ObjectRef) -> Self {
        self.objects.push(object);
        self
    }

    /// The searchable columns and the message of this event, as the index stores it.
    pub fn to_record(&self, source_id: &str) -> NewAuditRecord {
        let requestor = self
            .participants
            .iter()
            .find(|p| p.requestor)
            .or(self.participants.first());
        let user = self
            .participants
            .iter()
            .find(|p| p.is_user)
            .map(|p| p.user_id.clone())
            .unwrap_or_default();
        let ae = self
            .participants
            .iter()
            .find(|p| p.is_ae)
            .map(|p| p.user_id.clone())
            .unwrap_or_default();
        let (patient_id, patient_name) = self.patient.clone().unwrap_or_default();
        NewAuditRecord {
            time_ms: self.time_ms,
            event: self.kind.name().to_string(),
            outcome: self.outcome.indicator(),
            user,
            ae,
            address: requestor
                .and_then(|p| p.address.clone())
                .unwrap_or_default(),
            patient_id,
            patient_name,
            study_uids: self.studies.iter().map(|s| s.uid.clone()).collect(),
            xml: xml::message(self, source_id),
        }
    }
}

/// An instance received (C-STORE, STOW-RS) or read (WADO-RS metadata, frames, rendered, bulk
/// data), noted for the grouped message of its association or caller and study: DICOM
/// Instances Transferred for `EventKind::InstancesTransferred`, DICOM Instances Accessed for
/// `EventKind::InstancesAccessed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNote {
    pub event: EventKind,
    pub association_id: u64,
    pub calling_ae_title: String,
    pub user: Option<String>,
    pub address: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_uid: String,
    pub sop_class_uid: String,
    /// Counted once per group however often it is noted (a frame read after frame).
    pub sop_instance_uid: String,
    pub success: bool,
    /// The requestor's access (roles or permissions), as RoleIDCodes.
    pub roles: Vec<String>,
}

impl StoredNote {
    /// A note of `event` by an HTTP caller (user, address, permissions from its identity), to
    /// be completed with the patient, study and instance: `StoredNote { .., ..by_http(..) }`.
    pub fn by_http(event: EventKind, identity: &pacs_dicomweb::Identity) -> StoredNote {
        StoredNote {
            event,
            association_id: 0,
            calling_ae_title: String::new(),
            user: Some(identity.principal.name()),
            address: identity
                .peer
                .map(|p| p.ip().to_string())
                .unwrap_or_default(),
            patient_id: String::new(),
            patient_name: String::new(),
            study_uid: String::new(),
            sop_class_uid: String::new(),
            sop_instance_uid: String::new(),
            success: true,
            roles: identity
                .permissions
                .iter()
                .map(|p| p.name().to_string())
                .collect(),
        }
    }
}

enum Msg {
    Event(Box<AuditEvent>),
    Stored(Box<StoredNote>),
    Flush(oneshot::Sender<()>),
}

/// The node's audit trail: where events are recorded. Off (`--audit false`), it records
/// nothing.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
    /// This node's AE title: AuditSourceID and the node's participant.
    pub node_ae: String,
    writer: Option<Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.enabled())
            .field("node_ae", &self.node_ae)
            .finish()
    }
}

impl Audit {
    /// An audit trail that records nothing (audit off, and tests of other parts).
    pub fn disabled(node_ae: &str) -> Audit {
        Audit {
            tx: None,
            node_ae: node_ae.to_string(),
            writer: None,
        }
    }

    /// Starts the background writer appending to `index`; `appended` (the syslog forwarder's
    /// waker) is notified after every batch written.
    pub fn start(
        index: Arc<dyn Index>,
        node_ae: &str,
        appended: Option<Arc<tokio::sync::Notify>>,
    ) -> Audit {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let writer = tokio::spawn(writer_loop(index, rx, node_ae.to_string(), appended));
        Audit {
            tx: Some(tx),
            node_ae: node_ae.to_string(),
            writer: Some(Arc::new(tokio::sync::Mutex::new(Some(writer)))),
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Records an event (in the next batch). Waits only when the writer is [`CHANNEL`]
    /// events behind.
    pub async fn record(&self, event: AuditEvent) {
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Event(Box::new(event))).await.is_err() {
                tracing::error!("audit writer has stopped: an audit event was lost");
            }
        }
    }

    /// Records an event from code that cannot wait (a synchronous hook): queued at once if
    /// there is room, else by a task.
    pub fn record_now(&self, event: AuditEvent) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer has stopped: an audit event was lost");
            }
        }
    }

    /// Notes a C-STORE instance: instances of one association and study are reported in one
    /// DICOM Instances Transferred message per batch.
    pub async fn stored(&self, note: StoredNote) {
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Stored(Box::new(note))).await.is_err() {
                tracing::error!("audit writer has stopped: an audit event was lost");
            }
        }
    }

    /// Writes everything recorded so far; returns once it is durable.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Records the Application Activity stop, writes everything pending and stops the
    /// writer. Events recorded after this are lost (and logged).
    pub async fn shutdown(&self) {
        if !self.enabled() {
            return;
        }
        // what is pending first, the stop alone in the last batch: last in the chain whatever
        // the wall clock did (batches are ordered by event time within themselves)
        self.flush().await;
        self.record(application_activity(&self.node_ae, false))
            .await;
        self.flush().await;
        if let Some(writer) = &self.writer {
            if let Some(handle) = writer.lock().await.take() {
                handle.abort();
            }
        }
    }
}

/// Data Export (110106, PS3.15 A.5.3.5) of a finished de-identified export: one message per
/// patient, naming the original patient and studies (the trail records whose data left, the
/// export itself carries none of it), the requester as the user, the node as the source and
/// the destination (the ZIP as media, an AE, a STOW-RS URL).
pub fn export_events(node_ae: &str, report: &crate::export::ExportReport) -> Vec<AuditEvent> {
    let address = Some(report.address.as_str()).filter(|a| !a.is_empty());
    let user = if report.requested_by.is_empty() {
        "anonymous"
    } else {
        report.requested_by.as_str()
    };
    let destination = match report.destination.split_once(':') {
        Some(("ae", title)) => Participant::ae(title, None).destination(),
        Some(("stow", url)) => Participant::user(url, None).destination(),
        _ => Participant::destination_media(&format!("export {} (zip)", report.id)),
    };
    let mut patients: Vec<&str> = report
        .studies
        .iter()
        .map(|s| s.original_patient_id.as_str())
        .collect();
    patients.sort_unstable();
    patients.dedup();
    patients
        .into_iter()
        .map(|patient| {
            let mut event = AuditEvent::new(EventKind::Export)
                .participant(Participant::user(user, address).requestor())
                .participant(Participant::node(node_ae).source())
                .participant(destination.clone())
                .patient(patient, "");
            for study in report
                .studies
                .iter()
                .filter(|s| s.original_patient_id == patient)
            {
                let mut reference = StudyRef::new(&study.original_study_instance_uid);
                for (class, count) in &study.sop_classes {
                    reference = reference.sop_class(class, *count);
                }
                event = event.study(reference);
            }
            match report.outcome.as_str() {
                "succeeded" => event,
                "cancelled" => event.failed(Outcome::MinorFailure, "export cancelled"),
                _ if report.instances_done > 0 => event.failed(
                    Outcome::MinorFailure,
                    format!(
                        "{} instances exported, {} failed: {}",
                        report.instances_done, report.instances_failed, report.error
                    ),
                ),
                _ => event.failed(Outcome::SeriousFailure, report.error.clone()),
            }
        })
        .collect()
}

/// At start: when the node's effective configuration (`Settings::configuration`, secrets
/// hidden) differs from the one recorded at its previous start, a Security Alert (Software
/// Configuration) holding the new configuration and the digest of the previous one. This is
/// how changes made in the configuration file, the environment or the command line reach the
/// trail: the node reads them only at start.
pub async fn record_configuration(audit: &Audit, index: &Arc<dyn Index>, configuration: &str) {
    if !audit.enabled() {
        return;
    }
    let digest = {
        let d = ring::digest::digest(&ring::digest::SHA256, configuration.as_bytes());
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let key = format!("audit.configuration.{}", audit.node_ae);
    let previous = match index.setting(&key).await {
        Ok(previous) => previous,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the configuration recorded at the last start");
            return;
        }
    };
    if previous.as_deref() == Some(digest.as_str()) {
        return;
    }
    let os_user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    audit
        .record(
            AuditEvent::new(EventKind::SecurityAlert)
                .type_code(types::software_configuration())
                .participant(Participant::user(&format!("os:{os_user}"), None).requestor())
                .participant(Participant::node(&audit.node_ae))
                .object(
                    ObjectRef::node(&audit.node_ae)
                        .detail("Configuration", configuration)
                        .detail("ConfigurationDigest", digest.as_str())
                        .detail(
                            "PreviousConfigurationDigest",
                            previous.as_deref().unwrap_or("none"),
                        ),
                ),
        )
        .await;
    // the digest is kept only once the alert is durable: a node stopped in between records the
    // change again at its next start instead of never
    audit.flush().await;
    if let Err(e) = index.set_setting(&key, &digest).await {
        tracing::warn!(error = %e, "cannot keep the configuration digest");
    }
}

/// Application Activity (110100): the node started or stopped.
pub fn application_activity(node_ae: &str, start: bool) -> AuditEvent {
    let user = std::env::var("USER").unwrap_or_else(|_| "pacs".into());
    AuditEvent::new(EventKind::ApplicationActivity)
        .type_code(if start {
            types::application_start()
        } else {
            types::application_stop()
        })
        .participant(Participant::node(node_ae).application())
        .participant(Participant {
            is_user: true,
            ..Participant::user(&user, None).requestor().launcher()
        })
}

#[derive(Hash, PartialEq, Eq)]
struct GroupKey {
    event: EventKind,
    association_id: u64,
    /// the calling AE, the user and the address (STOW-RS requests have no association)
    requestor: (String, Option<String>, String),
    study_uid: String,
    success: bool,
}

struct Group {
    first: StoredNote,
    study: StudyRef,
    time_ms: i64,
    /// When the writer received its first instance, among all it received (see
    /// [`write_batch`]).
    arrival: u64,
    instances: std::collections::HashSet<String>,
}

fn group_event(node_ae: &str, g: Group) -> AuditEvent {
    let n = &g.first;
    if n.event == EventKind::InstancesAccessed {
        let address = Some(n.address.as_str()).filter(|a| !a.is_empty());
        let user = n.user.clone().unwrap_or_else(|| "anonymous".into());
        let mut requestor = Participant::user(&user, address).requestor();
        for role in &n.roles {
            requestor = requestor.role(Code::access_role(role));
        }
        let mut event = AuditEvent::new(EventKind::InstancesAccessed)
            .participant(requestor)
            .participant(Participant::node(node_ae))
            .patient(&n.patient_id, &n.patient_name)
            .study(g.study);
        if !n.success {
            event = event.failed(Outcome::MinorFailure, "read refused");
        }
        event.time_ms = g.time_ms;
        return event;
    }
    let address = Some(n.address.as_str()).filter(|a| !a.is_empty());
    let mut source = match &n.user {
        Some(user) => Participant {
            alternative_user_id: Some(n.calling_ae_title.clone()).filter(|a| !a.is_empty()),
            ..Participant::user(user, address)
        },
        None => Participant::ae(&n.calling_ae_title, address),
    };
    for role in &n.roles {
        source = source.role(Code::access_role(role));
    }
    let mut event = AuditEvent::new(EventKind::InstancesTransferred)
        .action(Action::Create)
        .participant(source.requestor().source())
        .participant(Participant::node(node_ae).destination())
        .patient(&n.patient_id, &n.patient_name)
        .study(g.study);
    if n.user.is_some() && !n.calling_ae_title.is_empty() {
        // the AE the user worked at, as a participant of its own too
        event = event.participant(Participant::ae(&n.calling_ae_title, address));
    }
    if !n.success {
        event = event.failed(Outcome::MinorFailure, "instances refused");
    }
    event.time_ms = g.time_ms;
    event
}

async fn writer_loop(
    index: Arc<dyn Index>,
    mut rx: mpsc::Receiver<Msg>,
    node_ae: String,
    appended: Option<Arc<tokio::sync::Notify>>,
) {
    // each record and group numbered as it arrives: the order of the trail
    let mut arrivals: u64 = 0;
    let mut pending: Vec<(u64, NewAuditRecord)> = Vec::new();
    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let msg = match deadline {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(msg) => msg,
                Err(_) => {
                    write_batch(&index, &node_ae, &mut pending, &mut groups, &appended).await;
                    deadline = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(msg) = msg else {
            write_batch(&index, &node_ae, &mut pending, &mut groups, &appended).await;
            return;
        };
        match msg {
            Msg::Event(event) => {
                arrivals += 1;
                pending.push((arrivals, event.to_record(&node_ae)));
            }
            Msg::Stored(note) => {
                let key = GroupKey {
                    event: note.event,
                    association_id: note.association_id,
                    requestor: (
                        note.calling_ae_title.clone(),
                        note.user.clone(),
                        note.address.clone(),
                    ),
                    study_uid: note.study_uid.clone(),
                    success: note.success,
                };
                let group = groups.entry(key).or_insert_with(|| {
                    arrivals += 1;
                    Group {
                        study: StudyRef::new(&note.study_uid),
                        first: (*note).clone(),
                        time_ms: crate::index::sqlite::now_ms(),
                        arrival: arrivals,
                        instances: Default::default(),
                    }
                });
                if note.sop_instance_uid.is_empty()
                    || group.instances.insert(note.sop_instance_uid.clone())
                {
                    group.study.add(&note.sop_class_uid, 1);
                }
            }
            Msg::Flush(done) => {
                waiting.push(done);
                write_batch(&index, &node_ae, &mut pending, &mut groups, &appended).await;
                deadline = None;
                for w in waiting.drain(..) {
                    let _ = w.send(());
                }
                continue;
            }
        }
        if pending.len() + groups.len() >= BATCH_RECORDS {
            write_batch(&index, &node_ae, &mut pending, &mut groups, &appended).await;
            deadline = None;
        } else if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + BATCH_INTERVAL);
        }
    }
}

/// Appends the batch in one transaction; retried (the records are kept) while the index is
/// unavailable, so that an outage delays the trail but does not cut it. Records are chained in
/// the order the writer received them (a group of stored instances where its first instance
/// came), never by their clock times: the wall clock may step back.
async fn write_batch(
    index: &Arc<dyn Index>,
    node_ae: &str,
    pending: &mut Vec<(u64, NewAuditRecord)>,
    groups: &mut HashMap<GroupKey, Group>,
    appended: &Option<Arc<tokio::sync::Notify>>,
) {
    pending.extend(groups.drain().map(|(_, g)| {
        let arrival = g.arrival;
        (arrival, group_event(node_ae, g).to_record(node_ae))
    }));
    if pending.is_empty() {
        return;
    }
    pending.sort_by_key(|(arrival, _)| *arrival);
    let mut delay = Duration::from_millis(100);
    for attempt in 0..8 {
        let records = pending.iter().map(|(_, r)| r.clone()).collect();
        match index.append_audit(records).await {
            Ok(_) => {
                pending.clear();
                if let Some(appended) = appended {
                    appended.notify_one();
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, records = pending.len(), "cannot write the audit trail; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(
        records = pending.len(),
        "audit records kept in memory: the index refuses them"
    );
}

/// Who an HTTP caller is, as a participant: the principal's name, or `anonymous`.
pub fn http_participant(identity: &pacs_dicomweb::Identity) -> Participant {
    let address = identity.peer.map(|p| p.ip().to_string());
    let mut participant = Participant::user(&identity.principal.name(), address.as_deref());
    // what the caller may do (its roles resolve to these permissions)
    for permission in identity.permissions.iter() {
        participant = participant.role(Code::access_role(permission.name()));
    }
    participant
}

/// The current time, for callers that note it.
pub fn now_ms() -> i64 {
    crate::index::sqlite::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(association_id: u64, study: &str, instance: &str) -> StoredNote {
        StoredNote {
            event: EventKind::InstancesTransferred,
            association_id,
            calling_ae_title: "MODALITY".into(),
            user: None,
            address: "192.0.2.1".into(),
            patient_id: "P1".into(),
            patient_name: "DOE^JANE".into(),
            study_uid: study.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: instance.into(),
            success: true,
            roles: vec!["store".into()],
        }
    }

    #[tokio::test]
    async fn stores_are_grouped_per_association_and_study_and_stop_is_last() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("index.sqlite").display().to_string();
        let index = crate::index::open(&url).await.unwrap();
        let audit = Audit::start(index.clone(), "PACS", None);
        for (assoc, study, instance) in [
            (1, "1.2.3", "1.2.3.1"),
            (1, "1.2.3", "1.2.3.2"),
            (1, "1.2.3", "1.2.3.2"), // the same instance again counts once
            (1, "1.2.4", "1.2.4.1"),
            (2, "1.2.3", "1.2.3.3"),
        ] {
            audit.stored(note(assoc, study, instance)).await;
        }
        audit.shutdown().await;
        let filter = crate::index::audit::AuditFilter {
            limit: 100,
            ..Default::default()
        };
        let records = index.audit_search(&filter).await.unwrap();
        let events: Vec<&str> = records.iter().map(|r| r.record.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "application-activity",
                "instances-transferred",
                "instances-transferred",
                "instances-transferred"
            ]
        );
        assert!(records[0].record.xml.contains("Application Stop"));
        let counts: Vec<(Vec<String>, bool)> = records[1..]
            .iter()
            .map(|r| {
                (
                    r.record.study_uids.clone(),
                    r.record.xml.contains("NumberOfInstances=\"2\""),
                )
            })
            .collect();
        // association 1, study 1.2.3: two instances; the others one each
        assert_eq!(
            counts.iter().filter(|(_, two)| *two).count(),
            1,
            "{counts:?}"
        );
        assert!(records[1..].iter().all(|r| r.record.ae == "MODALITY"
            && r.record.address == "192.0.2.1"
            && r.record.patient_id == "P1"));
        assert!(index.audit_verify().await.unwrap().breaks.is_empty());
    }

    #[test]
    fn event_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::named(kind.name()), Some(kind));
        }
        assert_eq!(EventKind::named("nonsense"), None);
    }
}
