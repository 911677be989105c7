//! The collector's PostgreSQL store (issue 16), against real throwaway
//! clusters ([`kosmos_e2e::pg::TempPostgres`]): TLS verified against the
//! database's CA, the password from the settings, schema migrations that
//! replicas starting together apply exactly once, the store answering every
//! call as the SQLite store does, and replicas racing for one token and one
//! chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kosmos_collector::store::postgres::{PgSettings, schema};
use kosmos_e2e::pg::{PASSWORD, TempPostgres};

fn settings(pg: &TempPostgres, password: &str, ca_pem: &str) -> PgSettings {
    PgSettings::new(&pg.url(), Some(password), Some(("the test CA", ca_pem))).unwrap()
}

fn other_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

/// The error of a connection that must fail.
fn refused(s: &PgSettings) -> kosmos_collector::store::StoreError {
    match s.connect() {
        Ok(_) => panic!("connected with {s:?}"),
        Err(e) => e,
    }
}

/// The full error chain, as the collector would log it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[test]
fn tls_is_verified_and_the_password_comes_from_the_settings() {
    let Some(pg) = TempPostgres::start("postgres tls") else { return };
    let mut client =
        settings(&pg, PASSWORD, &pg.ca_pem).connect().unwrap_or_else(|e| panic!("{}\n{}", chain(&e), pg.log()));
    let row = client.query_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap();
    let (ssl, version): (bool, Option<String>) = (row.get(0), row.get(1));
    assert!(ssl, "the connection is not encrypted");
    assert!(version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")), "{version:?}");

    // A server certificate from another CA is refused before any password
    // is sent.
    let e = refused(&settings(&pg, PASSWORD, &other_ca()));
    let text = chain(&e);
    assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // A wrong password, and none.
    let e = refused(&settings(&pg, "not-the-password", &pg.ca_pem));
    assert!(chain(&e).contains("password authentication failed"), "{}", chain(&e));
    let e = refused(&PgSettings::new(&pg.url(), None, Some(("the test CA", &pg.ca_pem))).unwrap());
    assert!(chain(&e).contains("password missing"), "{}", chain(&e));
}

#[test]
fn migrations_apply_exactly_once_when_replicas_start_together() {
    let Some(pg) = TempPostgres::start("postgres migrations") else { return };
    let s = settings(&pg, PASSWORD, &pg.ca_pem);
    // Four "replicas" migrate the empty database at the same moment.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut client = s.connect().unwrap();
                barrier.wait();
                schema::migrate(&mut client).unwrap_or_else(|e| panic!("{}", chain(&e)))
            })
        })
        .collect();
    let applied: Vec<Vec<i32>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let all: Vec<i32> = (1..=schema::latest_version()).collect();
    assert_eq!(applied.iter().filter(|a| **a == all).count(), 1, "{applied:?}");
    assert_eq!(applied.iter().filter(|a| a.is_empty()).count(), 3, "{applied:?}");

    let mut client = s.connect().unwrap();
    assert_eq!(schema::current_version(&mut client).unwrap(), schema::latest_version());
    assert!(schema::migrate(&mut client).unwrap().is_empty(), "nothing left to apply");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'
               AND table_name IN ('tokens', 'nodes', 'envelopes', 'findings_latest', 'node_days',
                                  'finding_changes', 'events', 'schema_migrations')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 8);

    // A schema newer than this binary knows is refused, not written.
    client
        .execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, 0)",
            &[&(schema::latest_version() + 1)],
        )
        .unwrap();
    let e = schema::migrate(&mut client).unwrap_err();
    assert!(e.to_string().contains("newer than this collector knows"), "{e}");
}

#[test]
fn the_connection_comes_back_after_the_database_restarts() {
    let Some(pg) = TempPostgres::start("postgres restart") else { return };
    let s = settings(&pg, PASSWORD, &pg.ca_pem);
    let mut client = s.connect().unwrap();
    schema::migrate(&mut client).unwrap();
    pg.restart();
    pg.wait_ready(std::time::Duration::from_secs(30));
    // The old connection is gone and says so; a new one works.
    assert!(client.query_one("SELECT 1", &[]).is_err());
    let mut again = s.connect().unwrap();
    assert_eq!(schema::current_version(&mut again).unwrap(), schema::latest_version());
}

// ---------------------------------------------------------------------------
// The PostgreSQL store against the SQLite store: the same calls, the same
// answers, events and evidence.

use kosmos_collector::store::postgres::store::PgStore;
use kosmos_collector::store::sqlite::SqliteStore;
use kosmos_collector::store::{EvidenceRead, IngestItem, NewNode, Store};
use kosmos_proto::chain::{GENESIS_PREV_HASH, body_hash};
use kosmos_proto::v1::AttestationBody;
use prost::Message;

const T0: i64 = 1_800_000_000_000;

fn finding(id: &str, status: &str, observed: &str) -> String {
    format!(
        r#"{{"id":"{id}","title":"t","family":"{}","severity":"high","status":"{status}","observed":{observed},"evidence":[]}}"#,
        id.split('.').next().unwrap()
    )
}

fn report(findings: &[String]) -> Vec<u8> {
    format!(
        r#"{{"agent_version":"9.9","node":{{"hostname":"h-self","kernel":"6.1"}},"results":[{}]}}"#,
        findings.join(",")
    )
    .into_bytes()
}

