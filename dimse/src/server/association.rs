//! The association acceptor's side of the DICOM Upper Layer protocol (PS3.8 7.1, 9.3), on
//! dicom-ul's PDU types and its `read_pdu` / `write_pdu`: reading the A-ASSOCIATE-RQ, answering
//! it with an A-ASSOCIATE-AC (presentation contexts, SCP/SCU roles, maximum lengths,
//! implementation identification, the User Identity response) or an A-ASSOCIATE-RJ, then the
//! PDUs of the established association.
//!
//! dicom-ul's own acceptor (`ServerAssociationOptions::establish_async`) is not used: its access
//! control hook is synchronous, can only refuse with service-user reasons, and never answers a
//! User Identity sub-item (PS3.7 D.3.3.7). Who may associate is decided by the listener
//! ([`super::listener`]); this module only knows the protocol. It is generic over the stream, so
//! that TLS (PS3.15 Annex B) only has to hand it another one.

use std::collections::HashSet;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderASCEReason, AssociationRJServiceUserReason, AssociationRJSource,
    AssociationRQ, PresentationContextNegotiated, PresentationContextResult,
    PresentationContextResultReason, RequestorRoles, UserIdentity, UserIdentityType,
    UserVariableItem, DEFAULT_MAX_PDU, MAXIMUM_PDU_SIZE, MINIMUM_PDU_SIZE,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use super::pdu_reader::{PduReader, ReceiveError};
use crate::pdata::{self, Outgoing};
use crate::service::{IdentityOffer, OfferedIdentity};

/// The DICOM Application Context Name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT_NAME: &str = "1.2.840.10008.3.1.1.1";

/// Our maximum length when the configuration says 0 ("unlimited"): what a P-DATA-TF PDU is
/// then allowed to be, and what is announced.
const UNLIMITED_PDU_CAP: u32 = 16 * 1024 * 1024;

/// A connection the acceptor can serve. Implemented for a TCP stream; a TLS stream over one
/// implements it by handing out the TCP stream underneath.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath, for socket options (TCP_QUICKACK), if there is one.
    fn tcp(&self) -> Option<&tokio::net::TcpStream>;
}

impl Transport for tokio::net::TcpStream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
}

/// The acceptor's TLS listener (PS3.15 Annex B), over a read buffer.
impl Transport for tokio_rustls::server::TlsStream<tokio::io::BufReader<tokio::net::TcpStream>> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self.get_ref().0.get_ref())
    }
}

/// The node as requestor over TLS (dicom-ul's `establish_tls_async`).
impl Transport for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self.get_ref().0)
    }
}

/// What this node accepts in association negotiation.
#[derive(Debug, Clone)]
pub struct AcceptorSettings {
    /// The Maximum Length announced in the A-ASSOCIATE-AC; P-DATA-TF PDUs longer than this are
    /// a protocol error. 0 (unlimited) stands for [`UNLIMITED_PDU_CAP`].
    pub max_pdu_length: u32,
    /// The abstract syntaxes (SOP classes) accepted.
    pub abstract_syntaxes: HashSet<String>,
    /// The transfer syntaxes accepted; of those a requestor proposes for a presentation
    /// context, the first it lists that is accepted here (and known to dicom-ul's registry)
    /// is chosen, as dicom-ul's acceptor does.
    pub transfer_syntaxes: Vec<String>,
    /// The SOP classes for which the requestor's proposed SCU/SCP roles are accepted
    /// (PS3.7 D.3.3.4); for the others no role selection item is answered, which leaves the
    /// default roles.
    pub accepts_roles: fn(&str) -> bool,
    pub implementation_class_uid: String,
    pub implementation_version_name: String,
}

impl AcceptorSettings {
    /// The Maximum Length to announce and enforce.
    pub fn effective_max_pdu_length(&self) -> u32 {
        match self.max_pdu_length {
            0 => UNLIMITED_PDU_CAP,
            n => n.clamp(MINIMUM_PDU_SIZE, MAXIMUM_PDU_SIZE),
        }
    }
}

/// Why an association could not be established.
#[derive(Debug, thiserror::Error)]
pub enum EstablishError {
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error("{0} instead of an A-ASSOCIATE-RQ")]
    UnexpectedPdu(&'static str),
    #[error("aborted by the peer")]
    Aborted,
    #[error("cannot send: {0}")]
    Send(std::io::Error),
}

