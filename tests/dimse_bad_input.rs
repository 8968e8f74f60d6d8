//! Bad input on the DIMSE port: every case gets a clear status or a clean end of the
//! association, the node stays healthy, and nothing already stored is lost or changed.

use crate::support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_ul::pdu::{
    AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource,
};
use support::archive::{temp_files, uids, verify_consistent};
use support::raw_client::{self, CT_IMAGE_STORAGE};
use support::{both_backends, Backend, Node, NodeOptions};

/// Stores CT_small.dcm and returns the node's stored UIDs afterwards.
async fn seed(node: &Node) -> BTreeSet<String> {
    let file = support::pydicom_test_files().join("CT_small.dcm");
    let out = support::storescu(node, "SEED", &[], &[file.as_path()]);
    assert!(out.status.success());
    let stored = verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(stored.len(), 1);
    uids(&stored)
}

/// The node answers C-ECHO and still holds exactly `expected`, with no temporary files left.
async fn assert_healthy(node: &Node, expected: &BTreeSet<String>) {
    assert!(node.is_alive(), "node died:\n{}", node.log());
    let out = support::echoscu(node, "CHECK");
    assert!(
        out.status.success(),
        "node no longer answers C-ECHO:\n{}",
        node.log()
    );
    let stored = verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
    assert_eq!(&uids(&stored), expected);
    // a spilled data set is removed when its store ends; give an aborted one a moment
    for _ in 0..50 {
        if temp_files(node.data_dir()).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "temporary files left behind: {:?}",
        temp_files(node.data_dir())
    );
}

fn ct_small() -> dicom_object::DefaultDicomObject {
    dicom_object::open_file(support::pydicom_test_files().join("CT_small.dcm")).unwrap()
}

/// A CT data set (Explicit VR LE) with fresh UIDs, so that it is a new instance.
fn new_ct(suffix: &str) -> (String, Vec<u8>) {
    let mut obj = ct_small().into_inner();
    let sop = format!("1.2.826.0.1.3680043.8.498.1.{suffix}");
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop.as_str()),
    ));
    (sop, raw_client::dataset_bytes(&obj))
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn garbage_and_malformed_pdus_end_cleanly(backend: Backend) {
    let node = Node::start(backend);
    let expected = seed(&node).await;
    let port = node.dimse_port();
    run_blocking(move || {
        // an HTTP request on the DIMSE port
        raw_client::raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // random bytes
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        raw_client::raw_exchange(port, &noise);
        // an A-ASSOCIATE-RQ header announcing more bytes than follow, then a close
        raw_client::raw_exchange(
            port,
            &[0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x01, 0x02],
        );
        // an A-ASSOCIATE-RQ whose length field is absurd
        raw_client::raw_exchange(port, &[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01]);
        // a valid association followed by an unknown PDU type: the node answers A-ABORT
        let mut assoc = raw_client::associate(port, "RAW", "PACS", CT_IMAGE_STORAGE).unwrap();
        use std::io::Write;
        assoc
            .inner_stream()
            .write_all(&[0x42, 0x00, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4])
            .unwrap();
        let reply = assoc.receive();
        assert!(
            matches!(reply, Ok(dicom_ul::Pdu::AbortRQ { .. }) | Err(_)),
            "expected an A-ABORT, got {reply:?}"
        );
    })
    .await;
    assert_healthy(&node, &expected).await;
}
both_backends!(garbage_and_malformed_pdus_end_cleanly);

