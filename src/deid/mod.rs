//! De-identification (PS3.15 Annex E): the Basic Application Level Confidentiality Profile
//! with its options, applied by the data of Table E.1-1 ([`table`]), and the keyed pseudonyms
//! that keep exports of one patient consistent ([`Pseudonymizer`]). See docs/deid.md.

pub mod table;

use std::sync::Arc;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use table::{Action, OptionColumn, TABLE};

/// The profile options (PS3.15 E.3), named as the command-line flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    pub retain_longitudinal_modified_dates: bool,
    pub retain_patient_characteristics: bool,
    pub retain_device_identity: bool,
    pub retain_institution_identity: bool,
    pub retain_uids: bool,
    pub retain_safe_private: bool,
    pub clean_descriptors: bool,
}

impl Options {
    /// Each option column of Table E.1-1 and whether it is in force. Full dates, clean
    /// structured content and clean graphics are not offered.
    pub fn columns(&self) -> [(OptionColumn, bool); 10] {
        [
            (OptionColumn::SafePrivate, self.retain_safe_private),
            (OptionColumn::Uids, self.retain_uids),
            (OptionColumn::DeviceIdentity, self.retain_device_identity),
            (
                OptionColumn::InstitutionIdentity,
                self.retain_institution_identity,
            ),
            (
                OptionColumn::PatientCharacteristics,
                self.retain_patient_characteristics,
            ),
            (OptionColumn::FullDates, false),
            (
                OptionColumn::ModifiedDates,
                self.retain_longitudinal_modified_dates,
            ),
            (OptionColumn::CleanDescriptors, self.clean_descriptors),
            (OptionColumn::CleanStructuredContent, false),
            (OptionColumn::CleanGraphics, false),
        ]
    }