/// An A-ASSOCIATE-RQ that has been read and not yet answered.
pub struct Requested<S> {
    stream: S,
    reader: PduReader,
    request: AssociationRQ,
    identity: Option<IdentityOffer>,
}

/// How long a rejected requestor gets to close the connection itself (the ARTIM timer of
/// Sta13, kept short: the association is over).
const REJECTED_PEER_CLOSE: std::time::Duration = std::time::Duration::from_secs(5);

impl<S> Requested<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Reads the A-ASSOCIATE-RQ that opens a connection. Anything else is answered with an
    /// A-ABORT (PS3.8 Table 9-10, state Sta2).
    pub async fn read(mut stream: S, settings: &AcceptorSettings) -> Result<Self, EstablishError> {
        let mut reader = PduReader::new(settings.effective_max_pdu_length());
        let (pdu, raw) = match reader.receive_raw(&mut stream).await {
            Ok(x) => x,
            Err(e) => {
                if let Some(reason) = e.abort_reason() {
                    let _ = write_pdu(&mut stream, &abort_pdu(reason)).await;
                    let _ = stream.shutdown().await;
                }
                return Err(e.into());
            }
        };
        match pdu {
            Pdu::AssociationRQ(request) => {
                let identity = identity_offer(&request, &raw);
                Ok(Requested {
                    stream,
                    reader,
                    request,
                    identity,
                })
            }
            Pdu::AbortRQ { .. } => Err(EstablishError::Aborted),
            other => {
                let reason = match other {
                    Pdu::Unknown { .. } => AbortRQServiceProviderReason::UnrecognizedPdu,
                    _ => AbortRQServiceProviderReason::UnexpectedPdu,
                };
                let _ = write_pdu(&mut stream, &abort_pdu(reason)).await;
                let _ = stream.shutdown().await;
                Err(EstablishError::UnexpectedPdu(pdu_name(&other)))
            }
        }
    }

    pub fn request(&self) -> &AssociationRQ {
        &self.request
    }

    /// The User Identity sub-item of the request, if it had one (PS3.7 D.3.3.7.1).
    pub fn identity(&self) -> Option<&IdentityOffer> {
        self.identity.as_ref()
    }

    /// Answers with an A-ASSOCIATE-RJ, then waits (a little) for the requestor to close the
    /// connection, as PS3.8 9.2 has it (Sta13: the requestor closes on the RJ, AE-4; the
    /// acceptor only when its ARTIM timer expires). Closing at once would race the RJ: a
    /// requestor that sees the connection close first reports an abort, not the rejection.
    pub async fn reject(mut self, rejection: AssociationRJ) -> Result<(), EstablishError> {
        use tokio::io::AsyncReadExt;
        let sent = write_pdu(&mut self.stream, &Pdu::AssociationRJ(rejection)).await;
        if sent.is_ok() {
            let _ = self.stream.flush().await;
            let mut scratch = [0u8; 512];
            let _ = tokio::time::timeout(REJECTED_PEER_CLOSE, async {
                while matches!(self.stream.read(&mut scratch).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        let _ = self.stream.shutdown().await;
        sent.map_err(EstablishError::Send)
    }

    /// Answers with an A-ASSOCIATE-AC: presentation contexts, roles and maximum lengths
    /// negotiated by [`negotiate`], and a User Identity sub-item carrying `identity_response`
    /// when given.
    pub async fn accept(
        mut self,
        settings: &AcceptorSettings,
        identity_response: Option<&[u8]>,
    ) -> Result<Association<S>, EstablishError> {
        let negotiated = negotiate(settings, &self.request, identity_response);
        write_pdu(&mut self.stream, &Pdu::AssociationAC(negotiated.ac))
            .await
            .map_err(EstablishError::Send)?;
        Ok(Association {
            stream: self.stream,
            reader: self.reader,
            write_buffer: Vec::new(),
            presentation_contexts: negotiated.presentation_contexts,
            roles: negotiated.roles,
            peer_max_pdu_length: negotiated.peer_max_pdu_length,
            calling_ae_title: self.request.calling_ae_title,
            called_ae_title: self.request.called_ae_title,
        })
    }
}

/// The checks that come before any policy: the protocol version (PS3.8 9.3.2: only bit 0 is
/// tested) and the application context name (PS3.7 A.2.1). A failure is answered with this
/// A-ASSOCIATE-RJ (PS3.8 Table 9-21).
pub fn check_request(request: &AssociationRQ) -> Result<(), AssociationRJ> {
    if request.protocol_version & 1 == 0 {
        return Err(AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
        });
    }
    if trim_uid(&request.application_context_name) != APPLICATION_CONTEXT_NAME {
        return Err(AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
            ),
        });
    }
    Ok(())
}

