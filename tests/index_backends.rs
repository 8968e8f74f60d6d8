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

/// Values for every declared attribute, distinct per `n`, in the form its VR takes.
struct Values(std::collections::HashMap<u32, String>);

impl pacs::index::attributes::AttributeSource for Values {
    fn text(&self, tag: u32) -> String {
        self.0.get(&tag).cloned().unwrap_or_default()
    }
    fn int(&self, tag: u32) -> Option<i32> {
        self.0.get(&tag).and_then(|v| v.parse().ok())
    }
}

fn value_for(d: &pacs::index::attributes::Declared, n: u32) -> String {
    match d.vr {
        "UI" => format!("1.2.{}.{n}", d.tag),
        "DA" => format!("2024010{n}"),
        "TM" => format!("10300{n}"),
        "PN" => format!("Doe{n}^Jane"),
        "IS" | "US" => format!("{}", 10 + n),
        _ => format!("V{n}"),
    }
}

fn declared_record(n: u32) -> InstanceRecord {
    use pacs::index::attributes::DECLARED;
    let values = Values(DECLARED.iter().map(|d| (d.tag, value_for(d, n))).collect());
    let mut r = InstanceRecord::default();
    r.read_attributes(&values);
    r.transfer_syntax_uid = uids::EXPLICIT_VR_LITTLE_ENDIAN.into();
    r.object_key = format!("declared/{n}.dcm");
    r.sha256 = "ef".repeat(32);
    r.metadata_json = b"{}".to_vec();
    r.frames_json = "[]".into();
    r
}

/// Every attribute of the QIDO-RS/C-FIND table is stored, returned and matched.
async fn every_query_attribute_is_stored_and_matched(backend: Backend) {
    use pacs::query::attributes::{Source, INDEXED};
    use pacs::query::{Include, Query};
    let (index, _dir) = open(backend).await;
    for n in [1, 2] {
        assert_eq!(
            index.insert_instance(declared_record(n)).await.unwrap(),
            InsertOutcome::Inserted
        );
    }
    let key = |tag: u32| format!("{tag:08X}");
    for attribute in INDEXED.iter() {
        let (wanted, value) = match attribute.source {
            Source::Stored(d) => {
                let v = value_for(d, 1);
                // PN matching ignores case
                let asked = if d.vr == "PN" {
                    v.to_lowercase()
                } else {
                    v.clone()
                };
                (Some(v), asked)
            }
            Source::ModalitiesInStudy => (Some("V1".to_string()), "V1".to_string()),
            _ => (None, String::new()),
        };
        if let Some(wanted) = wanted {
            let query = Query::parse(
                attribute.level,
                &[(attribute.keyword.to_string(), value)],
                Include::Defaults,
                false,
                10,
                0,
            )
            .unwrap();
            let result = query.run(&*index, None).await.unwrap();
            assert_eq!(
                result.datasets.len(),
                1,
                "{}: {:?}",
                attribute.keyword,
                result.datasets
            );
            let got = &result.datasets[0][key(attribute.tag)]["Value"][0];
            let got = match attribute.vr {
                "PN" => got["Alphabetic"].as_str().unwrap_or_default().to_string(),
                "IS" | "US" => got.as_i64().map(|i| i.to_string()).unwrap_or_default(),
                _ => got.as_str().unwrap_or_default().to_string(),
            };
            assert_eq!(got, wanted, "{} as returned", attribute.keyword);
        } else {
            // computed counts: one series, one instance in each study
            let query =
                Query::parse(attribute.level, &[], Include::Defaults, false, 10, 0).unwrap();
            let result = query.run(&*index, None).await.unwrap();
            assert_eq!(result.datasets.len(), 2, "{}", attribute.keyword);
            for d in &result.datasets {
                assert_eq!(
                    d[key(attribute.tag)]["Value"][0],
                    1,
                    "{}",
                    attribute.keyword
                );
            }
        }
    }
}
both_backends!(every_query_attribute_is_stored_and_matched);