    /// The CID 7050 codes (code value, meaning) of the profile and the options in force.
    pub fn method_codes(&self) -> Vec<(&'static str, &'static str)> {
        let mut codes = vec![("113100", "Basic Application Confidentiality Profile")];
        let options = [
            (self.clean_descriptors, "113105", "Clean Descriptors Option"),
            (
                self.retain_longitudinal_modified_dates,
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            (
                self.retain_patient_characteristics,
                "113108",
                "Retain Patient Characteristics Option",
            ),
            (
                self.retain_device_identity,
                "113109",
                "Retain Device Identity Option",
            ),
            (self.retain_uids, "113110", "Retain UIDs Option"),
            (
                self.retain_safe_private,
                "113111",
                "Retain Safe Private Option",
            ),
            (
                self.retain_institution_identity,
                "113112",
                "Retain Institution Identity Option",
            ),
        ];
        codes.extend(
            options
                .iter()
                .filter(|(on, _, _)| *on)
                .map(|(_, v, m)| (*v, *m)),
        );
        codes
    }
}

/// The secret key of the pseudonyms. Its Debug never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// None for an empty secret.
    pub fn new(secret: impl Into<String>) -> Option<Secret> {
        let s = secret.into();
        (!s.is_empty()).then_some(Secret(s))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Keyed pseudonyms (HMAC-SHA256 with the administrator's secret): the same input gives the
/// same pseudonym in every export, and nobody without the secret can compute or invert them.
pub struct Pseudonymizer {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer")
    }
}

impl Pseudonymizer {
    pub fn new(secret: &Secret) -> Pseudonymizer {
        Pseudonymizer {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.0.as_bytes()),
        }
    }

    fn mac(&self, domain: &str, parts: &[&str]) -> [u8; 32] {
        let mut context = ring::hmac::Context::with_key(&self.key);
        context.update(domain.as_bytes());
        for part in parts {
            context.update(b"\0");
            context.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// A UID's replacement: `2.25.` and the decimal of 128 bits of its MAC (PS3.5 B.2), at most
    /// 44 characters.
    pub fn uid(&self, uid: &str) -> String {
        let mac = self.mac("uid", &[uid.trim_end_matches(['\0', ' '])]);
        let mut bits = [0u8; 16];
        bits.copy_from_slice(&mac[..16]);
        format!("2.25.{}", u128::from_be_bytes(bits))
    }

    fn patient_hex(&self, patient_id: &str, issuer: &str) -> String {
        hex::encode_upper(&self.mac("patient", &[patient_id, issuer])[..10])
    }

    /// The pseudonymous Patient ID.
    pub fn patient_id(&self, patient_id: &str, issuer: &str) -> String {
        format!("PSN{}", self.patient_hex(patient_id, issuer))
    }

    /// The pseudonymous Patient's Name.
    pub fn patient_name(&self, patient_id: &str, issuer: &str) -> String {
        format!("PSEUDONYM^{}", self.patient_hex(patient_id, issuer))
    }

    /// Days every date of the patient moves back: 365 to 4014, whole days.
    pub fn day_shift(&self, patient_id: &str, issuer: &str) -> i64 {
        let mac = self.mac("date-shift", &[patient_id, issuer]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&mac[..8]);
        365 + (u64::from_be_bytes(b) % 3650) as i64
    }
}

/// What identified an instance before, and what identifies it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identities {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub new_patient_id: String,
    pub new_patient_name: String,
    pub new_study_instance_uid: String,
    pub new_sop_instance_uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeidError {
    #[error("Burned In Annotation (0028,0301) is YES and pixel data cannot be cleaned: refused")]
    BurnedInAnnotation,
    #[error("unreadable object: {0}")]
    Unreadable(String),
}

/// The de-identifier: the options and the pseudonym key.
#[derive(Debug, Clone)]
pub struct Deidentifier {
    pub options: Options,
    pub pseudonyms: Arc<Pseudonymizer>,
}

/// What the walk needs of the whole object.
struct Context<'a> {
    options: &'a Options,
    pseudonyms: &'a Pseudonymizer,
    patient_id: String,
    issuer: String,
    /// Words of the patient's identity that a cleaned descriptor must not keep.
    identity_tokens: Vec<String>,
    day_shift: i64,
}

fn text_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// A dummy value for D, consistent with the VR.
fn dummy(vr: VR) -> PrimitiveValue {
    use PrimitiveValue as P;
    match vr {
        VR::DA => P::from("19000101"),
        VR::DT => P::from("19000101000000"),
        VR::TM => P::from("000000"),
        VR::AS => P::from("000D"),
        VR::DS | VR::IS => P::from("0"),
        VR::US => P::U16(vec![0].into()),
        VR::SS => P::I16(vec![0].into()),
        VR::UL => P::U32(vec![0].into()),
        VR::SL => P::I32(vec![0].into()),
        VR::UV => P::U64(vec![0].into()),
        VR::SV => P::I64(vec![0].into()),
        VR::FL => P::F32(vec![0.0].into()),
        VR::FD => P::F64(vec![0.0].into()),
        VR::UR => P::from("urn:oid:2.25.0"),
        VR::AE | VR::CS | VR::SH | VR::LO | VR::ST | VR::LT | VR::UT | VR::UC | VR::PN => {
            P::from("ANONYMIZED")
        }
        _ => P::Empty,
    }
}

fn strings(value: &PrimitiveValue) -> Vec<String> {
    value
        .to_multi_str()
        .iter()
        .map(|s| s.trim_matches(['\0', ' ']).to_string())
        .collect()
}

fn multi(values: Vec<String>) -> PrimitiveValue {
    if values.len() == 1 {
        PrimitiveValue::from(values.into_iter().next().unwrap_or_default())
    } else {
        PrimitiveValue::Strs(values.into())
    }
}

/// Moves a DA value (YYYYMMDD, or a range) back by `days`; None when it does not parse.
fn shift_date(value: &str, days: i64) -> Option<String> {
    if value.is_empty() {
        return Some(String::new());
    }
    if let Some((a, b)) = value.split_once('-') {
        return Some(format!("{}-{}", shift_date(a, days)?, shift_date(b, days)?));
    }
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = value[..4].parse().ok()?;
    let month: u8 = value[4..6].parse().ok()?;
    let day: u8 = value[6..].parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let shifted = date.checked_sub(time::Duration::days(days))?;
    Some(format!(
        "{:04}{:02}{:02}",
        shifted.year(),
        shifted.month() as u8,
        shifted.day()
    ))
}

/// Moves the date of a DT value back by `days`; the time and offset stay.
fn shift_datetime(value: &str, days: i64) -> Option<String> {
    if value.len() < 8 {
        return if value.is_empty() {
            Some(String::new())
        } else {
            None
        };
    }
    if value.contains('-') && !value[8..].starts_with('-') && value.len() > 8 {
        // a range of DT
        if let Some((a, b)) = value.split_once('-') {
            if a.len() >= 8 && b.len() >= 8 {
                return Some(format!(
                    "{}-{}",
                    shift_datetime(a, days)?,
                    shift_datetime(b, days)?
                ));
            }
        }
    }
    Some(format!("{}{}", shift_date(&value[..8], days)?, &value[8..]))
}

/// Removes the patient's identity from a descriptor: every word that is one of the identity
/// tokens (any case), and runs of 6 or more digits (dates, record numbers).
fn clean_text(value: &str, tokens: &[String]) -> String {
    let kept: Vec<&str> = value
        .split(|c: char| c.is_whitespace() || c == '^')
        .filter(|w| !w.is_empty())
        .filter(|w| {
            let bare: String = w
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_uppercase();
            let digits = bare.chars().filter(|c| c.is_ascii_digit()).count();
            !(tokens.iter().any(|t| bare.contains(t.as_str())) || digits >= 6)
        })
        .collect();
    let joined = kept.join(" ");
    if joined.is_empty() && !value.trim().is_empty() {
        "CLEANED".into()
    } else {
        joined
    }
}

impl Context<'_> {
    fn uid(&self, value: &PrimitiveValue) -> PrimitiveValue {
        multi(
            strings(value)
                .iter()
                .map(|u| {
                    if u.is_empty() {
                        String::new()
                    } else {
                        self.pseudonyms.uid(u)
                    }
                })
                .collect(),
        )
    }

    /// C on a primitive value: dates shifted (with the modified-dates option), text cleaned of
    /// the patient's identity, anything else kept.
    fn clean(&self, vr: VR, value: &PrimitiveValue) -> PrimitiveValue {
        let shift = self.options.retain_longitudinal_modified_dates;
        match vr {
            VR::DA | VR::DT if shift => {
                let shifted: Option<Vec<String>> = strings(value)
                    .iter()
                    .map(|v| {
                        if vr == VR::DA {
                            shift_date(v, self.day_shift)
                        } else {
                            shift_datetime(v, self.day_shift)
                        }
                    })
                    .collect();
                shifted.map(multi).unwrap_or(PrimitiveValue::Empty)
            }
            // whole days: a time of day does not change
            VR::TM if shift => value.clone(),
            VR::DA | VR::DT | VR::TM => PrimitiveValue::Empty,
            VR::SH | VR::LO | VR::ST | VR::LT | VR::UT | VR::UC | VR::PN | VR::CS | VR::AE => {
                multi(
                    strings(value)
                        .iter()
                        .map(|v| clean_text(v, &self.identity_tokens))
                        .collect(),
                )
            }
            _ => value.clone(),
        }
    }

    fn items(&self, items: &[InMemDicomObject]) -> Vec<InMemDicomObject> {
        items.iter().map(|item| self.walk(item)).collect()
    }

    /// The de-identified copy of a data set (the top level or a sequence item).
    fn walk(&self, obj: &InMemDicomObject) -> InMemDicomObject {
        let safe = if self.options.retain_safe_private {
            SafePrivate::declared_in(obj)
        } else {
            SafePrivate::default()
        };
        let mut out = InMemDicomObject::new_empty();
        for element in obj.iter() {
            if let Some(e) = self.element(element, &safe) {
                out.put(e);
            }
        }
        out
    }

    fn element(&self, element: &InMemElement, safe: &SafePrivate) -> Option<InMemElement> {
        let tag = element.tag();
        let vr = element.vr();
        // group lengths are retired (PS3.5 7.2): not written
        if tag.1 == 0 {
            return None;
        }
        let action = TABLE.action(tag, self.options);
        // private attributes (C only with the Retain Safe Private Option): kept when the data
        // set declares them safe, removed otherwise; the node has no vendor dictionary of safe
        // private attributes (PS3.15 E.3.10)
        let action = match action {
            Some(Action::C) if tag.0 % 2 == 1 => Some(if safe.keeps(tag) {
                Action::K
            } else {
                Action::X
            }),
            a => a,
        };
        // the pseudonyms: D/Z with a consistent dummy (PS3.15 E.3 allows a pseudonym)
        if tag == tags::PATIENT_ID && action != Some(Action::K) {
            return Some(DataElement::new(
                tag,
                vr,
                PrimitiveValue::from(self.pseudonyms.patient_id(&self.patient_id, &self.issuer)),
            ));
        }
        if tag == tags::PATIENT_NAME && action != Some(Action::K) {
            return Some(DataElement::new(
                tag,
                vr,
                PrimitiveValue::from(self.pseudonyms.patient_name(&self.patient_id, &self.issuer)),
            ));
        }
        match element.value() {
            Value::Sequence(seq) => {
                let items = match action {
                    Some(Action::X) => return None,
                    Some(Action::Z) => Vec::new(),
                    _ => self.items(seq.items()),
                };
                Some(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)))
            }
            Value::PixelSequence(_) => match action {
                Some(Action::X) => None,
                _ => Some(element.clone()),
            },
            Value::Primitive(value) => {
                let value = match action {
                    None | Some(Action::K) => return Some(element.clone()),
                    Some(Action::X) => return None,
                    Some(Action::Z) => PrimitiveValue::Empty,
                    Some(Action::U) if vr == VR::UI => self.uid(value),
                    Some(Action::D) | Some(Action::U) => {
                        if vr == VR::UI {
                            self.uid(value)
                        } else {
                            dummy(vr)
                        }
                    }
                    Some(Action::C) => self.clean(vr, value),
                };
                Some(DataElement::new(tag, vr, value))
            }
        }
    }
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, value));
}

