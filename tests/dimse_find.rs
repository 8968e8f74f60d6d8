//! C-FIND SCP (Patient Root and Study Root) against DCMTK's findscu and pynetdicom, on both
//! index backends: the same query engine as QIDO-RS.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use support::{both_backends, Backend, Node, NodeOptions};

/// A node on which the query peers of these tests are registered AEs allowed to query (an
/// unknown AE may only echo and store).
fn start_node(backend: Backend) -> Node {
    let mut options = NodeOptions::new(backend);
    for title in ["FINDSCU", "PYFIND", "CHARSET", "CANCELLER"] {
        options = options.config(&support::ae_entry(title, &["echo", "store", "find"]));
    }
    Node::start_with(options)
}

/// Runs findscu with `-X` and returns the response identifiers it extracted, and its output.
fn findscu(
    node: &Node,
    model: &str,
    keys: &[&str],
) -> (Vec<dicom_object::DefaultDicomObject>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = support::dcmtk_command("findscu");
    cmd.args([model, "-v", "-X", "-od"])
        .arg(dir.path())
        .args(["-aet", "FINDSCU", "-aec", "PACS"]);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.args(["127.0.0.1", &node.dimse_port().to_string()]);
    let out = support::run_with_timeout(&mut cmd, support::TOOL_TIMEOUT);
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let responses = files
        .iter()
        .map(|f| dicom_object::OpenFileOptions::new().open_file(f).unwrap())
        .collect();
    (responses, log)
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn store_fixture(node: &Node) -> (tempfile::TempDir, pacs_synth::SynthSummary) {
    let dir = support::pydicom_test_files();
    let files = [dir.join("CT_small.dcm"), dir.join("MR_small.dcm")];
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(node, "MODALITY", &[], &refs)
        .status
        .success());
    let (synth_dir, summary) = support::synth_ct(10, 41);
    let paths = support::synth_paths(&summary);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(node, "MODALITY", &[], &refs)
        .status
        .success());
    (synth_dir, summary)
}

