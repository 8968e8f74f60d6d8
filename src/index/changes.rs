//! Changes of the state every node shares (the AE registry, the AI routes and models), told
//! to every node that uses the index, so that the copies nodes keep in memory follow within a
//! second.
//!
//! A write that changes such state names its [`Change`] in a [`Transaction`]; the backend
//! tells every subscriber once the transaction has committed:
//! - PostgreSQL: `pg_notify` on the channel [`CHANNEL`] inside the transaction (PostgreSQL
//!   delivers it at commit, to every session LISTENing: one connection per node, see
//!   `postgres.rs`); whenever that connection is (re-)established, and every
//!   [`POSTGRES_RESYNC`] as a fallback, subscribers are told to reload everything
//!   ([`Changed::All`]).
//! - SQLite (one node): the process tells its own subscribers after the commit; other
//!   processes writing the same file (`pacs ae add` while the node runs) are picked up by the
//!   reload every [`SQLITE_RESYNC`].

use std::time::Duration;

use tokio::sync::broadcast;

/// The PostgreSQL notification channel; the payload is [`Change::name`].
pub const CHANNEL: &str = "pacs_changes";

/// How often a PostgreSQL node reloads everything even without a notification (a notification
/// lost with a broken connection, a write made by an older program).
pub const POSTGRES_RESYNC: Duration = Duration::from_secs(5);

/// How often a SQLite node reloads everything (writes by another process on the same file).
pub const SQLITE_RESYNC: Duration = Duration::from_secs(1);

/// A piece of shared state that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// The AE registry (table `remote_aes`).
    RemoteAes,
    /// The AI routes (node setting `ai_routes`).
    AiRoutes,
    /// The AI models known and their versions (node settings `ai_model.<name>`).
    AiModels,
}

impl Change {
    pub const ALL: [Change; 3] = [Change::RemoteAes, Change::AiRoutes, Change::AiModels];

    /// The notification payload.
    pub fn name(self) -> &'static str {
        match self {
            Change::RemoteAes => "remote_aes",
            Change::AiRoutes => "ai_routes",
            Change::AiModels => "ai_models",
        }
    }

    pub fn parse(name: &str) -> Option<Change> {
        Change::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What a subscriber hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    One(Change),
    /// Anything may have changed (a periodic reload, a reconnection, missed notifications):
    /// reload everything.
    All,
}

impl Changed {
    /// Whether a subscriber following `change` must reload.
    pub fn touches(self, change: Change) -> bool {
        match self {
            Changed::One(c) => c == change,
            Changed::All => true,
        }
    }
}

/// A subscription to the index's changes.
pub struct Subscription {
    rx: broadcast::Receiver<Changed>,
}

impl Subscription {
    pub(in crate::index) fn new(rx: broadcast::Receiver<Changed>) -> Subscription {
        Subscription { rx }
    }

    /// The next change; [`Changed::All`] when this subscriber fell behind and missed some.
    /// None when the index is gone.
    pub async fn next(&mut self) -> Option<Changed> {
        match self.rx.recv().await {
            Ok(c) => Some(c),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Changed::All),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Where a backend tells its subscribers.
pub(in crate::index) fn channel() -> broadcast::Sender<Changed> {
    broadcast::channel(256).0
}

/// Tells `tx`'s subscribers [`Changed::All`] every `every` while any index holds `tx` (the
/// task ends once the index is dropped).
pub(in crate::index) fn spawn_resync(
    tx: &std::sync::Arc<broadcast::Sender<Changed>>,
    every: Duration,
) {
    let weak = std::sync::Arc::downgrade(tx);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(tx) = weak.upgrade() else { return };
            let _ = tx.send(Changed::All);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for c in Change::ALL {
            assert_eq!(Change::parse(c.name()), Some(c));
        }
        assert_eq!(Change::parse("nonsense"), None);
        assert!(Changed::All.touches(Change::AiRoutes));
        assert!(!Changed::One(Change::RemoteAes).touches(Change::AiRoutes));
    }
}