async fn a_peer_that_vanishes_mid_transfer_leaves_nothing(backend: Backend) {
    // a small spill threshold is not configurable; send a data set bigger than the 32 MiB spill
    // threshold so that the spilled-file path is exercised too
    let node = Node::start(backend);
    let expected = seed(&node).await;
    let port = node.dimse_port();
    run_blocking(move || {
        for size in [200 * 1024usize, 40 * 1024 * 1024] {
            let (sop, mut data) = new_ct(&format!("9{size}"));
            data.resize(size, 0);
            let mut assoc =
                raw_client::associate(port, "VANISH", "PACS", CT_IMAGE_STORAGE).unwrap();
            let command = raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1);
            // send the command and most of the data set, never the last fragment
            let pc = assoc.presentation_contexts()[0].id;
            assoc
                .send(&dicom_ul::Pdu::PData {
                    data: vec![dicom_ul::pdu::PDataValue {
                        presentation_context_id: pc,
                        value_type: dicom_ul::pdu::PDataValueType::Command,
                        is_last: true,
                        data: command,
                    }],
                })
                .unwrap();
            for chunk in data.chunks(64 * 1024) {
                assoc
                    .send(&dicom_ul::Pdu::PData {
                        data: vec![dicom_ul::pdu::PDataValue {
                            presentation_context_id: pc,
                            value_type: dicom_ul::pdu::PDataValueType::Data,
                            is_last: false,
                            data: chunk.to_vec(),
                        }],
                    })
                    .unwrap();
            }
            // vanish: close the socket without release or abort
            drop(assoc);
        }
    })
    .await;
    assert_healthy(&node, &expected).await;
}
both_backends!(a_peer_that_vanishes_mid_transfer_leaves_nothing);

async fn bad_data_sets_get_their_status(backend: Backend) {
    let node = Node::start(backend);
    let expected = seed(&node).await;
    let port = node.dimse_port();
    run_blocking(move || {
        let mut assoc = raw_client::associate(port, "BADDATA", "PACS", CT_IMAGE_STORAGE).unwrap();
        // truncated in the middle of the pixel data: Cannot Understand (C000)
        let (sop, data) = new_ct("101");
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
            &data[..data.len() - 5000],
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0xC000);
        // truncated in the middle of the header
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 2),
            &data[..301],
        );
        assert_eq!(raw_client::read_status(&mut assoc) & 0xF000, 0xC000);
        // not DICOM at all
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 3),
            &[0xAB; 1000],
        );
        assert_eq!(raw_client::read_status(&mut assoc) & 0xF000, 0xC000);
        // data set describes another instance than the command: A900
        let (_, other) = new_ct("102");
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 4),
            &other,
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0xA900);
        // data set of another SOP class than the context: A900
        let mut obj = ct_small().into_inner();
        obj.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::MR_IMAGE_STORAGE),
        ));
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.103"),
        ));
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, "1.2.3.103", 5),
            &raw_client::dataset_bytes(&obj),
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0xA900);
        // a Study Instance UID that tries to escape the object store: A900, nothing written
        let mut obj = ct_small().into_inner();
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.104"),
        ));
        obj.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("../../../../tmp/x"),
        ));
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, "1.2.3.104", 6),
            &raw_client::dataset_bytes(&obj),
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0xA900);
        // an Affected SOP Instance UID that is not a UID: C000
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, "../etc/passwd", 7),
            &data,
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0xC000);
        // and the association still works afterwards: a good instance is stored
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 8),
            &data,
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0x0000);
        assoc.release().unwrap();
    })
    .await;
    let mut expected = expected;
    expected.insert("1.2.826.0.1.3680043.8.498.1.101".into());
    assert_healthy(&node, &expected).await;
}
both_backends!(bad_data_sets_get_their_status);

