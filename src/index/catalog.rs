//! Typed statements for the rest of the node: instance selection for retrieval (WADO-RS,
//! C-MOVE/C-GET), node settings (the AI routes and models among them), the AI
//! series-completion watch, and the AE registry. Writes of state that nodes keep a copy of
//! announce their [`Change`] in their transaction.

use std::collections::HashMap;

use super::schema::INSTANCE_SCOPE;
use super::{Change, Executed, Index, IndexResult, Sql, SqlValue, Transaction};
use crate::config::RemoteAe;

/// Which instances to select: every list given (non-empty) must contain the instance's value.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub patient_ids: Vec<String>,
    pub studies: Vec<String>,
    pub series: Vec<String>,
    pub instances: Vec<String>,
}

/// An instance selected by [`InstanceFilter`], with where its object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedInstance {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub object_key: String,
    pub size_bytes: i64,
    pub sha256: String,
}

const LOCATED_COLUMNS: &str = "st.study_instance_uid, se.series_instance_uid, \
     i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.object_key, i.size_bytes, \
     i.sha256";

fn text(v: &SqlValue) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn located(row: &[SqlValue]) -> LocatedInstance {
    LocatedInstance {
        study_instance_uid: text(&row[0]),
        series_instance_uid: text(&row[1]),
        sop_instance_uid: text(&row[2]),
        sop_class_uid: text(&row[3]),
        transfer_syntax_uid: text(&row[4]),
        object_key: text(&row[5]),
        size_bytes: row[6].as_i64().unwrap_or(0),
        sha256: text(&row[7]),
    }
}

/// What routing needs of a complete series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesSummary {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: String,
    pub body_part: String,
    pub series_description: String,
    pub sop_classes: Vec<String>,
    /// Calling AE titles of the DIMSE peers that sent its instances.
    pub calling_aes: Vec<String>,
    /// Whether any of its instances was stored by an authenticated AI worker.
    pub ai_output: bool,
}

/// Who last wrote an AE registry row: `Config` rows follow the configuration file at startup,
/// `Api` rows were changed by an administrator and are left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeOrigin {
    Config,
    Api,
}

const AE_COLUMNS: &str =
    "title, host, port, description, allow, move_destination, check_host, source, updated_at_ms, roles, tls";

fn ae_params(ae: &RemoteAe, origin: AeOrigin, now_ms: i64) -> Vec<SqlValue> {
    vec![
        SqlValue::Text(ae.title.clone()),
        SqlValue::Text(ae.host.clone().unwrap_or_default()),
        SqlValue::Int(ae.port.unwrap_or(0) as i64),
        SqlValue::Text(ae.description.clone()),
        SqlValue::Text(ae.allow.join(",")),
        SqlValue::Int(ae.move_destination as i64),
        SqlValue::Int(ae.check_host as i64),
        SqlValue::Text(
            match origin {
                AeOrigin::Config => "config",
                AeOrigin::Api => "api",
            }
            .into(),
        ),
        SqlValue::Int(now_ms),
        SqlValue::Text(ae.roles.join(",")),
        SqlValue::Int(ae.tls as i64),
    ]
}

fn ae_from_row(row: &[SqlValue]) -> RemoteAe {
    let int = |i: usize| row[i].as_i64().unwrap_or(0);
    let host = text(&row[1]);
    let port = int(2);
    RemoteAe {
        title: text(&row[0]),
        host: (!host.is_empty()).then_some(host),
        port: (port > 0).then_some(port as u16),
        description: text(&row[3]),
        allow: text(&row[4])
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        move_destination: int(5) != 0,
        check_host: int(6) != 0,
        roles: text(&row[9])
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        tls: int(10) != 0,
    }
}

/// Node settings under this prefix hold the AI models known to the cluster: `ai_model.NAME`
/// → version.
const MODEL_PREFIX: &str = "ai_model.";