/// A body of `node` at `seq` on `prev`, created at T0 + seq seconds.
fn item(node: &str, seq: u64, prev: [u8; 32], report_json: &[u8]) -> IngestItem {
    let body = AttestationBody {
        node_id: node.into(),
        seq,
        prev_hash: prev.to_vec(),
        created_at_unix_ms: T0 + i64::try_from(seq).unwrap() * 1000,
        report_json: report_json.to_vec().into(),
        ..Default::default()
    };
    IngestItem::new(node.into(), body.encode_to_vec(), vec![7; 64], body, T0 + 500_000)
}

fn new_node(id: &str) -> NewNode {
    NewNode { id: id.into(), hostname: "h".into(), machine_id: "m".into(), cert_der: vec![1, 2, 3], enrolled_at_ms: T0 }
}

/// Drive a store through enrollment, ingest with every chain event,
/// indexing, revocation and the evidence reads; the transcript of every
/// answer.
fn scenario(store: &mut dyn Store) -> Vec<String> {
    let mut t = Vec::new();
    let now = T0 + 600_000;
    store.create_token(&[1; 32], T0, T0 + 3_600_000).unwrap();
    store.create_token(&[2; 32], T0, T0 + 10).unwrap();
    t.push(format!("{:?}", store.enroll(&[1; 32], T0 + 5, &new_node("n1")).unwrap()));
    t.push(format!("{:?}", store.enroll(&[1; 32], T0 + 6, &new_node("n2")).unwrap()));
    t.push(format!("{:?}", store.enroll(&[9; 32], T0 + 6, &new_node("n3")).unwrap()));
    t.push(format!("{:?}", store.consume_token(&[2; 32], T0 + 20).unwrap()));
    store.insert_node(&new_node("n2")).unwrap();

    let r1 = report(&[finding("ssh.root", "pass", r#""no""#), finding("kubelet.anon", "fail", "true")]);
    let r2 = report(&[finding("ssh.root", "fail", r#""yes""#), finding("kubelet.anon", "fail", "true")]);
    let e1 = item("n1", 1, GENESIS_PREV_HASH, &r1);
    let e2 = item("n1", 2, body_hash(&e1.body_bytes), &r1);
    let e3 = item("n1", 3, body_hash(&e2.body_bytes), &r2);
    let forked4 = item("n1", 4, [9; 32], &r2);
    let gap7 = item("n1", 7, [8; 32], &r2);
    let other2 = item("n1", 2, body_hash(&e1.body_bytes), &r2);
    let malformed = item("n2", 1, GENESIS_PREV_HASH, b"not json");
    let batch = [e1, e2.clone(), e2, e3, forked4, gap7, other2, item("ghost", 1, GENESIS_PREV_HASH, &r1), malformed];
    for r in store.ingest(&batch, now).unwrap() {
        t.push(format!("{r:?}"));
    }
    t.push(format!("revoke {}", store.revoke_node("n2", now).unwrap()));
    t.push(format!("revoke ghost {}", store.revoke_node("ghost", now).unwrap()));
    for r in store.ingest(&[item("n2", 2, [0; 32], &r1)], now).unwrap() {
        t.push(format!("{r:?}"));
    }
    for n in store.nodes().unwrap() {
        t.push(format!(
            "node {} host {} head {} hash {} revoked {}",
            n.id,
            n.hostname,
            n.head_seq,
            n.head_hash.is_some(),
            n.revoked_at_ms.is_some()
        ));
        for e in store.events(&n.id).unwrap() {
            t.push(format!("event {} {:?} {} {}", e.node_id, e.seq, e.kind, e.detail));
        }
        let seqs: Vec<u64> = store.envelopes(&n.id).unwrap().iter().map(|e| e.0).collect();
        t.push(format!("envelopes {seqs:?}"));
    }
    t.push(format!("span {:?}", store.envelope_span("n1", T0 + 2000, T0 + 4000).unwrap()));
    t.push(format!("span none {:?}", store.envelope_span("n1", 0, 10).unwrap()));
    let page: Vec<u64> = store.envelopes_in("n1", 2, 7, 2).unwrap().iter().map(|e| e.seq).collect();
    t.push(format!("page {page:?}"));
    t.push(format!("hash {:?}", store.envelope_hash("n1", 3).unwrap().map(|h| h[0])));
    t.push(format!("hash none {:?}", store.envelope_hash("n1", 5).unwrap()));
    t
}

#[test]
fn the_postgres_store_answers_as_the_sqlite_store_does() {
    let Some(pg) = TempPostgres::start("postgres store conformance") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = scenario(&mut SqliteStore::open(&tmp.path().join("c.db")).unwrap());
    let mut pg_store = PgStore::open(&settings(&pg, PASSWORD, &pg.ca_pem)).unwrap();
    let postgres = scenario(&mut pg_store);
    for (i, (a, b)) in sqlite.iter().zip(&postgres).enumerate() {
        assert_eq!(a, b, "line {i} differs");
    }
    assert_eq!(sqlite.len(), postgres.len());
    let all = postgres.join("\n");
    // Not only equal: right.
    for expected in [
        "Accepted",
        "AlreadyUsed",
        "Unknown",
        "Expired",
        "event n1 Some(2) replay identical envelope for seq 2 already stored; ignored",
        "event n1 Some(4) fork prev_hash",
        "event n1 Some(7) gap seq 5..=6 missing before seq 7",
        "event n1 Some(2) fork a different body for seq 2",
        "Refused { reason: \"unknown node\" }",
        "event n2 Some(1) malformed_report",
        "event n2 Some(2) revoked",
        "node n1 host h-self head 7 hash true revoked false",
        "envelopes [1, 2, 3, 4, 7]",
        "span Some((2, 4))",
        "span none None",
        "page [2, 3]",
        "hash none None",
        "revoke ghost false",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

/// The store's own connection: after a restart of the database the batch
/// that meets the closed connection fails whole (nothing acked), and the
/// next one connects again and stores.
#[test]
fn the_store_connects_again_after_the_database_restarts() {
    let Some(pg) = TempPostgres::start("postgres store reconnect") else { return };
    let mut store = PgStore::open(&settings(&pg, PASSWORD, &pg.ca_pem)).unwrap();
    store.create_token(&[1; 32], T0, T0 + 3_600_000).unwrap();
    store.enroll(&[1; 32], T0 + 5, &new_node("n1")).unwrap();
    let r = report(&[finding("ssh.root", "pass", r#""no""#)]);
    let e1 = item("n1", 1, GENESIS_PREV_HASH, &r);
    let e2 = item("n1", 2, body_hash(&e1.body_bytes), &r);
    let acked = |results: Vec<kosmos_collector::store::IngestResult>| format!("{results:?}");
    assert_eq!(acked(store.ingest(std::slice::from_ref(&e1), T0 + 600_000).unwrap()), "[Acked { head_seq: 1 }]");
    pg.restart();
    pg.wait_ready(std::time::Duration::from_secs(30));
    let mut answers = Vec::new();
    for _ in 0..3 {
        match store.ingest(std::slice::from_ref(&e2), T0 + 600_000) {
            Ok(r) => {
                answers.push(acked(r));
                break;
            }
            Err(e) => answers.push(format!("error: {e}")),
        }
    }
    assert_eq!(answers.last().map(String::as_str), Some("[Acked { head_seq: 2 }]"), "{answers:?}");
    let seqs: Vec<u64> = store.envelopes("n1").unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2]);
}

/// A database error on one envelope's rows (here a trigger refusing seq 3)
/// fails that envelope and the later ones of its node, never another
/// node's: the batch is stored again one transaction per envelope.
#[test]
fn a_failing_envelope_fails_alone_in_its_batch() {
    let Some(pg) = TempPostgres::start("postgres envelope failure") else { return };
    let s = settings(&pg, PASSWORD, &pg.ca_pem);
    let mut store = PgStore::open(&s).unwrap();
    s.connect()
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION refuse_seq_3() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN IF NEW.seq = 3 THEN RAISE EXCEPTION 'seq 3 refused by the test'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER refuse_seq_3 BEFORE INSERT ON envelopes FOR EACH ROW EXECUTE FUNCTION refuse_seq_3();",
        )
        .unwrap();
    store.create_token(&[1; 32], T0, T0 + 3_600_000).unwrap();
    store.enroll(&[1; 32], T0 + 5, &new_node("n1")).unwrap();
    store.insert_node(&new_node("n2")).unwrap();
    let r = report(&[finding("ssh.root", "pass", r#""no""#)]);
    let mut batch = Vec::new();
    let mut prev = GENESIS_PREV_HASH;
    for seq in 1..=4 {
        let e = item("n1", seq, prev, &r);
        prev = body_hash(&e.body_bytes);
        batch.push(e);
    }
    batch.push(item("n2", 1, GENESIS_PREV_HASH, &r));
    let results: Vec<String> = store.ingest(&batch, T0 + 600_000).unwrap().iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(results[..2], ["Acked { head_seq: 1 }", "Acked { head_seq: 2 }"]);
    assert!(results[2].starts_with("Failed") && results[2].contains("seq 3 refused"), "{}", results[2]);
    assert!(results[3].starts_with("Failed") && results[3].contains("earlier envelope"), "{}", results[3]);
    assert_eq!(results[4], "Acked { head_seq: 1 }");
    let seqs: Vec<u64> = store.envelopes("n1").unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(store.node("n1").unwrap().unwrap().head_seq, 2);
    assert_eq!(store.node("n2").unwrap().unwrap().head_seq, 1);
    let kinds: Vec<String> = store.events("n1").unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["store_failed"]);
    // The agent resends seq 3 once the database takes it.
    s.connect().unwrap().batch_execute("DROP TRIGGER refuse_seq_3 ON envelopes").unwrap();
    let again: Vec<String> =
        store.ingest(&batch[2..4], T0 + 600_000).unwrap().iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(again, ["Acked { head_seq: 3 }", "Acked { head_seq: 4 }"]);
}

#[test]
fn replicas_racing_for_one_token_and_one_chain_store_each_thing_once() {
    let Some(pg) = TempPostgres::start("postgres replicas race") else { return };
    let s = settings(&pg, PASSWORD, &pg.ca_pem);
    let mut setup = PgStore::open(&s).unwrap();
    setup.create_token(&[5; 32], T0, T0 + 3_600_000).unwrap();
    setup.insert_node(&new_node("n1")).unwrap();
    // A chain of 40 envelopes.
    let r = report(&[finding("ssh.root", "pass", r#""no""#)]);
    let mut chain = Vec::new();
    let mut prev = GENESIS_PREV_HASH;
    for seq in 1..=40 {
        let i = item("n1", seq, prev, &r);
        prev = body_hash(&i.body_bytes);
        chain.push(i);
    }
    // Four replicas: each enrolls with the same token and sends the whole
    // chain, in batches of 5, at the same time.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let replicas: Vec<_> = (0..4)
        .map(|k| {
            let (s, barrier, chain) = (s.clone(), barrier.clone(), chain.clone());
            std::thread::spawn(move || {
                let mut store = PgStore::open(&s).unwrap();
                barrier.wait();
                let enrolled = store.enroll(&[5; 32], T0 + 1, &new_node(&format!("r{k}"))).unwrap();
                for batch in chain.chunks(5) {
                    for result in store.ingest(batch, T0 + 600_000).unwrap() {
                        assert!(matches!(result, kosmos_collector::store::IngestResult::Acked { .. }), "{result:?}");
                    }
                }
                enrolled
            })
        })
        .collect();
    let uses: Vec<_> = replicas.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = uses.iter().filter(|u| **u == kosmos_collector::store::TokenUse::Accepted).count();
    assert_eq!(accepted, 1, "{uses:?}");
    let stored: Vec<u64> = setup.envelopes("n1").unwrap().iter().map(|e| e.0).collect();
    assert_eq!(stored, (1..=40).collect::<Vec<_>>(), "each envelope stored once, none lost");
    let node = setup.node("n1").unwrap().unwrap();
    assert_eq!(node.head_seq, 40);
    let kinds: Vec<String> = setup.events("n1").unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.iter().all(|k| k == "replay"), "only replays, never a fork or a gap: {kinds:?}");
}

/// The fleet report of a store, as JSON, at a fixed time.
fn report_of(
    reader: &mut dyn kosmos_collector::store::FleetRead,
    detail: kosmos_collector::fleet::Detail,
    parallel: bool,
) -> serde_json::Value {
    let opts =
        kosmos_collector::fleet::Options { now_ms: T0 + 700_000, since_ms: None, interval_secs: 300, detail, parallel };
    serde_json::to_value(reader.fleet_report(&opts).unwrap()).unwrap()
}

#[test]
fn the_postgres_fleet_report_is_the_sqlite_one() {
    use kosmos_collector::fleet::query::SqliteFleetReader;
    use kosmos_collector::store::FleetRead;
    use kosmos_collector::store::postgres::fleet::PgFleetReader;

    let Some(pg) = TempPostgres::start("postgres fleet report") else { return };
    let s = settings(&pg, PASSWORD, &pg.ca_pem);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("c.db");
    let mut lite = SqliteStore::open(&db).unwrap();
    let mut post = PgStore::open(&s).unwrap();
    scenario(&mut lite);
    scenario(&mut post);
    // Enough more nodes for the parallel scan (200 and up), with hostnames
    // whose order depends on the collation ("B" < "a" bytewise).
    let findings = [finding("ssh.root", "fail", r#""yes""#), finding("files.shadow", "pass", "null")];
    for i in 0..210 {
        let id = format!("node-{i:03}");
        let host = if i % 2 == 0 { format!("B-{i}") } else { format!("a-{i}") };
        // The name the node reports for itself is the one the report shows.
        let r = String::from_utf8(report(&findings)).unwrap().replace("h-self", &host).into_bytes();
        let node = new_node(&id);
        for store in [&mut lite as &mut dyn Store, &mut post] {
            store.insert_node(&node).unwrap();
            store.ingest(&[item(&id, 1, GENESIS_PREV_HASH, &r)], T0 + 600_000).unwrap();
        }
    }
    let mut lite_reader = SqliteFleetReader::open(&db).unwrap();
    let mut pg_reader = PgFleetReader::open(&s).unwrap();
    use kosmos_collector::fleet::Detail;
    let (a, b) = (report_of(&mut lite_reader, Detail::All, true), report_of(&mut pg_reader, Detail::All, true));
    assert_eq!(a["summary"]["nodes_total"], 212, "{}", a["summary"]);
    assert!(!a["drift"].as_array().unwrap().is_empty(), "the scenario's ssh change is in the drift timeline");
    let hosts: Vec<&str> = a["nodes"].as_array().unwrap().iter().map(|n| n["hostname"].as_str().unwrap()).collect();
    assert!(hosts.iter().position(|h| h.starts_with("B-")) < hosts.iter().position(|h| h.starts_with("a-")));
    for key in ["summary", "srm", "checks", "drift", "integrity", "waivers", "trend", "nodes"] {
        assert_eq!(a[key], b[key], "{key} differs");
    }
    assert_eq!(a, b);
    // The other levels of detail (PostgreSQL sends less of the findings'
    // JSON for them), on one core and on two.
    for (detail, parallel) in [(Detail::Failing, true), (Detail::Summary, false), (Detail::Failing, false)] {
        let (a, b) = (report_of(&mut lite_reader, detail, parallel), report_of(&mut pg_reader, detail, parallel));
        assert_eq!(a, b, "{detail:?}, parallel {parallel}");
        if detail == Detail::Failing {
            let listed = a["nodes"].as_array().unwrap().iter().map(|n| n["findings"].as_array().map_or(0, Vec::len));
            assert!(listed.sum::<usize>() > 0, "the failing findings are listed");
        }
    }
    assert_eq!(
        serde_json::to_value(lite_reader.node_findings("n1").unwrap()).unwrap(),
        serde_json::to_value(pg_reader.node_findings("n1").unwrap()).unwrap()
    );

    // The change token: still while nothing is written, moved by a write.
    let t1 = pg_reader.change_token().unwrap();
    post.revoke_node("node-000", T0 + 800_000).unwrap();
    let t2 = pg_reader.change_token().unwrap();
    assert_ne!(t1, t2, "a committed write moves the token");
}

/// `collector.toml` for a collector on the cluster's database.
fn collector_on(pg: &TempPostgres, dir: &std::path::Path, extra: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let (pw, ca) = (dir.join("db-password"), dir.join("db-ca.pem"));
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(&ca, &pg.ca_pem).unwrap();
    std::fs::write(
        dir.join("collector.toml"),
        format!(
            "store_url = \"{}\"\nstore_password_file = \"{}\"\nstore_ca_file = \"{}\"\n{extra}",
            pg.url(),
            pw.display(),
            ca.display()
        ),
    )
    .unwrap();
}

/// Two collector replicas (real binaries) on one database, sharing one CA:
/// a token created on one enrolls through the other and only once; an agent
/// that lists both fails over when one is killed; the chain stays whole;
/// a revocation made through one is enforced by the other; every report
/// format reads the shared store.
#[test]
fn two_collector_replicas_on_one_database_serve_one_fleet() {
    use kosmos_e2e::{Agent, Collector, repo, run};

    let Some(pg) = TempPostgres::start("postgres replicas") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    collector_on(&pg, &a_dir, "");
    let mut a = Collector::start(&a_dir, 0);
    // B serves with A's CA and server certificate (as replicas share them
    // by configuration).
    let tls = kosmos_e2e::shared_pki_toml(&a_dir);
    collector_on(&pg, &b_dir, &tls);
    let b_log = tmp.path().join("b.log");
    let mut b = Collector::start_with_stderr(&b_dir, 0, std::fs::File::create(&b_log).unwrap().into());
    assert_eq!(a.fingerprint(), b.fingerprint());

    // A token made on A enrolls through B, once.
    let token = a.token("1h");
    let agent = Agent::new(&tmp.path().join("agent"));
    let (code, out, err) = agent.enroll(&b, &token, &b.fingerprint());
    assert_eq!(code, 0, "enroll through B: {out}{err}");
    let other = Agent::new(&tmp.path().join("other"));
    let (code, _, _) = other.enroll(&a, &token, &a.fingerprint());
    assert_ne!(code, 0, "a used token enrolled a second node through A");

    // The agent lists both replicas; A first.
    agent.configure(&a.url(), &repo().join("tests/fixtures/hardened"), "");
    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(
        &agent.config,
        config.replace(
            &format!("collector_url = \"{}\"", a.url()),
            &format!("collector_url = [\"{}\", \"{}\"]", a.url(), b.url()),
        ),
    )
    .unwrap();
    let (code, out, err) = agent.run_once();
    assert_eq!(code, 0, "delivered to A: {out}{err}");
    a.kill9();
    for _ in 0..2 {
        let (code, out, err) = agent.run_once();
        assert_eq!(code, 0, "failed over to B: {out}{err}");
    }

    // One chain, whole, in the shared store.
    let node = agent.node_id();
    let mut store = PgStore::open(&settings(&pg, PASSWORD, &pg.ca_pem)).unwrap();
    let seqs: Vec<u64> = store.envelopes(&node).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let kinds: Vec<String> = store.events(&node).unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.is_empty(), "events on a clean failover: {kinds:?}");

    // Every report format reads the shared store (through B's configuration).
    for format in ["json", "csv", "md", "junit", "html"] {
        let (code, out, err) = run(Collector::cmd(&b_dir).args(["report", "--format", format]));
        assert_eq!(code, 0, "report --format {format}: {err}");
        assert!(out.contains(&node), "report --format {format} does not name the node");
    }
    // B's dashboard follows the shared store (its snapshot is rebuilt when
    // the database changes).
    kosmos_e2e::wait_for("B's dashboard to show the node", std::time::Duration::from_secs(20), || {
        let (status, _, body) = kosmos_e2e::http_get(&b.http_addr, "/", None);
        status == 200 && body.contains(&node)
    });
    let (code, out, _) = run(Collector::cmd(&b_dir).args(["node", "list"]));
    assert_eq!(code, 0);
    assert!(out.contains(&node), "{out}");

    // Revoked through A's configuration (its process is down: the store is
    // shared), refused by B at once.
    a.revoke(&node);
    let (code, out, err) = agent.run_once();
    assert_ne!(code, 0, "a node revoked through one replica delivered to the other: {out}{err}");

    // B stops cleanly on SIGTERM: its dashboard's database reader is closed
    // off the async runtime (closing it on a runtime thread panicked).
    b.stop();
    let log = std::fs::read_to_string(&b_log).unwrap();
    assert!(!log.contains("panicked"), "collector B's log:\n{log}");
}

/// `kosmos-collector store migrate`: a SQLite store that real agents wrote
/// is copied to PostgreSQL verbatim and verified; the same fleet report
/// comes out of both; an interrupted copy resumes from where it stopped;
/// a finished copy or a database that holds rows is never written again;
/// and the agents' chains continue on a collector serving the copy.
#[test]
fn a_sqlite_store_moves_to_postgres_verbatim_and_resumably() {
    use kosmos_e2e::{Agent, Collector, repo, run};

    let Some(pg) = TempPostgres::start("store migrate") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let lite_dir = tmp.path().join("lite");
    let mut lite = Collector::start(&lite_dir, 0);
    let agent = Agent::new(&tmp.path().join("agent"));
    let (code, out, err) = agent.enroll(&lite, &lite.token("1h"), &lite.fingerprint());
    assert_eq!(code, 0, "{out}{err}");
    agent.configure(&lite.url(), &repo().join("tests/fixtures/hardened"), "");
    let gone = Agent::new(&tmp.path().join("gone"));
    assert_eq!(gone.enroll(&lite, &lite.token("1h"), &lite.fingerprint()).0, 0);
    gone.configure(&lite.url(), &repo().join("tests/fixtures/minimal"), "");
    for a in [&agent, &agent, &gone] {
        let (code, out, err) = a.run_once();
        assert_eq!(code, 0, "{out}{err}");
    }
    lite.revoke(&gone.node_id());
    let _unused_token = lite.token("1h");
    lite.stop();

    let (pw, ca) = (tmp.path().join("db-password"), tmp.path().join("db-ca.pem"));
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(&ca, &pg.ca_pem).unwrap();
    let migrate = || {
        run(Collector::cmd(&lite_dir)
            .args(["store", "migrate", "--to", &pg.url()])
            .arg("--password-file")
            .arg(&pw)
            .arg("--ca-file")
            .arg(&ca))
    };
    let (code, out, err) = migrate();
    assert_eq!(code, 0, "store migrate: {out}{err}\n{}", pg.log());
    assert!(out.contains("verified: row counts, 2 nodes' chain heads"), "{out}");
    assert!(out.contains("envelopes 3"), "{out}");
    assert!(err.contains("verified: an evidence bundle of every node (3 envelopes)"), "{err}");

    // Verbatim: every envelope's bytes, the nodes, the tokens.
    let lite_store = || kosmos_collector::store::sqlite::SqliteStore::open(&lite_dir.join("collector.db")).unwrap();
    let mut copy = PgStore::open(&settings(&pg, PASSWORD, &pg.ca_pem)).unwrap();
    let mut source = lite_store();
    for node in [agent.node_id(), gone.node_id()] {
        assert_eq!(source.envelopes(&node).unwrap(), copy.envelopes(&node).unwrap(), "{node}'s envelopes");
        assert_eq!(
            format!("{:?}", source.node(&node).unwrap()),
            format!("{:?}", copy.node(&node).unwrap()),
            "{node}'s record"
        );
        assert_eq!(format!("{:?}", source.events(&node).unwrap()), format!("{:?}", copy.events(&node).unwrap()));
    }
    assert!(copy.node(&gone.node_id()).unwrap().unwrap().revoked_at_ms.is_some());

    // A finished copy is not written again.
    let (code, out, err) = migrate();
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("finished already"), "{err}");

    // An interrupted copy resumes: more envelopes in the source, the
    // marker of an unfinished copy, and only the new ones travel.
    let mut lite = Collector::start(&lite_dir, 0);
    agent.configure(&lite.url(), &repo().join("tests/fixtures/hardened"), "");
    assert_eq!(agent.run_once().0, 0);
    lite.stop();
    let mut client = settings(&pg, PASSWORD, &pg.ca_pem).connect().unwrap();
    client.execute("UPDATE store_migration SET finished_ms = NULL", &[]).unwrap();
    let (code, out, err) = migrate();
    assert_eq!(code, 0, "resumed store migrate: {out}{err}");
    assert!(out.contains("(resumed)") && out.contains("envelopes 4"), "{out}");
    assert!(err.contains("envelopes: 1 rows copied"), "only the new envelope travels: {err}");

    // The same fleet report from both stores.
    let pg_dir = tmp.path().join("pg");
    let tls = kosmos_e2e::shared_pki_toml(&lite_dir);
    collector_on(&pg, &pg_dir, &tls);
    let report = |dir: &std::path::Path| {
        let (code, out, err) = run(Collector::cmd(dir).args([
            "report",
            "--format",
            "json",
            "--findings",
            "all",
            "--as-of",
            "2030-01-01",
            "--since",
            "2000-01-01",
        ]));
        assert_eq!(code, 0, "{err}");
        let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_object_mut().unwrap().remove("generated_at");
        v
    };
    assert_eq!(report(&lite_dir), report(&pg_dir));

    // The chain goes on at a collector serving the copy.
    let served = Collector::start(&pg_dir, 0);
    agent.configure(&served.url(), &repo().join("tests/fixtures/hardened"), "");
    let (code, out, err) = agent.run_once();
    assert_eq!(code, 0, "{out}{err}");
    let seqs: Vec<u64> = copy.envelopes(&agent.node_id()).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(copy.events(&agent.node_id()).unwrap().is_empty());
    drop(served);

    // A database with rows and no unfinished copy of this source is refused.
    client.execute("DELETE FROM store_migration", &[]).unwrap();
    let (code, _, err) = migrate();
    assert_ne!(code, 0);
    assert!(err.contains("holds rows: a store is copied only into an empty database"), "{err}");
}

/// One simulated agent delivering `envelopes` in order to a list of
/// replicas: up to 8 in flight on one Attest stream, the next replica after
/// any failure (as the agent fails over), everything unacked sent again.
/// Returns the highest acked seq; `acked_total` counts acks as they come.
async fn deliver(
    urls: Vec<String>,
    first: usize,
    ca: String,
    raw: kosmos_e2e::RawNode,
    envelopes: Vec<kosmos_proto::v1::AttestationEnvelope>,
    acked_total: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<usize, String> {
    use kosmos_proto::v1::attestation_client::AttestationClient;
    use std::time::Duration;
    let (mut acked, mut which, mut failures) = (0usize, first, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while acked < envelopes.len() {
        if std::time::Instant::now() > deadline {
            return Err(format!("{acked} of {} acked; failures: {failures:?}", envelopes.len()));
        }
        let url = &urls[which % urls.len()];
        let session: Result<(), String> = async {
            let ch =
                kosmos_e2e::channel_to(url, &ca, Some((&raw.cert, &raw.key_pem))).await.map_err(|e| e.to_string())?;
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let mut inbound = AttestationClient::new(ch)
                .attest(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            let mut sent = acked;
            loop {
                while sent < envelopes.len() && sent - acked < 8 {
                    tx.send(envelopes[sent].clone()).await.map_err(|_| "stream closed".to_string())?;
                    sent += 1;
                }
                match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
                    Ok(Ok(Some(ack))) if ack.error.is_empty() => {
                        let now_acked = usize::try_from(ack.acked_seq).unwrap();
                        if now_acked > acked {
                            acked_total.fetch_add((now_acked - acked) as u64, std::sync::atomic::Ordering::Relaxed);
                            acked = now_acked;
                        }
                        if acked == envelopes.len() {
                            return Ok(());
                        }
                    }
                    Ok(Ok(Some(ack))) => return Err(format!("error ack: {}", ack.error)),
                    Ok(Ok(None)) => return Err("stream ended".into()),
                    Ok(Err(status)) => return Err(status.message().to_string()),
                    Err(_) => return Err("no ack within 10 s".into()),
                }
            }
        }
        .await;
        if let Err(e) = session {
            failures.push(format!("{url}: {e}"));
            which += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(acked)
}

/// Faults under load, with two replicas on one database and simulated
/// agents streaming as fast as acks allow: replica A is killed (SIGKILL)
/// mid-ingest and its agents fail over to B; then PostgreSQL itself is
/// restarted mid-ingest. Every envelope ends up acked and stored exactly
/// once, every chain whole (no fork, no gap), and what was acked before a
/// fault is still there after it.
#[test]
fn no_acked_envelope_is_lost_when_a_replica_dies_or_the_database_restarts() {
    use kosmos_e2e::Collector;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    const NODES: usize = 16;
    const PER_NODE: u64 = 120;
    let Some(pg) = TempPostgres::start("replica and database faults") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    collector_on(&pg, &a_dir, "");
    let mut a = Collector::start(&a_dir, 0);
    let tls = kosmos_e2e::shared_pki_toml(&a_dir);
    collector_on(&pg, &b_dir, &tls);
    let b_log = tmp.path().join("b.log");
    let mut b = Collector::start_with_stderr(&b_dir, 0, std::fs::File::create(&b_log).unwrap().into());
    let ca = std::fs::read_to_string(a_dir.join("ca.pem")).unwrap();
    let urls = vec![a.url(), b.url()];

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let nodes = rt.block_on(kosmos_e2e::enroll_fleet(&a_dir, &a.url(), &ca, NODES)).unwrap();
    let acked_total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for (i, raw) in nodes.into_iter().enumerate() {
        // Every fifth report changes a finding: indexing under the faults too.
        let (steady, changed) = (
            report(&[finding("ssh.root", "pass", r#""no""#), finding("kubelet.anon", "fail", "true")]),
            report(&[finding("ssh.root", "fail", r#""yes""#), finding("kubelet.anon", "fail", "true")]),
        );
        let mut prev = GENESIS_PREV_HASH;
        let envelopes: Vec<_> = (1..=PER_NODE)
            .map(|seq| {
                let b = kosmos_e2e::body(&raw.id, seq, prev, if seq % 5 == 0 { &changed } else { &steady });
                let e = kosmos_proto::chain::seal(&raw.key, &b);
                prev = body_hash(&e.body);
                e
            })
            .collect();
        ids.push(raw.id.clone());
        tasks.push(rt.spawn(deliver(urls.clone(), i % 2, ca.clone(), raw, envelopes, Arc::clone(&acked_total))));
    }
    let total = NODES as u64 * PER_NODE;
    let wait_acked = |share: f64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while (acked_total.load(Ordering::Relaxed) as f64) < total as f64 * share {
            assert!(Instant::now() < deadline, "{what}: only {} of {total} acked", acked_total.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_acked(0.2, "before the kill");
    let before_kill = acked_total.load(Ordering::Relaxed);
    a.kill9();
    wait_acked(0.55, "after the kill");
    let before_restart = acked_total.load(Ordering::Relaxed);
    pg.restart();
    pg.wait_ready(Duration::from_secs(30));
    let results: Vec<Result<usize, String>> = rt.block_on(async { futures_all(tasks).await });
    assert!(before_kill < total && before_restart < total, "the faults came during ingest");
    for (id, r) in ids.iter().zip(&results) {
        assert_eq!(r.as_ref().map(|n| *n as u64), Ok(PER_NODE), "node {id}");
    }
    let mut store = PgStore::open(&settings(&pg, PASSWORD, &pg.ca_pem)).unwrap();
    for id in &ids {
        let seqs: Vec<u64> = store.envelopes(id).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=PER_NODE).collect::<Vec<_>>(), "node {id}: every envelope stored once, in order");
        assert_eq!(store.node(id).unwrap().unwrap().head_seq, PER_NODE);
        let odd: Vec<String> = store
            .events(id)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind != "replay")
            .map(|e| format!("{} {}", e.kind, e.detail))
            .collect();
        assert!(odd.is_empty(), "node {id}: events other than replays of resent envelopes: {odd:?}");
    }
    b.stop();
    let log = std::fs::read_to_string(&b_log).unwrap();
    assert!(!log.contains("panicked"), "collector B's log:\n{log}");
    assert!(
        log.contains("connecting again") || log.contains("connected to the database again"),
        "B reconnected to the database:\n{log}"
    );
}

async fn futures_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// `collector_url` naming one host with several addresses (a DNS name in
/// front of the replicas): the agent reaches the next address when the
/// first is down. The name is the agent's own, in a mount namespace whose
/// /etc/hosts gives `collector.test` two loopback addresses, each with a
/// replica on the same port.
#[test]
fn one_collector_name_with_two_addresses_fails_over_between_them() {
    use kosmos_e2e::{Agent, Collector, repo, run};
    use std::process::Command;

    if run(Command::new("unshare").args(["--mount", "true"])).0 != 0 {
        kosmos_e2e::cannot_run("one name, two addresses", "unshare --mount is not available (needs root)");
        return;
    }
    let Some(pg) = TempPostgres::start("one name, two addresses") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    collector_on(&pg, &a_dir, "server_names = [\"collector.test\"]\n");
    let mut a = Collector::start(&a_dir, 0);
    let tls = kosmos_e2e::shared_pki_toml(&a_dir);
    collector_on(&pg, &b_dir, &tls);
    let _b = Collector::start_on(&b_dir, &format!("127.0.0.2:{}", a.port()), std::process::Stdio::inherit());
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 collector.test\n127.0.0.2 collector.test\n").unwrap();

    let agent = Agent::new(&tmp.path().join("agent"));
    let (code, out, err) = agent.enroll(&a, &a.token("1h"), &a.fingerprint());
    assert_eq!(code, 0, "{out}{err}");
    agent.configure(&format!("https://collector.test:{}", a.port()), &repo().join("tests/fixtures/hardened"), "");
    // The agent, with the namespace's /etc/hosts (arguments passed as
    // positional parameters, never interpolated into the script).
    let run_once = || {
        run(Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", "mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"", "sh"])
            .arg(&hosts)
            .arg(&agent.binary)
            .args(["run", "--once", "--timeout", "30", "--config"])
            .arg(&agent.config)
            .env("KOSMOS_AGENT_LOG", "warn"))
    };
    let (code, out, err) = run_once();
    assert_eq!(code, 0, "delivered through the name's first address: {out}{err}");
    a.kill9();
    let (code, out, err) = run_once();
    assert_eq!(code, 0, "delivered through the name's second address once the first is down: {out}{err}");
    let mut store = PgStore::open(&settings(&pg, PASSWORD, &pg.ca_pem)).unwrap();
    let seqs: Vec<u64> = store.envelopes(&agent.node_id()).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2]);
}

/// A database that cannot be reached at start is not a configuration
/// error: the collector exits 1, which systemd restarts (exit 2, which it
/// does not, is for what a restart cannot fix). A replica started while
/// the database is still coming up must come back by itself.
#[test]
fn an_unreachable_database_at_start_exits_1_and_a_bad_store_url_exits_2() {
    use kosmos_e2e::{Collector, run};
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    Collector::prepare(tmp.path());
    std::fs::write(
        tmp.path().join("collector.toml"),
        format!("store_url = \"postgres://kosmos@127.0.0.1:{port}/kosmos\"\n"),
    )
    .unwrap();
    let (code, _, err) = run(Collector::cmd(tmp.path()).args(["serve", "--grpc-listen", "127.0.0.1:0"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
    std::fs::write(tmp.path().join("collector.toml"), "store_url = \"postgres://kosmos@db.example.com/kosmos\"\n")
        .unwrap();
    let (code, _, err) = run(Collector::cmd(tmp.path()).args(["serve", "--grpc-listen", "127.0.0.1:0"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sslmode=require"), "{err}");
}

/// The readers (fleet reports, the dashboard, node pages) take their
/// connections from one pool shared by every clone of the settings: fifty
/// reads hold one connection, not fifty; a database restart closes the
/// pooled connection, and the next read gets a new one.
#[test]
fn readers_share_a_pool_that_survives_a_database_restart() {
    use kosmos_collector::store::StoreLocation;
    let Some(pg) = TempPostgres::start("readers' pool") else { return };
    let s = settings(&pg, PASSWORD, &pg.ca_pem);
    drop(PgStore::open(&s).unwrap());
    let location = StoreLocation::Postgres(Box::new(s.clone()));
    let backends = || -> i64 {
        s.connect()
            .unwrap()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0)
    };
    // The store's connection may still be closing.
    kosmos_e2e::wait_for("the store's connection to close", std::time::Duration::from_secs(10), || backends() == 0);
    for _ in 0..50 {
        let shared = location.clone();
        let mut reader = shared.fleet_reader().unwrap();
        reader.change_token().unwrap();
    }
    // Kept open, idle, for the next read.
    assert_eq!(backends(), 1, "fifty reads, one pooled connection");
    pg.restart();
    pg.wait_ready(std::time::Duration::from_secs(30));
    let mut reader = location.fleet_reader().unwrap();
    reader.change_token().unwrap();
}