async fn duplicates_follow_the_policy(backend: Backend) {
    for policy in ["keep", "overwrite"] {
        let node = Node::start_with(NodeOptions {
            backend,
            args: vec!["--duplicate-policy".into(), policy.into()],
            ..Default::default()
        });
        let expected = seed(&node).await;
        let before = verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
        let port = node.dimse_port();
        let sop = before[0].sop_instance_uid.clone();
        let statuses = run_blocking(move || {
            let original = ct_small();
            let mut assoc = raw_client::associate(port, "DUP", "PACS", CT_IMAGE_STORAGE).unwrap();
            // the same instance again, byte for byte as storescu sent it (Explicit VR LE)
            let same = raw_client::dataset_bytes(&original.clone().into_inner());
            raw_client::send_store(
                &mut assoc,
                raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
                &same,
            );
            let first = raw_client::read_status(&mut assoc);
            // different content under the same SOP Instance UID
            let mut changed = original.into_inner();
            changed.put(DataElement::new(
                tags::PATIENT_NAME,
                VR::PN,
                PrimitiveValue::from("CHANGED^NAME"),
            ));
            raw_client::send_store(
                &mut assoc,
                raw_client::store_command(CT_IMAGE_STORAGE, &sop, 2),
                &raw_client::dataset_bytes(&changed),
            );
            let second = raw_client::read_status(&mut assoc);
            assoc.release().unwrap();
            (first, second)
        })
        .await;
        let after = verify_consistent(node.data_dir(), node.database_url().as_deref()).await;
        assert_eq!(uids(&after), expected);
        match policy {
            "keep" => {
                assert_eq!(statuses.1, 0xB006, "warning: stored object kept");
                assert_eq!(after, before, "nothing changed");
            }
            _ => {
                assert_eq!(statuses.1, 0x0000);
                assert_ne!(after[0].sha256, before[0].sha256, "replaced");
            }
        }
        // storescu's own encoding may differ from ours, so the first re-send is either an
        // exact duplicate (success, no write) or a different object handled by the policy
        assert!(matches!(statuses.0, 0x0000 | 0xB006), "{:#06x}", statuses.0);
        // the replaced object is deleted in the background: the store converges to the index
        for _ in 0..50 {
            let keys = pacs::storage::Storage::open(&pacs::storage::StorageConfig::Local {
                root: node.data_dir().join("objects"),
            })
            .unwrap()
            .list_keys()
            .await
            .unwrap();
            if keys.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_healthy(&node, &expected).await;
    }
}
both_backends!(duplicates_follow_the_policy);

async fn calling_ae_policy_is_enforced(backend: Backend) {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("pacs.toml");
    std::fs::write(
        &conf,
        r#"
        require_known_ae = true
        max_associations = 2

        [[ae]]
        title = "MODALITY"
        host = "127.0.0.1"
        port = 104
        allow = ["echo", "store"]
        check_host = true

        [[ae]]
        title = "ELSEWHERE"
        host = "192.0.2.10"
        allow = ["echo", "store"]
        check_host = true

        [[ae]]
        title = "ECHOONLY"
        allow = ["echo"]

        [[ae]]
        title = "SEED"

        [[ae]]
        title = "CHECK"
        "#,
    )
    .unwrap();
    let node = Node::start_with(NodeOptions {
        backend,
        args: vec!["--config".into(), conf.to_string_lossy().into_owned()],
        ..Default::default()
    });
    let expected = seed(&node).await;
    let port = node.dimse_port();
    run_blocking(move || {
        let rj = |calling: &str, called: &str| {
            raw_client::rejection(&raw_client::associate(
                port,
                calling,
                called,
                CT_IMAGE_STORAGE,
            ))
        };
        // unknown calling AE: rejected-permanent, service-user, calling AE not recognized
        let r = rj("STRANGER", "PACS").expect("unknown AE must be rejected");
        assert_eq!(r.result, AssociationRJResult::Permanent);
        assert_eq!(
            r.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        );
        // known AE from a host it is not configured for
        assert!(rj("ELSEWHERE", "PACS").is_some());
        // wrong called AE title
        let r = rj("MODALITY", "OTHER").expect("wrong called AE must be rejected");
        assert_eq!(
            r.source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        );
        // a known AE from its host is accepted and may store
        let mut assoc = raw_client::associate(port, "MODALITY", "PACS", CT_IMAGE_STORAGE).unwrap();
        let (sop, data) = new_ct("201");
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
            &data,
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0x0000);
        // while two associations are open, a third is rejected: transient, local limit
        let mut echo_only =
            raw_client::associate(port, "ECHOONLY", "PACS", CT_IMAGE_STORAGE).unwrap();
        let third = raw_client::rejection(&raw_client::associate(
            port,
            "MODALITY",
            "PACS",
            CT_IMAGE_STORAGE,
        ))
        .expect("third association must be rejected");
        assert_eq!(third.result, AssociationRJResult::Transient);
        assert_eq!(
            third.source,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
            )
        );
        assoc.release().unwrap();
        // an AE allowed to echo only gets "refused: not authorized" for a C-STORE
        let (sop, data) = new_ct("202");
        raw_client::send_store(
            &mut echo_only,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
            &data,
        );
        assert_eq!(raw_client::read_status(&mut echo_only), 0x0124);
        echo_only.release().unwrap();
    })
    .await;
    let log = node.log();
    assert!(
        log.contains("STRANGER") && log.contains("127.0.0.1"),
        "refusals are logged with the peer"
    );
    let mut expected = expected;
    expected.insert("1.2.826.0.1.3680043.8.498.1.201".into());
    // give the released associations a moment to free their slots
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_healthy(&node, &expected).await;
}
both_backends!(calling_ae_policy_is_enforced);

