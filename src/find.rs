//! C-FIND on the shared query engine: the identifier's keys become matchers of a [`Query`]
//! directly, and each match becomes a response identifier holding the requested keys and the
//! unique keys, built from the index's typed values (PS3.4 C.4.1, C.6.1 Patient Root and C.6.2
//! Study Root Query/Retrieve Information Models).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::HasLength;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};
use dicom_object::InMemDicomObject;

use crate::index::{Index, SqlValue};
use crate::query::{attributes, limits, Attribute, Include, Level, Matcher, Query, QueryError};

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
    let request = FindQuery::from_identifier(sop_class_uid, identifier, limit)?;
    let tags: Vec<u32> = request.keys.iter().map(|k| tag_u32(k.tag)).collect();
    let rows = request
        .query
        .rows(index, &tags)
        .await
        .map_err(|e| (UNABLE_TO_PROCESS, e.to_string()))?;
    Ok(rows
        .rows
        .into_iter()
        .map(|row| {
            let mut response = request.response(&rows.columns, row);
            answer_in_latin1_if_asked(identifier, &mut response);
            response
        })
        .collect())
}

/// One key of the response identifier: a requested key or a unique key.
#[derive(Debug, Clone, PartialEq)]
struct ResponseKey {
    tag: Tag,
    vr: VR,
}

/// A C-FIND identifier read into a query and the keys its responses hold.
#[derive(Debug)]
struct FindQuery {
    query: Query,
    /// Query/Retrieve Level (0008,0052) as requested.
    level: String,
    /// The requested keys, then the unique keys not requested (PS3.4 C.4.1.2.1, C.4.1.2.3).
    keys: Vec<ResponseKey>,
}

impl FindQuery {
    fn from_identifier(
        sop_class_uid: &str,
        identifier: &InMemDicomObject,
        limit: usize,
    ) -> Result<FindQuery, (u16, String)> {
        let mismatch = |why: String| (IDENTIFIER_DOES_NOT_MATCH, why);
        let patient_root =
            sop_class_uid == uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
        let level_value = identifier
            .get(tags::QUERY_RETRIEVE_LEVEL)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .ok_or_else(|| mismatch("Query/Retrieve Level (0008,0052) is missing".into()))?;
        let level = match level_value.as_str() {
            "PATIENT" if patient_root => Level::Patient,
            "PATIENT" => return Err(mismatch("the Study Root model has no PATIENT level".into())),
            "STUDY" => Level::Study,
            "SERIES" => Level::Series,
            "IMAGE" => Level::Instance,
            other => return Err(mismatch(format!("unknown Query/Retrieve Level {other:?}"))),
        };
        let unable = |e: QueryError| (UNABLE_TO_PROCESS, e.to_string());
        let too_many = |what: &str, limit: usize| {
            unable(QueryError::TooMany {
                what: what.into(),
                limit,
            })
        };
        if identifier.iter().count() > limits::MAX_RETURN_KEYS + 2 {
            // (Query/Retrieve Level and Specific Character Set are not keys)
            return Err(too_many("keys in the identifier", limits::MAX_RETURN_KEYS));
        }
        let mut query =
            Query::parse(level, &[], Include::Defaults, false, limit, 0).map_err(unable)?;
        // Matching keys: every attribute the index knows, at this level or above; any other
        // attribute is a return key we answer empty (PS3.4 C.2.2.1.2).
        let mut keys = Vec::new();
        for element in identifier.iter() {
            let tag = element.header().tag;
            if tag == tags::QUERY_RETRIEVE_LEVEL
                || tag == tags::SPECIFIC_CHARACTER_SET
                || tag.group() == 0x0000
            {
                continue;
            }
            let requested_vr = element.header().vr;
            let attribute = attributes::by_tag(tag_u32(tag));
            keys.push(ResponseKey {
                tag,
                vr: response_vr(tag, attribute, requested_vr),
            });
            let Some(attribute) = attribute else {
                continue;
            };
            if attribute.level > level {
                // PS3.4 C.4.1.2.1: keys below the query level are not allowed
                return Err(mismatch(format!(
                    "{} is below the {level_value} level",
                    attribute.keyword
                )));
            }
            if requested_vr != VR::UN
                && attribute.vr != requested_vr.to_string()
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
            if value.is_empty() {
                continue;
            }
            if !attribute.is_matchable() {
                return Err(unable(QueryError::NotMatchable(attribute.keyword.into())));
            }
            match Matcher::parse(attribute, &value, false).map_err(unable)? {
                Matcher::Universal => {}
                _ if query.conditions.len() >= limits::MAX_MATCHING_KEYS => {
                    return Err(too_many("matching keys", limits::MAX_MATCHING_KEYS));
                }
                matcher => query.conditions.push((attribute, matcher)),
            }
        }
        // the unique keys of this level and the levels above (PS3.4 C.6.1.1.x / C.6.2.1.x)
        let mut unique = vec![tags::STUDY_INSTANCE_UID];
        match level {
            Level::Patient => unique = vec![tags::PATIENT_ID],
            Level::Study => {}
            Level::Series => unique.push(tags::SERIES_INSTANCE_UID),
            Level::Instance => unique.extend([tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID]),
        }
        if patient_root && level != Level::Patient {
            unique.insert(0, tags::PATIENT_ID);
        }
        for tag in unique {
            if !keys.iter().any(|k| k.tag == tag) {
                let attribute = attributes::by_tag(tag_u32(tag));
                keys.push(ResponseKey {
                    tag,
                    vr: response_vr(tag, attribute, VR::UN),
                });
            }
        }
        Ok(FindQuery {
            query,
            level: level_value,
            keys,
        })
    }

