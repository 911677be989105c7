//! Synthetic collector store for the report benchmarks: N nodes × C checks
//! with D days of history, written straight into the tables the fleet
//! report reads (nodes, findings_latest, node_days, finding_changes,
//! events). Raw envelopes are not generated: no report reads them.
//!
//! kosmos-fleetgen --db DIR/collector.db [--nodes 10000] [--checks 150] [--days 30]
//!
//! The mix is deterministic (a fixed-seed generator): about 75 % pass,
//! 10 % fail, 12 % not applicable, 2 % error, 1 % waived; 2 % of nodes stale,
//! 0.5 % never reported, 0.5 % revoked; a few drift changes per node over the
//! history; chain events on 1 % of nodes.

use std::time::Instant;

use rusqlite::params;

const FAMILIES: [&str; 20] = [
    "sysctl",
    "ssh",
    "kmod",
    "accounts",
    "services",
    "files",
    "mounts",
    "sudo",
    "logging",
    "kubelet",
    "kube_proxy",
    "kosmos",
    "containerd",
    "patch",
    "os",
    "firewall",
    "exposure",
    "controlplane",
    "kilo",
    "clock",
];
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];
const DAY_MS: i64 = 86_400_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let db = args
        .iter()
        .position(|a| a == "--db")
        .and_then(|i| args.get(i + 1))
        .ok_or_else(|| anyhow::anyhow!("usage: kosmos-fleetgen --db FILE [--nodes N] [--checks C] [--days D]"))?;
    let (nodes, checks, days) = (arg(&args, "--nodes", 10_000), arg(&args, "--checks", 150), arg(&args, "--days", 30));
    let started = Instant::now();
    // Create the schema exactly as the collector does.
    drop(kosmos_collector::store::sqlite::SqliteStore::open(std::path::Path::new(db))?);
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let check_defs: Vec<(String, &str, &str)> = (0..checks)
        .map(|i| {
            let family = FAMILIES[(i % FAMILIES.len() as u64) as usize];
            let severity = SEVERITIES[(i * 7 % 5) as usize];
            (format!("{family}.synthetic_check_{i:03}"), family, severity)
        })
        .collect();
    let tx = conn.transaction()?;
    {
        let mut node_stmt = tx.prepare(
            "INSERT INTO nodes (id, hostname, machine_id, cert_der, cert_sha256, enrolled_ms, revoked_ms, head_seq,
                                last_created_ms, last_seen_ms, os_pretty, kernel, agent_version, profile)
             VALUES (?1, ?2, ?3, x'00', x'00', ?4, ?5, ?6, ?7, ?7, 'Debian GNU/Linux 12 (bookworm)', '6.1.0-28-amd64',
                     '0.1.0', 'kosmos-external v1')",
        )?;
        let mut finding_stmt = tx.prepare(
            "INSERT INTO findings_latest (node_id, check_id, seq, status, severity, family, title, finding_json, changed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut day_stmt = tx.prepare(
            "INSERT INTO node_days (node_id, day, seq, pass, fail, error, not_applicable, waived, blocking)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut change_stmt = tx.prepare(
            "INSERT INTO finding_changes (node_id, check_id, family, seq, at_ms, old_status, new_status, old_observed, new_observed)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pass', 'fail', '\"no\"', '\"yes\"')",
        )?;
        let mut event_stmt = tx.prepare(
            "INSERT INTO events (node_id, seq, kind, detail, at_ms) VALUES (?1, ?2, 'gap', 'seq 11..=12 missing before seq 13', ?3)",
        )?;
        for n in 0..nodes {
            let id = format!("node-{n:016x}");
            let roll = rng.below(1000);
            let revoked = (roll < 5).then_some(now - 3 * DAY_MS);
            let never = (5..10).contains(&roll);
            let last = if never {
                None
            } else if roll < 30 {
                Some(now - DAY_MS - rng.below(DAY_MS as u64) as i64)
            } else {
                Some(now - rng.below(600_000) as i64)
            };
            node_stmt.execute(params![
                id,
                format!("ext-node-{n:05}.example.net"),
                format!("{:032x}", rng.next()),
                now - (days as i64 + 1) * DAY_MS,
                revoked,
                if never { 0 } else { days as i64 },
                last
            ])?;
            if never {
                continue;
            }
            let (mut pass, mut fail, mut error, mut na, mut waived, mut blocking) =
                (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
            for (cid, family, severity) in &check_defs {
                let r = rng.below(100);
                let status = match r {
                    0..75 => "pass",
                    75..85 => "fail",
                    85..97 => "not_applicable",
                    97..99 => "error",
                    _ => "waived",
                };
                match status {
                    "pass" => pass += 1,
                    "fail" => fail += 1,
                    "error" => error += 1,
                    "not_applicable" => na += 1,
                    _ => waived += 1,
                }
                if matches!(status, "fail" | "error") && matches!(*severity, "critical" | "high") {
                    blocking += 1;
                }
                let reason = match status {
                    "not_applicable" => r#""offline root: no runtime state""#,
                    "error" => r#""cannot read /etc/example.conf: permission denied""#,
                    _ => "null",
                };
                let waiver = if status == "waived" {
                    r#","waiver":{"reason":"legacy monitoring agent needs it until migration","expires":"2027-01-15"}"#
                } else {
                    ""
                };
                let json = format!(
                    r#"{{"id":"{cid}","title":"Synthetic check {cid} of the {family} family","family":"{family}","severity":"{severity}","status":"{status}","observed":"value-{r}","expected":"value-0","evidence":[{{"source":"/etc/{family}/config:{r}","detail":"Setting value-{r} is in effect"}}],"reason":{reason},"remediation":"Set the value to value-0 in /etc/{family}/config and reload the service.","references":[{{"standard":"CIS Debian Linux","version":"1.1.0","id":"5.1.{r}"}},{{"standard":"SSG","id":"synthetic_{r}"}}],"responsibility":"customer"{waiver}}}"#
                );
                finding_stmt.execute(params![
                    id,
                    cid,
                    days as i64,
                    status,
                    severity,
                    family,
                    format!("Synthetic check {cid}"),
                    json,
                    last.unwrap_or(now)
                ])?;
            }
            for d in 0..days as i64 {
                let day = (now - d * DAY_MS).div_euclid(DAY_MS);
                let jitter = rng.below(3) as i64;
                day_stmt.execute(params![
                    id,
                    day,
                    days as i64 - d,
                    pass - jitter,
                    fail + jitter,
                    error,
                    na,
                    waived,
                    (blocking + jitter - 1).max(0)
                ])?;
                if rng.below(10) < 2 {
                    let (cid, family, _) = &check_defs[(rng.below(checks)) as usize];
                    change_stmt.execute(params![
                        id,
                        cid,
                        family,
                        days as i64 - d,
                        now - d * DAY_MS - rng.below(DAY_MS as u64) as i64
                    ])?;
                }
            }
            if roll >= 990 {
                event_stmt.execute(params![id, 13, now - 2 * DAY_MS])?;
            }
        }
    }
    tx.commit()?;
    println!(
        "synthetic store {db}: {nodes} nodes x {checks} checks x {days} days written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
