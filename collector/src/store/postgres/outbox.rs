//! [`OutboxStore`] on PostgreSQL, shared by every replica.
//!
//! Replicas commit drift rows and events concurrently, so a row's id says
//! nothing about when it became visible: a cursor on ids alone would pass a
//! row whose transaction commits after a later id was read. Every source
//! row therefore records its writing transaction (`tx`, `xid8`), and the
//! notifier reads in (tx, id) order only the rows of transactions older than
//! the oldest one still running (`pg_snapshot_xmin`): no row can appear
//! behind the cursor afterwards. A long write transaction anywhere in the
//! cluster delays notifications until it ends, never loses them.

use ::postgres::Row;

use super::pg;
use super::store::PgStore;
use crate::store::StoreError;
use crate::store::outbox::{
    Backlog, ChangeRow, EventRow, MarkChanges, NotifyCursor, OutboxEntry, OutboxMessage, OutboxRow, OutboxStore,
    Position, Settlement, SourceBatch, row_limit,
};

const CHANGES: &str = "finding_changes";
const EVENTS: &str = "events";

fn position(r: &Row) -> Result<Position, ::postgres::Error> {
    Ok(Position { tx: r.try_get(0)?, id: r.try_get(1)? })
}

impl OutboxStore for PgStore {
    fn notify_cursor(&mut self) -> Result<NotifyCursor, StoreError> {
        let doing = "reading the notification cursor";
        let mut tx = self.client()?.transaction().map_err(pg(doing))?;
        for source in [CHANGES, EVENTS] {
            // Everything committed before the oldest running transaction is
            // history: start after it.
            tx.execute(
                "INSERT INTO notify_cursor (source, tx, id)
                 VALUES ($1, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 0)
                 ON CONFLICT (source) DO NOTHING",
                &[&source],
            )
            .map_err(pg(doing))?;
        }
        let mut read = |source: &str| -> Result<Position, StoreError> {
            let row =
                tx.query_one("SELECT tx, id FROM notify_cursor WHERE source = $1", &[&source]).map_err(pg(doing))?;
            position(&row).map_err(pg(doing))
        };
        let cursor = NotifyCursor { changes: read(CHANGES)?, events: read(EVENTS)? };
        tx.commit().map_err(pg(doing))?;
        Ok(cursor)
    }