/// The outcome of negotiating an A-ASSOCIATE-RQ.
#[derive(Debug)]
pub struct Negotiated {
    pub ac: AssociationAC,
    pub presentation_contexts: Vec<PresentationContextNegotiated>,
    /// The SCP/SCU role selections accepted (PS3.7 D.3.3.4).
    pub roles: Vec<(String, RequestorRoles)>,
    /// The requestor's Maximum Length (PS3.8 D.1): 0 for unlimited.
    pub peer_max_pdu_length: u32,
}

/// Negotiates an A-ASSOCIATE-RQ (PS3.7 D.3.3, PS3.8 9.3.3): one result per proposed
/// presentation context, the requestor's role proposals accepted for the SOP classes
/// `settings` allows, our Maximum Length and implementation identification, and, when
/// `identity_response` is given, a User Identity sub-item (PS3.7 D.3.3.7.2).
pub fn negotiate(
    settings: &AcceptorSettings,
    request: &AssociationRQ,
    identity_response: Option<&[u8]>,
) -> Negotiated {
    let presentation_contexts: Vec<PresentationContextNegotiated> = request
        .presentation_contexts
        .iter()
        .map(|pc| {
            let abstract_syntax = trim_uid(&pc.abstract_syntax).to_string();
            let chosen = pc
                .transfer_syntaxes
                .iter()
                .map(|ts| trim_uid(ts))
                .find(|ts| {
                    settings.transfer_syntaxes.iter().any(|ours| ours == ts)
                        && dicom_ul::association::server::is_supported(ts)
                });
            let (reason, transfer_syntax) =
                if !settings.abstract_syntaxes.contains(&abstract_syntax) {
                    (
                        PresentationContextResultReason::AbstractSyntaxNotSupported,
                        None,
                    )
                } else if let Some(ts) = chosen {
                    (PresentationContextResultReason::Acceptance, Some(ts))
                } else {
                    (
                        PresentationContextResultReason::TransferSyntaxesNotSupported,
                        None,
                    )
                };
            PresentationContextNegotiated {
                id: pc.id,
                reason,
                // PS3.8 9.3.3.2: not significant unless accepted, but a sub-item must be there
                transfer_syntax: transfer_syntax
                    .unwrap_or(dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN)
                    .to_string(),
                abstract_syntax,
            }
        })
        .collect();

    let mut peer_max_pdu_length = DEFAULT_MAX_PDU;
    let mut roles = Vec::new();
    for item in &request.user_variables {
        match item {
            UserVariableItem::MaxLength(n) => peer_max_pdu_length = *n,
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, proposed) => {
                let uid = trim_uid(uid);
                if (settings.accepts_roles)(uid) {
                    roles.push((uid.to_string(), *proposed));
                }
            }
            _ => {}
        }
    }

    // PS3.7 D.3.3: Maximum Length, Implementation Class UID and Version Name, the role
    // selections, then the User Identity response
    let mut user_variables = vec![
        UserVariableItem::MaxLength(settings.effective_max_pdu_length()),
        UserVariableItem::ImplementationClassUID(settings.implementation_class_uid.clone()),
        UserVariableItem::ImplementationVersionName(settings.implementation_version_name.clone()),
    ];
    user_variables.extend(
        roles
            .iter()
            .map(|(uid, r)| UserVariableItem::ScuScpRoleSelectionSubItem(uid.clone(), *r)),
    );
    if let Some(response) = identity_response {
        match user_identity_response(response) {
            Some(item) => user_variables.push(item),
            None => tracing::warn!(
                len = response.len(),
                "server response too long for the User Identity sub-item; not sent"
            ),
        }
    }

    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: request.calling_ae_title.clone(),
        called_ae_title: request.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT_NAME.to_string(),
        presentation_contexts: presentation_contexts
            .iter()
            .map(|pc| PresentationContextResult {
                id: pc.id,
                reason: pc.reason.clone(),
                transfer_syntax: pc.transfer_syntax.clone(),
            })
            .collect(),
        user_variables,
    };
    Negotiated {
        ac,
        presentation_contexts,
        roles,
        peer_max_pdu_length,
    }
}

