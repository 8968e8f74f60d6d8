//! The registry of remote AEs: who may associate, what each may do, and where C-MOVE may send.
//!
//! It lives in the index (table `remote_aes`), so that every node sharing the database sees
//! the same registry, and a copy is kept in memory for the association check, which must not
//! wait on the database. The copy is reloaded after every change made through this node, and
//! whenever the index tells of a change made through any node (within a second; see
//! `crate::index::changes`, which also reloads it periodically).
//!
//! The configuration file seeds it: at startup, each `[[ae]]` entry is written unless an
//! administrator has since changed that AE through the API.

use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use crate::config::{validate_ae_title, RemoteAe};
use crate::index::{Change, Index, IndexError};

/// Operations an AE may be allowed.
pub const OPERATIONS: &[&str] = &["echo", "store", "find", "move", "get"];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("AE {0} already exists")]
    Exists(String),
    #[error("no AE {0}")]
    NotFound(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

pub struct AeRegistry {
    index: Arc<dyn Index>,
    snapshot: RwLock<Arc<Vec<RemoteAe>>>,
}

/// Checks an AE before it is stored, and normalises it (title without trailing spaces,
/// operations lower-case and deduplicated).
pub fn validate(ae: &mut RemoteAe) -> Result<(), RegistryError> {
    ae.title = ae.title.trim_end().to_string();
    validate_ae_title(&ae.title).map_err(RegistryError::Invalid)?;
    let mut allow: Vec<String> = Vec::new();
    for op in &ae.allow {
        let op = op.trim().to_ascii_lowercase();
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "unknown operation {op:?} (allowed: {})",
                OPERATIONS.join(", ")
            )));
        }
        if !allow.contains(&op) {
            allow.push(op);
        }
    }
    ae.allow = allow;
    ae.roles = crate::auth::permissions::parse_roles(&ae.roles.join(","))
        .map_err(RegistryError::Invalid)?;
    if let Some(host) = &ae.host {
        if host.trim().is_empty() {
            ae.host = None;
        }
    }
    if ae.port == Some(0) {
        return Err(RegistryError::Invalid("port must be 1 to 65535".into()));
    }
    if ae.move_destination && (ae.host.is_none() || ae.port.is_none()) {
        return Err(RegistryError::Invalid(
            "a move destination needs a host and a port".into(),
        ));
    }
    if ae.check_host && ae.host.is_none() {
        return Err(RegistryError::Invalid("check_host needs a host".into()));
    }
    Ok(())
}

fn now_ms() -> i64 {
    crate::index::sqlite::now_ms()
}

impl AeRegistry {
    /// Opens the registry, writing the configuration file's AEs first.
    pub async fn open(
        index: Arc<dyn Index>,
        seed: &[RemoteAe],
    ) -> Result<Arc<AeRegistry>, RegistryError> {
        let registry = Arc::new(AeRegistry {
            index,
            snapshot: RwLock::new(Arc::new(Vec::new())),
        });
        for ae in seed {
            let mut ae = ae.clone();
            validate(&mut ae)?;
            registry.index.seed_remote_ae(&ae, now_ms()).await?;
        }
        registry.refresh().await?;
        info!(aes = registry.snapshot().len(), "AE registry loaded");
        Ok(registry)
    }

    /// The AEs as last loaded.
    pub fn snapshot(&self) -> Arc<Vec<RemoteAe>> {
        self.snapshot.read().expect("registry lock").clone()
    }

    pub fn get(&self, title: &str) -> Option<RemoteAe> {
        let title = title.trim_end();
        self.snapshot().iter().find(|ae| ae.title == title).cloned()
    }

    /// Reloads the in-memory copy from the index.
    pub async fn refresh(&self) -> Result<(), RegistryError> {
        let aes = self.index.remote_aes().await?;
        *self.snapshot.write().expect("registry lock") = Arc::new(aes);
        Ok(())
    }

    /// Reloads the copy whenever the index tells of a change of the registry, so that
    /// changes made through another node sharing the index apply here too.
    pub fn follow_changes(self: &Arc<Self>) {
        let registry = Arc::downgrade(self);
        let mut changes = self.index.subscribe();
        tokio::spawn(async move {
            while let Some(changed) = changes.next().await {
                if !changed.touches(Change::RemoteAes) {
                    continue;
                }
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if let Err(e) = registry.refresh().await {
                    warn!(error = %e, "cannot reload the AE registry");
                }
            }
        });
    }

    pub async fn create(&self, mut ae: RemoteAe) -> Result<RemoteAe, RegistryError> {
        validate(&mut ae)?;
        if !self.index.insert_remote_ae(&ae, now_ms()).await? {
            return Err(RegistryError::Exists(ae.title));
        }
        self.refresh().await?;
        info!(title = %ae.title, "AE added");
        Ok(ae)
    }

    pub async fn update(&self, title: &str, mut ae: RemoteAe) -> Result<RemoteAe, RegistryError> {
        validate(&mut ae)?;
        if ae.title != title.trim_end() {
            return Err(RegistryError::Invalid(format!(
                "the title in the body ({}) differs from the one in the path ({title})",
                ae.title
            )));
        }
        if !self.index.update_remote_ae(&ae, now_ms()).await? {
            return Err(RegistryError::NotFound(ae.title));
        }
        self.refresh().await?;
        info!(title = %ae.title, "AE updated");
        Ok(ae)
    }

    pub async fn delete(&self, title: &str) -> Result<(), RegistryError> {
        let title = title.trim_end().to_string();
        if !self.index.delete_remote_ae(&title).await? {
            return Err(RegistryError::NotFound(title));
        }
        self.refresh().await?;
        info!(%title, "AE removed");
        Ok(())
    }
}