impl dyn Index {
    /// The database's clock: milliseconds since the Unix epoch (PostgreSQL: the server's).
    pub async fn clock_ms(&self) -> IndexResult<i64> {
        let rows = self.fetch(Sql::new("SELECT {clock_ms}"), vec![]).await?;
        rows.first()
            .and_then(|r| r[0].as_i64())
            .ok_or_else(|| super::IndexError::Database("the database has no clock".into()))
    }

    /// One write that, when it changes a row, announces `change` to every node (in its
    /// transaction); a write that changes nothing announces nothing.
    pub(in crate::index) async fn write_announcing(
        &self,
        sql: Sql<'_>,
        params: Vec<SqlValue>,
        change: Change,
    ) -> IndexResult<Executed> {
        let done = self
            .transact(
                Transaction::new()
                    .then(sql, params)
                    .guarded()
                    .announce(change),
            )
            .await?;
        Ok(done.and_then(|mut d| d.pop()).unwrap_or_default())
    }

    /// Instances matching `filter`, in study, series (number), instance (number) order, with
    /// their stored metadata (DICOM JSON) when `with_metadata`.
    pub async fn instances_in(
        &self,
        filter: &InstanceFilter,
        with_metadata: bool,
    ) -> IndexResult<Vec<(LocatedInstance, Option<Vec<u8>>)>> {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        for (column, values) in [
            ("st.patient_id", &filter.patient_ids),
            ("st.study_instance_uid", &filter.studies),
            ("se.series_instance_uid", &filter.series),
            ("i.sop_instance_uid", &filter.instances),
        ] {
            if values.is_empty() {
                continue;
            }
            let placeholders: Vec<String> = values
                .iter()
                .map(|v| {
                    params.push(SqlValue::Text(v.clone()));
                    format!("?{}", params.len())
                })
                .collect();
            conditions.push(format!("{column} IN ({})", placeholders.join(", ")));
        }
        if conditions.is_empty() {
            conditions.push("1 = 1".into());
        }
        let (metadata_column, metadata_join) = if with_metadata {
            (
                ", m.metadata_json",
                " JOIN instance_metadata m ON m.instance_pk = i.pk",
            )
        } else {
            ("", "")
        };
        let sql = format!(
            "SELECT {LOCATED_COLUMNS}{metadata_column} FROM {INSTANCE_SCOPE}{metadata_join}
             WHERE {} ORDER BY st.pk, se.series_number, se.pk, i.instance_number, i.pk",
            conditions.join(" AND ")
        );
        let rows = self.fetch(Sql::new(&sql), params).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let instance = located(&row);
                let metadata = with_metadata
                    .then(|| row.into_iter().nth(8).and_then(SqlValue::into_bytes))
                    .flatten();
                (instance, metadata)
            })
            .collect())
    }

    /// A node setting saved in the index.
    pub async fn setting(&self, key: &str) -> IndexResult<Option<String>> {
        let rows = self
            .fetch(
                Sql::new("SELECT value FROM node_settings WHERE key = ?1"),
                vec![SqlValue::Text(key.into())],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].as_str()).map(str::to_string))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> IndexResult<()> {
        self.write(
            Sql::new(
                "INSERT INTO node_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ),
            vec![SqlValue::Text(key.into()), SqlValue::Text(value.into())],
        )
        .await?;
        Ok(())
    }

    /// Sets a setting that other nodes keep a copy of, and tells them (`change`).
    pub async fn set_shared_setting(
        &self,
        key: &str,
        value: &str,
        change: Change,
    ) -> IndexResult<()> {
        self.write_announcing(
            Sql::new(
                "INSERT INTO node_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ),
            vec![SqlValue::Text(key.into()), SqlValue::Text(value.into())],
            change,
        )
        .await?;
        Ok(())
    }

    /// The AI models every node routes to, with their versions.
    pub async fn ai_models(&self) -> IndexResult<HashMap<String, String>> {
        let rows = self
            .fetch(
                // a range, not LIKE: `_` is a LIKE wildcard
                Sql::new("SELECT key, value FROM node_settings WHERE key >= ?1 AND key < ?2"),
                vec![
                    SqlValue::Text(MODEL_PREFIX.into()),
                    SqlValue::Text("ai_model/".into()),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name = r[0].as_str()?.strip_prefix(MODEL_PREFIX)?;
                Some((name.to_string(), r[1].as_str()?.to_string()))
            })
            .collect())
    }

    /// Records the versions of the models a node has (its models folder), for every node;
    /// tells them when one changed.
    pub async fn publish_ai_models(&self, models: &HashMap<String, String>) -> IndexResult<()> {
        let mut names: Vec<&String> = models.keys().collect();
        names.sort();
        let keys: Vec<String> = names.iter().map(|n| format!("{MODEL_PREFIX}{n}")).collect();
        for (name, key) in names.iter().zip(&keys) {
            self.write_announcing(
                Sql::new(
                    "INSERT INTO node_settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value
                     WHERE node_settings.value <> excluded.value",
                ),
                vec![
                    SqlValue::Text(key.clone()),
                    SqlValue::Text(models[*name].clone()),
                ],
                Change::AiModels,
            )
            .await?;
        }
        Ok(())
    }

    /// The setting `key`, first set to `value` if it has none: every node sharing the index
    /// gets the value of whichever wrote first.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> IndexResult<String> {
        self.write(
            Sql::new(
                "INSERT INTO node_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO NOTHING",
            ),
            vec![SqlValue::Text(key.into()), SqlValue::Text(value.into())],
        )
        .await?;
        Ok(self
            .setting(key)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }

    /// The latest arrival recorded in the series-completion watch.
    pub async fn latest_watched_arrival(&self) -> IndexResult<Option<i64>> {
        let rows = self
            .fetch(
                Sql::new("SELECT MAX(last_received_ms) FROM ai_series_watch"),
                vec![],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].as_i64()))
    }

    /// Notes, in the watch, the series that received instances after `since_ms`; returns the
    /// latest arrival among them.
    pub async fn watch_series_since(&self, since_ms: i64) -> IndexResult<Option<i64>> {
        self.write(
            Sql::new(
                "INSERT INTO ai_series_watch (series_pk, last_received_ms, routed_at_ms)
                 SELECT series_pk, MAX(received_at_ms), 0 FROM instances
                 WHERE received_at_ms > ?1 GROUP BY series_pk
                 ON CONFLICT (series_pk) DO UPDATE SET last_received_ms = excluded.last_received_ms
                 WHERE excluded.last_received_ms > ai_series_watch.last_received_ms",
            ),
            vec![SqlValue::Int(since_ms)],
        )
        .await?;
        let rows = self
            .fetch(
                Sql::new("SELECT MAX(received_at_ms) FROM instances WHERE received_at_ms > ?1"),
                vec![SqlValue::Int(since_ms)],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].as_i64()))
    }

    /// Watched series not routed since their last arrival, which was more than `quiet_ms`
    /// ago by the database's clock: (series key, last arrival), the oldest first.
    pub async fn quiet_series(&self, quiet_ms: i64) -> IndexResult<Vec<(i64, i64)>> {
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT w.series_pk, w.last_received_ms FROM ai_series_watch w
                     WHERE w.routed_at_ms < w.last_received_ms
                       AND w.last_received_ms < {clock_ms} - ?1
                     ORDER BY w.last_received_ms, w.series_pk",
                ),
                vec![SqlValue::Int(quiet_ms)],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r[0].as_i64()?, r[1].as_i64()?)))
            .collect())
    }

    /// What routing looks at in a series.
    pub async fn series_facts(&self, series_pk: i64) -> IndexResult<Option<SeriesSummary>> {
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT se.series_instance_uid, st.study_instance_uid, se.modality,
                            se.body_part_examined, se.series_description
                     FROM series se JOIN studies st ON st.pk = se.study_pk WHERE se.pk = ?1",
                ),
                vec![SqlValue::Int(series_pk)],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut facts = SeriesSummary {
            series_instance_uid: text(&row[0]),
            study_instance_uid: text(&row[1]),
            modality: text(&row[2]),
            body_part: text(&row[3]),
            series_description: text(&row[4]),
            ..Default::default()
        };
        let distinct = self
            .fetch(
                Sql::new(
                    "SELECT DISTINCT sop_class_uid, source_ae, ai_output FROM instances
                     WHERE series_pk = ?1",
                ),
                vec![SqlValue::Int(series_pk)],
            )
            .await?;
        for r in &distinct {
            let (class, ae) = (text(&r[0]), text(&r[1]));
            if !facts.sop_classes.contains(&class) {
                facts.sop_classes.push(class);
            }
            if !ae.is_empty() && !facts.calling_aes.contains(&ae) {
                facts.calling_aes.push(ae);
            }
            facts.ai_output |= r[2].as_i64().unwrap_or(0) != 0;
        }
        Ok(Some(facts))
    }

    /// Every registered remote AE, by title.
    pub async fn remote_aes(&self) -> IndexResult<Vec<RemoteAe>> {
        let sql = format!("SELECT {AE_COLUMNS} FROM remote_aes ORDER BY title");
        let rows = self.fetch(Sql::new(&sql), vec![]).await?;
        Ok(rows.iter().map(|r| ae_from_row(r)).collect())
    }

    /// Writes an AE from the configuration file, unless an administrator changed it since.
    pub async fn seed_remote_ae(&self, ae: &RemoteAe, now_ms: i64) -> IndexResult<()> {
        let sql = format!(
            "INSERT INTO remote_aes ({AE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (title) DO UPDATE SET host = excluded.host, port = excluded.port,
               description = excluded.description, allow = excluded.allow,
               move_destination = excluded.move_destination, check_host = excluded.check_host,
               updated_at_ms = excluded.updated_at_ms, roles = excluded.roles,
               tls = excluded.tls
             WHERE remote_aes.source = 'config'"
        );
        self.write_announcing(
            Sql::new(&sql),
            ae_params(ae, AeOrigin::Config, now_ms),
            Change::RemoteAes,
        )
        .await?;
        Ok(())
    }

    /// Adds an AE; false when one with its title exists.
    pub async fn insert_remote_ae(&self, ae: &RemoteAe, now_ms: i64) -> IndexResult<bool> {
        let sql = format!(
            "INSERT INTO remote_aes ({AE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (title) DO NOTHING RETURNING title"
        );
        let done = self
            .write_announcing(
                Sql::new(&sql),
                ae_params(ae, AeOrigin::Api, now_ms),
                Change::RemoteAes,
            )
            .await?;
        Ok(!done.rows.is_empty())
    }

    /// Changes an AE (as an administrator's); false when there is none with its title.
    pub async fn update_remote_ae(&self, ae: &RemoteAe, now_ms: i64) -> IndexResult<bool> {
        let done = self
            .write_announcing(
                Sql::new(
                    "UPDATE remote_aes SET host = ?2, port = ?3, description = ?4, allow = ?5,
                       move_destination = ?6, check_host = ?7, source = ?8, updated_at_ms = ?9,
                       roles = ?10, tls = ?11
                     WHERE title = ?1",
                ),
                ae_params(ae, AeOrigin::Api, now_ms),
                Change::RemoteAes,
            )
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Removes an AE; false when there was none.
    pub async fn delete_remote_ae(&self, title: &str) -> IndexResult<bool> {
        let done = self
            .write_announcing(
                Sql::new("DELETE FROM remote_aes WHERE title = ?1"),
                vec![SqlValue::Text(title.into())],
                Change::RemoteAes,
            )
            .await?;
        Ok(done.rows_affected > 0)
    }
}
