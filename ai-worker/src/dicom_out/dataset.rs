//! Building data sets: elements whose VR comes from the standard dictionary, code items, UIDs,
//! value formatting, and the modules the Segmentation and the report share.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::{
    Equipment, OutputError, SourceSeries, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME,
    PATIENT_STUDY_OPTIONAL, PATIENT_STUDY_TYPE2,
};
use crate::model::Code;

/// The VR of a standard attribute. Every tag written here has a single VR in PS3.6 (Pixel
/// Data, whose VR depends on context, is written with [`DataSetExt::set_bytes`]).
fn vr(tag: Tag) -> VR {
    match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
        Some(VirtualVr::Exact(vr)) => vr,
        other => panic!("dicom_out: {tag} has no single VR in the dictionary ({other:?})"),
    }
}

/// Writing attributes by tag, the VR taken from the standard dictionary.
pub(crate) trait DataSetExt {
    fn set_str(&mut self, tag: Tag, value: impl Into<String>);
    fn set_strs<S: Into<String>>(&mut self, tag: Tag, values: impl IntoIterator<Item = S>);
    /// Decimal String values, each formatted to fit 16 characters.
    fn set_ds(&mut self, tag: Tag, values: &[f64]);
    fn set_value(&mut self, tag: Tag, value: impl Into<PrimitiveValue>);
    fn set_seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>);
    /// A code sequence holding one item.
    fn set_code(&mut self, tag: Tag, code: &Code);
    fn set_bytes(&mut self, tag: Tag, vr: VR, bytes: Vec<u8>);
}

impl DataSetExt for InMemDicomObject {
    fn set_str(&mut self, tag: Tag, value: impl Into<String>) {
        self.put(DataElement::new(
            tag,
            vr(tag),
            PrimitiveValue::from(value.into()),
        ));
    }

    fn set_strs<S: Into<String>>(&mut self, tag: Tag, values: impl IntoIterator<Item = S>) {
        let values = values.into_iter().map(Into::into).collect();
        self.put(DataElement::new(tag, vr(tag), PrimitiveValue::Strs(values)));
    }

    fn set_ds(&mut self, tag: Tag, values: &[f64]) {
        self.set_strs(tag, values.iter().map(|v| ds(*v)));
    }

    fn set_value(&mut self, tag: Tag, value: impl Into<PrimitiveValue>) {
        self.put(DataElement::new(tag, vr(tag), value.into()));
    }

    fn set_seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>) {
        self.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
    }

    fn set_code(&mut self, tag: Tag, code: &Code) {
        self.set_seq(tag, vec![code_item(code)]);
    }

    fn set_bytes(&mut self, tag: Tag, vr: VR, bytes: Vec<u8>) {
        self.put(DataElement::new(tag, vr, PrimitiveValue::from(bytes)));
    }
}

/// A Code Sequence item (PS3.3 8.8): the value goes to Code Value when it fits SH (16
/// characters), to Long Code Value otherwise, to URN Code Value when it is a URN or URL.
pub(crate) fn code_item(code: &Code) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    let value = code.value.trim();
    if value.starts_with("urn:") || value.starts_with("http://") || value.starts_with("https://") {
        item.set_str(tags::URN_CODE_VALUE, value);
    } else if value.chars().count() > 16 {
        item.set_str(tags::LONG_CODE_VALUE, value);
    } else {
        item.set_str(tags::CODE_VALUE, value);
    }
    item.set_str(tags::CODING_SCHEME_DESIGNATOR, code.scheme.trim());
    item.set_str(tags::CODE_MEANING, truncate(code.meaning.trim(), 64));
    item
}

/// A new UID: "2.25." followed by a random (version 4) UUID as a decimal integer (PS3.5 B.2).
pub(crate) fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// At most `max` characters of `s`.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A Code String of at most 16 characters from a name: upper case, characters CS does not
/// allow (PS3.5 6.2: A-Z, 0-9, space, underscore) turned into underscores.
pub(crate) fn cs_label(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(16)
        .collect();
    if s.is_empty() {
        "SEGMENTATION".into()
    } else {
        s
    }
}

/// A Decimal String (PS3.5 6.2: at most 16 characters): the shortest representation that
/// reads back as `x` when it fits, else as many decimals as fit. Non-finite values become 0.
pub(crate) fn ds(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    let plain = format!("{x}");
    if plain.len() <= 16 && !(x != 0.0 && x.abs() < 1e-4) {
        return plain;
    }
    if x.abs() >= 1e-4 {
        for decimals in (0..=15).rev() {
            let s = format!("{x:.decimals$}");
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            };
            if s.len() <= 16 {
                return s;
            }
        }
    }
    (0..=12)
        .rev()
        .map(|decimals| format!("{x:.decimals$e}"))
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| "0".into())
}

/// An Integer String.
pub(crate) fn is(x: i64) -> String {
    x.to_string()
}

