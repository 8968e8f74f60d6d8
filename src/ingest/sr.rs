//! The numeric measurements of a Structured Report, read from its content tree for the
//! measurements index (`crate::index::measurements`).
//!
//! TID 1500 (Measurement Report, PS3.16) puts each finding in a Measurement Group (DCM 125007:
//! TID 1501, 1410, 1411) whose Observation Context holds the Tracking Identifier (DCM 112039)
//! and Tracking Unique Identifier (DCM 112040), a Finding (DCM 121071), a Finding Site (SCT
//! 363698007) and the source references; its NUM items (TID 300) are the measurements. Whoever
//! wrote the SR (the AI worker, an OHIF export, highdicom, another vendor), those are read.
//! An SR without any Measurement Group gives its NUMs that a container CONTAINS, with the
//! context of their siblings. Nothing here fails: what cannot be read is left out, and an SR
//! that holds no measurement is stored and indexed like any other object.

use std::collections::HashMap;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::index::measurements::{CodeRef, MeasurementRow};

/// Rows kept of one SR at most: an index row per value, and a bound on what one object costs.
const MAX_MEASUREMENTS: usize = 10_000;

const MEASUREMENT_GROUP: (&str, &str) = ("125007", "DCM");
const TRACKING_IDENTIFIER: (&str, &str) = ("112039", "DCM");
const TRACKING_UID: (&str, &str) = ("112040", "DCM");
const FINDING: (&str, &str) = ("121071", "DCM");
const DERIVATION: (&str, &str) = ("121401", "DCM");
const SOURCE_SERIES_FOR_SEGMENTATION: (&str, &str) = ("121232", "DCM");
/// Finding Site: SCT, and the SNOMED-RT code that older writers (dcmjs) still use.
const FINDING_SITE: [(&str, &str); 2] = [("363698007", "SCT"), ("G-C0E3", "SRT")];
/// Segmentation Storage (binary, fractional) and Label Map Segmentation Storage: a reference
/// to a segmentation is no source image.
const SEGMENTATION_CLASSES: [&str; 2] = [
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.66.7",
];

/// The finding's own part of a Tracking Identifier. Cornerstone (OHIF) recognises its tools by
/// Tracking Identifiers such as `Cornerstone3DTools@^0.1.0:Length`, and a longer one that
/// starts with a tool's and `:` as that tool; the AI worker writes its long axes as
/// `Cornerstone3DTools@^0.1.0:Length:<finding>` so that OHIF lists them. What follows the
/// tool's part is the finding, filed like the finding's other groups; an identifier that is
/// only a tool's (OHIF's own exports) stays as it is.
fn finding_identifier(identifier: &str) -> &str {
    let tool_prefixed = ["Cornerstone3DTools@", "cornerstoneTools@"]
        .iter()
        .any(|p| identifier.starts_with(p));
    if !tool_prefixed {
        return identifier;
    }
    match identifier.splitn(3, ':').nth(2) {
        Some(rest) if !rest.trim().is_empty() => rest,
        _ => identifier,
    }
}

/// Whether an object is an SR whose content tree should be read: an SR SOP class (PS3.4 B.5,
/// `1.2.840.10008.5.1.4.1.1.88.*`), or Modality SR (a private SR class).
pub fn is_structured_report(obj: &InMemDicomObject, sop_class_uid: &str) -> bool {
    sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1.88.") || text(obj, tags::MODALITY) == "SR"
}

/// The measurements of an SR document.
pub fn measurements(obj: &InMemDicomObject) -> Vec<MeasurementRow> {
    let evidence = evidence_series(obj);
    let Some(root) = items(obj, tags::CONTENT_SEQUENCE) else {
        return Vec::new();
    };
    let mut reader = Reader {
        evidence,
        has_groups: contains_group(root),
        out: Vec::new(),
    };
    reader.walk(root, None);
    reader.out
}

