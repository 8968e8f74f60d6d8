use super::*;
use dicom_core::PrimitiveValue as P;

fn pseudonyms(secret: &str) -> Arc<Pseudonymizer> {
    Arc::new(Pseudonymizer::new(&Secret::new(secret).unwrap()))
}

fn el(tag: Tag, vr: VR, v: &str) -> InMemElement {
    DataElement::new(tag, vr, P::from(v))
}

fn sample() -> InMemDicomObject {
    let reference = InMemDicomObject::from_element_iter([
        el(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.2",
        ),
        el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5"),
    ]);
    let private = DataElement::new(Tag(0x0009, 0x1001), VR::LO, P::from("DOE secret"));
    InMemDicomObject::from_element_iter([
        el(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.6"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4"),
        el(tags::STUDY_DATE, VR::DA, "20240301"),
        el(tags::STUDY_TIME, VR::TM, "101500"),
        el(tags::ACQUISITION_DATE_TIME, VR::DT, "20240301101500.000000"),
        el(tags::ACCESSION_NUMBER, VR::SH, "ACC991"),
        el(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
        el(tags::STUDY_DESCRIPTION, VR::LO, "CT chest DOE 20240301"),
        el(tags::PATIENT_NAME, VR::PN, "DOE^JOHN"),
        el(tags::PATIENT_ID, VR::LO, "MRN123"),
        el(tags::PATIENT_BIRTH_DATE, VR::DA, "19600101"),
        el(tags::PATIENT_SEX, VR::CS, "M"),
        el(tags::PATIENT_AGE, VR::AS, "064Y"),
        el(tags::MODALITY, VR::CS, "CT"),
        el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "SN-42"),
        el(tags::FRAME_OF_REFERENCE_UID, VR::UI, "1.2.3.9"),
        DataElement::new(
            tags::SOURCE_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![reference]),
        ),
        private,
        DataElement::new(Tag(0x6000, 0x3000), VR::OW, P::U16(vec![1, 2].into())),
        DataElement::new(tags::ROWS, VR::US, P::U16(vec![2].into())),
    ])
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag).map(|e| {
        e.to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    })
}

#[test]
fn the_table_is_loaded_with_every_row() {
    // 621 rows in the extraction (617 exact, 3 repeating groups, the private row) and the 35
    // of the 2026c edition it lacks
    assert_eq!(TABLE.len(), 656);
    assert_eq!(
        TABLE.row(Tag(0x0010, 0x0011)).unwrap().basic,
        TABLE.row(Tag(0x0018, 0x4000)).unwrap().basic,
        "a 2026c row (Person Names to Use) is X like Acquisition Comments"
    );
    assert_eq!(TABLE.row(Tag(0x5012, 0x3000)).unwrap().name, "Curve Data");
    assert_eq!(TABLE.row(Tag(0x6002, 0x3000)).unwrap().name, "Overlay Data");
    assert_eq!(
        TABLE.row(Tag(0x0019, 0x10AA)).unwrap().name,
        "Private Attributes"
    );
    assert!(TABLE.row(tags::ROWS).is_none());
    let none = Options::default();
    assert_eq!(TABLE.action(tags::STUDY_DATE, &none), Some(Action::Z));
    assert_eq!(TABLE.action(tags::INSTITUTION_NAME, &none), Some(Action::D));
    assert_eq!(
        TABLE.action(tags::SOURCE_IMAGE_SEQUENCE, &none),
        Some(Action::U)
    );
    let dates = Options {
        retain_longitudinal_modified_dates: true,
        ..Options::default()
    };
    assert_eq!(TABLE.action(tags::STUDY_DATE, &dates), Some(Action::C));
    let uids = Options {
        retain_uids: true,
        ..Options::default()
    };
    assert_eq!(TABLE.action(tags::SOP_INSTANCE_UID, &uids), Some(Action::K));
}

#[test]
fn combined_codes_resolve_to_what_keeps_any_iod_valid() {
    for (code, action) in [
        ("X/Z", Action::Z),
        ("X/D", Action::D),
        ("Z/D", Action::D),
        ("X/Z/D", Action::D),
        ("X/Z/U*", Action::U),
        ("K", Action::K),
        ("C", Action::C),
    ] {
        assert_eq!(table::resolve_code(code), Some(action), "{code}");
    }
    assert_eq!(table::resolve_code("Q"), None);
}