    /// The response identifier of one match: every key, with the value of the row when the
    /// index holds the attribute, else empty.
    fn response(&self, columns: &[&'static Attribute], row: Vec<SqlValue>) -> InMemDicomObject {
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
            PrimitiveValue::from(self.level.as_str()),
        ));
        let mut values: Vec<(u32, SqlValue)> = columns.iter().map(|a| a.tag).zip(row).collect();
        for key in &self.keys {
            let value = values
                .iter_mut()
                .find(|(t, _)| *t == tag_u32(key.tag))
                .map(|(_, v)| std::mem::replace(v, SqlValue::Null))
                .unwrap_or(SqlValue::Null);
            out.put(DataElement::new(
                key.tag,
                key.vr,
                typed_value(key.vr, value),
            ));
        }
        out
    }
}

/// The VR a key is answered with: the index's attribute table, else the data dictionary, else
/// the VR the requester gave (private and unknown attributes; UN if it gave none).
fn response_vr(tag: Tag, attribute: Option<&Attribute>, requested: VR) -> VR {
    if let Some(vr) = attribute.and_then(|a| a.vr.parse::<VR>().ok()) {
        return vr;
    }
    let known = StandardDataDictionary
        .by_tag(tag)
        .and_then(|entry| entry.vr().exact());
    match known {
        Some(vr) => vr,
        // US or SS, OB or OW...: context decides, and the requester knows its context
        None if requested != VR::UN => requested,
        None => StandardDataDictionary
            .by_tag(tag)
            .map(|entry| entry.vr().relaxed())
            .unwrap_or(VR::UN),
    }
}