/// What a Measurement Group (or, without groups, a container) says about its measurements.
#[derive(Default, Clone)]
struct Context {
    tracking_id: String,
    tracking_uid: String,
    finding: CodeRef,
    finding_site: CodeRef,
    source_series: String,
}

struct Reader {
    /// SOP Instance UID → Series Instance UID, from the SR's evidence sequences.
    evidence: HashMap<String, (String, String)>,
    has_groups: bool,
    out: Vec<MeasurementRow>,
}

impl Reader {
    fn walk(&mut self, content: &[InMemDicomObject], group: Option<&Context>) {
        let mut siblings: Option<Context> = None;
        for item in content {
            if self.out.len() >= MAX_MEASUREMENTS {
                return;
            }
            match text(item, tags::VALUE_TYPE).as_str() {
                "CONTAINER" => {
                    let children = items(item, tags::CONTENT_SEQUENCE).unwrap_or(&[]);
                    if concept(item).is(MEASUREMENT_GROUP.0, MEASUREMENT_GROUP.1) {
                        let context = self.context(children);
                        self.walk(children, Some(&context));
                    } else {
                        self.walk(children, group);
                    }
                }
                "NUM" if relationship(item) == "CONTAINS" => {
                    let context = match group {
                        Some(g) => g.clone(),
                        None if !self.has_groups => siblings
                            .get_or_insert_with(|| self.context(content))
                            .clone(),
                        None => continue,
                    };
                    if let Some(row) = self.measurement(item, context) {
                        self.out.push(row);
                    }
                }
                _ => {}
            }
        }
    }

    /// The observation context of a group from its direct children.
    fn context(&self, children: &[InMemDicomObject]) -> Context {
        let mut c = Context::default();
        let mut images = Vec::new();
        for item in children {
            let name = concept(item);
            match text(item, tags::VALUE_TYPE).as_str() {
                "TEXT" if name.is(TRACKING_IDENTIFIER.0, TRACKING_IDENTIFIER.1) => {
                    c.tracking_id = finding_identifier(&text(item, tags::TEXT_VALUE)).to_string()
                }
                "UIDREF" if name.is(TRACKING_UID.0, TRACKING_UID.1) => {
                    c.tracking_uid = text(item, tags::UID)
                }
                "UIDREF"
                    if name.is(
                        SOURCE_SERIES_FOR_SEGMENTATION.0,
                        SOURCE_SERIES_FOR_SEGMENTATION.1,
                    ) =>
                {
                    c.source_series = text(item, tags::UID)
                }
                "CODE" if name.is(FINDING.0, FINDING.1) => c.finding = code_value(item),
                "CODE" if is_finding_site(&name) => c.finding_site = code_value(item),
                _ => {}
            }
            collect_images(item, &mut images, 0);
        }
        if c.source_series.is_empty() {
            c.source_series = self
                .series_of(&images)
                .unwrap_or_else(|| self.only_series());
        }
        c
    }

    fn measurement(&self, item: &InMemDicomObject, mut context: Context) -> Option<MeasurementRow> {
        let measured = items(item, tags::MEASURED_VALUE_SEQUENCE)?.first()?;
        // PS3.3 C.18.1: Floating Point Value, when present, is the exact value of the
        // Numeric Value's decimal string
        let value = measured
            .get(tags::FLOATING_POINT_VALUE)
            .and_then(|e| e.to_float64().ok())
            .or_else(|| {
                measured
                    .get(tags::NUMERIC_VALUE)
                    .and_then(|e| e.to_multi_float64().ok())
                    .and_then(|v| v.first().copied())
            })
            .filter(|v| v.is_finite())?;
        let unit = items(measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)
            .and_then(|s| s.first())
            .map(code)
            .unwrap_or_default();
        let mut derivation = CodeRef::default();
        let mut images = Vec::new();
        for child in items(item, tags::CONTENT_SEQUENCE).unwrap_or(&[]) {
            let name = concept(child);
            if text(child, tags::VALUE_TYPE) == "CODE" {
                if name.is(DERIVATION.0, DERIVATION.1) {
                    derivation = code_value(child);
                } else if is_finding_site(&name) {
                    context.finding_site = code_value(child);
                }
            }
            collect_images(child, &mut images, 0);
        }
        if let Some(series) = self.series_of(&images) {
            context.source_series = series;
        }
        Some(MeasurementRow {
            source_series_uid: context.source_series,
            tracking_id: context.tracking_id,
            tracking_uid: context.tracking_uid,
            finding: context.finding,
            finding_site: context.finding_site,
            concept: concept(item),
            derivation,
            value,
            unit,
        })
    }