#[test]
fn the_basic_profile_removes_replaces_and_pseudonymises() {
    let d = Deidentifier::new(Options::default(), pseudonyms("s1"));
    let (out, ids) = d.deidentify(&sample()).unwrap();
    let p = pseudonyms("s1");
    assert_eq!(
        text(&out, tags::PATIENT_ID).unwrap(),
        p.patient_id("MRN123", "")
    );
    assert!(text(&out, tags::PATIENT_NAME)
        .unwrap()
        .starts_with("PSEUDONYM^"));
    assert_eq!(
        text(&out, tags::SOP_INSTANCE_UID).unwrap(),
        p.uid("1.2.3.4.6")
    );
    assert_eq!(ids.new_sop_instance_uid, p.uid("1.2.3.4.6"));
    assert_eq!(text(&out, tags::STUDY_DATE).unwrap(), "");
    assert_eq!(text(&out, tags::ACCESSION_NUMBER).unwrap(), "");
    assert_eq!(text(&out, tags::INSTITUTION_NAME).unwrap(), "ANONYMIZED");
    assert!(out.get(tags::STUDY_DESCRIPTION).is_none());
    // X/Z/D: a dummy
    assert_eq!(
        text(&out, tags::DEVICE_SERIAL_NUMBER).unwrap(),
        "ANONYMIZED"
    );
    assert!(out.get(Tag(0x0009, 0x1001)).is_none());
    assert!(out.get(Tag(0x6000, 0x3000)).is_none());
    assert_eq!(text(&out, tags::MODALITY).unwrap(), "CT");
    assert!(out.get(tags::ROWS).is_some());
    // UIDs inside sequences follow, so references resolve
    let seq = out.get(tags::SOURCE_IMAGE_SEQUENCE).unwrap();
    let item = &seq.items().unwrap()[0];
    assert_eq!(
        text(item, tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
        p.uid("1.2.3.4.5")
    );
    assert_eq!(
        text(item, tags::REFERENCED_SOP_CLASS_UID).unwrap(),
        "1.2.840.10008.5.1.4.1.1.2"
    );
    assert_eq!(text(&out, tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    assert_eq!(
        text(&out, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap(),
        "REMOVED"
    );
    let codes = out
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap();
    assert_eq!(codes.items().unwrap().len(), 1);
    assert_eq!(
        text(&codes.items().unwrap()[0], tags::CODE_VALUE).unwrap(),
        "113100"
    );
}

#[test]
fn options_retain_and_shift_consistently() {
    let options = Options {
        retain_longitudinal_modified_dates: true,
        retain_patient_characteristics: true,
        retain_device_identity: true,
        retain_institution_identity: true,
        retain_uids: true,
        retain_safe_private: true,
        clean_descriptors: true,
    };
    let d = Deidentifier::new(options, pseudonyms("s1"));
    let (out, _) = d.deidentify(&sample()).unwrap();
    let shift = pseudonyms("s1").day_shift("MRN123", "");
    assert!((365..=4014).contains(&shift));
    let expected = shift_date("20240301", shift).unwrap();
    assert_ne!(expected, "20240301");
    assert_eq!(text(&out, tags::STUDY_DATE).unwrap(), expected);
    assert_eq!(text(&out, tags::STUDY_TIME).unwrap(), "101500");
    assert_eq!(
        text(&out, tags::ACQUISITION_DATE_TIME).unwrap(),
        format!("{expected}101500.000000")
    );
    assert_eq!(text(&out, tags::SOP_INSTANCE_UID).unwrap(), "1.2.3.4.6");
    assert_eq!(
        text(&out, tags::INSTITUTION_NAME).unwrap(),
        "General Hospital"
    );
    assert_eq!(text(&out, tags::DEVICE_SERIAL_NUMBER).unwrap(), "SN-42");
    assert_eq!(text(&out, tags::PATIENT_SEX).unwrap(), "M");
    assert_eq!(text(&out, tags::PATIENT_AGE).unwrap(), "064Y");
    // the patient's name and the date gone from the descriptor, the rest kept
    assert_eq!(text(&out, tags::STUDY_DESCRIPTION).unwrap(), "CT chest");
    // a private attribute the data set does not declare safe is not kept
    assert!(out.get(Tag(0x0009, 0x1001)).is_none());
    assert_eq!(
        text(&out, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap(),
        "MODIFIED"
    );
    let codes: Vec<String> = out
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|i| text(i, tags::CODE_VALUE).unwrap())
        .collect();
    assert_eq!(
        codes,
        ["113100", "113105", "113107", "113108", "113109", "113110", "113111", "113112"]
    );
}

#[test]
fn pseudonyms_are_keyed_consistent_and_valid_uids() {
    let (a, b) = (pseudonyms("s1"), pseudonyms("s2"));
    assert_eq!(a.uid("1.2.3"), a.uid("1.2.3\0"));
    assert_ne!(a.uid("1.2.3"), b.uid("1.2.3"));
    assert_ne!(a.uid("1.2.3"), a.uid("1.2.4"));
    assert_ne!(a.patient_id("P1", ""), a.patient_id("P2", ""));
    assert_eq!(a.patient_id("P1", ""), a.patient_id("P1", ""));
    for uid in ["1.2.3", "9", "1.2.840.10008.1.2"] {
        let u = a.uid(uid);
        assert!(u.len() <= 64);
        crate::uid::Uid::parse(&u).unwrap();
    }
    assert_eq!(
        format!("{:?}", Secret::new("hush").unwrap()),
        "Secret(<hidden>)"
    );
    assert!(Secret::new("").is_none());
}

#[test]
fn burned_in_annotation_is_refused() {
    let mut obj = sample();
    obj.put(el(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"));
    let d = Deidentifier::new(Options::default(), pseudonyms("s1"));
    assert_eq!(
        d.deidentify(&obj).unwrap_err(),
        DeidError::BurnedInAnnotation
    );
    obj.put(el(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"));
    assert!(d.deidentify(&obj).is_ok());
}

#[test]
fn dates_shift_by_whole_days() {
    assert_eq!(shift_date("20240301", 1).unwrap(), "20240229");
    assert_eq!(
        shift_date("20240301-20240302", 1).unwrap(),
        "20240229-20240301"
    );
    assert_eq!(
        shift_datetime("20240301120000+0100", 1).unwrap(),
        "20240229120000+0100"
    );
    assert_eq!(shift_date("garbage", 1), None);
}

/// With the Retain Safe Private Option, private blocks the data set declares safe in its
/// Private Data Element Characteristics Sequence are kept (a SAFE block whole, a MIXED block's
/// listed elements); undeclared, UNSAFE or unlisted ones are removed; without the option none.
#[test]
fn retain_safe_private_keeps_what_the_data_set_declares_safe() {
    let declare = |group: u16, creator: &str, status: &str, elements: Option<Vec<u16>>| {
        let mut item = InMemDicomObject::from_element_iter([
            DataElement::new(tags::PRIVATE_GROUP_REFERENCE, VR::US, P::from(group)),
            el(tags::PRIVATE_CREATOR_REFERENCE, VR::LO, creator),
            el(tags::BLOCK_IDENTIFYING_INFORMATION_STATUS, VR::CS, status),
        ]);
        if let Some(list) = elements {
            item.put(DataElement::new(
                tags::NONIDENTIFYING_PRIVATE_ELEMENTS,
                VR::US,
                P::U16(list.into()),
            ));
        }
        item
    };
    let mut obj = sample();
    for (tag, v) in [
        (Tag(0x0019, 0x0010), "ACME SAFE"),
        (Tag(0x0019, 0x1010), "table speed"),
        (Tag(0x0019, 0x1011), "tilt"),
        // block 0x11 of group 0019: MIXED, element 0x01 listed, 0x02 not
        (Tag(0x0019, 0x0011), "ACME MIXED"),
        (Tag(0x0019, 0x1101), "kernel"),
        (Tag(0x0019, 0x1102), "operator DOE"),
        (Tag(0x0021, 0x0010), "ACME UNSAFE"),
        (Tag(0x0021, 0x1001), "serial of the operator"),
        (Tag(0x0009, 0x0010), "UNDECLARED"),
    ] {
        obj.put(el(tag, VR::LO, v));
    }
    obj.put(DataElement::new(
        tags::PRIVATE_DATA_ELEMENT_CHARACTERISTICS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![
            declare(0x0019, "ACME SAFE", "SAFE", None),
            declare(0x0019, "ACME MIXED", "MIXED", Some(vec![0x01])),
            declare(0x0021, "ACME UNSAFE", "UNSAFE", None),
        ]),
    ));
    let kept = |options: Options| {
        let (out, _) = Deidentifier::new(options, pseudonyms("s1"))
            .deidentify(&obj)
            .unwrap();
        [
            0x0019_0010u32,
            0x0019_1010,
            0x0019_1011,
            0x0019_0011,
            0x0019_1101,
            0x0019_1102,
            0x0021_0010,
            0x0021_1001,
            0x0009_0010,
            0x0009_1001,
        ]
        .into_iter()
        .filter(|t| out.get(Tag((t >> 16) as u16, *t as u16)).is_some())
        .collect::<Vec<u32>>()
    };
    let with = Options {
        retain_safe_private: true,
        ..Options::default()
    };
    assert_eq!(
        kept(with),
        vec![
            0x0019_0010,
            0x0019_1010,
            0x0019_1011,
            0x0019_0011,
            0x0019_1101
        ]
    );
    assert!(kept(Options::default()).is_empty());
}