impl Deidentifier {
    pub fn new(options: Options, pseudonyms: Arc<Pseudonymizer>) -> Deidentifier {
        Deidentifier {
            options,
            pseudonyms,
        }
    }

    /// The identities of a stored object, and what they become (without de-identifying it).
    pub fn identities(&self, obj: &InMemDicomObject) -> Identities {
        let t = |tag| text_of(obj, tag);
        let (patient_id, issuer) = (t(tags::PATIENT_ID), t(tags::ISSUER_OF_PATIENT_ID));
        let map_uid = |u: String| {
            if self.options.retain_uids || u.is_empty() {
                u
            } else {
                self.pseudonyms.uid(&u)
            }
        };
        Identities {
            new_patient_id: self.pseudonyms.patient_id(&patient_id, &issuer),
            new_patient_name: self.pseudonyms.patient_name(&patient_id, &issuer),
            new_study_instance_uid: map_uid(t(tags::STUDY_INSTANCE_UID)),
            new_sop_instance_uid: map_uid(t(tags::SOP_INSTANCE_UID)),
            patient_name: t(tags::PATIENT_NAME),
            study_instance_uid: t(tags::STUDY_INSTANCE_UID),
            series_instance_uid: t(tags::SERIES_INSTANCE_UID),
            sop_class_uid: t(tags::SOP_CLASS_UID),
            sop_instance_uid: t(tags::SOP_INSTANCE_UID),
            issuer_of_patient_id: issuer,
            patient_id,
        }
    }

