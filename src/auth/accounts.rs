//! Local users and API keys: creating, listing, changing and removing them, for `pacs user`,
//! `pacs key` and `/api/users`, `/api/keys`. Passwords are kept as Argon2id hashes (RFC 9106,
//! the argon2 crate's defaults, which follow OWASP's recommendation); API keys, 256 random
//! bits, as their SHA-256.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;

use super::permissions::parse_roles;
use crate::index::{ApiKeyRow, Index, IndexError, UserRow};

/// Prefix of every API key: tells keys from JWTs and makes a leaked key easy to grep for.
pub const KEY_PREFIX: &str = "pacs_";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("no {0}")]
    NotFound(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A user as the API and `pacs user list` show it (never the hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<UserRow> for UserInfo {
    fn from(u: UserRow) -> UserInfo {
        UserInfo {
            name: u.name,
            roles: u.roles,
            created_at_ms: u.created_at_ms,
            updated_at_ms: u.updated_at_ms,
        }
    }
}

/// A key as the API and `pacs key list` show it (never the key nor its hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl From<ApiKeyRow> for KeyInfo {
    fn from(k: ApiKeyRow) -> KeyInfo {
        KeyInfo {
            name: k.name,
            roles: k.roles,
            created_at_ms: k.created_at_ms,
            revoked_at_ms: k.revoked_at_ms,
        }
    }
}

/// Names of users and keys: what fits in logs and audit records unquoted.
pub fn validate_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "invalid name {name:?}: 1 to 64 letters, digits or . _ @ -"
        )))
    }
}

fn validate_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < 8 {
        return Err(AccountError::Invalid(
            "the password must have at least 8 characters".into(),
        ));
    }
    if password.len() > 1024 {
        return Err(AccountError::Invalid("the password is too long".into()));
    }
    Ok(())
}

fn roles(list: &[String]) -> Result<Vec<String>, AccountError> {
    parse_roles(&list.join(",")).map_err(AccountError::Invalid)
}

/// The Argon2id PHC string of `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` is the one `phc` was made from (the comparison is the argon2 crate's,
/// constant time).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// SHA-256 of an API key, hex: how it is stored and looked up.
pub fn key_hash(key: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()))
}

fn now_ms() -> i64 {
    crate::index::sqlite::now_ms()
}

/// Users and keys in the index.
pub struct Accounts {
    pub index: Arc<dyn Index>,
}

impl Accounts {
    pub fn new(index: Arc<dyn Index>) -> Accounts {
        Accounts { index }
    }

    pub async fn add_user(
        &self,
        name: &str,
        role_list: &[String],
        password: &str,
    ) -> Result<UserInfo, AccountError> {
        validate_name(name)?;
        validate_password(password)?;
        let roles = roles(role_list)?;
        let now = now_ms();
        let row = UserRow {
            name: name.to_string(),
            roles,
            password_hash: hash_password(password)?,
            generation: 1,
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !self.index.insert_user(&row).await? {
            return Err(AccountError::Exists(format!("user {name}")));
        }
        tracing::info!(user = name, roles = %row.roles.join(","), "user added");
        Ok(row.into())
    }

    pub async fn users(&self) -> Result<Vec<UserInfo>, AccountError> {
        Ok(self
            .index
            .users()
            .await?
            .into_iter()
            .map(UserInfo::from)
            .collect())
    }

    pub async fn user(&self, name: &str) -> Result<UserInfo, AccountError> {
        self.index
            .user(name)
            .await?
            .map(UserInfo::from)
            .ok_or_else(|| AccountError::NotFound(format!("user {name}")))
    }

    /// Changes the password; every login token issued before stops working.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        validate_password(password)?;
        let hash = hash_password(password)?;
        if !self.index.set_user_password(name, &hash, now_ms()).await? {
            return Err(AccountError::NotFound(format!("user {name}")));
        }
        tracing::info!(user = name, "password changed");
        Ok(())
    }

