//! The store side of notifications (see [`crate::notify`]): where the
//! notifier has read up to in the drift timeline and the chain events, the
//! marks that make a state notification (stale, an expiry warning) go out
//! once, and the durable outbox of messages to deliver.
//!
//! A message is written to the outbox in the same transaction that moves
//! the cursor past what caused it, so a crash at any point either loses
//! nothing or repeats nothing. Replicas sharing a PostgreSQL store move the
//! cursor and set marks by compare-and-set: when two read the same rows,
//! one commits and the other's transaction writes nothing.

use crate::store::StoreError;

/// A row limit as SQL takes it.
pub(crate) fn row_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A place in one source table. SQLite: `id` only (one writer at a time,
/// so ids are assigned in commit order). PostgreSQL: (`tx`, `id`), the
/// writing transaction's id first, because concurrent replicas commit ids
/// out of order; only rows of transactions older than every running one are
/// read (see the PostgreSQL implementation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub tx: i64,
    pub id: i64,
}

/// Where the notifier has read up to in each source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCursor {
    /// `finding_changes`: the drift timeline.
    pub changes: Position,
    /// `events`: chain and security events.
    pub events: Position,
}

/// One row of the drift timeline, with what the notifier needs of the
/// finding and the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    pub position: Position,
    pub node_id: String,
    pub hostname: Option<String>,
    pub check_id: String,
    pub family: String,
    pub seq: i64,
    pub at_ms: i64,
    pub old_status: Option<String>,
    pub new_status: String,
    pub old_observed: Option<String>,
    pub new_observed: Option<String>,
    /// Of the node's latest finding of the check (the check's severity and
    /// title do not change between reports of one profile).
    pub severity: Option<String>,
    pub title: Option<String>,
    /// The latest finding's JSON, when the change is into or out of
    /// `waived` (the waiver's expiry is in it).
    pub finding_json: Option<String>,
}

/// One chain or security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub position: Position,
    pub node_id: String,
    pub hostname: Option<String>,
    pub seq: Option<i64>,
    pub kind: String,
    pub detail: String,
    pub at_ms: i64,
}

/// What the sources hold past a cursor, each in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceBatch {
    pub changes: Vec<ChangeRow>,
    pub events: Vec<EventRow>,
}

/// A message to deliver to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub endpoint: String,
    /// The idempotency key: the same for every delivery of the message.
    pub key: String,
    pub kind: String,
    /// The JSON body, exactly as it is signed and sent.
    pub body: String,
    /// When the (newest) event behind it happened.
    pub occurred_ms: i64,
}

/// A message taken from the outbox for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub body: String,
    pub created_ms: i64,
    pub occurred_ms: i64,
    pub attempts: i64,
}

/// Marks to set (absent before) and clear (present before) in one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkChanges {
    pub set: Vec<String>,
    pub clear: Vec<String>,
}

impl MarkChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.clear.is_empty()
    }
}

/// What became of a claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Delivered {
        id: i64,
        at_ms: i64,
    },
    /// Not delivered: try again at `next_ms`.
    Retry {
        id: i64,
        next_ms: i64,
        error: String,
    },
    /// Claimed but not tried (an older message failed first).
    Release {
        id: i64,
    },
}

/// An endpoint's undelivered messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub endpoint: String,
    pub pending: u64,
    pub oldest_created_ms: Option<i64>,
}

/// A message as `kosmos-collector notifications` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub endpoint: String,
    pub key: String,
    pub kind: String,
    pub created_ms: i64,
    pub attempts: i64,
    pub next_ms: i64,
    pub last_error: Option<String>,
    pub delivered_ms: Option<i64>,
}

/// The notification tables of a store.
pub trait OutboxStore {
    /// The cursor; created at the sources' current end when there is none
    /// (a store's first notifier does not send the history; a cursor left
    /// by an earlier one is kept, so what happened while no notifier ran
    /// is sent).
    fn notify_cursor(&mut self) -> Result<NotifyCursor, StoreError>;
    /// At most `limit` rows of each source past `after`, in order.
    fn notify_sources(&mut self, after: &NotifyCursor, limit: usize) -> Result<SourceBatch, StoreError>;
    /// The marks whose key starts with `prefix`.
    fn notify_marks(&mut self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// In one transaction: move the cursor from `cursor.0` to `cursor.1`,
    /// apply `marks`, enqueue `messages`. Ok(false), and nothing written,
    /// when the cursor is no longer at `cursor.0` or a mark to set is
    /// already set or one to clear is not (another replica got there
    /// first).
    fn notify_commit(
        &mut self,
        cursor: Option<(&NotifyCursor, &NotifyCursor)>,
        marks: &MarkChanges,
        messages: &[OutboxMessage],
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Lease the oldest undelivered messages of `endpoint`, at most `limit`,
    /// in order, when the oldest is due (`next_ms <= now_ms`) and not
    /// leased: a message is never sent before an older one of its endpoint.
    fn outbox_claim(
        &mut self,
        endpoint: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    fn outbox_settle(&mut self, settlements: &[Settlement]) -> Result<(), StoreError>;
    /// Undelivered messages per endpoint.
    fn outbox_backlog(&mut self) -> Result<Vec<Backlog>, StoreError>;
    /// The newest `limit` messages (delivered or not), newest first.
    fn outbox_list(&mut self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Forget messages delivered before `before_ms`; how many.
    fn outbox_forget_delivered(&mut self, before_ms: i64) -> Result<u64, StoreError>;
}

/// A finding the expiry scan looks at: an end-of-life check (its observed
/// value has the dates) or a waived finding (its waiver has the expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedFinding {
    pub node_id: String,
    pub hostname: Option<String>,
    pub check_id: String,
    pub status: String,
    pub severity: String,
    pub title: String,
    pub finding_json: String,
}

/// The checks whose observed value carries an end-of-life date.
pub const END_OF_LIFE_CHECKS: &[&str] = &["os.end_of_life", "controlplane.kubernetes_version_supported"];

/// The query behind [`crate::store::FleetRead::watched_findings`], the
/// same on both backends (no parameters).
pub const WATCHED_FINDINGS: &str =
    "SELECT f.node_id, n.hostname, f.check_id, f.status, f.severity, f.title, f.finding_json
     FROM findings_latest f JOIN nodes n ON n.id = f.node_id
     WHERE n.revoked_ms IS NULL
       AND (f.status = 'waived' OR f.check_id IN ('os.end_of_life', 'controlplane.kubernetes_version_supported'))
     ORDER BY f.node_id, f.check_id";