/// An index value as the value of an element of `vr`: text split into its values at
/// backslashes (Person Names keep all three component groups, PS3.5 6.2.1), binary numbers for
/// binary VRs (US, UL, SS, SL, FL, FD), decimal strings for IS and DS. UI values are padded with
/// NUL by the encoder (PS3.5 6.2).
fn typed_value(vr: VR, value: SqlValue) -> PrimitiveValue {
    let text = match value {
        SqlValue::Null => return PrimitiveValue::Empty,
        SqlValue::Int(i) => return int_value(vr, i),
        SqlValue::Text(t) => t,
        SqlValue::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
    };
    let text = text.trim_end_matches(['\0', ' ']);
    if text.is_empty() {
        return PrimitiveValue::Empty;
    }
    let parts = text.split('\\');
    fn numbers<T: std::str::FromStr>(parts: std::str::Split<'_, char>) -> Option<C<T>> {
        parts.map(|p| p.trim().parse::<T>().ok()).collect()
    }
    // a binary value that does not parse is answered empty, not as text under a binary VR
    let binary = |value: Option<PrimitiveValue>| value.unwrap_or(PrimitiveValue::Empty);
    match vr {
        VR::US => binary(numbers::<u16>(parts).map(PrimitiveValue::U16)),
        VR::UL => binary(numbers::<u32>(parts).map(PrimitiveValue::U32)),
        VR::SS => binary(numbers::<i16>(parts).map(PrimitiveValue::I16)),
        VR::SL => binary(numbers::<i32>(parts).map(PrimitiveValue::I32)),
        VR::FL => binary(numbers::<f32>(parts).map(PrimitiveValue::F32)),
        VR::FD => binary(numbers::<f64>(parts).map(PrimitiveValue::F64)),
        VR::UI => PrimitiveValue::Strs(
            parts
                .map(|u| u.trim_end_matches('\0').to_string())
                .collect(),
        ),
        _ => PrimitiveValue::Strs(parts.map(str::to_string).collect()),
    }
}