    /// A SOP Instance UID as it is exported.
    pub fn map_uid(&self, uid: &str) -> String {
        if self.options.retain_uids {
            uid.to_string()
        } else {
            self.pseudonyms.uid(uid)
        }
    }

    /// De-identifies a data set (no File Meta Information).
    pub fn deidentify(
        &self,
        obj: &InMemDicomObject,
    ) -> Result<(InMemDicomObject, Identities), DeidError> {
        if text_of(obj, tags::BURNED_IN_ANNOTATION).eq_ignore_ascii_case("YES") {
            return Err(DeidError::BurnedInAnnotation);
        }
        let identities = self.identities(obj);
        let mut identity_tokens: Vec<String> = Vec::new();
        for tag in [
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            Tag(0x0010, 0x1000), // Other Patient IDs (retired)
            tags::PATIENT_BIRTH_NAME,
            tags::PATIENT_MOTHER_BIRTH_NAME,
            tags::ACCESSION_NUMBER,
        ] {
            for word in text_of(obj, tag).split(|c: char| c.is_whitespace() || "^\\=".contains(c)) {
                let bare: String = word
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
                    .to_uppercase();
                if bare.len() >= 2 && !identity_tokens.contains(&bare) {
                    identity_tokens.push(bare);
                }
            }
        }
        let context = Context {
            options: &self.options,
            pseudonyms: &self.pseudonyms,
            day_shift: self
                .pseudonyms
                .day_shift(&identities.patient_id, &identities.issuer_of_patient_id),
            patient_id: identities.patient_id.clone(),
            issuer: identities.issuer_of_patient_id.clone(),
            identity_tokens,
        };
        let mut out = context.walk(obj);
        put_str(
            &mut out,
            tags::PATIENT_IDENTITY_REMOVED,
            VR::CS,
            PrimitiveValue::from("YES"),
        );
        let codes = self.options.method_codes();
        let method: Vec<String> = std::iter::once("DICOM PS3.15 Annex E".to_string())
            .chain(codes.iter().map(|(_, meaning)| meaning.to_string()))
            .collect();
        put_str(
            &mut out,
            tags::DEIDENTIFICATION_METHOD,
            VR::LO,
            multi(method),
        );
        let items: Vec<InMemDicomObject> = codes
            .iter()
            .map(|(value, meaning)| {
                InMemDicomObject::from_element_iter([
                    DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(*value)),
                    DataElement::new(
                        tags::CODING_SCHEME_DESIGNATOR,
                        VR::SH,
                        PrimitiveValue::from("DCM"),
                    ),
                    DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(*meaning)),
                ])
            })
            .collect();
        out.put(DataElement::new(
            tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(items),
        ));
        let temporal = if self.options.retain_longitudinal_modified_dates {
            "MODIFIED"
        } else {
            "REMOVED"
        };
        put_str(
            &mut out,
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            VR::CS,
            PrimitiveValue::from(temporal),
        );
        Ok((out, identities))
    }

    /// De-identifies a Part 10 file: the data set, and the File Meta Information rebuilt for
    /// it (its Media Storage SOP Instance UID follows the new SOP Instance UID; the transfer
    /// syntax stays).
    pub fn deidentify_part10(&self, part10: &[u8]) -> Result<(Vec<u8>, Identities), DeidError> {
        let file = dicom_object::OpenFileOptions::new()
            .from_reader(std::io::Cursor::new(part10.get(128..).ok_or_else(
                || DeidError::Unreadable("shorter than a Part 10 preamble".into()),
            )?))
            .map_err(|e| DeidError::Unreadable(e.to_string()))?;
        let transfer_syntax = file.meta().transfer_syntax().to_string();
        let dataset = file.into_inner();
        let (out, identities) = self.deidentify(&dataset)?;
        let sop_class = text_of(&out, tags::SOP_CLASS_UID);
        let sop_instance = text_of(&out, tags::SOP_INSTANCE_UID);
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance)
            .transfer_syntax(transfer_syntax)
            .implementation_class_uid(crate::ingest::IMPLEMENTATION_CLASS_UID)
            .implementation_version_name("PACS_DEID")
            .build()
            .map_err(|e| DeidError::Unreadable(e.to_string()))?;
        let mut bytes = Vec::with_capacity(part10.len());
        out.with_exact_meta(meta)
            .write_all(&mut bytes)
            .map_err(|e| DeidError::Unreadable(format!("cannot encode: {e}")))?;
        Ok((bytes, identities))
    }
}

