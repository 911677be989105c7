//! A throwaway PostgreSQL cluster for the end-to-end suite's second pass
//! (`.ci/run`): it starts one ([`TempPostgres`]), writes the environment
//! the suite reads (`KOSMOS_E2E_PG_URL`, `KOSMOS_E2E_PG_PASSWORD_FILE`,
//! `KOSMOS_E2E_PG_CA`) to the file named by its argument, and stops and
//! removes the cluster when its standard input closes.
//!
//! kosmos-e2e-pg ENV_FILE < (something that stays open while the suite runs)

use std::io::Read;

use kosmos_e2e::pg::{PASSWORD, TempPostgres};

fn main() {
    let Some(env_file) = std::env::args().nth(1) else {
        eprintln!("usage: kosmos-e2e-pg ENV_FILE");
        std::process::exit(2);
    };
    let Some(pg) = TempPostgres::start("the end-to-end suite on PostgreSQL") else {
        std::process::exit(1);
    };
    let (ca, password) = (pg.dir().join("e2e-ca.pem"), pg.dir().join("e2e-password"));
    let written = std::fs::write(&ca, &pg.ca_pem).and_then(|()| std::fs::write(&password, PASSWORD)).and_then(|()| {
        std::fs::write(
            &env_file,
            format!(
                "KOSMOS_E2E_PG_URL={}\nKOSMOS_E2E_PG_PASSWORD_FILE={}\nKOSMOS_E2E_PG_CA={}\n",
                pg.url(),
                password.display(),
                ca.display()
            ),
        )
    });
    if let Err(e) = written {
        eprintln!("kosmos-e2e-pg: {e}");
        std::process::exit(1);
    }
    // Until the suite is done.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(pg);
}