async fn findscu_at_every_level(backend: Backend) {
    let node = start_node(backend);
    let (_dir, synth) = store_fixture(&node);
    let first = &synth.instances[0];
    // Study Root, STUDY level, wildcard on a person name, with return keys
    let (rsp, log) = findscu(
        &node,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=compressed*",
            "StudyInstanceUID",
            "StudyDate",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "StudyDescription",
        ],
    );
    assert_eq!(rsp.len(), 2, "{log}");
    let studies: BTreeSet<String> = rsp
        .iter()
        .map(|r| text(r, tags::STUDY_INSTANCE_UID))
        .collect();
    assert_eq!(
        studies,
        BTreeSet::from([
            "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322".to_string(),
            "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457".to_string()
        ])
    );
    let ct = rsp
        .iter()
        .find(|r| text(r, tags::MODALITIES_IN_STUDY) == "CT")
        .unwrap();
    assert_eq!(text(ct, tags::STUDY_DATE), "20040119");
    assert_eq!(text(ct, tags::NUMBER_OF_STUDY_RELATED_INSTANCES), "1");
    assert_eq!(text(ct, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
    assert!(
        ct.element(tags::STUDY_DESCRIPTION).is_ok(),
        "requested keys are returned, even empty"
    );
    // date range
    let (rsp, _) = findscu(
        &node,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyDate=20040101-20040131",
            "StudyInstanceUID",
        ],
    );
    assert_eq!(rsp.len(), 1);
    // Patient Root, PATIENT level
    let (rsp, log) = findscu(
        &node,
        "-P",
        &["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
    );
    assert_eq!(rsp.len(), 3, "{log}");
    // SERIES level within a study, and IMAGE level within a series
    let (rsp, log) = findscu(
        &node,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={}", first.study_instance_uid),
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
    );
    assert_eq!(rsp.len(), 1, "{log}");
    assert_eq!(
        text(&rsp[0], tags::SERIES_INSTANCE_UID),
        first.series_instance_uid
    );
    assert_eq!(
        text(&rsp[0], tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        "10"
    );
    let (rsp, log) = findscu(
        &node,
        "-P",
        &[
            "QueryRetrieveLevel=IMAGE",
            "PatientID",
            &format!("StudyInstanceUID={}", first.study_instance_uid),
            &format!("SeriesInstanceUID={}", first.series_instance_uid),
            "SOPInstanceUID",
            "InstanceNumber",
        ],
    );
    assert_eq!(rsp.len(), 10, "{log}");
    let sops: BTreeSet<String> = rsp
        .iter()
        .map(|r| text(r, tags::SOP_INSTANCE_UID))
        .collect();
    let expected: BTreeSet<String> = synth
        .instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(sops, expected);
    assert!(
        rsp.iter().all(|r| !text(r, tags::PATIENT_ID).is_empty()),
        "Patient Root returns the Patient ID"
    );
}
both_backends!(findscu_at_every_level);

async fn bad_identifiers_get_failure_statuses(backend: Backend) {
    let node = start_node(backend);
    let _fixture = store_fixture(&node);
    // no Query/Retrieve Level
    let (rsp, log) = findscu(&node, "-S", &["PatientName=*"]);
    assert!(rsp.is_empty());
    assert!(
        log.contains("Final Find Response (Error: DataSetDoesNotMatchSOPClass)"),
        "{log}"
    );
    // a key below the query level
    let (rsp, log) = findscu(
        &node,
        "-S",
        &["QueryRetrieveLevel=STUDY", "SOPInstanceUID=1.2.3"],
    );
    assert!(rsp.is_empty());
    assert!(
        log.contains("Final Find Response (Error: DataSetDoesNotMatchSOPClass)"),
        "{log}"
    );
    // PATIENT level in the Study Root model
    let (rsp, _) = findscu(&node, "-S", &["QueryRetrieveLevel=PATIENT", "PatientID"]);
    assert!(rsp.is_empty());
    // a malformed date range: unable to process
    let (rsp, log) = findscu(
        &node,
        "-S",
        &["QueryRetrieveLevel=STUDY", "StudyDate=2004-01"],
    );
    assert!(rsp.is_empty());
    assert!(
        log.contains("Final Find Response (Failed: UnableToProcess)"),
        "{log}"
    );
    // the association survives all of it: a good query still works
    let (rsp, _) = findscu(
        &node,
        "-S",
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
    );
    assert_eq!(rsp.len(), 3);
}
both_backends!(bad_identifiers_get_failure_statuses);

async fn pynetdicom_queries_too(backend: Backend) {
    let node = start_node(backend);
    let _fixture = store_fixture(&node);
    let script = "import json, sys\n\
        from pydicom.dataset import Dataset\n\
        from pynetdicom import AE\n\
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as M\n\
        ae = AE(ae_title='PYFIND'); ae.add_requested_context(M)\n\
        a = ae.associate('127.0.0.1', int(sys.argv[1]), ae_title='PACS')\n\
        q = Dataset(); q.QueryRetrieveLevel = 'STUDY'; q.PatientName = 'Compressed*'; q.StudyInstanceUID = ''\n\
        out = []\n\
        for status, ident in a.send_c_find(q, M):\n    \
            out.append([status.Status, str(ident.StudyInstanceUID) if ident else None])\n\
        a.release(); print(json.dumps(out))";
    let stdout = support::python_stdout(["-c", script, &node.dimse_port().to_string()]);
    let responses: Vec<(u16, Option<String>)> = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(responses.len(), 3, "{responses:?}");
    assert!(responses[..2]
        .iter()
        .all(|(s, uid)| *s == 0xFF00 && uid.is_some()));
    assert_eq!(responses[2].0, 0x0000);
}
both_backends!(pynetdicom_queries_too);

/// A Latin-1 name stored in ISO_IR 100 is found by queries in ISO_IR 100 and ISO_IR 192, and
/// each gets its answer in its own character set (the raw bytes are checked, not only pydicom's
/// decoding).
async fn character_sets_in_and_out(backend: Backend) {
    let node = start_node(backend);
    let script = "import json, sys\n\
        import pydicom\n\
        from pydicom.data import get_testdata_file\n\
        from pydicom.dataset import Dataset\n\
        from pynetdicom import AE\n\
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as M, CTImageStorage\n\
        ds = pydicom.dcmread(get_testdata_file('CT_small.dcm'))\n\
        ds.SpecificCharacterSet = 'ISO_IR 100'; ds.PatientName = 'M\\u00fcller^J\\u00f6rg'; ds.PatientID = 'LATIN1'\n\
        ae = AE(ae_title='CHARSET'); ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID); ae.add_requested_context(M)\n\
        a = ae.associate('127.0.0.1', int(sys.argv[1]), ae_title='PACS')\n\
        out = {'store': a.send_c_store(ds).Status}\n\
        for cs in ['ISO_IR 100', 'ISO_IR 192']:\n    \
            q = Dataset(); q.SpecificCharacterSet = cs; q.QueryRetrieveLevel = 'STUDY'\n    \
            q.PatientName = 'M\\u00fcller*'; q.PatientID = ''\n    \
            for status, ident in a.send_c_find(q, M):\n        \
                if ident is not None:\n            \
                    out[cs] = [ident.SpecificCharacterSet, str(ident.PatientName), ident['PatientName'].value.original_string.hex()]\n\
        a.release(); print(json.dumps(out))";
    let stdout = support::python_stdout(["-c", script, &node.dimse_port().to_string()]);
    let out: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(out["store"], 0, "{out}");
    let latin1 = &out["ISO_IR 100"];
    assert_eq!(latin1[0], "ISO_IR 100", "{out}");
    assert_eq!(latin1[1], "Müller^Jörg");
    // ü is FC and ö is F6 in Latin-1
    assert_eq!(latin1[2], "4dfc6c6c65725e4af67267", "{out}");
    let utf8 = &out["ISO_IR 192"];
    assert_eq!(utf8[0], "ISO_IR 192", "{out}");
    assert_eq!(utf8[1], "Müller^Jörg");
    assert!(
        utf8[2].as_str().unwrap().starts_with("4dc3bc6c6c6572"),
        "{out}"
    );
}
both_backends!(character_sets_in_and_out);

/// A C-CANCEL sent right behind the C-FIND stops it: the node answers Cancel (FE00) after at most
/// the responses already on their way, not all the matches. (The mechanism is the same for both
/// backends.)
#[test]
fn c_cancel_stops_a_c_find() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND as STUDY_ROOT_FIND;
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dicom_ul::Pdu;

    let node = start_node(Backend::Sqlite);
    let (_dir, synth) = support::synth_ct(30, 43);
    let paths = support::synth_paths(&synth);
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    assert!(support::storescu(&node, "MODALITY", &[], &refs)
        .status
        .success());
    let mut assoc =
        support::raw_client::associate(node.dimse_port(), "CANCELLER", "PACS", STUDY_ROOT_FIND)
            .unwrap();
    // The three PDUs below must leave at once: with Nagle on, the C-CANCEL could wait for a
    // delayed ACK (tens of ms) while the node answers all 30 matches in well under that.
    assoc.inner_stream().set_nodelay(true).unwrap();
    let pc = assoc.presentation_contexts()[0].id;
    let request = pacs_dimse::command::Request {
        command_field: pacs_dimse::command::field::C_FIND_RQ,
        message_id: 5,
        affected_sop_class_uid: STUDY_ROOT_FIND.into(),
        affected_sop_instance_uid: None,
        has_dataset: true,
        move_originator: None,
    };
    let mut identifier = dicom_object::InMemDicomObject::new_empty();
    identifier.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("IMAGE"),
    ));
    identifier.put(DataElement::new(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(synth.instances[0].series_instance_uid.as_str()),
    ));
    identifier.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::Empty,
    ));
    // C-CANCEL-RQ: Command Field 0FFF, Message ID Being Responded To, no data set (PS3.7 9.3.2.3)
    let mut cancel = dicom_object::InMemDicomObject::new_empty();
    cancel.put(DataElement::new(
        tags::COMMAND_FIELD,
        VR::US,
        PrimitiveValue::from(0x0FFFu16),
    ));
    cancel.put(DataElement::new(
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        VR::US,
        PrimitiveValue::from(5u16),
    ));
    cancel.put(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        PrimitiveValue::from(0x0101u16),
    ));
    let mut cancel_bytes = Vec::new();
    cancel
        .write_dataset_with_ts(&mut cancel_bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    let pdv = |value_type, data| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type,
            is_last: true,
            data,
        }],
    };
    // the three PDUs in one write: they are in the node's receive buffer together, so the
    // cancel is there before the first match is answered, however the test thread is scheduled
    let mut burst = Vec::new();
    for pdu in [
        pdv(PDataValueType::Command, request.encode()),
        pdv(
            PDataValueType::Data,
            support::raw_client::dataset_bytes(&identifier),
        ),
        pdv(PDataValueType::Command, cancel_bytes),
    ] {
        dicom_ul::pdu::write_pdu(&mut burst, &pdu).unwrap();
    }
    std::io::Write::write_all(assoc.inner_stream(), &burst).unwrap();
    let mut pending = 0;
    let final_status = loop {
        let Pdu::PData { data } = assoc.receive().unwrap() else {
            panic!("expected responses")
        };
        let mut done = None;
        for value in data
            .into_iter()
            .filter(|v| v.value_type == PDataValueType::Command)
        {
            let command = pacs_dimse::command::Command::decode(&value.data).unwrap();
            match command.status {
                Some(0xFF00) => pending += 1,
                other => done = other,
            }
        }
        if let Some(status) = done {
            break status;
        }
    };
    assert_eq!(final_status, 0xFE00, "after {pending} pending responses");
    assert!(
        pending < 30,
        "{pending} of 30 matches sent despite the cancel"
    );
    let _ = assoc.release();
    assert!(node.log().contains("C-FIND cancelled by the peer"));
}
