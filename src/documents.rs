//! Encapsulated documents (PS3.3 A.45 PDF, A.47 CDA, A.85 STL, OBJ, MTL): the document an
//! instance holds, as WADO-RS `/rendered` serves it in its own media type.

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::OpenFileOptions;

/// The Encapsulated Document storage SOP classes (PS3.4 B.5) and the media type of each when
/// the object names none in MIME Type of Encapsulated Document (0042,0012).
pub const DOCUMENT_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.5.1.4.1.1.104.1", "application/pdf"),
    ("1.2.840.10008.5.1.4.1.1.104.2", "text/xml"),
    ("1.2.840.10008.5.1.4.1.1.104.3", "model/stl"),
    ("1.2.840.10008.5.1.4.1.1.104.4", "model/obj"),
    ("1.2.840.10008.5.1.4.1.1.104.5", "model/mtl"),
];

pub fn is_document_class(sop_class_uid: &str) -> bool {
    DOCUMENT_CLASSES.iter().any(|(c, _)| *c == sop_class_uid)
}

/// An encapsulated document and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub bytes: Vec<u8>,
    pub media_type: String,
}

/// The document of a stored Part 10 object of an Encapsulated Document class.
///
/// Encapsulated Document (0042,0011) is OB, so of even length: a document of odd length
/// carries a trailing pad byte, and Encapsulated Document Length (0042,0015), when present,
/// is the document's length without it (PS3.3 C.24.2.1): the bytes past it are not the
/// document's.
pub fn read(part10: &[u8]) -> Result<Document, String> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(part10)
        .map_err(|e| format!("stored object unreadable: {e}"))?;
    let class = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let text = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(['\0', ' ']).to_string())
            .filter(|s| !s.is_empty())
    };
    let media_type = text(tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT)
        .or_else(|| {
            DOCUMENT_CLASSES
                .iter()
                .find(|(c, _)| *c == class)
                .map(|(_, m)| m.to_string())
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut bytes = obj
        .get(tags::ENCAPSULATED_DOCUMENT)
        .ok_or("the object holds no Encapsulated Document")?
        .to_bytes()
        .map_err(|e| format!("Encapsulated Document unreadable: {e}"))?
        .into_owned();
    if let Some(length) = obj
        .get(tags::ENCAPSULATED_DOCUMENT_LENGTH)
        .and_then(|e| e.to_int::<u64>().ok())
    {
        if length <= bytes.len() as u64 {
            bytes.truncate(length as usize);
        }
    }
    Ok(Document { bytes, media_type })
}