    /// The series of the first referenced source image the evidence names (not a
    /// segmentation).
    fn series_of(&self, images: &[String]) -> Option<String> {
        images.iter().find_map(|sop| {
            self.evidence
                .get(sop)
                .filter(|(_, class)| !SEGMENTATION_CLASSES.contains(&class.as_str()))
                .map(|(series, _)| series.clone())
        })
    }

    /// The one series of source images the evidence lists, if there is exactly one.
    fn only_series(&self) -> String {
        let mut series: Vec<&String> = self
            .evidence
            .values()
            .filter(|(_, class)| !SEGMENTATION_CLASSES.contains(&class.as_str()))
            .map(|(s, _)| s)
            .collect();
        series.sort();
        series.dedup();
        match series.as_slice() {
            [one] => (*one).clone(),
            _ => String::new(),
        }
    }
}

/// SOP Instance UIDs of IMAGE items at or below `item` (an IMAGE, or a SCOORD a measurement is
/// INFERRED FROM, which is SELECTED FROM an IMAGE); a few levels down at most.
fn collect_images(item: &InMemDicomObject, out: &mut Vec<String>, depth: usize) {
    if depth > 3 {
        return;
    }
    if text(item, tags::VALUE_TYPE) == "IMAGE" {
        if let Some(sop) = items(item, tags::REFERENCED_SOP_SEQUENCE).and_then(|s| s.first()) {
            let class = text(sop, tags::REFERENCED_SOP_CLASS_UID);
            if !SEGMENTATION_CLASSES.contains(&class.as_str()) {
                out.push(text(sop, tags::REFERENCED_SOP_INSTANCE_UID));
            }
        }
    }
    for child in items(item, tags::CONTENT_SEQUENCE).unwrap_or(&[]) {
        let rel = relationship(child);
        if rel == "INFERRED FROM" || rel == "SELECTED FROM" {
            collect_images(child, out, depth + 1);
        }
    }
}

/// SOP Instance UID → (Series Instance UID, SOP Class UID) of the Current Requested
/// Procedure Evidence and Pertinent Other Evidence (PS3.3 C.17.2).
fn evidence_series(obj: &InMemDicomObject) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    for seq in [
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE,
    ] {
        for study in items(obj, seq).unwrap_or(&[]) {
            for series in items(study, tags::REFERENCED_SERIES_SEQUENCE).unwrap_or(&[]) {
                let uid = text(series, tags::SERIES_INSTANCE_UID);
                for sop in items(series, tags::REFERENCED_SOP_SEQUENCE).unwrap_or(&[]) {
                    out.insert(
                        text(sop, tags::REFERENCED_SOP_INSTANCE_UID),
                        (uid.clone(), text(sop, tags::REFERENCED_SOP_CLASS_UID)),
                    );
                }
            }
        }
    }
    out
}

fn contains_group(content: &[InMemDicomObject]) -> bool {
    content.iter().any(|item| {
        text(item, tags::VALUE_TYPE) == "CONTAINER"
            && (concept(item).is(MEASUREMENT_GROUP.0, MEASUREMENT_GROUP.1)
                || contains_group(items(item, tags::CONTENT_SEQUENCE).unwrap_or(&[])))
    })
}

fn is_finding_site(name: &CodeRef) -> bool {
    FINDING_SITE.iter().any(|(v, s)| name.is(v, s))
}