/// The User Identity sub-item of an A-ASSOCIATE-AC (PS3.7 Table D.3-15): item type 59H, a
/// reserved byte and the item length (written by dicom-ul for an `Unknown` item), then the
/// Server-response-length (2 bytes) and the Server Response. None when the response does not
/// fit the 2-byte lengths.
pub fn user_identity_response(server_response: &[u8]) -> Option<UserVariableItem> {
    let length = u16::try_from(server_response.len())
        .ok()
        .filter(|n| *n <= u16::MAX - 2)?;
    let mut value = Vec::with_capacity(2 + server_response.len());
    value.extend_from_slice(&length.to_be_bytes());
    value.extend_from_slice(server_response);
    Some(UserVariableItem::Unknown(0x59, value))
}

/// The identity a User Identity sub-item (PS3.7 Table D.3-14) offers.
fn identity_offer(request: &AssociationRQ, raw: &[u8]) -> Option<IdentityOffer> {
    let parsed = request.user_variables.iter().find_map(|item| match item {
        UserVariableItem::UserIdentityItem(identity) => Some(identity),
        _ => None,
    });
    let Some(identity) = parsed else {
        // dicom-ul drops a sub-item of a User-Identity-Type it does not know
        let (kind, positive_response_requested) = raw_identity_type(raw)?;
        return Some(IdentityOffer {
            identity: OfferedIdentity::Unsupported(kind),
            positive_response_requested,
        });
    };
    Some(IdentityOffer {
        identity: offered_identity(identity, raw),
        positive_response_requested: identity.positive_response_requested(),
    })
}

fn offered_identity(identity: &UserIdentity, raw: &[u8]) -> OfferedIdentity {
    // PS3.7 D.3.3.7.1: the username, passcode and token are UTF-8 text
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).ok();
    let primary = text(identity.primary_field()).filter(|s| !s.is_empty());
    match identity.identity_type() {
        UserIdentityType::Username => primary
            .map(OfferedIdentity::Username)
            .unwrap_or(OfferedIdentity::Unsupported(1)),
        UserIdentityType::UsernamePassword => match (primary, text(identity.secondary_field())) {
            (Some(username), Some(passcode)) => {
                OfferedIdentity::UsernamePasscode { username, passcode }
            }
            _ => OfferedIdentity::Unsupported(2),
        },
        UserIdentityType::Jwt => primary
            .map(OfferedIdentity::Jwt)
            .unwrap_or(OfferedIdentity::Unsupported(5)),
        UserIdentityType::KerberosServiceTicket => OfferedIdentity::Unsupported(3),
        UserIdentityType::SamlAssertion => OfferedIdentity::Unsupported(4),
        _ => OfferedIdentity::Unsupported(raw_identity_type(raw).map_or(0, |(kind, _)| kind)),
    }
}

/// The User-Identity-Type and Positive-response-requested fields of the first User Identity
/// sub-item (58H) in the User Information item (50H) of a raw A-ASSOCIATE-RQ. Every access is
/// checked: the bytes are the peer's.
fn raw_identity_type(pdu: &[u8]) -> Option<(u8, bool)> {
    // PDU header (6) and the fixed fields (PS3.8 Table 9-11: 68 bytes) before the items
    let mut items = pdu.get(74..)?;
    while let Some((kind, value, rest)) = next_item(items) {
        if kind == 0x50 {
            let mut sub = value;
            while let Some((kind, value, rest)) = next_item(sub) {
                if kind == 0x58 {
                    let (identity_type, positive) = (value.first()?, value.get(1)?);
                    return Some((*identity_type, *positive == 1));
                }
                sub = rest;
            }
            return None;
        }
        items = rest;
    }
    None
}

/// The first item of `bytes` (PS3.8 9.3.2: type, reserved, 2-byte length, value): its type,
/// its value and what follows it; None when no whole item is there.
fn next_item(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&kind, header) = bytes.split_first()?;
    let length = u16::from_be_bytes([*header.get(1)?, *header.get(2)?]) as usize;
    let value = bytes.get(4..4 + length)?;
    let rest = bytes.get(4 + length..)?;
    Some((kind, value, rest))
}

