//! `Type=notify` as the packaged units rely on it, over the real binaries:
//! each daemon is started the way systemd starts it (a `NOTIFY_SOCKET` to
//! report to, `WATCHDOG_USEC` set) and must send `READY=1` only once it can
//! do its job, `WATCHDOG=1` well within the watchdog period, and
//! `STOPPING=1` then a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kosmos_e2e::*;

/// The watchdog period given to the daemons: pings must come at least this often.
const WATCHDOG: Duration = Duration::from_millis(1500);

/// A datagram socket standing in for systemd's notification socket.
fn notify_socket(dir: &Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    (sock, path)
}

/// Read notifications until one has the line `want`, or fail after `within`.
/// Returns every message read, the matching one last.
fn wait_for(sock: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return seen;
            }
        }
    }
    panic!("no {want} within {within:?}; received {seen:?}");
}

/// A daemon that is killed if the test fails before stopping it.
struct Daemon(Child);

impl Daemon {
    fn sigterm_and_wait(&mut self) -> i32 {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.0.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn with_notify(cmd: &mut std::process::Command, socket: &Path) {
    cmd.env("NOTIFY_SOCKET", socket).env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
}

#[test]
fn collector_is_ready_only_once_listening_then_feeds_the_watchdog() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("collector");
    Collector::prepare(&data);
    let (sock, path) = notify_socket(tmp.path());
    let mut cmd = Collector::cmd(&data);
    cmd.args(["serve", "--grpc-listen", "127.0.0.1:0"]).stdout(Stdio::null()).stderr(Stdio::inherit());
    with_notify(&mut cmd, &path);
    let mut daemon = Daemon(cmd.spawn().unwrap());

    // First start creates the CA: allow for that before READY.
    wait_for(&sock, "READY=1", Duration::from_secs(30));
    // READY is true: the listener is bound and accepts connections.
    let addr = std::fs::read_to_string(data.join("grpc.addr")).unwrap();
    std::net::TcpStream::connect(addr.trim()).unwrap();
    // Two pings, each well within the period.
    for _ in 0..2 {
        wait_for(&sock, "WATCHDOG=1", WATCHDOG);
    }
    let code = daemon.sigterm_and_wait();
    wait_for(&sock, "STOPPING=1", Duration::from_secs(1));
    assert_eq!(code, 0);
}

#[test]
fn agent_daemon_is_ready_then_feeds_the_watchdog_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = Collector::start(&tmp.path().join("collector"), 0);
    let agent = Agent::new(&tmp.path().join("agent"));
    let (code, out, err) = agent.enroll(&collector, &collector.token("1h"), &collector.fingerprint());
    assert_eq!(code, 0, "enroll failed: {out}{err}");
    agent.configure(&collector.url(), &repo().join("tests/fixtures/hardened"), "");
    let (sock, path) = notify_socket(tmp.path());
    let mut cmd = agent.cmd();
    cmd.args(["run", "--config", agent.config.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::inherit());
    with_notify(&mut cmd, &path);
    let mut daemon = Daemon(cmd.spawn().unwrap());

    wait_for(&sock, "READY=1", Duration::from_secs(30));
    for _ in 0..2 {
        wait_for(&sock, "WATCHDOG=1", WATCHDOG);
    }
    let code = daemon.sigterm_and_wait();
    wait_for(&sock, "STOPPING=1", Duration::from_secs(1));
    assert_eq!(code, 0);
}
