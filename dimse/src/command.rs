//! DIMSE command sets (PS3.7 section 9 and Annex E): decoding requests and encoding responses.
//!
//! A command set is always encoded in Implicit VR Little Endian, whatever transfer syntax the
//! presentation context negotiated for its data set (PS3.7 6.3.1).

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values (PS3.7 Annex E).
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// Status codes used by the services this crate provides (PS3.7 Annex C, PS3.4 Annex B).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Pending: a match is returned (PS3.4 C.4.1.1.4).
    pub const PENDING: u16 = 0xFF00;
    /// Refused/Failed: Unable to process (PS3.4 C.4.1.1.4).
    pub const UNABLE_TO_PROCESS: u16 = 0xC000;
    /// Warning: Coercion of Data Elements (PS3.4 B.2.3).
    pub const WARNING_COERCION: u16 = 0xB000;
    /// Warning: Elements Discarded (PS3.4 B.2.3).
    pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB006;
    /// Refused: Out of Resources (PS3.4 B.2.3, A7xx).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: Data Set does not match SOP Class (PS3.4 B.2.3, A9xx).
    pub const DATASET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Error: Cannot understand (PS3.4 B.2.3, Cxxx).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP Class not supported (PS3.7 C.5.5).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Refused: Not Authorized (PS3.7 C.5.14).
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Failure: Unrecognized Operation (PS3.7 C.5.11).
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Failure: Processing Failure (PS3.7 C.5.2).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Cancel: the operation was stopped by a C-CANCEL (PS3.4 C.4.1.1.4, C.4.2.1.5).
    pub const CANCEL: u16 = 0xFE00;
    /// Warning: Sub-operations complete, one or more failures or warnings (PS3.4 C.4.2.1.5).
    pub const SUBOPERATIONS_WITH_FAILURES: u16 = 0xB000;
    /// Refused: Out of resources, unable to perform sub-operations (PS3.4 C.4.2.1.5).
    pub const UNABLE_TO_PERFORM_SUBOPERATIONS: u16 = 0xA702;
    /// Refused: Move Destination unknown (PS3.4 C.4.2.1.5).
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Failed: Identifier does not match SOP Class (PS3.4 C.4.1.1.4, C.4.2.1.5).
    pub const IDENTIFIER_DOES_NOT_MATCH: u16 = 0xA900;

    /// Whether a status is in the Warning class (PS3.7 C.1.4: 0001, Bxxx, 0107, 0116).
    pub fn is_warning(status: u16) -> bool {
        status & 0xF000 == 0xB000 || matches!(status, 0x0001 | 0x0107 | 0x0116)
    }

    /// Whether a status means the operation failed (neither success, pending nor warning).
    pub fn is_failure(status: u16) -> bool {
        status != SUCCESS && !is_warning(status) && status != PENDING && status != 0xFF01
    }
}

/// Value of Command Data Set Type meaning "no data set follows" (PS3.7 E.1-1).
pub const NO_DATASET: u16 = 0x0101;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command set could not be parsed: {0}")]
    Parse(String),
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

/// The parts of a request command set that the services here need.
#[derive(Debug, Clone)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub has_dataset: bool,
    pub move_originator_ae: Option<String>,
    pub move_originator_message_id: Option<u16>,
    /// Move Destination (0000,0600) of a C-MOVE-RQ.
    pub move_destination: Option<String>,
    /// Message ID Being Responded To (0000,0120): in responses, and in a C-CANCEL-RQ the
    /// request to cancel (PS3.7 9.3.2.3).
    pub message_id_being_responded_to: Option<u16>,
    /// Status (0000,0900) of a response.
    pub status: Option<u16>,
}

fn trim_uid(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).to_string()
}