#[test]
fn sigterm_lets_in_flight_associations_finish() {
    let node = Node::start(Backend::Sqlite);
    let (_synth_dir, summary) = support::synth_ct(60, 0);
    let files: Vec<PathBuf> = support::synth_paths(&summary);
    let mut storescu = support::dcmtk_command("storescu");
    storescu
        .args(["-aet", "MODALITY", "-aec", "PACS", "127.0.0.1"])
        .arg(node.dimse_port().to_string())
        .args(&files);
    let child = storescu.spawn().unwrap();
    // let the association get going, then ask the node to stop
    std::thread::sleep(Duration::from_millis(300));
    let status = node.terminate();
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "node exit status {status:?}:\n{}",
        node.log()
    );
    assert!(
        out.status.success(),
        "the in-flight association was cut short"
    );
    // everything storescu sent is stored: reopen the index after the node exited
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(verify_consistent(node.data_dir(), None));
    assert_eq!(stored.len(), 60, "{}", node.log());
    assert!(node.log().contains("shutting down"));
}

async fn a_store_that_cannot_write_gets_out_of_resources(backend: Backend) {
    let node = Node::start(backend);
    let expected = seed(&node).await;
    // Make the object store unable to create the study's directory: a file stands where the
    // directory would go.
    let study = "1.2.826.0.1.3680043.8.498.555";
    std::fs::write(node.data_dir().join("objects").join(study), b"in the way").unwrap();
    let port = node.dimse_port();
    let status = run_blocking(move || {
        let mut obj = ct_small().into_inner();
        obj.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(study),
        ));
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.555"),
        ));
        let mut assoc = raw_client::associate(port, "FULL", "PACS", CT_IMAGE_STORAGE).unwrap();
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, "1.2.3.555", 1),
            &raw_client::dataset_bytes(&obj),
        );
        let status = raw_client::read_status(&mut assoc);
        assoc.release().unwrap();
        status
    })
    .await;
    // Refused: Out of Resources (A7xx), and nothing of it indexed
    assert_eq!(status & 0xFF00, 0xA700, "{status:#06x}");
    std::fs::remove_file(node.data_dir().join("objects").join(study)).unwrap();
    assert_healthy(&node, &expected).await;
}
both_backends!(a_store_that_cannot_write_gets_out_of_resources);

// ---- Limits (issue 12): instance size, deflate, nesting, associations per address ----

/// A C-STORE over `--max-instance-mb` (here past the 32 MiB spill threshold, so a spill file
/// was started) is discarded as it arrives and answered A700 with the limit; the association
/// goes on, and the next instance on it is stored. Nothing of the refused one is kept.
async fn an_instance_over_the_limit_is_refused_and_the_association_goes_on(backend: Backend) {
    let node = Node::start_with(NodeOptions::new(backend).arg("--max-instance-mb").arg("34"));
    let mut expected = seed(&node).await;
    let port = node.dimse_port();
    let small_sop = run_blocking(move || {
        let mut assoc = raw_client::associate(port, "BIG", "PACS", CT_IMAGE_STORAGE).unwrap();
        let (sop, mut data) = new_ct("7001");
        data.resize(36 << 20, 0);
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
            &data,
        );
        let (status, comment) = raw_client::read_response(&mut assoc);
        assert_eq!(status, 0xA700, "{comment:?}");
        let comment = comment.unwrap_or_default();
        assert!(comment.contains(&(34u64 << 20).to_string()), "{comment}");
        // the same association, a normal instance
        let (small, data) = new_ct("7002");
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &small, 2),
            &data,
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0x0000);
        assoc.release().unwrap();
        small
    })
    .await;
    expected.insert(small_sop);
    assert_healthy(&node, &expected).await;
    assert!(node.log().contains("data set refused (A700) bytes"));
}
both_backends!(an_instance_over_the_limit_is_refused_and_the_association_goes_on);