/// An established association, as the acceptor sees it.
pub struct Association<S> {
    stream: S,
    reader: PduReader,
    write_buffer: Vec<u8>,
    presentation_contexts: Vec<PresentationContextNegotiated>,
    roles: Vec<(String, RequestorRoles)>,
    peer_max_pdu_length: u32,
    calling_ae_title: String,
    called_ae_title: String,
}

impl<S> Association<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// The next PDU from the requestor. Cancel-safe: a PDU partly received is kept.
    pub async fn receive(&mut self) -> Result<Pdu, ReceiveError> {
        self.reader.receive(&mut self.stream).await
    }

    /// Sends one PDU (an A-RELEASE-RP, an A-ABORT, ...). DIMSE messages go through
    /// [`Association::send_messages`].
    pub async fn send(&mut self, pdu: &Pdu) -> std::io::Result<()> {
        self.write_buffer.clear();
        dicom_ul::write_pdu(&mut self.write_buffer, pdu)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        self.stream.write_all(&self.write_buffer).await?;
        // a TLS stream may keep records it could not write yet (the socket was full) until it
        // is flushed; a TCP stream's flush does nothing
        self.stream.flush().await
    }

    /// Sends DIMSE messages as P-DATA-TF PDUs that fit the requestor's Maximum Length.
    pub async fn send_messages(&mut self, messages: &[Outgoing<'_>]) -> std::io::Result<()> {
        pdata::write_messages(&mut self.stream, self.peer_max_pdu_length, messages).await?;
        self.stream.flush().await
    }

    /// Closes our side of the connection.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The presentation contexts as negotiated, accepted or not.
    pub fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        &self.presentation_contexts
    }

    /// The requestor's Maximum Length: 0 for unlimited (PS3.8 D.1).
    pub fn peer_max_pdu_length(&self) -> u32 {
        self.peer_max_pdu_length
    }

    /// Whether the requestor took the SCP role for this SOP class (PS3.7 D.3.3.4), as a C-GET
    /// requestor must for the instances it is to receive.
    pub fn requestor_is_scp(&self, sop_class_uid: &str) -> bool {
        self.roles
            .iter()
            .any(|(uid, roles)| uid == sop_class_uid && roles.scp)
    }

    pub fn calling_ae_title(&self) -> &str {
        &self.calling_ae_title
    }

    pub fn called_ae_title(&self) -> &str {
        &self.called_ae_title
    }
}

fn abort_pdu(reason: AbortRQServiceProviderReason) -> Pdu {
    Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    }
}

async fn write_pdu<W: AsyncWrite + Unpin>(stream: &mut W, pdu: &Pdu) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    dicom_ul::write_pdu(&mut buffer, pdu)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&buffer).await
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

