//! [`PgFleetReader`]: the fleet report's rows ([`FleetRows`]) from
//! PostgreSQL, and so its [`FleetRead`]. The report itself is built by the
//! same code as SQLite's (`fleet::query`).

use ::postgres::Row;
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::ToSql;

use super::{PgSettings, ReaderConn, pg};
use crate::fleet::query::{self, DayRow, DriftRow, EventRow, FindingCells, FleetRows, NodeRow};
use crate::fleet::{Detail, FleetReport, NodeFinding, Options};
use crate::store::{FleetRead, StoreError};

/// One connection, from the readers' pool, that reads the fleet.
pub struct PgFleetReader {
    client: ReaderConn,
    settings: PgSettings,
}

impl std::fmt::Debug for PgFleetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFleetReader").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl PgFleetReader {
    pub fn open(settings: &PgSettings) -> Result<PgFleetReader, StoreError> {
        Ok(PgFleetReader { client: settings.reader()?, settings: settings.clone() })
    }
}

impl FleetRead for PgFleetReader {
    fn fleet_report(&mut self, opts: &Options) -> Result<FleetReport, StoreError> {
        query::fleet_report(self, opts)
    }

    fn node_findings(&mut self, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
        query::findings_of_node(self, node_id)
    }

    /// The server's current WAL position: every commit moves it. Other WAL
    /// activity (a checkpoint, autovacuum, another database) moves it too,
    /// which costs the dashboard a rebuild it did not need, never a missed
    /// one.
    fn change_token(&mut self) -> Result<i64, StoreError> {
        let row = self
            .client
            .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
            .map_err(pg("reading the WAL position"))?;
        Ok(row.get(0))
    }

