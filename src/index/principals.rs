//! Typed statements for the node's own principals: local users and API keys (migration 5).
//! What the columns mean, and how secrets are hashed, is decided in `crate::auth`; this module
//! only stores rows.

use super::{Index, IndexResult, Sql, SqlValue};

/// A local user as stored: the password only as its Argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub roles: Vec<String>,
    pub password_hash: String,
    /// Changes with every password change; login tokens carry the one they were issued under.
    pub generation: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// An API key as stored: the key only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub name: String,
    pub key_hash: String,
    pub roles: Vec<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

fn list(text: &SqlValue) -> Vec<String> {
    text.as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn text(value: &SqlValue) -> String {
    value.as_str().unwrap_or_default().to_string()
}

const USER_COLUMNS: &str = "name, roles, password_hash, generation, created_at_ms, updated_at_ms";

fn user_from_row(row: &[SqlValue]) -> UserRow {
    UserRow {
        name: text(&row[0]),
        roles: list(&row[1]),
        password_hash: text(&row[2]),
        generation: row[3].as_i64().unwrap_or(0),
        created_at_ms: row[4].as_i64().unwrap_or(0),
        updated_at_ms: row[5].as_i64().unwrap_or(0),
    }
}

const KEY_COLUMNS: &str = "name, key_hash, roles, created_at_ms, revoked_at_ms";

fn key_from_row(row: &[SqlValue]) -> ApiKeyRow {
    ApiKeyRow {
        name: text(&row[0]),
        key_hash: text(&row[1]),
        roles: list(&row[2]),
        created_at_ms: row[3].as_i64().unwrap_or(0),
        revoked_at_ms: row[4].as_i64(),
    }
}

impl dyn Index {
    /// Adds a user; false when one with that name exists.
    pub async fn insert_user(&self, user: &UserRow) -> IndexResult<bool> {
        let sql = format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO NOTHING RETURNING name"
        );
        let done = self
            .write(
                Sql::new(&sql),
                vec![
                    SqlValue::Text(user.name.clone()),
                    SqlValue::Text(user.roles.join(",")),
                    SqlValue::Text(user.password_hash.clone()),
                    SqlValue::Int(user.generation),
                    SqlValue::Int(user.created_at_ms),
                    SqlValue::Int(user.updated_at_ms),
                ],
            )
            .await?;
        Ok(!done.rows.is_empty())
    }

    pub async fn user(&self, name: &str) -> IndexResult<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1");
        let rows = self
            .fetch(Sql::new(&sql), vec![SqlValue::Text(name.into())])
            .await?;
        Ok(rows.first().map(|r| user_from_row(r)))
    }

    pub async fn users(&self) -> IndexResult<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        let rows = self.fetch(Sql::new(&sql), vec![]).await?;
        Ok(rows.iter().map(|r| user_from_row(r)).collect())
    }

    /// Sets a user's password hash and moves its generation on; false when there is no such
    /// user.
    pub async fn set_user_password(
        &self,
        name: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new(
                    "UPDATE users SET password_hash = ?2, generation = generation + 1,
                       updated_at_ms = ?3
                     WHERE name = ?1",
                ),
                vec![
                    SqlValue::Text(name.into()),
                    SqlValue::Text(password_hash.into()),
                    SqlValue::Int(now_ms),
                ],
            )
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Moves a user's generation on without changing the password: every login token issued
    /// so far stops working (logout); false when there is no such user.
    pub async fn end_user_login_tokens(&self, name: &str, now_ms: i64) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new(
                    "UPDATE users SET generation = generation + 1, updated_at_ms = ?2
                     WHERE name = ?1",
                ),
                vec![SqlValue::Text(name.into()), SqlValue::Int(now_ms)],
            )
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Sets a user's roles; false when there is no such user.
    pub async fn set_user_roles(
        &self,
        name: &str,
        roles: &[String],
        now_ms: i64,
    ) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new("UPDATE users SET roles = ?2, updated_at_ms = ?3 WHERE name = ?1"),
                vec![
                    SqlValue::Text(name.into()),
                    SqlValue::Text(roles.join(",")),
                    SqlValue::Int(now_ms),
                ],
            )
            .await?;
        Ok(done.rows_affected > 0)
    }

    pub async fn delete_user(&self, name: &str) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new("DELETE FROM users WHERE name = ?1"),
                vec![SqlValue::Text(name.into())],
            )
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Adds an API key; false when one with that name exists (revoked ones included: names
    /// are never reused, so that logs stay unambiguous).
    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> IndexResult<bool> {
        let sql = format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (name) DO NOTHING RETURNING name"
        );
        let done = self
            .write(
                Sql::new(&sql),
                vec![
                    SqlValue::Text(key.name.clone()),
                    SqlValue::Text(key.key_hash.clone()),
                    SqlValue::Text(key.roles.join(",")),
                    SqlValue::Int(key.created_at_ms),
                ],
            )
            .await?;
        Ok(!done.rows.is_empty())
    }

    /// The key whose SHA-256 is `key_hash`, revoked or not.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> IndexResult<Option<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1");
        let rows = self
            .fetch(Sql::new(&sql), vec![SqlValue::Text(key_hash.into())])
            .await?;
        Ok(rows.first().map(|r| key_from_row(r)))
    }

    /// The key named `name`, revoked or not.
    pub async fn api_key_by_name(&self, name: &str) -> IndexResult<Option<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE name = ?1");
        let rows = self
            .fetch(Sql::new(&sql), vec![SqlValue::Text(name.into())])
            .await?;
        Ok(rows.first().map(|r| key_from_row(r)))
    }

    pub async fn api_keys(&self) -> IndexResult<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name");
        let rows = self.fetch(Sql::new(&sql), vec![]).await?;
        Ok(rows.iter().map(|r| key_from_row(r)).collect())
    }

    /// Revokes a key; false when there is no such key or it was revoked already.
    pub async fn revoke_api_key(&self, name: &str, now_ms: i64) -> IndexResult<bool> {
        let done = self
            .write(
                Sql::new(
                    "UPDATE api_keys SET revoked_at_ms = ?2
                     WHERE name = ?1 AND revoked_at_ms IS NULL",
                ),
                vec![SqlValue::Text(name.into()), SqlValue::Int(now_ms)],
            )
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Whether any user exists or any key is live: authentication is then configured.
    pub async fn has_principals(&self) -> IndexResult<bool> {
        let rows = self
            .fetch(
                Sql::new(
                    "SELECT (SELECT COUNT(*) FROM users)
                          + (SELECT COUNT(*) FROM api_keys WHERE revoked_at_ms IS NULL)",
                ),
                vec![],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0) > 0)
    }
}
