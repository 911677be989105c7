//! The collector's way to PostgreSQL (issue 16), against a real throwaway
//! cluster ([`kosmos_e2e::pg::TempPostgres`]): TLS verified against the
//! database's CA, the password from the settings, and schema migrations
//! that replicas starting together apply exactly once.

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