    fn notify_sources(&mut self, after: &NotifyCursor, limit: usize) -> Result<SourceBatch, StoreError> {
        let doing = "reading the notification sources";
        let client = self.client()?;
        let (tx, id) = (after.changes.tx.to_string(), after.changes.id);
        let changes = client
            .query(
                "SELECT c.tx::text::bigint, c.id, c.node_id, n.hostname, c.check_id, c.family, c.seq, c.at_ms,
                        c.old_status, c.new_status, c.old_observed, c.new_observed, f.severity, f.title,
                        CASE WHEN c.old_status = 'waived' OR c.new_status = 'waived' THEN f.finding_json END
                 FROM finding_changes c
                 LEFT JOIN findings_latest f ON f.node_id = c.node_id AND f.check_id = c.check_id
                 LEFT JOIN nodes n ON n.id = c.node_id
                 WHERE (c.tx > $1::text::xid8 OR (c.tx = $1::text::xid8 AND c.id > $2))
                   AND c.tx < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY c.tx, c.id LIMIT $3",
                &[&tx, &id, &row_limit(limit)],
            )
            .map_err(pg(doing))?
            .iter()
            .map(|r| {
                Ok(ChangeRow {
                    position: position(r)?,
                    node_id: r.try_get(2)?,
                    hostname: r.try_get(3)?,
                    check_id: r.try_get(4)?,
                    family: r.try_get(5)?,
                    seq: r.try_get(6)?,
                    at_ms: r.try_get(7)?,
                    old_status: r.try_get(8)?,
                    new_status: r.try_get(9)?,
                    old_observed: r.try_get(10)?,
                    new_observed: r.try_get(11)?,
                    severity: r.try_get(12)?,
                    title: r.try_get(13)?,
                    finding_json: r.try_get(14)?,
                })
            })
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .map_err(pg(doing))?;
        let (tx, id) = (after.events.tx.to_string(), after.events.id);
        let events = client
            .query(
                "SELECT e.tx::text::bigint, e.id, e.node_id, n.hostname, e.seq, e.kind, e.detail, e.at_ms
                 FROM events e LEFT JOIN nodes n ON n.id = e.node_id
                 WHERE (e.tx > $1::text::xid8 OR (e.tx = $1::text::xid8 AND e.id > $2))
                   AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY e.tx, e.id LIMIT $3",
                &[&tx, &id, &row_limit(limit)],
            )
            .map_err(pg(doing))?
            .iter()
            .map(|r| {
                Ok(EventRow {
                    position: position(r)?,
                    node_id: r.try_get(2)?,
                    hostname: r.try_get(3)?,
                    seq: r.try_get(4)?,
                    kind: r.try_get(5)?,
                    detail: r.try_get(6)?,
                    at_ms: r.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .map_err(pg(doing))?;
        Ok(SourceBatch { changes, events })
    }

    fn notify_marks(&mut self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let doing = "reading the notification marks";
        let rows = self
            .client()?
            .query("SELECT key FROM notify_marks WHERE left(key, length($1)) = $1 ORDER BY key", &[&prefix])
            .map_err(pg(doing))?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<_>, _>>().map_err(pg(doing))
    }

    fn notify_commit(
        &mut self,
        cursor: Option<(&NotifyCursor, &NotifyCursor)>,
        marks: &MarkChanges,
        messages: &[OutboxMessage],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let doing = "enqueueing notifications";
        let mut tx = self.client()?.transaction().map_err(pg(doing))?;
        if let Some((from, to)) = cursor {
            for (source, old, new) in [(CHANGES, from.changes, to.changes), (EVENTS, from.events, to.events)] {
                let moved = tx
                    .execute(
                        "UPDATE notify_cursor SET tx = $4, id = $5 WHERE source = $1 AND tx = $2 AND id = $3",
                        &[&source, &old.tx, &old.id, &new.tx, &new.id],
                    )
                    .map_err(pg(doing))?;
                if moved != 1 {
                    return Ok(false);
                }
            }
        }
        for key in &marks.set {
            let set = tx
                .execute(
                    "INSERT INTO notify_marks (key, at_ms) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[key, &now_ms],
                )
                .map_err(pg(doing))?;
            if set != 1 {
                return Ok(false);
            }
        }
        for key in &marks.clear {
            if tx.execute("DELETE FROM notify_marks WHERE key = $1", &[key]).map_err(pg(doing))? != 1 {
                return Ok(false);
            }
        }
        if !messages.is_empty() {
            let column = |f: fn(&OutboxMessage) -> &str| messages.iter().map(f).collect::<Vec<_>>();
            let occurred: Vec<i64> = messages.iter().map(|m| m.occurred_ms).collect();
            tx.execute(
                "INSERT INTO notify_outbox (endpoint, key, kind, body, created_ms, occurred_ms, next_ms)
                 SELECT u.endpoint, u.key, u.kind, u.body, $5, u.occurred_ms, $5
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::int8[])
                      WITH ORDINALITY AS u(endpoint, key, kind, body, occurred_ms, n)
                 ORDER BY u.n
                 ON CONFLICT (endpoint, key) DO NOTHING",
                &[
                    &column(|m| &m.endpoint),
                    &column(|m| &m.key),
                    &column(|m| &m.kind),
                    &column(|m| &m.body),
                    &now_ms,
                    &occurred,
                ],
            )
            .map_err(pg(doing))?;
        }
        tx.commit().map_err(pg(doing))?;
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
        let mut tx = self.client()?.transaction().map_err(pg(doing))?;
        // Lock the endpoint's oldest undelivered rows: a replica claiming
        // at the same time waits, then sees them leased.
        let rows = tx
            .query(
                "SELECT id, key, kind, body, created_ms, occurred_ms, attempts, next_ms, lease_ms
                 FROM notify_outbox WHERE endpoint = $1 AND delivered_ms IS NULL
                 ORDER BY id LIMIT $2 FOR UPDATE",
                &[&endpoint, &row_limit(limit)],
            )
            .map_err(pg(doing))?;
        let due = rows.first().map(|head| -> Result<bool, ::postgres::Error> {
            let next_ms: i64 = head.try_get(7)?;
            let lease: i64 = head.try_get(8)?;
            Ok(next_ms <= now_ms && lease <= now_ms)
        });
        if !matches!(due, Some(Ok(true))) {
            return match due {
                Some(Err(e)) => Err(pg(doing)(e)),
                _ => Ok(Vec::new()),
            };
        }
        let claimed = rows
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get(0)?,
                    key: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    body: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                    occurred_ms: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .map_err(pg(doing))?;
        let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
        tx.execute(
            "UPDATE notify_outbox SET lease_ms = $2 WHERE id = ANY($1)",
            &[&ids, &now_ms.saturating_add(lease_ms)],
        )
        .map_err(pg(doing))?;
        tx.commit().map_err(pg(doing))?;
        Ok(claimed)
    }

    fn outbox_settle(&mut self, settlements: &[Settlement]) -> Result<(), StoreError> {
        let doing = "recording notification deliveries";
        let mut tx = self.client()?.transaction().map_err(pg(doing))?;
        for s in settlements {
            match s {
                Settlement::Delivered { id, at_ms } => tx.execute(
                    "UPDATE notify_outbox SET delivered_ms = $2, attempts = attempts + 1, lease_ms = 0,
                            last_error = NULL WHERE id = $1",
                    &[id, at_ms],
                ),
                Settlement::Retry { id, next_ms, error } => tx.execute(
                    "UPDATE notify_outbox SET next_ms = $2, attempts = attempts + 1, lease_ms = 0, last_error = $3
                     WHERE id = $1",
                    &[id, next_ms, error],
                ),
                Settlement::Release { id } => tx.execute("UPDATE notify_outbox SET lease_ms = 0 WHERE id = $1", &[id]),
            }
            .map_err(pg(doing))?;
        }
        tx.commit().map_err(pg(doing))
    }

    fn outbox_backlog(&mut self) -> Result<Vec<Backlog>, StoreError> {
        let doing = "reading the notification backlog";
        let rows = self
            .client()?
            .query(
                "SELECT endpoint, count(*), min(created_ms) FROM notify_outbox WHERE delivered_ms IS NULL
                 GROUP BY endpoint ORDER BY endpoint",
                &[],
            )
            .map_err(pg(doing))?;
        rows.iter()
            .map(|r| {
                Ok(Backlog {
                    endpoint: r.try_get(0)?,
                    pending: u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
                    oldest_created_ms: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .map_err(pg(doing))
    }

    fn outbox_list(&mut self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let doing = "listing notifications";
        let rows = self
            .client()?
            .query(
                "SELECT id, endpoint, key, kind, created_ms, attempts, next_ms, last_error, delivered_ms
                 FROM notify_outbox ORDER BY id DESC LIMIT $1",
                &[&row_limit(limit)],
            )
            .map_err(pg(doing))?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get(0)?,
                    endpoint: r.try_get(1)?,
                    key: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                    attempts: r.try_get(5)?,
                    next_ms: r.try_get(6)?,
                    last_error: r.try_get(7)?,
                    delivered_ms: r.try_get(8)?,
                })
            })
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .map_err(pg(doing))
    }

    fn outbox_forget_delivered(&mut self, before_ms: i64) -> Result<u64, StoreError> {
        self.client()?
            .execute("DELETE FROM notify_outbox WHERE delivered_ms IS NOT NULL AND delivered_ms < $1", &[&before_ms])
            .map_err(pg("forgetting delivered notifications"))
    }
}