impl Command {
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        // the parser recurses per sequence level: a command set has no business nesting any
        crate::nesting::check_sequence_depth(
            std::io::Cursor::new(bytes),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            crate::nesting::MAX_SEQUENCE_DEPTH,
        )
        .map_err(|e| CommandError::Parse(e.to_string()))?;
        let obj = crate::dataset::read_dataset(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|e| CommandError::Parse(e.to_string()))?;
        // `get`, not `element_opt`: dicom-object builds an absent element's error with a stack
        // trace, whatever the environment says, and most of these are absent from a request
        let u16_of =
            |tag: Tag| -> Option<u16> { obj.get(tag).and_then(|e| e.to_int::<u16>().ok()) };
        let str_of = |tag: Tag| -> Option<String> {
            obj.get(tag)
                .and_then(|e| e.to_str().ok().map(|s| trim_uid(&s)))
                .filter(|s| !s.is_empty())
        };
        let command_field =
            u16_of(tags::COMMAND_FIELD).ok_or(CommandError::Missing("Command Field"))?;
        let message_id = u16_of(tags::MESSAGE_ID).unwrap_or(0);
        let data_set_type = u16_of(tags::COMMAND_DATA_SET_TYPE)
            .ok_or(CommandError::Missing("Command Data Set Type"))?;
        Ok(Command {
            command_field,
            message_id,
            affected_sop_class_uid: str_of(tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance_uid: str_of(tags::AFFECTED_SOP_INSTANCE_UID),
            has_dataset: data_set_type != NO_DATASET,
            move_originator_ae: str_of(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE),
            move_originator_message_id: u16_of(tags::MOVE_ORIGINATOR_MESSAGE_ID),
            move_destination: str_of(tags::MOVE_DESTINATION),
            message_id_being_responded_to: u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO),
            status: u16_of(tags::STATUS),
        })
    }
}

/// A response command set, built by the service handlers and encoded here.
#[derive(Debug, Clone)]
pub struct Response {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub status: u16,
    pub error_comment: Option<String>,
    /// A data set (an identifier) follows this command.
    pub has_dataset: bool,
    /// Sub-operation counts of C-MOVE and C-GET responses (PS3.7 9.3.4.2, 9.3.3.2):
    /// remaining, completed, failed, warning.
    pub suboperations: Option<SubOperationCounts>,
}

/// Number of Remaining / Completed / Failed / Warning Sub-operations (0000,1020-1023).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperationCounts {
    /// None in a final response, where PS3.7 C.4.2.1.5 leaves Remaining out.
    pub remaining: Option<u16>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

impl Response {
    pub fn to(request: &Command, command_field: u16, status: u16) -> Self {
        Response {
            command_field,
            message_id_being_responded_to: request.message_id,
            affected_sop_class_uid: request.affected_sop_class_uid.clone(),
            affected_sop_instance_uid: request.affected_sop_instance_uid.clone(),
            status,
            error_comment: None,
            has_dataset: false,
            suboperations: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        if let Some(uid) = &self.affected_sop_class_uid {
            obj.put(DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(uid.as_str()),
            ));
        }
        obj.put(DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(self.command_field),
        ));
        obj.put(DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(self.message_id_being_responded_to),
        ));
        // PS3.7 E.1-1: any value other than 0101H means a data set follows
        let data_set_type = if self.has_dataset { 0x0000 } else { NO_DATASET };
        obj.put(DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(data_set_type),
        ));
        obj.put(DataElement::new(
            tags::STATUS,
            VR::US,
            PrimitiveValue::from(self.status),
        ));
        if let Some(uid) = &self.affected_sop_instance_uid {
            obj.put(DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(uid.as_str()),
            ));
        }
        if let Some(counts) = &self.suboperations {
            let counts_tags = [
                (tags::NUMBER_OF_REMAINING_SUBOPERATIONS, counts.remaining),
                (
                    tags::NUMBER_OF_COMPLETED_SUBOPERATIONS,
                    Some(counts.completed),
                ),
                (tags::NUMBER_OF_FAILED_SUBOPERATIONS, Some(counts.failed)),
                (tags::NUMBER_OF_WARNING_SUBOPERATIONS, Some(counts.warning)),
            ];
            for (tag, value) in counts_tags {
                if let Some(v) = value {
                    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
                }
            }
        }
        if let Some(comment) = &self.error_comment {
            // Error Comment is LO: at most 64 characters (PS3.7 C.4.2).
            let comment: String = comment.chars().take(64).collect();
            obj.put(DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                PrimitiveValue::from(comment),
            ));
        }
        encode_with_group_length(&obj)
    }
}