    fn watched_findings(&mut self) -> Result<Vec<crate::store::outbox::WatchedFinding>, StoreError> {
        let doing = "reading the findings the expiry scan watches";
        let rows = self.client.query(crate::store::outbox::WATCHED_FINDINGS, &[]).map_err(pg(doing))?;
        rows.iter()
            .map(|r| {
                Ok(crate::store::outbox::WatchedFinding {
                    node_id: r.try_get(0)?,
                    hostname: r.try_get(1)?,
                    check_id: r.try_get(2)?,
                    status: r.try_get(3)?,
                    severity: r.try_get(4)?,
                    title: r.try_get(5)?,
                    finding_json: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .map_err(pg(doing))
    }
}

fn u_opt(r: &Row, i: usize) -> Option<i64> {
    r.get::<_, Option<i64>>(i)
}

/// A row of `findings_latest` from PostgreSQL.
struct PgCells<'a>(&'a Row);

const SCAN: &str = "reading the latest findings";

impl FindingCells for PgCells<'_> {
    fn node_id(&self) -> Result<&str, StoreError> {
        self.0.try_get(0).map_err(pg(SCAN))
    }
    fn check_id(&self) -> Result<&str, StoreError> {
        self.0.try_get(1).map_err(pg(SCAN))
    }
    fn status(&self) -> Result<&str, StoreError> {
        self.0.try_get(2).map_err(pg(SCAN))
    }
    fn severity(&self) -> Result<&str, StoreError> {
        self.0.try_get(3).map_err(pg(SCAN))
    }
    fn family(&self) -> Result<&str, StoreError> {
        self.0.try_get(4).map_err(pg(SCAN))
    }
    fn seq(&self) -> Result<i64, StoreError> {
        self.0.try_get(5).map_err(pg(SCAN))
    }
    fn finding_json(&self) -> Result<&str, StoreError> {
        self.0.try_get(6).map_err(pg(SCAN))
    }
}

impl FleetRows for PgFleetReader {
    fn nodes(&mut self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT id, hostname, enrolled_ms, revoked_ms, head_seq, last_created_ms, os_pretty, kernel,
                        agent_version, profile, cert_der, head_hash
                 FROM nodes ORDER BY hostname, id",
                &[],
            )
            .map_err(pg("listing nodes"))?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                id: r.get(0),
                hostname: r.get(1),
                enrolled_ms: r.get(2),
                revoked_ms: u_opt(r, 3),
                head_seq: r.get(4),
                last_created_ms: u_opt(r, 5),
                os: r.get(6),
                kernel: r.get(7),
                agent_version: r.get(8),
                profile: r.get(9),
                cert_der: r.get(10),
                head_hash: r.get(11),
            })
            .collect())
    }

    fn median_node(&mut self) -> Result<Option<String>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT id FROM nodes ORDER BY id LIMIT 1 OFFSET (SELECT COUNT(*) / 2 FROM nodes)", &[])
            .map_err(pg("splitting the node range"))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn second_reader(&self) -> Result<Option<Box<dyn FleetRows + Send>>, StoreError> {
        Ok(Some(Box::new(PgFleetReader::open(&self.settings)?)))
    }

    fn scan_findings(
        &mut self,
        from: Option<&str>,
        to: Option<&str>,
        detail: Detail,
        each: &mut dyn FnMut(&dyn FindingCells) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let doing = "reading the latest findings";
        // Only the findings the report lists travel with their JSON: the
        // dashboard's summary of 10,000 nodes is then a few MB, not a
        // gigabyte. The column stays, so its position does not move.
        let json = match detail {
            Detail::All => "finding_json",
            Detail::Failing => "CASE WHEN status = 'pass' THEN NULL ELSE finding_json END",
            Detail::Summary => "NULL::text",
        };
        let base = format!("SELECT node_id, check_id, status, severity, family, seq, {json} FROM findings_latest");
        let (query, bounds): (String, Vec<&str>) = match (from, to) {
            (Some(f), Some(t)) => (format!("{base} WHERE node_id >= $1 AND node_id < $2"), vec![f, t]),
            (Some(f), None) => (format!("{base} WHERE node_id >= $1"), vec![f]),
            (None, Some(t)) => (format!("{base} WHERE node_id < $1"), vec![t]),
            (None, None) => (base, vec![]),
        };
        // In key order, streamed: a large fleet's findings never sit in
        // memory at once.
        let query = format!("{query} ORDER BY node_id, check_id");
        let params: Vec<&(dyn ToSql + Sync)> = bounds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let mut rows = self.client.query_raw(query.as_str(), params).map_err(pg(doing))?;
        while let Some(r) = rows.next().map_err(pg(doing))? {
            each(&PgCells(&r))?;
        }
        Ok(())
    }

    fn sample_finding(&mut self, node_id: &str, check_id: &str) -> Result<(String, String), StoreError> {
        let r = self
            .client
            .query_one(
                "SELECT title, finding_json FROM findings_latest WHERE node_id = $1 AND check_id = $2",
                &[&node_id, &check_id],
            )
            .map_err(pg("reading check metadata"))?;
        Ok((r.get(0), r.get(1)))
    }

    fn drift(&mut self, since_ms: i64, families: &[&str]) -> Result<Vec<DriftRow>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT at_ms, node_id, check_id, family, seq, old_status, new_status, old_observed, new_observed
                 FROM finding_changes WHERE at_ms >= $1 AND family = ANY($2) ORDER BY at_ms DESC, id DESC",
                &[&since_ms, &families],
            )
            .map_err(pg("reading the drift timeline"))?;
        Ok(rows
            .iter()
            .map(|r| DriftRow {
                at_ms: r.get(0),
                node_id: r.get(1),
                check_id: r.get(2),
                family: r.get(3),
                seq: r.get(4),
                old_status: r.get(5),
                new_status: r.get(6),
                old_observed: r.get(7),
                new_observed: r.get(8),
            })
            .collect())
    }

    fn event_counts(&mut self, since_ms: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = self
            .client
            .query("SELECT node_id, kind, COUNT(*) FROM events WHERE at_ms >= $1 GROUP BY node_id, kind", &[&since_ms])
            .map_err(pg("counting events"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    fn recent_events(&mut self, node_id: &str, since_ms: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT at_ms, kind, seq, detail FROM events WHERE node_id = $1 AND at_ms >= $2
                 ORDER BY id DESC LIMIT $3",
                &[&node_id, &since_ms, &limit],
            )
            .map_err(pg("reading events"))?;
        Ok(rows
            .iter()
            .map(|r| EventRow { at_ms: r.get(0), kind: r.get(1), seq: u_opt(r, 2), detail: r.get(3) })
            .collect())
    }

    fn trend(&mut self, since_day: i64) -> Result<Vec<DayRow>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT day, COUNT(*), SUM(CASE WHEN blocking = 0 THEN 1 ELSE 0 END)::bigint, SUM(pass)::bigint,
                        SUM(pass + fail + error)::bigint
                 FROM node_days WHERE day >= $1 GROUP BY day ORDER BY day",
                &[&since_day],
            )
            .map_err(pg("reading the trend"))?;
        Ok(rows
            .iter()
            .map(|r| DayRow {
                day: r.get(0),
                reporting: r.get(1),
                compliant: u_opt(r, 2).unwrap_or(0),
                pass: u_opt(r, 3).unwrap_or(0),
                decided: u_opt(r, 4).unwrap_or(0),
            })
            .collect())
    }

    fn findings_of(&mut self, node_id: &str) -> Result<Vec<NodeFinding>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT check_id, family, severity, status, seq, finding_json FROM findings_latest WHERE node_id = $1",
                &[&node_id],
            )
            .map_err(pg("reading a node's findings"))?;
        Ok(rows
            .iter()
            .map(|r| NodeFinding {
                check_id: r.get(0),
                family: r.get(1),
                severity: r.get(2),
                status: r.get(3),
                seq: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
                finding: r.get(5),
            })
            .collect())
    }
}
