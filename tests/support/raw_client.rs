//! A hand-driven DIMSE client (dicom-ul) for the cases real peers will not produce: truncated
//! data sets, mismatched UIDs, peers that vanish halfway, malformed PDUs.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{AssociationRJ, PDataValue, PDataValueType};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};

pub use dicom_dictionary_std::uids::CT_IMAGE_STORAGE;

pub type Assoc = ClientAssociation<TcpStream>;

/// Requests an association proposing `abstract_syntax` with Explicit VR Little Endian.
pub fn associate(
    port: u16,
    calling: &str,
    called: &str,
    abstract_syntax: &str,
) -> Result<Assoc, dicom_ul::association::Error> {
    ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title(called)
        .with_presentation_context(abstract_syntax, vec![uids::EXPLICIT_VR_LITTLE_ENDIAN])
        .read_timeout(Duration::from_secs(20))
        .establish(("127.0.0.1", port))
}

/// The A-ASSOCIATE-RJ of a refused association, if that is how it ended.
pub fn rejection(result: &Result<Assoc, dicom_ul::association::Error>) -> Option<AssociationRJ> {
    match result {
        Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
            Some(association_rj.clone())
        }
        _ => None,
    }
}

/// Encodes a C-STORE-RQ command set.
pub fn store_command(sop_class: &str, sop_instance: &str, message_id: u16) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::AFFECTED_SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(sop_class),
    ));
    obj.put(DataElement::new(
        tags::COMMAND_FIELD,
        VR::US,
        PrimitiveValue::from(0x0001u16),
    ));
    obj.put(DataElement::new(
        tags::MESSAGE_ID,
        VR::US,
        PrimitiveValue::from(message_id),
    ));
    obj.put(DataElement::new(
        tags::PRIORITY,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    obj.put(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        PrimitiveValue::from(0x0000u16),
    ));
    obj.put(DataElement::new(
        tags::AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop_instance),
    ));
    let mut body = Vec::new();
    obj.write_dataset_with_ts(&mut body, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    let mut out = vec![0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00];
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Sends a command and then `data` (which may be anything, e.g. a truncated data set) as the
/// data set, in fragments of at most 16 KiB.
pub fn send_store(assoc: &mut Assoc, command: Vec<u8>, data: &[u8]) {
    let pc = assoc.presentation_contexts()[0].id;
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            }],
        })
        .expect("send command");
    let chunks: Vec<&[u8]> = data.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: i + 1 == chunks.len(),
                    data: chunk.to_vec(),
                }],
            })
            .expect("send data");
    }
}

/// Reads the next response and returns its Status (0000,0900) and Error Comment (0000,0902).
pub fn read_response(assoc: &mut Assoc) -> (u16, Option<String>) {
    match assoc.receive().expect("receive response") {
        Pdu::PData { data } => {
            let bytes: Vec<u8> = data.into_iter().flat_map(|v| v.data).collect();
            let obj = InMemDicomObject::read_dataset_with_ts(
                &bytes[..],
                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .expect("parse response");
            let status = obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap();
            let comment = obj
                .element_opt(tags::ERROR_COMMENT)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()));
            (status, comment)
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Requests an association proposing `abstract_syntax` with only `transfer_syntax`.
pub fn associate_with(
    port: u16,
    calling: &str,
    abstract_syntax: &str,
    transfer_syntax: &str,
) -> Result<Assoc, dicom_ul::association::Error> {
    ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title("PACS")
        .with_presentation_context(abstract_syntax, vec![transfer_syntax])
        .read_timeout(Duration::from_secs(20))
        .establish(("127.0.0.1", port))
}

/// Reads the next response and returns its Status (0000,0900).
pub fn read_status(assoc: &mut Assoc) -> u16 {
    match assoc.receive().expect("receive response") {
        Pdu::PData { data } => {
            let bytes: Vec<u8> = data.into_iter().flat_map(|v| v.data).collect();
            let obj = InMemDicomObject::read_dataset_with_ts(
                &bytes[..],
                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .expect("parse response");
            obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap()
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

/// The data set part of a Part 10 file (everything after the file meta group), re-encoded
/// in Explicit VR Little Endian.
pub fn dataset_bytes(obj: &InMemDicomObject) -> Vec<u8> {
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts).unwrap();
    out
}

/// Writes raw bytes to the port and returns what came back before the node closed it
/// (or after 5 s).
pub fn raw_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}