/// An integer from the index (counts, integer columns) for an element of `vr`.
fn int_value(vr: VR, i: i64) -> PrimitiveValue {
    let binary = |value: Option<PrimitiveValue>| value.unwrap_or(PrimitiveValue::Empty);
    match vr {
        VR::US => binary(u16::try_from(i).ok().map(PrimitiveValue::from)),
        VR::UL => binary(u32::try_from(i).ok().map(PrimitiveValue::from)),
        VR::SS => binary(i16::try_from(i).ok().map(PrimitiveValue::from)),
        VR::SL => binary(i32::try_from(i).ok().map(PrimitiveValue::from)),
        VR::SV => PrimitiveValue::from(i),
        VR::UV => binary(u64::try_from(i).ok().map(PrimitiveValue::from)),
        VR::FL => PrimitiveValue::from(i as f32),
        VR::FD => PrimitiveValue::from(i as f64),
        // IS, DS and the string VRs: the decimal digits (PS3.5 6.2, IS)
        _ => PrimitiveValue::from(i.to_string()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_encoding::TransferSyntaxIndex;

    const STUDY_ROOT: &str = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
    const PATIENT_ROOT: &str = uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;

    fn identifier(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(level),
        ));
        for (tag, vr, value) in keys {
            let value = if value.is_empty() {
                PrimitiveValue::Empty
            } else {
                PrimitiveValue::from(*value)
            };
            obj.put(DataElement::new(*tag, *vr, value));
        }
        obj
    }

    fn columns(tags: &[u32]) -> Vec<&'static Attribute> {
        tags.iter()
            .map(|t| attributes::by_tag(*t).unwrap())
            .collect()
    }

    /// The response as an Explicit VR Little Endian data set.
    fn encoded(obj: &InMemDicomObject) -> Vec<u8> {
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .unwrap();
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, ts).unwrap();
        bytes
    }

    /// The value bytes of `tag` in an Explicit VR Little Endian data set of short elements.
    fn value_bytes(bytes: &[u8], tag: Tag) -> (String, Vec<u8>) {
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let group = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            let element = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
            let vr = String::from_utf8_lossy(&bytes[at + 4..at + 6]).to_string();
            let (len, header) =
                if ["OB", "OW", "SQ", "UN", "UT", "UC", "UR", "SV", "UV"].contains(&vr.as_str()) {
                    let l = &bytes[at + 8..at + 12];
                    (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
                } else {
                    (
                        u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize,
                        8,
                    )
                };
            let value = bytes[at + header..at + header + len].to_vec();
            if Tag(group, element) == tag {
                return (vr, value);
            }
            at += header + len;
        }
        panic!("{tag} not in the data set");
    }

    #[test]
    fn identifiers_beyond_the_caps_are_refused_with_a_comment() {
        // more keys than MAX_RETURN_KEYS (private return keys, all empty)
        let keys: Vec<(Tag, VR, &str)> = (0..300u16)
            .map(|n| (Tag(0x0009, 0x1000 + n), VR::LO, ""))
            .collect();
        let (status, comment) =
            FindQuery::from_identifier(STUDY_ROOT, &identifier("STUDY", &keys), 10).unwrap_err();
        assert_eq!(status, UNABLE_TO_PROCESS);
        assert!(comment.contains("at most 256"), "{comment}");
        // a value longer than its VR holds (LO: 64)
        let long = "D".repeat(65);
        let keys = [(tags::STUDY_DESCRIPTION, VR::LO, long.as_str())];
        let (status, comment) =
            FindQuery::from_identifier(STUDY_ROOT, &identifier("STUDY", &keys), 10).unwrap_err();
        assert_eq!(status, UNABLE_TO_PROCESS);
        assert!(comment.contains("longer than 64"), "{comment}");
        // a list of more than 1000 UIDs
        let uids: Vec<String> = (0..1001).map(|n| format!("1.2.{n}")).collect();
        let list = uids.join("\\");
        let keys = [(tags::STUDY_INSTANCE_UID, VR::UI, list.as_str())];
        let (status, comment) =
            FindQuery::from_identifier(STUDY_ROOT, &identifier("STUDY", &keys), 10).unwrap_err();
        assert_eq!(status, UNABLE_TO_PROCESS);
        assert!(comment.contains("more than 1000 values"), "{comment}");
    }

    #[test]
    fn every_key_has_its_vr() {
        // every indexed attribute, requested at IMAGE level with UN (as an implicit VR
        // identifier with an unknown VR would give it), is answered with the table's VR
        let mut keys: Vec<(Tag, VR, &str)> = attributes::INDEXED
            .iter()
            .map(|a| (Tag((a.tag >> 16) as u16, a.tag as u16), VR::UN, ""))
            .collect();
        keys.push((tags::PATIENT_AGE, VR::UN, ""));
        keys.push((tags::INSTITUTION_NAME, VR::UN, ""));
        keys.push((tags::REFERENCED_STUDY_SEQUENCE, VR::SQ, ""));
        // private: only the requester knows its VR
        keys.push((Tag(0x0009, 0x1010), VR::LO, ""));
        keys.push((Tag(0x0009, 0x1011), VR::UN, ""));
        // Smallest Image Pixel Value is US or SS: the requester's choice stands
        keys.push((tags::SMALLEST_IMAGE_PIXEL_VALUE, VR::SS, ""));
        let find =
            FindQuery::from_identifier(PATIENT_ROOT, &identifier("IMAGE", &keys), 10).unwrap();
        assert!(
            find.query.conditions.is_empty(),
            "empty keys match everything"
        );
        let vr_of = |tag: Tag| find.keys.iter().find(|k| k.tag == tag).unwrap().vr;
        for a in attributes::INDEXED.iter() {
            let tag = Tag((a.tag >> 16) as u16, a.tag as u16);
            assert_eq!(vr_of(tag).to_string(), a.vr, "{}", a.keyword);
            let dictionary = StandardDataDictionary.by_tag(tag).unwrap().vr().exact();
            assert_eq!(
                dictionary,
                Some(vr_of(tag)),
                "{}: table and dictionary",
                a.keyword
            );
        }
        assert_eq!(vr_of(tags::PATIENT_AGE), VR::AS);
        assert_eq!(vr_of(tags::INSTITUTION_NAME), VR::LO);
        assert_eq!(vr_of(tags::REFERENCED_STUDY_SEQUENCE), VR::SQ);
        assert_eq!(vr_of(Tag(0x0009, 0x1010)), VR::LO);
        assert_eq!(vr_of(Tag(0x0009, 0x1011)), VR::UN);
        assert_eq!(vr_of(tags::SMALLEST_IMAGE_PIXEL_VALUE), VR::SS);
        assert_eq!(
            keys.len(),
            find.keys.len(),
            "the unique keys were requested"
        );

        // the response carries each key under its VR, the index's values where it has them
        let indexed: Vec<u32> = attributes::INDEXED.iter().map(|a| a.tag).collect();
        let row: Vec<SqlValue> = attributes::INDEXED
            .iter()
            .map(|a| match a.source {
                attributes::Source::Stored(d)
                    if d.kind == crate::index::attributes::Kind::Integer =>
                {
                    SqlValue::Int(3)
                }
                attributes::Source::Stored(_) => SqlValue::Text(match a.vr {
                    "UI" => "1.2.3".into(),
                    "DA" => "20240131".into(),
                    "TM" => "101500".into(),
                    "PN" => "DOE^JANE".into(),
                    _ => "X".into(),
                }),
                attributes::Source::ModalitiesInStudy => SqlValue::Text("CT\\MR".into()),
                _ => SqlValue::Int(3),
            })
            .collect();
        let response = find.response(&columns(&indexed), row);
        for key in &find.keys {
            assert_eq!(response.get(key.tag).unwrap().vr(), key.vr, "{}", key.tag);
        }
        for a in attributes::INDEXED.iter() {
            let e = response
                .get(Tag((a.tag >> 16) as u16, a.tag as u16))
                .unwrap();
            assert!(!e.is_empty(), "{} has its value", a.keyword);
        }
        assert!(response.get(tags::PATIENT_AGE).unwrap().is_empty());
        assert_eq!(
            response
                .get(tags::QUERY_RETRIEVE_LEVEL)
                .unwrap()
                .to_str()
                .unwrap(),
            "IMAGE"
        );
        // and it encodes: the VRs are the ones written
        let bytes = encoded(&response);
        assert_eq!(value_bytes(&bytes, tags::PATIENT_AGE).0, "AS");
        assert_eq!(value_bytes(&bytes, tags::MODALITIES_IN_STUDY).1, b"CT\\MR ");
    }

    #[test]
    fn unique_keys_are_added_and_keys_below_the_level_refused() {
        let find = FindQuery::from_identifier(
            PATIENT_ROOT,
            &identifier("SERIES", &[(tags::MODALITY, VR::CS, "CT")]),
            10,
        )
        .unwrap();
        let tags: Vec<Tag> = find.keys.iter().map(|k| k.tag).collect();
        assert_eq!(
            tags,
            [
                tags::MODALITY,
                tags::PATIENT_ID,
                tags::STUDY_INSTANCE_UID,
                tags::SERIES_INSTANCE_UID
            ]
        );
        assert_eq!(find.query.conditions.len(), 1);
        assert_eq!(
            find.query.conditions[0].1,
            Matcher::Single("CT".into()),
            "the identifier's value is the matcher"
        );
        let below = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier("STUDY", &[(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3")]),
            10,
        )
        .unwrap_err();
        assert_eq!(below.0, IDENTIFIER_DOES_NOT_MATCH);
        let patient_in_study_root = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier("PATIENT", &[(tags::PATIENT_ID, VR::LO, "")]),
            10,
        )
        .unwrap_err();
        assert_eq!(patient_in_study_root.0, IDENTIFIER_DOES_NOT_MATCH);
        let bad_vr = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier("STUDY", &[(tags::STUDY_DATE, VR::LO, "20240101")]),
            10,
        )
        .unwrap_err();
        assert_eq!(bad_vr.0, IDENTIFIER_DOES_NOT_MATCH);
        let computed = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier(
                "STUDY",
                &[(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "3")],
            ),
            10,
        )
        .unwrap_err();
        assert_eq!(computed.0, UNABLE_TO_PROCESS);
        let range = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier("STUDY", &[(tags::STUDY_DATE, VR::DA, "20240101-20240131")]),
            10,
        )
        .unwrap();
        assert_eq!(
            range.query.conditions[0].1,
            Matcher::Range(Some("20240101".into()), Some("20240131".into()))
        );
        assert_eq!(range.query.limit, 10);
    }

    #[test]
    fn person_names_keep_all_component_groups() {
        let find = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier(
                "STUDY",
                &[
                    (tags::PATIENT_NAME, VR::PN, "YAMADA*"),
                    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
                ],
            ),
            10,
        )
        .unwrap();
        let name = "Yamada^Tarou=山田^太郎=やまだ^たろう";
        let response = find.response(
            &columns(&[0x0010_0010, 0x0008_0090, 0x0020_000D]),
            vec![
                SqlValue::Text(name.into()),
                SqlValue::Text("Smith^John=^=\\Doe^Jane".into()),
                SqlValue::Text("1.2.3".into()),
            ],
        );
        let patient = response.get(tags::PATIENT_NAME).unwrap();
        assert_eq!(patient.vr(), VR::PN);
        assert_eq!(patient.to_str().unwrap(), name);
        let groups: Vec<&str> = name.split('=').collect();
        assert_eq!(groups.len(), 3, "alphabetic, ideographic and phonetic");
        let referring = response.get(tags::REFERRING_PHYSICIAN_NAME).unwrap();
        assert_eq!(referring.vr(), VR::PN);
        assert_eq!(
            referring.value().to_multi_str().unwrap().to_vec(),
            ["Smith^John=^=", "Doe^Jane"],
            "each value of a multi-valued name with its groups"
        );
        // encoded in UTF-8 as written, every group included
        let bytes = encoded(&response);
        let (vr, value) = value_bytes(&bytes, tags::PATIENT_NAME);
        assert_eq!(vr, "PN");
        assert_eq!(
            String::from_utf8(value).unwrap().trim_end(),
            name,
            "ideographic and phonetic groups are sent"
        );
        // an empty name is an empty element, not a missing one
        let empty = find.response(
            &columns(&[0x0010_0010, 0x0008_0090, 0x0020_000D]),
            vec![
                SqlValue::Text(String::new()),
                SqlValue::Null,
                SqlValue::Text("1.2.3".into()),
            ],
        );
        assert!(empty.get(tags::PATIENT_NAME).unwrap().is_empty());
        assert!(empty
            .get(tags::REFERRING_PHYSICIAN_NAME)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn numeric_keys_are_numbers_and_uids_are_nul_padded() {
        let find = FindQuery::from_identifier(
            STUDY_ROOT,
            &identifier(
                "IMAGE",
                &[
                    (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                    (tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4"),
                    (tags::SOP_INSTANCE_UID, VR::UI, ""),
                    (tags::ROWS, VR::US, ""),
                    (tags::COLUMNS, VR::US, ""),
                    (tags::INSTANCE_NUMBER, VR::IS, ""),
                    (tags::NUMBER_OF_FRAMES, VR::IS, ""),
                    (tags::BITS_ALLOCATED, VR::US, ""),
                ],
            ),
            10,
        )
        .unwrap();
        assert_eq!(find.query.conditions.len(), 2, "the two UIDs match");
        let response = find.response(
            &columns(&[
                0x0020_000D,
                0x0020_000E,
                0x0008_0018,
                0x0028_0010,
                0x0028_0011,
                0x0020_0013,
                0x0028_0008,
                0x0028_0100,
            ]),
            vec![
                SqlValue::Text("1.2.3".into()),
                SqlValue::Text("1.2.3.4".into()),
                SqlValue::Text("1.2.3.4.5".into()),
                SqlValue::Int(512),
                // text from a backend that returns integers as text
                SqlValue::Text("256".into()),
                SqlValue::Int(7),
                SqlValue::Null,
                SqlValue::Int(70_000),
            ],
        );
        let rows = response.get(tags::ROWS).unwrap();
        assert_eq!(rows.vr(), VR::US);
        assert_eq!(
            rows.value().primitive(),
            Some(&PrimitiveValue::from(512_u16))
        );
        assert_eq!(
            response.get(tags::COLUMNS).unwrap().value().primitive(),
            Some(&PrimitiveValue::from(256_u16))
        );
        let number = response.get(tags::INSTANCE_NUMBER).unwrap();
        assert_eq!(number.vr(), VR::IS);
        assert_eq!(number.to_int::<i32>().unwrap(), 7);
        assert!(response.get(tags::NUMBER_OF_FRAMES).unwrap().is_empty());
        assert!(
            response.get(tags::BITS_ALLOCATED).unwrap().is_empty(),
            "out of range for US: empty, never a text value under a binary VR"
        );
        let bytes = encoded(&response);
        assert_eq!(
            value_bytes(&bytes, tags::ROWS),
            ("US".to_string(), 512_u16.to_le_bytes().to_vec())
        );
        assert_eq!(
            value_bytes(&bytes, tags::INSTANCE_NUMBER),
            ("IS".to_string(), b"7 ".to_vec())
        );
        // odd-length UIDs get one NUL (PS3.5 6.2), even-length ones nothing
        assert_eq!(value_bytes(&bytes, tags::STUDY_INSTANCE_UID).1, b"1.2.3\0");
        assert_eq!(
            value_bytes(&bytes, tags::SERIES_INSTANCE_UID).1,
            b"1.2.3.4\0"
        );
        assert_eq!(
            value_bytes(&bytes, tags::SOP_INSTANCE_UID).1,
            b"1.2.3.4.5\0"
        );
        assert_eq!(
            typed_value(VR::UI, SqlValue::Text("1.2\\1.33".into())),
            PrimitiveValue::Strs(
                ["1.2".to_string(), "1.33".to_string()]
                    .into_iter()
                    .collect()
            )
        );
        // counts are Integer Strings
        assert_eq!(
            typed_value(VR::IS, SqlValue::Int(101)),
            PrimitiveValue::from("101")
        );
        assert_eq!(
            typed_value(VR::UL, SqlValue::Text("1\\2".into())),
            PrimitiveValue::U32([1, 2].into_iter().collect())
        );
        assert_eq!(
            typed_value(VR::US, SqlValue::Text("x".into())),
            PrimitiveValue::Empty
        );
    }

    #[test]
    fn latin1_requesters_get_latin1_when_it_fits() {
        let mut request = identifier("STUDY", &[(tags::PATIENT_NAME, VR::PN, "")]);
        request.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 100"),
        ));
        let find = FindQuery::from_identifier(STUDY_ROOT, &request, 10).unwrap();
        let cols = columns(&[0x0010_0010, 0x0020_000D]);
        let mut latin = find.response(
            &cols,
            vec![
                SqlValue::Text("Müller^Jörg".into()),
                SqlValue::Text("1.2".into()),
            ],
        );
        answer_in_latin1_if_asked(&request, &mut latin);
        let cs = |o: &InMemDicomObject| {
            o.get(tags::SPECIFIC_CHARACTER_SET)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(cs(&latin), "ISO_IR 100");
        let mut japanese = find.response(
            &cols,
            vec![
                SqlValue::Text("Yamada=山田".into()),
                SqlValue::Text("1.2".into()),
            ],
        );
        answer_in_latin1_if_asked(&request, &mut japanese);
        assert_eq!(cs(&japanese), "ISO_IR 192");
    }
}
