//! C-FIND on the shared query engine: a C-FIND identifier becomes a [`Query`], and each match
//! becomes a response identifier holding the requested keys and the unique keys (PS3.4 C.4.1,
//! C.6.1 Patient Root and C.6.2 Study Root Query/Retrieve Information Models).

use dicom_core::header::HasLength;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::index::Index;
use crate::query::{attributes, Include, Level, Query, QueryError};

const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";

/// Identifier does not match SOP Class (PS3.4 C.4.1.1.4).
const IDENTIFIER_DOES_NOT_MATCH: u16 = 0xA900;
/// Unable to process (PS3.4 C.4.1.1.4).
const UNABLE_TO_PROCESS: u16 = 0xC000;

fn tag_u32(t: Tag) -> u32 {
    ((t.group() as u32) << 16) | t.element() as u32
}

/// Runs a C-FIND. Errors are (status, comment).
pub async fn find(
    index: &dyn Index,
    sop_class_uid: &str,
    identifier: &InMemDicomObject,
    limit: usize,
) -> Result<Vec<InMemDicomObject>, (u16, String)> {
    let mismatch = |why: String| (IDENTIFIER_DOES_NOT_MATCH, why);
    let level_value = identifier
        .get(tags::QUERY_RETRIEVE_LEVEL)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .ok_or_else(|| mismatch("Query/Retrieve Level (0008,0052) is missing".into()))?;
    let level = match level_value.as_str() {
        "PATIENT" if sop_class_uid == PATIENT_ROOT_FIND => Level::Patient,
        "PATIENT" => return Err(mismatch("the Study Root model has no PATIENT level".into())),
        "STUDY" => Level::Study,
        "SERIES" => Level::Series,
        "IMAGE" => Level::Instance,
        other => return Err(mismatch(format!("unknown Query/Retrieve Level {other:?}"))),
    };
    // Matching keys: every attribute the index knows, at this level or above; any other
    // attribute is a return key we answer empty (PS3.4 C.2.2.1.2).
    let mut keys = Vec::new();
    let mut requested: Vec<(Tag, VR)> = Vec::new();
    for element in identifier.iter() {
        let tag = element.header().tag;
        if tag == tags::QUERY_RETRIEVE_LEVEL
            || tag == tags::SPECIFIC_CHARACTER_SET
            || tag.group() == 0x0000
        {
            continue;
        }
        requested.push((tag, element.header().vr));
        let Some(attribute) = attributes::by_tag(tag_u32(tag)) else {
            continue;
        };
        if attribute.level > level {
            // PS3.4 C.4.1.2.1: keys below the query level are not allowed
            return Err(mismatch(format!(
                "{} is below the {level_value} level",
                attribute.keyword
            )));
        }
        if element.header().vr != VR::UN
            && attribute.vr != element.header().vr.to_string()
            && !element.is_empty()
        {
            return Err(mismatch(format!(
                "{} must have VR {}",
                attribute.keyword, attribute.vr
            )));
        }
        let value = element
            .to_str()
            .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default();
        if !value.is_empty() {
            keys.push((format!("{:08X}", tag_u32(tag)), value));
        }
    }
    let query =
        Query::parse(level, &keys, Include::Defaults, false, limit, 0).map_err(|e| match e {
            QueryError::Index(e) => (UNABLE_TO_PROCESS, e.to_string()),
            other => (UNABLE_TO_PROCESS, other.to_string()),
        })?;
    let result = query
        .run(index, None)
        .await
        .map_err(|e| (UNABLE_TO_PROCESS, e.to_string()))?;
    // the unique keys of this level and the levels above (PS3.4 C.6.1.1.x / C.6.2.1.x)
    let mut unique = vec![tags::STUDY_INSTANCE_UID];
    match level {
        Level::Patient => unique = vec![tags::PATIENT_ID],
        Level::Study => {}
        Level::Series => unique.push(tags::SERIES_INSTANCE_UID),
        Level::Instance => unique.extend([tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID]),
    }
    if sop_class_uid == PATIENT_ROOT_FIND && level != Level::Patient {
        unique.insert(0, tags::PATIENT_ID);
    }
    Ok(result
        .datasets
        .into_iter()
        .map(|dataset| {
            let mut response = response_identifier(&dataset, &requested, &unique, &level_value);
            answer_in_latin1_if_asked(identifier, &mut response);
            response
        })
        .collect())
}

/// Responses are UTF-8 (ISO_IR 192). A requester that asked in ISO_IR 100 (Latin-1) gets its
/// own character set back when every value fits in it, since older workstations do not all
/// read UTF-8 (PS3.4 C.4.1.1.3.1 leaves the response's character set to the SCP; PS3.5 6.1.2.3).
fn answer_in_latin1_if_asked(request: &InMemDicomObject, response: &mut InMemDicomObject) {
    let asked = request
        .get(tags::SPECIFIC_CHARACTER_SET)
        .and_then(|e| e.to_str().ok())
        .is_some_and(|cs| cs.trim() == "ISO_IR 100");
    if !asked {
        return;
    }
    let fits = response.iter().all(|e| {
        e.to_str()
            .map(|s| s.chars().all(|c| (c as u32) <= 0xFF))
            .unwrap_or(true)
    });
    if fits {
        response.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 100"),
        ));
    }
}

/// A response identifier: the requested attributes (empty when unknown) and the unique keys,
/// from a match rendered as DICOM JSON.
fn response_identifier(
    dataset: &serde_json::Value,
    requested: &[(Tag, VR)],
    unique: &[Tag],
    level: &str,
) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    // the strings below are Unicode: say so (PS3.5 6.1.2.3, ISO_IR 192 is UTF-8)
    out.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    out.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level),
    ));
    let mut wanted: Vec<(Tag, Option<VR>)> =
        requested.iter().map(|(t, vr)| (*t, Some(*vr))).collect();
    for t in unique {
        if !wanted.iter().any(|(w, _)| w == t) {
            wanted.push((*t, None));
        }
    }
    for (tag, requested_vr) in wanted {
        let json = &dataset[format!("{:08X}", tag_u32(tag))];
        let vr = json["vr"]
            .as_str()
            .and_then(|v| v.parse::<VR>().ok())
            .or(requested_vr)
            .unwrap_or(VR::LO);
        let values: Vec<String> = json["Value"]
            .as_array()
            .map(|vals| {
                vals.iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Object(o) => o
                            .get("Alphabetic")
                            .and_then(|a| a.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let value = if values.is_empty() {
            PrimitiveValue::Empty
        } else {
            match vr {
                VR::US => values[0]
                    .parse::<u16>()
                    .map(PrimitiveValue::from)
                    .unwrap_or(PrimitiveValue::Empty),
                // UI values are padded with NUL, not space, to an even length (PS3.5 6.2)
                VR::UI => {
                    let mut v = values.join("\\");
                    if v.len() % 2 == 1 {
                        v.push('\0');
                    }
                    PrimitiveValue::from(v)
                }
                _ => PrimitiveValue::Strs(values.into_iter().collect()),
            }
        };
        out.put(DataElement::new(tag, vr, value));
    }
    out
}