/// When the objects were made: Content, Series and Instance Creation Date/Time.
pub(crate) struct Timestamp {
    pub date: String,
    pub time: String,
    /// Timezone Offset From UTC (0008,0201), "+HHMM".
    pub offset: String,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let now = chrono::Local::now();
        Timestamp {
            date: now.format("%Y%m%d").to_string(),
            time: now.format("%H%M%S%.6f").to_string(),
            offset: now.format("%z").to_string(),
        }
    }
}

/// SOP Common module (PS3.3 C.12.1) and the creation date and time.
pub(crate) fn put_sop_common(
    obj: &mut InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    at: &Timestamp,
) {
    // Every text value is a Rust string: written as UTF-8 (PS3.3 C.12.1.1.2, ISO_IR 192).
    obj.set_str(tags::SPECIFIC_CHARACTER_SET, "ISO_IR 192");
    obj.set_str(tags::SOP_CLASS_UID, sop_class_uid);
    obj.set_str(tags::SOP_INSTANCE_UID, sop_instance_uid);
    obj.set_str(tags::INSTANCE_CREATION_DATE, at.date.clone());
    obj.set_str(tags::INSTANCE_CREATION_TIME, at.time.clone());
    obj.set_str(tags::TIMEZONE_OFFSET_FROM_UTC, at.offset.clone());
}

/// Patient, General Study and Patient Study attributes copied from the source instance: the
/// outputs belong to the source's Study.
pub(crate) fn put_patient_study(
    obj: &mut InMemDicomObject,
    source: &SourceSeries,
) -> Result<(), OutputError> {
    let study_uid = source
        .instance
        .get(tags::STUDY_INSTANCE_UID)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
        .ok_or(OutputError::MissingAttribute("StudyInstanceUID"))?;
    obj.set_str(tags::STUDY_INSTANCE_UID, study_uid);
    for &tag in PATIENT_STUDY_TYPE2 {
        let element = match source.instance.get(tag) {
            Some(e) => e.clone(),
            None => DataElement::empty(tag, vr(tag)),
        };
        obj.put(element);
    }
    for &tag in PATIENT_STUDY_OPTIONAL {
        if let Some(e) = source.instance.get(tag) {
            obj.put(e.clone());
        }
    }
    Ok(())
}

/// The Study Instance UID the outputs are written into.
pub(crate) fn study_instance_uid(obj: &InMemDicomObject) -> String {
    text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default()
}

/// General Equipment (PS3.3 C.7.5.1) and Enhanced General Equipment (C.7.5.2) modules.
pub(crate) fn put_equipment(obj: &mut InMemDicomObject, equipment: &Equipment) {
    obj.set_str(tags::MANUFACTURER, truncate(&equipment.manufacturer, 64));
    obj.set_str(
        tags::MANUFACTURER_MODEL_NAME,
        truncate(&equipment.model_name, 64),
    );
    obj.set_str(
        tags::DEVICE_SERIAL_NUMBER,
        truncate(&equipment.device_serial_number, 64),
    );
    obj.set_str(
        tags::SOFTWARE_VERSIONS,
        truncate(&equipment.software_versions, 64),
    );
}

/// The object with its File Meta group (PS3.10 7.1), for storage as Explicit VR Little Endian.
pub(crate) fn with_meta(
    obj: InMemDicomObject,
) -> Result<FileDicomObject<InMemDicomObject>, OutputError> {
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
    )
    .map_err(|e| OutputError::Encode(e.to_string()))
}

/// A text attribute without its padding.
pub(crate) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let v = v.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!v.is_empty()).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        for x in [
            0.0,
            1.0,
            -1.5,
            0.1 + 0.2,
            123456.789012345,
            -98765.4321098765,
            1e-7,
            3.2e21,
            f64::NAN,
        ] {
            let s = ds(x);
            assert!(s.len() <= 16, "{x} -> {s}");
            if x.is_finite() {
                let back: f64 = s.parse().unwrap();
                assert!((back - x).abs() <= x.abs() * 1e-9 + 1e-12, "{x} -> {s}");
            }
        }
        assert_eq!(ds(2.5), "2.5");
        assert_eq!(ds(0.1 + 0.2), "0.3");
    }

    #[test]
    fn uids_are_under_the_uuid_arc_and_short_enough() {
        let a = new_uid();
        assert!(
            a.starts_with("2.25.") && a.len() <= 64 && a[5..].bytes().all(|b| b.is_ascii_digit())
        );
        assert_ne!(a, new_uid());
    }

    #[test]
    fn content_labels_are_code_strings() {
        assert_eq!(cs_label("ct-classical"), "CT_CLASSICAL");
        assert_eq!(
            cs_label("a very long model name indeed"),
            "A VERY LONG MODE"
        );
        assert_eq!(cs_label(""), "SEGMENTATION");
    }
}
