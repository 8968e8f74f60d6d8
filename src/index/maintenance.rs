//! Statements of reconciliation (`pacs fsck`, the start-up pass in `crate::fsck`): which
//! objects rows point to, and the removal of a row whose object is gone.

use std::collections::HashMap;

use super::{Index, IndexResult, Sql, SqlValue};

/// Rows looked up per statement.
const BATCH: usize = 500;

impl dyn Index {
    /// The object key each of these SOP Instance UIDs is indexed with (UIDs without a row are
    /// absent). By the instances' unique key, so each batch is an index lookup.
    pub async fn object_keys_of(
        &self,
        sop_instance_uids: &[String],
    ) -> IndexResult<HashMap<String, String>> {
        let mut found = HashMap::new();
        for batch in sop_instance_uids.chunks(BATCH) {
            let placeholders: Vec<String> = (1..=batch.len()).map(|n| format!("?{n}")).collect();
            let sql = format!(
                "SELECT sop_instance_uid, object_key FROM instances WHERE sop_instance_uid IN ({})",
                placeholders.join(", ")
            );
            let params = batch.iter().map(|u| SqlValue::Text(u.clone())).collect();
            for row in self.fetch(Sql::new(&sql), params).await? {
                if let (Some(uid), Some(key)) = (row[0].as_str(), row[1].as_str()) {
                    found.insert(uid.to_string(), key.to_string());
                }
            }
        }
        Ok(found)
    }

    /// Deletes the row (and metadata) of an instance whose object is gone, if it still points
    /// at `object_key` (a store that replaced it since is left alone). Whether a row went.
    pub async fn delete_instance_row(
        &self,
        sop_instance_uid: &str,
        object_key: &str,
    ) -> IndexResult<bool> {
        let params = || {
            vec![
                SqlValue::Text(sop_instance_uid.to_string()),
                SqlValue::Text(object_key.to_string()),
            ]
        };
        self.write(
            Sql::new(
                "DELETE FROM instance_metadata WHERE instance_pk IN \
                 (SELECT pk FROM instances WHERE sop_instance_uid = ?1 AND object_key = ?2)",
            ),
            params(),
        )
        .await?;
        let done = self
            .write(
                Sql::new("DELETE FROM instances WHERE sop_instance_uid = ?1 AND object_key = ?2"),
                params(),
            )
            .await?;
        Ok(done.rows_affected > 0)
    }
}