/// A database made by the previous release (migrations 1 to 3) is brought up to date: its rows
/// stay, and the instances the AI worker stored then (recorded under the calling AE `PACS-AI`)
/// are AI output now, without that AE title.
#[tokio::test]
async fn a_database_of_the_previous_schema_is_migrated() {
    use pacs::index::schema::{migration_statements, Dialect, MIGRATIONS};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&Dialect::Sqlite.render(pacs::index::schema::CREATE_MIGRATIONS_TABLE))
            .unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= 3) {
            for statement in migration_statements(m, Dialect::Sqlite) {
                conn.execute_batch(&statement).unwrap();
            }
            conn.execute(
                pacs::index::schema::RECORD_MIGRATION,
                rusqlite::params![m.version, m.description, 0],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name,
                patient_name_norm, patient_birth_date, patient_sex) VALUES ('P', '', '', '', '', '');
             INSERT INTO studies (patient_pk, study_instance_uid, study_date, study_time,
                accession_number, referring_physician_name, study_description, study_id,
                patient_id, patient_name, patient_name_norm, patient_birth_date, patient_sex,
                created_at_ms) VALUES (1, '1.9', '', '', '', '', '', '', 'P', '', '', '', '', 0);
             INSERT INTO series (study_pk, series_instance_uid, modality, series_description,
                series_date, series_time, body_part_examined, created_at_ms)
                VALUES (1, '1.9.1', 'SEG', '', '', '', '', 0);
             INSERT INTO instances (series_pk, study_pk, sop_instance_uid, sop_class_uid,
                transfer_syntax_uid, object_key, size_bytes, sha256, received_at_ms, source_ae)
                VALUES (1, 1, '1.9.1.1', '1.2', '1.2', 'k1', 1, 'x', 0, 'PACS-AI'),
                       (1, 1, '1.9.1.2', '1.2', '1.2', 'k2', 1, 'y', 0, 'CT1');",
        )
        .unwrap();
    }
    let index = pacs::index::open(path.to_str().unwrap()).await.unwrap();
    let ai = index.find_instance("1.9.1.1").await.unwrap().unwrap();
    assert!(ai.ai_output);
    assert_eq!(ai.source_ae, "");
    let ct = index.find_instance("1.9.1.2").await.unwrap().unwrap();
    assert!(!ct.ai_output);
    assert_eq!(ct.source_ae, "CT1");
    // and new rows go in as usual
    assert_eq!(
        index
            .insert_instance(record("1.9", "1.9.1", "1.9.1.3"))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(index.counts().await.unwrap().instances, 3);
}

/// Queries of ever new shapes (a study UID list of each length from 1 to 700: as many distinct
/// statements) do not grow a PostgreSQL connection's prepared statements without bound
/// (issue 12): the connection's cache and the server's own count stay at the bound or under,
/// and statements are still cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_stay_bounded_postgres() {
    use pacs::query::{Include, Level, Query};
    const BOUND: usize = 512;
    let index = pacs::index::postgres::PostgresIndex::connect(&support::postgres_url())
        .await
        .unwrap();
    for n in 1..=700 {
        let uids: Vec<String> = (0..n).map(|i| format!("1.2.826.0.1.{i}")).collect();
        let keys = [("StudyInstanceUID".to_string(), uids.join("\\"))];
        let query = Query::parse(Level::Study, &keys, Include::Defaults, false, 10, 0).unwrap();
        let result = query.run(&index, None).await.unwrap();
        assert!(result.datasets.is_empty());
    }
    let (cached, on_server) = index.prepared_statements().await.unwrap();
    assert!(
        (1..=BOUND + 1).contains(&cached),
        "{cached} statements in the connection's cache"
    );
    // the server's count includes the statement that counts
    assert!(
        (1..=BOUND as i64 + 2).contains(&on_server),
        "{on_server} statements prepared on the server"
    );
}