pub fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "unknown PDU",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dicom_dictionary_std::uids;
    use dicom_ul::pdu::PresentationContextProposed;

    /// Settings accepting `abstract_syntaxes` in Explicit and Implicit VR Little Endian, with
    /// role selection for CT Image Storage.
    pub(crate) fn settings(abstract_syntaxes: &[&str]) -> AcceptorSettings {
        AcceptorSettings {
            max_pdu_length: 16384,
            abstract_syntaxes: abstract_syntaxes.iter().map(|s| s.to_string()).collect(),
            transfer_syntaxes: vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                uids::IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
            ],
            accepts_roles: |uid| uid == uids::CT_IMAGE_STORAGE,
            implementation_class_uid: "1.2.3.4".into(),
            implementation_version_name: "TEST_1".into(),
        }
    }

    fn request(user_variables: Vec<UserVariableItem>) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "MODALITY".into(),
            called_ae_title: "PACS".into(),
            application_context_name: APPLICATION_CONTEXT_NAME.into(),
            presentation_contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: uids::VERIFICATION.into(),
                transfer_syntaxes: vec![uids::IMPLICIT_VR_LITTLE_ENDIAN.into()],
            }],
            user_variables,
        }
    }

    fn encode(pdu: &Pdu) -> Vec<u8> {
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, pdu).unwrap();
        bytes
    }

    /// Encodes and reads back the request, as the acceptor would receive it.
    fn offer_in(user_variables: Vec<UserVariableItem>) -> Option<IdentityOffer> {
        let raw = encode(&Pdu::AssociationRQ(request(user_variables)));
        let mut reader = PduReader::new(16384);
        reader.buffer.extend_from_slice(&raw);
        let (pdu, raw) = reader.next_buffered().unwrap().unwrap();
        let Pdu::AssociationRQ(rq) = pdu else {
            panic!("not an A-ASSOCIATE-RQ")
        };
        identity_offer(&rq, &raw)
    }

    #[test]
    fn presentation_contexts_roles_and_lengths_are_negotiated() {
        let s = settings(&[uids::VERIFICATION, uids::CT_IMAGE_STORAGE]);
        let mut rq = request(vec![
            UserVariableItem::MaxLength(0),
            UserVariableItem::ScuScpRoleSelectionSubItem(
                uids::CT_IMAGE_STORAGE.into(),
                RequestorRoles {
                    scu: false,
                    scp: true,
                },
            ),
            UserVariableItem::ScuScpRoleSelectionSubItem(
                uids::VERIFICATION.into(),
                RequestorRoles {
                    scu: true,
                    scp: true,
                },
            ),
        ]);
        rq.presentation_contexts = vec![
            // the requestor's order decides among the syntaxes we accept
            PresentationContextProposed {
                id: 1,
                abstract_syntax: format!("{}\0", uids::CT_IMAGE_STORAGE),
                transfer_syntaxes: vec![
                    uids::JPEG2000.into(),
                    uids::IMPLICIT_VR_LITTLE_ENDIAN.into(),
                    uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
                ],
            },
            PresentationContextProposed {
                id: 3,
                abstract_syntax: uids::MR_IMAGE_STORAGE.into(),
                transfer_syntaxes: vec![uids::EXPLICIT_VR_LITTLE_ENDIAN.into()],
            },
            PresentationContextProposed {
                id: 5,
                abstract_syntax: uids::VERIFICATION.into(),
                transfer_syntaxes: vec![uids::JPEG2000.into()],
            },
        ];
        let n = negotiate(&s, &rq, None);
        let results: Vec<_> = n
            .presentation_contexts
            .iter()
            .map(|pc| (pc.id, pc.reason.clone(), pc.transfer_syntax.as_str()))
            .collect();
        assert_eq!(
            results,
            [
                (
                    1,
                    PresentationContextResultReason::Acceptance,
                    uids::IMPLICIT_VR_LITTLE_ENDIAN
                ),
                (
                    3,
                    PresentationContextResultReason::AbstractSyntaxNotSupported,
                    uids::IMPLICIT_VR_LITTLE_ENDIAN
                ),
                (
                    5,
                    PresentationContextResultReason::TransferSyntaxesNotSupported,
                    uids::IMPLICIT_VR_LITTLE_ENDIAN
                ),
            ]
        );
        assert_eq!(
            n.presentation_contexts[0].abstract_syntax,
            uids::CT_IMAGE_STORAGE
        );
        // 0: the requestor takes PDUs of any length (pdata caps what is sent)
        assert_eq!(n.peer_max_pdu_length, 0);
        // the role proposal for the storage class is accepted, the other left unanswered
        let ct_roles = RequestorRoles {
            scu: false,
            scp: true,
        };
        assert_eq!(n.roles, [(uids::CT_IMAGE_STORAGE.to_string(), ct_roles)]);
        assert_eq!(
            n.ac.user_variables,
            [
                UserVariableItem::MaxLength(16384),
                UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
                UserVariableItem::ImplementationVersionName("TEST_1".into()),
                UserVariableItem::ScuScpRoleSelectionSubItem(
                    uids::CT_IMAGE_STORAGE.into(),
                    ct_roles
                ),
            ]
        );
        assert_eq!(n.ac.calling_ae_title, "MODALITY");
        assert_eq!(n.ac.called_ae_title, "PACS");
        // no Maximum Length sub-item: dicom-ul's default, as its acceptor assumed
        let n = negotiate(&s, &request(vec![]), None);
        assert_eq!(n.peer_max_pdu_length, DEFAULT_MAX_PDU);
    }

    #[test]
    fn protocol_version_and_application_context_are_checked() {
        assert!(check_request(&request(vec![])).is_ok());
        let mut rq = request(vec![]);
        rq.protocol_version = 3; // bit 0 set: fine (PS3.8 9.3.2)
        assert!(check_request(&rq).is_ok());
        rq.protocol_version = 2;
        assert_eq!(
            check_request(&rq).unwrap_err().source,
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported
            )
        );
        let mut rq = request(vec![]);
        rq.application_context_name = "1.2.3".into();
        assert_eq!(
            check_request(&rq).unwrap_err().source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported
            )
        );
    }

    /// PS3.7 Table D.3-15: 59H, reserved, Item-length (2), Server-response-length (2), Server
    /// Response.
    #[test]
    fn the_user_identity_response_has_the_standard_layout() {
        let s = settings(&[uids::VERIFICATION]);
        for (response, expected) in [
            (&b""[..], vec![0x59, 0x00, 0x00, 0x02, 0x00, 0x00]),
            (
                &b"tok"[..],
                vec![0x59, 0x00, 0x00, 0x05, 0x00, 0x03, b't', b'o', b'k'],
            ),
        ] {
            let ac = negotiate(&s, &request(vec![]), Some(response)).ac;
            let bytes = encode(&Pdu::AssociationAC(ac));
            // the User Information item ends with the sub-item
            assert!(
                bytes.ends_with(&expected),
                "{:02x?} does not end with {expected:02x?}",
                &bytes[bytes.len() - expected.len()..]
            );
            // and dicom-ul's reader (the requestor's side in the session tests) reads it back
            let Some(Pdu::AssociationAC(read)) =
                dicom_ul::read_pdu(&bytes[..], MAXIMUM_PDU_SIZE, true).unwrap()
            else {
                panic!("not an A-ASSOCIATE-AC");
            };
            assert!(read
                .user_variables
                .contains(&UserVariableItem::Unknown(0x59, expected[4..].to_vec())));
        }
        // a response the 2-byte lengths cannot carry is not sent (rather than cut)
        assert!(user_identity_response(&[0; 65533]).is_some());
        assert!(user_identity_response(&[0; 65534]).is_none());
        // none unless asked for
        let ac = negotiate(&s, &request(vec![]), None).ac;
        assert!(!ac
            .user_variables
            .iter()
            .any(|uv| matches!(uv, UserVariableItem::Unknown(0x59, _))));
    }

    #[test]
    fn offered_identities_are_read() {
        let item = |kind, positive, primary: &str, secondary: &str| {
            UserVariableItem::UserIdentityItem(UserIdentity::new(
                positive,
                kind,
                primary.as_bytes().to_vec(),
                secondary.as_bytes().to_vec(),
            ))
        };
        assert_eq!(offer_in(vec![UserVariableItem::MaxLength(0)]), None);
        assert_eq!(
            offer_in(vec![item(UserIdentityType::Username, false, "alice", "")]),
            Some(IdentityOffer {
                identity: OfferedIdentity::Username("alice".into()),
                positive_response_requested: false,
            })
        );
        assert_eq!(
            offer_in(vec![item(
                UserIdentityType::UsernamePassword,
                true,
                "alice",
                "secret"
            )]),
            Some(IdentityOffer {
                identity: OfferedIdentity::UsernamePasscode {
                    username: "alice".into(),
                    passcode: "secret".into()
                },
                positive_response_requested: true,
            })
        );
        assert_eq!(
            offer_in(vec![item(UserIdentityType::Jwt, true, "a.b.c", "")])
                .unwrap()
                .identity,
            OfferedIdentity::Jwt("a.b.c".into())
        );
        assert_eq!(
            offer_in(vec![item(
                UserIdentityType::KerberosServiceTicket,
                false,
                "ticket",
                ""
            )])
            .unwrap()
            .identity,
            OfferedIdentity::Unsupported(3)
        );
        assert_eq!(
            offer_in(vec![item(
                UserIdentityType::SamlAssertion,
                false,
                "<x/>",
                ""
            )])
            .unwrap()
            .identity,
            OfferedIdentity::Unsupported(4)
        );
        // an empty username is no username
        assert_eq!(
            offer_in(vec![item(UserIdentityType::Username, false, "", "")])
                .unwrap()
                .identity,
            OfferedIdentity::Unsupported(1)
        );
        // a type dicom-ul does not know (it drops the sub-item): found in the raw PDU
        let unknown = UserVariableItem::Unknown(0x58, vec![9, 1, 0, 3, b'a', b'b', b'c', 0, 0]);
        assert_eq!(
            offer_in(vec![UserVariableItem::MaxLength(0), unknown]),
            Some(IdentityOffer {
                identity: OfferedIdentity::Unsupported(9),
                positive_response_requested: true,
            })
        );
    }
}
