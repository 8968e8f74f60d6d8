//! The index interface behaves the same on SQLite and PostgreSQL.

use crate::support;

use std::sync::Arc;

use dicom_dictionary_std::uids;
use pacs::index::{Index, InsertOutcome, InstanceRecord};
use support::{both_backends, Backend};

async fn open(backend: Backend) -> (Arc<dyn Index>, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let index = pacs::index::open(dir.path().join("i.sqlite").to_str().unwrap())
                .await
                .unwrap();
            (index, Some(dir))
        }
        Backend::Postgres => (
            pacs::index::open(&support::postgres_url()).await.unwrap(),
            None,
        ),
    }
}

fn record(study: &str, series: &str, sop: &str) -> InstanceRecord {
    InstanceRecord {
        patient_id: "P1".into(),
        patient_name: "Doe^Jane".into(),
        study_instance_uid: study.into(),
        study_date: "20240105".into(),
        series_instance_uid: series.into(),
        modality: "CT".into(),
        series_number: Some(2),
        sop_instance_uid: sop.into(),
        sop_class_uid: uids::CT_IMAGE_STORAGE.into(),
        instance_number: Some(1),
        transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
        rows: Some(512),
        columns: Some(512),
        object_key: format!("{study}/{series}/{sop}.dcm"),
        size_bytes: 1234,
        sha256: "ab".repeat(32),
        received_at_ms: 1,
        source_ae: "CT1".into(),
        metadata_json: br#"{"00080060":{"vr":"CS","Value":["CT"]}}"#.to_vec(),
        frames_json: "[[[100,50]]]".into(),
        ..Default::default()
    }
}

async fn insert_find_and_count(backend: Backend) {
    let (index, _dir) = open(backend).await;
    assert_eq!(
        index.backend(),
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert_eq!(
        index
            .insert_instance(record("1.1", "1.1.1", "1.1.1.1"))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        index
            .insert_instance(record("1.1", "1.1.1", "1.1.1.2"))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        index
            .insert_instance(record("1.1", "1.1.2", "1.1.2.1"))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        index
            .insert_instance(record("1.2", "1.2.1", "1.2.1.1"))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    let counts = index.counts().await.unwrap();
    assert_eq!(
        (
            counts.patients,
            counts.studies,
            counts.series,
            counts.instances
        ),
        (1, 2, 3, 4)
    );
    // a second insert of the same SOP Instance UID changes nothing and reports what is there
    match index
        .insert_instance(record("1.1", "1.1.1", "1.1.1.1"))
        .await
        .unwrap()
    {
        InsertOutcome::AlreadyExists(existing) => {
            assert_eq!(existing.study_instance_uid, "1.1");
            assert_eq!(existing.series_instance_uid, "1.1.1");
            assert_eq!(existing.source_ae, "CT1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(index.counts().await.unwrap().instances, 4);
    let found = index.find_instance("1.1.2.1").await.unwrap().unwrap();
    assert_eq!(found.object_key, "1.1/1.1.2/1.1.2.1.dcm");
    assert!(index.find_instance("9.9").await.unwrap().is_none());
    let md = index.instance_metadata("1.1.1.2").await.unwrap().unwrap();
    assert_eq!(md, br#"{"00080060":{"vr":"CS","Value":["CT"]}}"#.to_vec());
    assert_eq!(
        index.instance_frames("1.1.1.2").await.unwrap().unwrap(),
        "[[[100,50]]]"
    );
    let all = index.all_instances().await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all
        .windows(2)
        .all(|w| w[0].sop_instance_uid < w[1].sop_instance_uid));
}
both_backends!(insert_find_and_count);

async fn replace_swaps_the_row_in_one_transaction(backend: Backend) {
    let (index, _dir) = open(backend).await;
    index
        .insert_instance(record("1.1", "1.1.1", "1.1.1.1"))
        .await
        .unwrap();
    let mut newer = record("1.1", "1.1.1", "1.1.1.1");
    newer.sha256 = "cd".repeat(32);
    newer.object_key = "1.1/1.1.1/1.1.1.1.new.dcm".into();
    let previous = index.replace_instance(newer).await.unwrap().unwrap();
    assert_eq!(previous.sha256, "ab".repeat(32));
    let now = index.find_instance("1.1.1.1").await.unwrap().unwrap();
    assert_eq!(now.sha256, "cd".repeat(32));
    assert_eq!(index.counts().await.unwrap().instances, 1);
    // replacing something that is not there just inserts it
    assert!(index
        .replace_instance(record("1.1", "1.1.1", "1.1.1.9"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(index.counts().await.unwrap().instances, 2);
}
both_backends!(replace_swaps_the_row_in_one_transaction);

async fn concurrent_inserts_of_one_study_all_land(backend: Backend) {
    let (index, _dir) = open(backend).await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                // every worker also re-inserts one shared instance: exactly one wins
                index
                    .insert_instance(record("2.1", "2.1.1", &format!("2.1.1.{worker}{n:02}")))
                    .await
                    .unwrap();
                index
                    .insert_instance(record("2.1", "2.1.1", "2.1.1.999"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts = index.counts().await.unwrap();
    assert_eq!(
        (
            counts.patients,
            counts.studies,
            counts.series,
            counts.instances
        ),
        (1, 1, 1, 201)
    );
}
both_backends!(concurrent_inserts_of_one_study_all_land);

async fn reopening_keeps_data_and_schema(backend: Backend) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("i.sqlite");
            {
                let index = pacs::index::open(path.to_str().unwrap()).await.unwrap();
                index
                    .insert_instance(record("3.1", "3.1.1", "3.1.1.1"))
                    .await
                    .unwrap();
            }
            let index = pacs::index::open(path.to_str().unwrap()).await.unwrap();
            assert_eq!(index.counts().await.unwrap().instances, 1);
        }
        Backend::Postgres => {
            let url = support::postgres_url();
            {
                let index = pacs::index::open(&url).await.unwrap();
                index
                    .insert_instance(record("3.1", "3.1.1", "3.1.1.1"))
                    .await
                    .unwrap();
            }
            // two nodes migrating the same database at once
            let (a, b) = tokio::join!(pacs::index::open(&url), pacs::index::open(&url));
            assert_eq!(a.unwrap().counts().await.unwrap().instances, 1);
            assert_eq!(b.unwrap().counts().await.unwrap().instances, 1);
        }
    }
}
both_backends!(reopening_keeps_data_and_schema);