fn relationship(item: &InMemDicomObject) -> String {
    text(item, tags::RELATIONSHIP_TYPE)
}

fn concept(item: &InMemDicomObject) -> CodeRef {
    items(item, tags::CONCEPT_NAME_CODE_SEQUENCE)
        .and_then(|s| s.first())
        .map(code)
        .unwrap_or_default()
}

fn code_value(item: &InMemDicomObject) -> CodeRef {
    items(item, tags::CONCEPT_CODE_SEQUENCE)
        .and_then(|s| s.first())
        .map(code)
        .unwrap_or_default()
}

/// A Code Sequence item (PS3.3 Table 8.8-1): Code Value, or Long Code Value, or URN Code
/// Value.
fn code(item: &InMemDicomObject) -> CodeRef {
    let value = [
        tags::CODE_VALUE,
        tags::LONG_CODE_VALUE,
        tags::URN_CODE_VALUE,
    ]
    .into_iter()
    .map(|t| text(item, t))
    .find(|v| !v.is_empty())
    .unwrap_or_default();
    CodeRef {
        code_value: value,
        coding_scheme: text(item, tags::CODING_SCHEME_DESIGNATOR),
        code_meaning: text(item, tags::CODE_MEANING),
    }
}

fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag).and_then(|e| e.items())
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::mem::InMemElement;

    #[test]
    fn a_cornerstone_tool_prefix_is_not_the_finding() {
        assert_eq!(
            finding_identifier("Cornerstone3DTools@^0.1.0:Length:ct-classical Lungs"),
            "ct-classical Lungs"
        );
        assert_eq!(
            finding_identifier("cornerstoneTools@^4.0.0:Length:Nodule 1"),
            "Nodule 1"
        );
        // a tool's identifier alone, as OHIF exports it, and anyone else's, stay
        assert_eq!(
            finding_identifier("Cornerstone3DTools@^0.1.0:Length"),
            "Cornerstone3DTools@^0.1.0:Length"
        );
        assert_eq!(finding_identifier("Nodule: left"), "Nodule: left");
        assert_eq!(
            finding_identifier("ct-classical Lungs"),
            "ct-classical Lungs"
        );
    }

    fn el(tag: Tag, vr: VR, v: &str) -> InMemElement {
        DataElement::new(tag, vr, PrimitiveValue::from(v))
    }

    fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
        DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
    }

    fn code_item(v: &str, s: &str, m: &str) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            el(tags::CODE_VALUE, VR::SH, v),
            el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, s),
            el(tags::CODE_MEANING, VR::LO, m),
        ])
    }

    fn item(
        rel: &str,
        vt: &str,
        name: (&str, &str, &str),
        rest: Vec<InMemElement>,
    ) -> InMemDicomObject {
        let mut o = InMemDicomObject::from_element_iter([
            el(tags::RELATIONSHIP_TYPE, VR::CS, rel),
            el(tags::VALUE_TYPE, VR::CS, vt),
            seq(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                vec![code_item(name.0, name.1, name.2)],
            ),
        ]);
        for e in rest {
            o.put(e);
        }
        o
    }

    fn num(
        name: (&str, &str, &str),
        value: &str,
        unit: (&str, &str, &str),
        children: Vec<InMemDicomObject>,
    ) -> InMemDicomObject {
        let mut rest = vec![seq(
            tags::MEASURED_VALUE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(tags::NUMERIC_VALUE, VR::DS, value),
                seq(
                    tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                    vec![code_item(unit.0, unit.1, unit.2)],
                ),
            ])],
        )];
        if !children.is_empty() {
            rest.push(seq(tags::CONTENT_SEQUENCE, children));
        }
        item("CONTAINS", "NUM", name, rest)
    }

    const VOLUME: (&str, &str, &str) = ("118565006", "SCT", "Volume");
    const ML: (&str, &str, &str) = ("mL", "UCUM", "milliliter");

    #[test]
    fn a_group_with_tracking_finding_site_and_derivations() {
        let group = item(
            "CONTAINS",
            "CONTAINER",
            ("125007", "DCM", "Measurement Group"),
            vec![seq(
                tags::CONTENT_SEQUENCE,
                vec![
                    item(
                        "HAS OBS CONTEXT",
                        "TEXT",
                        ("112039", "DCM", "Tracking Identifier"),
                        vec![el(tags::TEXT_VALUE, VR::UT, "lesion 1")],
                    ),
                    item(
                        "HAS OBS CONTEXT",
                        "UIDREF",
                        ("112040", "DCM", "Tracking Unique Identifier"),
                        vec![el(tags::UID, VR::UI, "1.2.3")],
                    ),
                    item(
                        "HAS CONCEPT MOD",
                        "CODE",
                        ("363698007", "SCT", "Finding Site"),
                        vec![seq(
                            tags::CONCEPT_CODE_SEQUENCE,
                            vec![code_item("39607008", "SCT", "Lung")],
                        )],
                    ),
                    item(
                        "CONTAINS",
                        "UIDREF",
                        ("121232", "DCM", "Source series for segmentation"),
                        vec![el(tags::UID, VR::UI, "1.2.9")],
                    ),
                    num(VOLUME, "12.5", ML, vec![]),
                    num(
                        ("56851009", "SCT", "Maximum"),
                        "40",
                        ("[hnsf'U]", "UCUM", "HU"),
                        vec![item(
                            "HAS CONCEPT MOD",
                            "CODE",
                            ("121401", "DCM", "Derivation"),
                            vec![seq(
                                tags::CONCEPT_CODE_SEQUENCE,
                                vec![code_item("56851009", "SCT", "Maximum")],
                            )],
                        )],
                    ),
                    // acquisition context is no measurement
                    item(
                        "HAS ACQ CONTEXT",
                        "NUM",
                        ("110910", "DCM", "Pixel Data Rows"),
                        vec![],
                    ),
                ],
            )],
        );
        let doc = InMemDicomObject::from_element_iter([
            el(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
            seq(
                tags::CONTENT_SEQUENCE,
                vec![
                    // an image library's acquisition NUMs are outside every group
                    num(
                        ("110910", "DCM", "Pixel Data Rows"),
                        "512",
                        ("{pixels}", "UCUM", "pixels"),
                        vec![],
                    ),
                    item(
                        "CONTAINS",
                        "CONTAINER",
                        ("126010", "DCM", "Imaging Measurements"),
                        vec![seq(tags::CONTENT_SEQUENCE, vec![group])],
                    ),
                ],
            ),
        ]);
        let rows = measurements(&doc);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].tracking_id, "lesion 1");
        assert_eq!(rows[0].tracking_uid, "1.2.3");
        assert_eq!(
            rows[0].finding_site,
            CodeRef::new("39607008", "SCT", "Lung")
        );
        assert_eq!(rows[0].source_series_uid, "1.2.9");
        assert_eq!(rows[0].concept.code_value, "118565006");
        assert_eq!(rows[0].value, 12.5);
        assert_eq!(rows[0].unit.code_value, "mL");
        assert!(rows[0].derivation.is_empty());
        assert_eq!(rows[1].derivation.code_meaning, "Maximum");
        assert_eq!(rows[1].value, 40.0);
    }

    #[test]
    fn without_groups_contained_nums_count_and_nonsense_is_skipped() {
        let doc = InMemDicomObject::from_element_iter([
            el(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
            seq(
                tags::CONTENT_SEQUENCE,
                vec![
                    num(VOLUME, "3", ML, vec![]),
                    num(VOLUME, "not a number", ML, vec![]),
                    item("CONTAINS", "NUM", VOLUME, vec![]),
                    InMemDicomObject::new_empty(),
                ],
            ),
        ]);
        let rows = measurements(&doc);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value, 3.0);
        assert!(measurements(&InMemDicomObject::new_empty()).is_empty());
    }
}