/// With less free disk than `--min-free-disk-mb` keeps in reserve, a C-STORE past the spill
/// threshold is answered A700 ("no disk space") instead of filling the disk, and the
/// association goes on: the next, small, instance is stored in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_would_eat_the_disk_reserve_gets_out_of_resources() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--min-free-disk-mb")
            .arg((1u64 << 40).to_string()),
    );
    let mut expected = seed(&node).await;
    let port = node.dimse_port();
    let small_sop = run_blocking(move || {
        let mut assoc = raw_client::associate(port, "FULL", "PACS", CT_IMAGE_STORAGE).unwrap();
        let (sop, mut data) = new_ct("7003");
        data.resize(36 << 20, 0);
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
            &data,
        );
        let (status, comment) = raw_client::read_response(&mut assoc);
        assert_eq!(status, 0xA700, "{comment:?}");
        assert!(comment.unwrap_or_default().contains("no disk space"));
        let (small, data) = new_ct("7004");
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &small, 2),
            &data,
        );
        assert_eq!(raw_client::read_status(&mut assoc), 0x0000);
        assoc.release().unwrap();
        small
    })
    .await;
    expected.insert(small_sop);
    assert_healthy(&node, &expected).await;
}

/// Deflated Explicit VR Little Endian that inflates past the limit (a few KiB standing for
/// 8 MiB) is refused with A700 (PS3.4 B.2.3, Out of Resources) before it is inflated whole;
/// sequences nested past 32 levels get C000 (Cannot Understand). Nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_bomb_and_deep_nesting_are_refused() {
    let node = Node::start_with(NodeOptions::new(Backend::Sqlite).arg("--max-instance-mb=4"));
    let expected = seed(&node).await;
    let port = node.dimse_port();
    run_blocking(move || {
        use std::io::Write;
        let (sop, mut data) = new_ct("7101");
        // 8 MiB of zeros after the data set: deflate makes a few KiB of them
        data.resize(data.len() + (8 << 20), 0);
        let mut deflated =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        deflated.write_all(&data).unwrap();
        let deflated = deflated.finish().unwrap();
        assert!(deflated.len() < 1 << 20, "{}", deflated.len());
        let mut assoc = raw_client::associate_with(
            port,
            "BOMB",
            CT_IMAGE_STORAGE,
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        )
        .unwrap();
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1),
            &deflated,
        );
        let (status, comment) = raw_client::read_response(&mut assoc);
        assert_eq!(status, 0xA700, "{comment:?}");
        assert!(comment.unwrap_or_default().contains("inflates past"));
        assoc.release().unwrap();

        // 40 nested sequences inside an otherwise good CT
        let mut assoc = raw_client::associate(port, "DEEP", "PACS", CT_IMAGE_STORAGE).unwrap();
        let mut obj = ct_small().into_inner();
        let sop = "1.2.826.0.1.3680043.8.498.1.7102";
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop),
        ));
        let mut inner = dicom_object::InMemDicomObject::new_empty();
        for _ in 0..40 {
            inner = dicom_object::InMemDicomObject::from_element_iter([DataElement::new(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![inner]),
            )]);
        }
        obj.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![inner]),
        ));
        raw_client::send_store(
            &mut assoc,
            raw_client::store_command(CT_IMAGE_STORAGE, sop, 1),
            &raw_client::dataset_bytes(&obj),
        );
        let (status, comment) = raw_client::read_response(&mut assoc);
        assert_eq!(status, 0xC000, "{comment:?}");
        assert!(comment
            .unwrap_or_default()
            .contains("nested deeper than 32"));
        assoc.release().unwrap();
    })
    .await;
    assert_healthy(&node, &expected).await;
}