#[cfg(test)]
mod tests;

/// The private attributes a data set declares safe to keep, for the Retain Safe Private Option
/// (PS3.15 E.3.10): its Private Data Element Characteristics Sequence (0008,0300; PS3.3
/// C.12.1.1.7) describes each block of private elements (group, private creator), and a block
/// whose Block Identifying Information Status (0008,0303) is SAFE is kept whole, one that is
/// MIXED keeps the elements listed in Nonidentifying Private Elements (0008,0304). A block is
/// found by its private creator's value, not its position: (gggg,00xx) reserves (gggg,xx00-xxFF)
/// (PS3.5 7.8.1), and the sequence names the creator, so a block moved elsewhere still matches.
#[derive(Debug, Default)]
struct SafePrivate {
    blocks: Vec<SafeBlock>,
}

/// A block declared safe: (group, block), and None when all of it is, else the low bytes of
/// its elements that are.
type SafeBlock = ((u16, u8), Option<Vec<u8>>);

impl SafePrivate {
    fn declared_in(obj: &InMemDicomObject) -> SafePrivate {
        let mut safe = SafePrivate::default();
        let Some(declarations) = obj
            .get(tags::PRIVATE_DATA_ELEMENT_CHARACTERISTICS_SEQUENCE)
            .and_then(|e| e.items())
        else {
            return safe;
        };
        for item in declarations {
            let int = |tag| item.get(tag).and_then(|e| e.to_int::<u16>().ok());
            let text = |tag| {
                item.get(tag)
                    .and_then(|e| e.to_str().ok())
                    .map(|v| v.trim().to_string())
            };
            let (Some(group), Some(creator), Some(status)) = (
                int(tags::PRIVATE_GROUP_REFERENCE),
                text(tags::PRIVATE_CREATOR_REFERENCE),
                text(tags::BLOCK_IDENTIFYING_INFORMATION_STATUS),
            ) else {
                continue;
            };
            if group % 2 == 0 {
                continue;
            }
            // the block this creator holds in this data set
            let block = (0x10u16..=0xFF).find(|b| {
                obj.get(Tag(group, *b))
                    .and_then(|e| e.to_str().ok())
                    .is_some_and(|v| v.trim() == creator)
            });
            let Some(block) = block else { continue };
            let elements = match status.as_str() {
                "SAFE" => None,
                "MIXED" => Some(
                    item.get(tags::NONIDENTIFYING_PRIVATE_ELEMENTS)
                        .and_then(|e| e.to_multi_int::<u16>().ok())
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|e| u8::try_from(e & 0xFF).ok())
                        .collect(),
                ),
                _ => continue,
            };
            safe.blocks.push(((group, block as u8), elements));
        }
        safe
    }

    fn keeps(&self, tag: Tag) -> bool {
        let Tag(group, element) = tag;
        if (0x0010..=0x00FF).contains(&element) {
            // a private creator: kept with its block
            return self
                .blocks
                .iter()
                .any(|((g, b), _)| *g == group && *b as u16 == element);
        }
        let (block, offset) = ((element >> 8) as u8, (element & 0xFF) as u8);
        self.blocks.iter().any(|((g, b), elements)| {
            *g == group
                && *b == block
                && elements.as_ref().is_none_or(|list| list.contains(&offset))
        })
    }
}
