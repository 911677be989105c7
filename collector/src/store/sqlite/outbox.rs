//! [`OutboxStore`] on SQLite. One process writes a SQLite store, one
//! transaction at a time, so row ids are assigned in commit order and a
//! cursor on them never passes a row that commits later. Ids are never
//! handed out twice: retention keeps the newest row of each source (see
//! `prune_history`), which is what SQLite numbers new rows after.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, sql};
use crate::store::StoreError;
use crate::store::outbox::{
    Backlog, ChangeRow, EventRow, MarkChanges, NotifyCursor, OutboxEntry, OutboxMessage, OutboxRow, OutboxStore,
    Position, Settlement, SourceBatch, row_limit,
};

/// The cursor's rows in `notify_cursor`.
const CHANGES: &str = "finding_changes";
const EVENTS: &str = "events";

impl OutboxStore for SqliteStore {
    fn notify_cursor(&mut self) -> Result<NotifyCursor, StoreError> {
        let doing = "reading the notification cursor";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(doing))?;
        for table in [CHANGES, EVENTS] {
            tx.execute(
                &format!(
                    "INSERT INTO notify_cursor (source, tx, id) SELECT ?1, 0, COALESCE(max(id), 0) FROM {table}
                     WHERE true ON CONFLICT (source) DO NOTHING"
                ),
                [table],
            )
            .map_err(sql(doing))?;
        }
        let read = |source: &str| {
            tx.query_row("SELECT tx, id FROM notify_cursor WHERE source = ?1", [source], |r| {
                Ok(Position { tx: r.get(0)?, id: r.get(1)? })
            })
        };
        let cursor =
            NotifyCursor { changes: read(CHANGES).map_err(sql(doing))?, events: read(EVENTS).map_err(sql(doing))? };
        tx.commit().map_err(sql(doing))?;
        Ok(cursor)
    }

    fn notify_sources(&mut self, after: &NotifyCursor, limit: usize) -> Result<SourceBatch, StoreError> {
        let doing = "reading the notification sources";
        let (changes_from, events_from) = (after.changes.id, after.events.id);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.node_id, n.hostname, c.check_id, c.family, c.seq, c.at_ms, c.old_status, c.new_status,
                        c.old_observed, c.new_observed, f.severity, f.title,
                        CASE WHEN c.old_status = 'waived' OR c.new_status = 'waived' THEN f.finding_json END
                 FROM finding_changes c
                 LEFT JOIN findings_latest f ON f.node_id = c.node_id AND f.check_id = c.check_id
                 LEFT JOIN nodes n ON n.id = c.node_id
                 WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
            )
            .map_err(sql(doing))?;
        let changes = stmt
            .query_map(params![changes_from, row_limit(limit)], |r| {
                Ok(ChangeRow {
                    position: Position { tx: 0, id: r.get(0)? },
                    node_id: r.get(1)?,
                    hostname: r.get(2)?,
                    check_id: r.get(3)?,
                    family: r.get(4)?,
                    seq: r.get(5)?,
                    at_ms: r.get(6)?,
                    old_status: r.get(7)?,
                    new_status: r.get(8)?,
                    old_observed: r.get(9)?,
                    new_observed: r.get(10)?,
                    severity: r.get(11)?,
                    title: r.get(12)?,
                    finding_json: r.get(13)?,
                })
            })
            .map_err(sql(doing))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(doing))?;
        drop(stmt);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.id, e.node_id, n.hostname, e.seq, e.kind, e.detail, e.at_ms
                 FROM events e LEFT JOIN nodes n ON n.id = e.node_id
                 WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
            )
            .map_err(sql(doing))?;
        let events = stmt
            .query_map(params![events_from, row_limit(limit)], |r| {
                Ok(EventRow {
                    position: Position { tx: 0, id: r.get(0)? },
                    node_id: r.get(1)?,
                    hostname: r.get(2)?,
                    seq: r.get(3)?,
                    kind: r.get(4)?,
                    detail: r.get(5)?,
                    at_ms: r.get(6)?,
                })
            })
            .map_err(sql(doing))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(doing))?;
        Ok(SourceBatch { changes, events })
    }

    fn notify_marks(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let doing = "reading the notification marks";
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM notify_marks WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")
            .map_err(sql(doing))?;
        stmt.query_map([prefix], |r| r.get(0)).map_err(sql(doing))?.collect::<Result<Vec<_>, _>>().map_err(sql(doing))
    }

    fn notify_commit(
        &mut self,
        cursor: Option<(&NotifyCursor, &NotifyCursor)>,
        marks: &MarkChanges,
        messages: &[OutboxMessage],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let doing = "enqueueing notifications";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(doing))?;
        if let Some((from, to)) = cursor {
            for (source, old, new) in [(CHANGES, from.changes, to.changes), (EVENTS, from.events, to.events)] {
                let moved = tx
                    .execute(
                        "UPDATE notify_cursor SET tx = ?4, id = ?5 WHERE source = ?1 AND tx = ?2 AND id = ?3",
                        params![source, old.tx, old.id, new.tx, new.id],
                    )
                    .map_err(sql(doing))?;
                if moved != 1 {
                    return Ok(false);
                }
            }
        }
        for key in &marks.set {
            let set = tx
                .execute(
                    "INSERT INTO notify_marks (key, at_ms) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                    params![key, now_ms],
                )
                .map_err(sql(doing))?;
            if set != 1 {
                return Ok(false);
            }
        }
        for key in &marks.clear {
            if tx.execute("DELETE FROM notify_marks WHERE key = ?1", [key]).map_err(sql(doing))? != 1 {
                return Ok(false);
            }
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO notify_outbox (endpoint, key, kind, body, created_ms, occurred_ms, next_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5) ON CONFLICT (endpoint, key) DO NOTHING",
                )
                .map_err(sql(doing))?;
            for m in messages {
                insert
                    .execute(params![m.endpoint, m.key, m.kind, m.body, now_ms, m.occurred_ms])
                    .map_err(sql(doing))?;
            }
        }
        tx.commit().map_err(sql(doing))?;
        Ok(true)
    }

    fn outbox_claim(
        &mut self,
        endpoint: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let doing = "taking notifications to deliver";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(doing))?;
        let head: Option<(i64, i64)> = tx
            .query_row(
                "SELECT next_ms, lease_ms FROM notify_outbox WHERE endpoint = ?1 AND delivered_ms IS NULL
                 ORDER BY id LIMIT 1",
                [endpoint],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql(doing))?;
        // One process writes a SQLite store and one task per endpoint
        // claims: a lease left by a process that died (kill -9 mid-delivery)
        // is not waited for. Leases are for PostgreSQL's replicas.
        match head {
            Some((next_ms, _lease)) if next_ms <= now_ms => {}
            _ => return Ok(Vec::new()),
        }
        let rows = {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE notify_outbox SET lease_ms = ?2 WHERE id IN (
                         SELECT id FROM notify_outbox WHERE endpoint = ?1 AND delivered_ms IS NULL
                         ORDER BY id LIMIT ?3)
                     RETURNING id, key, kind, body, created_ms, occurred_ms, attempts",
                )
                .map_err(sql(doing))?;
            stmt.query_map(params![endpoint, now_ms.saturating_add(lease_ms), row_limit(limit)], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    kind: r.get(2)?,
                    body: r.get(3)?,
                    created_ms: r.get(4)?,
                    occurred_ms: r.get(5)?,
                    attempts: r.get(6)?,
                })
            })
            .map_err(sql(doing))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(doing))?
        };
        tx.commit().map_err(sql(doing))?;
        let mut rows = rows;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    fn outbox_settle(&mut self, settlements: &[Settlement]) -> Result<(), StoreError> {
        let doing = "recording notification deliveries";
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(doing))?;
        for s in settlements {
            match s {
                Settlement::Delivered { id, at_ms } => tx.execute(
                    "UPDATE notify_outbox SET delivered_ms = ?2, attempts = attempts + 1, lease_ms = 0,
                            last_error = NULL WHERE id = ?1",
                    params![id, at_ms],
                ),
                Settlement::Retry { id, next_ms, error } => tx.execute(
                    "UPDATE notify_outbox SET next_ms = ?2, attempts = attempts + 1, lease_ms = 0, last_error = ?3
                     WHERE id = ?1",
                    params![id, next_ms, error],
                ),
                Settlement::Release { id } => tx.execute("UPDATE notify_outbox SET lease_ms = 0 WHERE id = ?1", [id]),
            }
            .map_err(sql(doing))?;
        }
        tx.commit().map_err(sql(doing))
    }

    fn outbox_backlog(&mut self) -> Result<Vec<Backlog>, StoreError> {
        let doing = "reading the notification backlog";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT endpoint, count(*), min(created_ms) FROM notify_outbox WHERE delivered_ms IS NULL
                 GROUP BY endpoint ORDER BY endpoint",
            )
            .map_err(sql(doing))?;
        stmt.query_map([], |r| {
            Ok(Backlog {
                endpoint: r.get(0)?,
                pending: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                oldest_created_ms: r.get(2)?,
            })
        })
        .map_err(sql(doing))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(doing))
    }

    fn outbox_list(&mut self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let doing = "listing notifications";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, endpoint, key, kind, created_ms, attempts, next_ms, last_error, delivered_ms
                 FROM notify_outbox ORDER BY id DESC LIMIT ?1",
            )
            .map_err(sql(doing))?;
        stmt.query_map([row_limit(limit)], |r| {
            Ok(OutboxEntry {
                id: r.get(0)?,
                endpoint: r.get(1)?,
                key: r.get(2)?,
                kind: r.get(3)?,
                created_ms: r.get(4)?,
                attempts: r.get(5)?,
                next_ms: r.get(6)?,
                last_error: r.get(7)?,
                delivered_ms: r.get(8)?,
            })
        })
        .map_err(sql(doing))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(doing))
    }

    fn outbox_forget_delivered(&mut self, before_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM notify_outbox WHERE delivered_ms IS NOT NULL AND delivered_ms < ?1", [before_ms])
            .map_err(sql("forgetting delivered notifications"))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("c.db")).unwrap();
        (d, s)
    }

    fn add_change(s: &SqliteStore, check: &str) {
        s.conn
            .execute(
                "INSERT INTO finding_changes (node_id, check_id, family, seq, at_ms, old_status, new_status)
                 VALUES ('n1', ?1, 'ssh', 2, 1000, 'pass', 'fail')",
                [check],
            )
            .unwrap();
    }

    fn message(key: &str) -> OutboxMessage {
        OutboxMessage {
            endpoint: "e".into(),
            key: key.into(),
            kind: "finding.failing".into(),
            body: "{}".into(),
            occurred_ms: 1,
        }
    }

    #[test]
    fn the_cursor_starts_at_the_end_and_moves_only_from_where_it_is() {
        let (_d, mut s) = store();
        add_change(&s, "history");
        let start = s.notify_cursor().unwrap();
        assert!(s.notify_sources(&start, 10).unwrap().changes.is_empty(), "history is not notified");
        add_change(&s, "a");
        add_change(&s, "b");
        let batch = s.notify_sources(&start, 1).unwrap();
        assert_eq!(batch.changes.iter().map(|c| c.check_id.as_str()).collect::<Vec<_>>(), ["a"]);
        let to = NotifyCursor { changes: batch.changes[0].position, ..start };
        assert!(s.notify_commit(Some((&start, &to)), &MarkChanges::default(), &[message("k1")], 5).unwrap());
        // A second commit from the old cursor (another replica's) writes nothing.
        assert!(!s.notify_commit(Some((&start, &to)), &MarkChanges::default(), &[message("k2")], 5).unwrap());
        assert_eq!(s.outbox_list(10).unwrap().iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["k1"]);
        assert_eq!(s.notify_cursor().unwrap(), to);
        let next = s.notify_sources(&to, 10).unwrap();
        assert_eq!(next.changes.iter().map(|c| c.check_id.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn retention_never_hands_an_id_out_again_behind_the_cursor() {
        use crate::store::Store;
        let (_d, mut s) = store();
        add_change(&s, "a");
        add_change(&s, "b");
        let start = s.notify_cursor().unwrap();
        // Every row is past the horizon (by the node's clock): the newest stays.
        s.prune_history(1_000_000).unwrap();
        add_change(&s, "after");
        let batch = s.notify_sources(&start, 10).unwrap();
        assert_eq!(batch.changes.iter().map(|c| c.check_id.as_str()).collect::<Vec<_>>(), ["after"]);
        assert!(batch.changes[0].position > start.changes);
    }

    #[test]
    fn a_mark_is_set_once_and_cleared_once() {
        let (_d, mut s) = store();
        let set = MarkChanges { set: vec!["stale:n1".into()], clear: Vec::new() };
        assert!(s.notify_commit(None, &set, &[message("stale")], 1).unwrap());
        assert!(!s.notify_commit(None, &set, &[message("stale-again")], 1).unwrap());
        assert_eq!(s.notify_marks("stale:").unwrap(), ["stale:n1"]);
        let clear = MarkChanges { set: Vec::new(), clear: vec!["stale:n1".into()] };
        assert!(s.notify_commit(None, &clear, &[], 2).unwrap());
        assert!(!s.notify_commit(None, &clear, &[], 2).unwrap());
        assert_eq!(s.outbox_list(10).unwrap().len(), 1);
    }

    #[test]
    fn nothing_overtakes_the_oldest_undelivered_message() {
        let (_d, mut s) = store();
        assert!(
            s.notify_commit(None, &MarkChanges::default(), &[message("a"), message("b"), message("a")], 100).unwrap()
        );
        let claimed = s.outbox_claim("e", 100, 1000, 10).unwrap();
        assert_eq!(claimed.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["a", "b"], "a key is enqueued once");
        let (a, b) = (claimed[0].id, claimed[1].id);
        s.outbox_settle(&[
            Settlement::Retry { id: a, next_ms: 500, error: "HTTP 503".into() },
            Settlement::Release { id: b },
        ])
        .unwrap();
        // b is due, but a is older and not due: nothing goes.
        assert!(s.outbox_claim("e", 200, 1000, 10).unwrap().is_empty());
        assert_eq!(s.outbox_backlog().unwrap()[0].pending, 2);
        let again = s.outbox_claim("e", 500, 1000, 10).unwrap();
        assert_eq!((again[0].key.as_str(), again[0].attempts), ("a", 1));
        s.outbox_settle(&[Settlement::Delivered { id: a, at_ms: 600 }, Settlement::Delivered { id: b, at_ms: 600 }])
            .unwrap();
        assert!(s.outbox_backlog().unwrap().is_empty());
        assert_eq!(s.outbox_forget_delivered(601).unwrap(), 2);
        assert!(s.outbox_list(10).unwrap().is_empty());
    }
}