    pub async fn set_roles(&self, name: &str, role_list: &[String]) -> Result<(), AccountError> {
        let roles = roles(role_list)?;
        if !self.index.set_user_roles(name, &roles, now_ms()).await? {
            return Err(AccountError::NotFound(format!("user {name}")));
        }
        tracing::info!(user = name, roles = %roles.join(","), "roles changed");
        Ok(())
    }

    pub async fn remove_user(&self, name: &str) -> Result<(), AccountError> {
        if !self.index.delete_user(name).await? {
            return Err(AccountError::NotFound(format!("user {name}")));
        }
        tracing::info!(user = name, "user removed");
        Ok(())
    }

    /// Creates a key: the key itself is returned once and never stored.
    pub async fn create_key(
        &self,
        name: &str,
        role_list: &[String],
    ) -> Result<(String, KeyInfo), AccountError> {
        use base64::Engine;
        use ring::rand::SecureRandom;
        validate_name(name)?;
        let roles = roles(role_list)?;
        if roles.is_empty() {
            return Err(AccountError::Invalid(
                "a key needs at least one role".into(),
            ));
        }
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| AccountError::Invalid("no randomness for the key".into()))?;
        let key = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let row = ApiKeyRow {
            name: name.to_string(),
            key_hash: key_hash(&key),
            roles,
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        if !self.index.insert_api_key(&row).await? {
            return Err(AccountError::Exists(format!("key {name}")));
        }
        tracing::info!(key = name, roles = %row.roles.join(","), "API key created");
        Ok((key, row.into()))
    }

    pub async fn keys(&self) -> Result<Vec<KeyInfo>, AccountError> {
        Ok(self
            .index
            .api_keys()
            .await?
            .into_iter()
            .map(KeyInfo::from)
            .collect())
    }

    pub async fn revoke_key(&self, name: &str) -> Result<(), AccountError> {
        if !self.index.revoke_api_key(name, now_ms()).await? {
            return Err(AccountError::NotFound(format!("live key {name}")));
        }
        tracing::info!(key = name, "API key revoked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct hors", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(hash_password("correct horse").unwrap(), phc, "salted");
    }

    #[test]
    fn names_are_plain() {
        assert!(validate_name("alice.b@example-1").is_ok());
        for bad in ["", "a b", "ali\"ce", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn lifecycle_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::open(&dir.path().join("i.sqlite").to_string_lossy())
            .await
            .unwrap();
        let accounts = Accounts::new(index.clone());
        assert!(!index.has_principals().await.unwrap());
        let viewer = vec!["viewer".to_string()];
        accounts
            .add_user("alice", &viewer, "password1")
            .await
            .unwrap();
        assert!(index.has_principals().await.unwrap());
        assert!(matches!(
            accounts.add_user("alice", &viewer, "password1").await,
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            accounts
                .add_user("bob", &["root".into()], "password1")
                .await,
            Err(AccountError::Invalid(_))
        ));
        assert!(matches!(
            accounts.add_user("bob", &viewer, "short").await,
            Err(AccountError::Invalid(_))
        ));
        let before = index.user("alice").await.unwrap().unwrap();
        accounts.set_password("alice", "password2").await.unwrap();
        let after = index.user("alice").await.unwrap().unwrap();
        assert_eq!(after.generation, before.generation + 1);
        assert!(verify_password("password2", &after.password_hash));
        let (key, info) = accounts
            .create_key("worker-1", &["ai-worker".into()])
            .await
            .unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() > 40);
        assert_eq!(info.roles, ["ai-worker"]);
        let stored = index
            .api_key_by_hash(&key_hash(&key))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.name, "worker-1");
        assert!(!stored.key_hash.contains(&key[5..]));
        accounts.revoke_key("worker-1").await.unwrap();
        assert!(accounts.revoke_key("worker-1").await.is_err());
        accounts.remove_user("alice").await.unwrap();
        assert!(!index.has_principals().await.unwrap());
    }
}