/// A request command set sent by this node (C-STORE-RQ as a storage SCU, C-ECHO-RQ).
#[derive(Debug, Clone)]
pub struct Request {
    pub command_field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: Option<String>,
    pub has_dataset: bool,
    /// For C-STORE sub-operations of a C-MOVE: the AE title and message ID of the C-MOVE
    /// (PS3.7 9.3.1.1).
    pub move_originator: Option<(String, u16)>,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let uid = |s: &str| {
            let mut s = s.to_string();
            if s.len() % 2 == 1 {
                s.push('\0');
            }
            PrimitiveValue::from(s)
        };
        obj.put(DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            uid(&self.affected_sop_class_uid),
        ));
        obj.put(DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(self.command_field),
        ));
        obj.put(DataElement::new(
            tags::MESSAGE_ID,
            VR::US,
            PrimitiveValue::from(self.message_id),
        ));
        if matches!(
            self.command_field,
            field::C_STORE_RQ | field::C_FIND_RQ | field::C_MOVE_RQ | field::C_GET_RQ
        ) {
            // Priority: MEDIUM
            obj.put(DataElement::new(
                tags::PRIORITY,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
        let data_set_type = if self.has_dataset { 0x0000 } else { NO_DATASET };
        obj.put(DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(data_set_type),
        ));
        if let Some(instance) = &self.affected_sop_instance_uid {
            obj.put(DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                uid(instance),
            ));
        }
        if let Some((ae, id)) = &self.move_originator {
            obj.put(DataElement::new(
                tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
                VR::AE,
                PrimitiveValue::from(ae.as_str()),
            ));
            obj.put(DataElement::new(
                tags::MOVE_ORIGINATOR_MESSAGE_ID,
                VR::US,
                PrimitiveValue::from(*id),
            ));
        }
        encode_with_group_length(&obj)
    }
}

/// Encodes a command set, prefixed by its Command Group Length (0000,0000), which PS3.7 9.1.1
/// makes mandatory.
fn encode_with_group_length(obj: &InMemDicomObject) -> Vec<u8> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut body = Vec::with_capacity(256);
    obj.write_dataset_with_ts(&mut body, &ts)
        .expect("writing a command set to memory cannot fail");
    let mut out = Vec::with_capacity(body.len() + 12);
    // (0000,0000) UL, implicit VR: tag, 4-byte length, 4-byte value
    out.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command set (Implicit VR LE) nesting sequences 50 000 deep: a recursive parser would
    /// overflow its stack (this was reachable from any peer); it is refused instead.
    #[test]
    fn a_deeply_nested_command_set_is_refused() {
        let mut bytes = Vec::new();
        for _ in 0..50_000 {
            // (0040,A730) Content Sequence, undefined length; an item of undefined length
            bytes.extend_from_slice(&[0x40, 0x00, 0x30, 0xA7, 0xFF, 0xFF, 0xFF, 0xFF]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let error = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Command::decode(&bytes).map(|_| ()))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(
            matches!(&error, Err(CommandError::Parse(m)) if m.contains("nested deeper")),
            "{error:?}"
        );
    }

    #[test]
    fn response_round_trips_through_decoder() {
        let rsp = Response {
            command_field: field::C_STORE_RSP,
            message_id_being_responded_to: 7,
            affected_sop_class_uid: Some(dicom_dictionary_std::uids::CT_IMAGE_STORAGE.into()),
            affected_sop_instance_uid: Some("1.2.3.4".into()),
            status: status::WARNING_ELEMENTS_DISCARDED,
            error_comment: Some("x".repeat(100)),
            has_dataset: false,
            suboperations: None,
        };
        let bytes = rsp.encode();
        // group length equals the bytes that follow it
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 12);
        let obj =
            InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap();
        assert_eq!(
            obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(),
            0xB006
        );
        assert_eq!(
            obj.element(tags::ERROR_COMMENT)
                .unwrap()
                .to_str()
                .unwrap()
                .len(),
            64
        );
        let decoded = Command::decode(&bytes).unwrap();
        assert_eq!(decoded.command_field, field::C_STORE_RSP);
        assert!(!decoded.has_dataset);
        assert_eq!(
            decoded.affected_sop_instance_uid.as_deref(),
            Some("1.2.3.4")
        );
    }

    #[test]
    fn request_round_trips_through_decoder() {
        let rq = Request {
            command_field: field::C_STORE_RQ,
            message_id: 12,
            affected_sop_class_uid: dicom_dictionary_std::uids::CT_IMAGE_STORAGE.into(),
            affected_sop_instance_uid: Some("1.2.3".into()),
            has_dataset: true,
            move_originator: Some(("MOVER".into(), 77)),
        };
        let decoded = Command::decode(&rq.encode()).unwrap();
        assert_eq!(decoded.command_field, field::C_STORE_RQ);
        assert_eq!(decoded.message_id, 12);
        assert!(decoded.has_dataset);
        // odd-length UIDs are padded with NUL, which the decoder trims
        assert_eq!(decoded.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
        assert_eq!(decoded.move_originator_ae.as_deref(), Some("MOVER"));
        assert_eq!(decoded.move_originator_message_id, Some(77));
    }
}