/// C-ECHO with pynetdicom from `source` (a loopback address): the status, or None when the
/// association was refused.
fn pynetdicom_echo_from(port: u16, source: &str) -> Option<u16> {
    let script = format!(
        "from pynetdicom import AE\n\
         ae = AE(ae_title='OTHERHOST')\n\
         ae.add_requested_context('1.2.840.10008.1.1')\n\
         a = ae.associate('127.0.0.1', {port}, ae_title='PACS', bind_address=('{source}', 0))\n\
         print(a.send_c_echo().Status if a.is_established else 'refused')\n\
         a.is_established and a.release()\n"
    );
    let out = support::python_stdout(["-c", script.as_str()]);
    String::from_utf8_lossy(&out).trim().parse().ok()
}

/// `--max-associations-per-host`: one address holding its share gets A-ASSOCIATE-RJ
/// (transient, local limit exceeded) for more, while another address is served; and while one
/// peer sends a large C-STORE slowly and knocks again and again, another peer's C-ECHO
/// answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_association() {
    let node = Node::start_with(
        NodeOptions::new(Backend::Sqlite)
            .arg("--max-associations-per-host")
            .arg("3"),
    );
    let expected = seed(&node).await;
    let port = node.dimse_port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // the slow sender holds one association, sending 16 KiB every 20 ms
    let slow = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut assoc = raw_client::associate(port, "SLOW", "PACS", CT_IMAGE_STORAGE).unwrap();
            let (sop, _) = new_ct("7201");
            let pc = assoc.presentation_contexts()[0].id;
            let pdv = |kind, last, data| dicom_ul::Pdu::PData {
                data: vec![dicom_ul::pdu::PDataValue {
                    presentation_context_id: pc,
                    value_type: kind,
                    is_last: last,
                    data,
                }],
            };
            let command = raw_client::store_command(CT_IMAGE_STORAGE, &sop, 1);
            assoc
                .send(&pdv(dicom_ul::pdu::PDataValueType::Command, true, command))
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let chunk = vec![0u8; 16 * 1024];
                if assoc
                    .send(&pdv(dicom_ul::pdu::PDataValueType::Data, false, chunk))
                    .is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = assoc.abort();
        })
    };
    let (held, refused) = run_blocking(move || {
        std::thread::sleep(Duration::from_millis(200));
        // two more from 127.0.0.1 reach the share of 3
        let held: Vec<_> = (0..2)
            .map(|_| raw_client::associate(port, "GREEDY", "PACS", CT_IMAGE_STORAGE).unwrap())
            .collect();
        // and every further one is refused
        let refused: Vec<_> = (0..5)
            .map(|_| {
                raw_client::rejection(&raw_client::associate(
                    port,
                    "GREEDY",
                    "PACS",
                    CT_IMAGE_STORAGE,
                ))
            })
            .collect();
        (held, refused)
    })
    .await;
    for rj in &refused {
        let rj = rj.as_ref().expect("refused with an A-ASSOCIATE-RJ");
        assert_eq!(rj.result, AssociationRJResult::Transient);
        assert_eq!(
            rj.source,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
            )
        );
    }
    // another address is answered, promptly, meanwhile
    let started = std::time::Instant::now();
    let status = run_blocking(move || pynetdicom_echo_from(port, "127.0.0.2")).await;
    assert_eq!(status, Some(0), "{}", node.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // a share given back can be taken again
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = run_blocking(move || {
        raw_client::associate(port, "GREEDY", "PACS", CT_IMAGE_STORAGE).map(|a| a.release())
    })
    .await;
    assert!(again.is_ok(), "{again:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    slow.join().unwrap();
    assert_healthy(&node, &expected).await;
    assert!(node.log().contains("too many concurrent associations"));
}
