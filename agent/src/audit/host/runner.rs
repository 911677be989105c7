//! External commands, run safely or replayed.
//!
//! The agent is a root daemon, so commands are argv vectors (never a shell
//! string), run with a scrubbed environment, no stdin, a timeout after which
//! the child is killed, and a cap on captured output. Fixture roots replay
//! recorded outputs through [`RecordedRunner`]; offline roots without
//! recordings get [`OfflineRunner`], which refuses everything, because running
//! a live command would describe the wrong machine.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

/// Captured output is truncated at this many bytes per stream; the command
/// result then says so and parsers refuse it.
pub const OUTPUT_CAP: usize = 32 * 1024 * 1024;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; `None` when killed by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True when stdout or stderr went past [`OUTPUT_CAP`] and was cut.
    pub truncated: bool,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as UTF-8, or an error naming the command.
    pub fn stdout_text(&self, command: &str) -> Result<&str, CommandError> {
        if self.truncated {
            return Err(CommandError::Truncated { command: command.to_string(), cap: OUTPUT_CAP });
        }
        std::str::from_utf8(&self.stdout).map_err(|_| CommandError::NotUtf8 { command: command.to_string() })
    }
}

/// Why a command produced no usable output. Each names the command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{command}: not available ({why})")]
    Unavailable { command: String, why: String },
    #[error("{command}: cannot start: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: timed out after {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("{command}: output larger than {cap} bytes")]
    Truncated { command: String, cap: usize },
    #[error("{command}: output is not valid UTF-8")]
    NotUtf8 { command: String },
    #[error("{command}: {detail}")]
    Recorded { command: String, detail: String },
}

impl CommandError {
    /// True when the program is simply not installed / not recorded.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CommandError::Unavailable { .. } => true,
            CommandError::Spawn { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Runs one external program. Implementations must never involve a shell.
pub trait CommandRunner: Send + Sync {
    fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Result<CommandOutput, CommandError>;
}

/// A printable form of a command line, for evidence and errors.
pub fn display_command(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs real programs on the live host.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    /// Directories searched for a bare program name, in order. A fixed list
    /// rather than the caller's `PATH`, so that a root daemon cannot be made
    /// to run a look-alike from a user-writable directory.
    search_path: Vec<PathBuf>,
}

impl Default for SystemRunner {
    fn default() -> Self {
        SystemRunner {
            search_path: ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

impl SystemRunner {
    fn locate(&self, program: &str) -> Option<PathBuf> {
        if program.starts_with('/') {
            let p = PathBuf::from(program);
            return p.is_file().then_some(p);
        }
        self.search_path.iter().map(|d| d.join(program)).find(|p| p.is_file())
    }
}

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Result<CommandOutput, CommandError> {
        let shown = display_command(program, args);
        let Some(path) = self.locate(program) else {
            return Err(CommandError::Unavailable { command: shown, why: "program not installed".into() });
        };
        let mut child = Command::new(&path)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CommandError::Spawn { command: shown.clone(), source: e })?;
        // Drain both pipes on threads so that a chatty child cannot deadlock
        // on a full pipe while we wait for it.
        let out = child.stdout.take().map(spawn_reader);
        let err = child.stderr.take().map(spawn_reader);
        let status = match child.wait_timeout(timeout) {
            Ok(Some(st)) => st.code(),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout { command: shown, timeout });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Spawn { command: shown, source: e });
            }
        };
        let (stdout, t1) = out.map(join_reader).unwrap_or_default();
        let (stderr, t2) = err.map(join_reader).unwrap_or_default();
        Ok(CommandOutput { status, stdout, stderr, truncated: t1 || t2 })
    }
}

type Reader = std::thread::JoinHandle<(Vec<u8>, bool)>;

fn spawn_reader<R: Read + Send + 'static>(r: R) -> Reader {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut limited = r.take(OUTPUT_CAP as u64 + 1);
        let _ = limited.read_to_end(&mut buf);
        let truncated = buf.len() > OUTPUT_CAP;
        buf.truncate(OUTPUT_CAP);
        // Keep draining so the child is not blocked on a full pipe.
        let mut rest = limited.into_inner();
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
        (buf, truncated)
    })
}

fn join_reader(h: Reader) -> (Vec<u8>, bool) {
    h.join().unwrap_or_default()
}

/// Refuses every command: the audited system is an offline root.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineRunner;

impl CommandRunner for OfflineRunner {
    fn run(&self, program: &str, args: &[&str], _timeout: Duration) -> Result<CommandOutput, CommandError> {
        Err(CommandError::Unavailable {
            command: display_command(program, args),
            why: "offline root: live commands would describe this machine, not the root".into(),
        })
    }
}

/// Replays outputs recorded in a fixture directory.
///
/// A command `nft -j list ruleset` is looked up as the file
/// `nft_-j_list_ruleset` (any extension allowed, e.g. `.json`), holding its
/// stdout. Optional siblings `<key>.exit` (exit code, default 0),
/// `<key>.stderr` and `<key>.timeout` (the command "hangs") complete it.
/// A command with no recording is unavailable, as if not installed.
#[derive(Debug, Clone)]
pub struct RecordedRunner {
    dir: PathBuf,
}

impl RecordedRunner {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordedRunner { dir: dir.into() }
    }

    /// The file name key for a command line.
    pub fn key(program: &str, args: &[&str]) -> String {
        let base = program.rsplit('/').next().unwrap_or(program);
        let mut key = base.to_string();
        for a in args {
            key.push('_');
            key.push_str(a);
        }
        key.chars().map(|c| if c == '/' || c.is_whitespace() || c == '\0' { '%' } else { c }).collect()
    }

    fn find(&self, key: &str) -> Option<PathBuf> {
        let exact = self.dir.join(key);
        if exact.is_file() {
            return Some(exact);
        }
        let prefix = format!("{key}.");
        let entries = std::fs::read_dir(&self.dir).ok()?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let ext = name.strip_prefix(&prefix)?;
                (!matches!(ext, "exit" | "stderr" | "timeout")).then(|| e.path())
            })
            .collect();
        found.sort();
        found.into_iter().next()
    }
}

impl CommandRunner for RecordedRunner {
    fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Result<CommandOutput, CommandError> {
        let shown = display_command(program, args);
        let key = Self::key(program, args);
        if self.dir.join(format!("{key}.timeout")).exists() {
            return Err(CommandError::Timeout { command: shown, timeout });
        }
        let exit_file = self.dir.join(format!("{key}.exit"));
        let stdout_file = self.find(&key);
        if stdout_file.is_none() && !exit_file.exists() {
            return Err(CommandError::Unavailable { command: shown, why: "no recorded output".into() });
        }
        let read = |p: &PathBuf| -> Result<Vec<u8>, CommandError> {
            let mut f = std::fs::File::open(p)
                .map_err(|e| CommandError::Recorded { command: shown.clone(), detail: e.to_string() })?;
            let mut buf = Vec::new();
            (&mut f)
                .take(OUTPUT_CAP as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| CommandError::Recorded { command: shown.clone(), detail: e.to_string() })?;
            Ok(buf)
        };
        let mut stdout = match &stdout_file {
            Some(p) => read(p)?,
            None => Vec::new(),
        };
        let truncated = stdout.len() > OUTPUT_CAP;
        stdout.truncate(OUTPUT_CAP);
        let stderr_file = self.dir.join(format!("{key}.stderr"));
        let stderr = if stderr_file.exists() { read(&stderr_file)? } else { Vec::new() };
        let status = if exit_file.exists() {
            let text = String::from_utf8(read(&exit_file)?).unwrap_or_default();
            match text.trim().parse::<i32>() {
                Ok(c) => Some(c),
                Err(_) => {
                    return Err(CommandError::Recorded {
                        command: shown,
                        detail: format!("{}: not an exit code", exit_file.display()),
                    });
                }
            }
        } else {
            Some(0)
        };
        Ok(CommandOutput { status, stdout, stderr, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_captures_and_times_out() {
        let r = SystemRunner::default();
        let out = r.run("echo", &["a b", "c"], Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, b"a b c\n");
        assert!(out.success());
        // No shell: the metacharacters are passed as a literal argument.
        let out = r.run("echo", &["$(id)", ";", "|"], Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, b"$(id) ; |\n");
        let err = r.run("sleep", &["5"], Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }));
        let err = r.run("definitely-not-a-program-kna", &[], Duration::from_secs(1)).unwrap_err();
        assert!(err.is_unavailable());
    }

    #[test]
    fn system_runner_caps_output() {
        let r = SystemRunner::default();
        // head -c of /dev/zero: 40 MiB of output, above the cap.
        let out = r.run("head", &["-c", "41943040", "/dev/zero"], Duration::from_secs(20)).unwrap();
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), OUTPUT_CAP);
        assert!(out.stdout_text("head").is_err());
    }

    #[test]
    fn recorded_runner_replays() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("nft_-j_list_ruleset.json"), "{}").unwrap();
        std::fs::write(d.path().join("sshd_-T.exit"), "255\n").unwrap();
        std::fs::write(d.path().join("sshd_-T.stderr"), "no host keys").unwrap();
        std::fs::write(d.path().join("wg_show.timeout"), "").unwrap();
        let r = RecordedRunner::new(d.path());
        let out = r.run("nft", &["-j", "list", "ruleset"], Duration::from_secs(1)).unwrap();
        assert_eq!(out.stdout, b"{}");
        let out = r.run("/usr/sbin/sshd", &["-T"], Duration::from_secs(1)).unwrap();
        assert_eq!(out.status, Some(255));
        assert_eq!(out.stderr, b"no host keys");
        assert!(matches!(r.run("wg", &["show"], Duration::from_secs(1)), Err(CommandError::Timeout { .. })));
        assert!(r.run("rpm", &["-qa"], Duration::from_secs(1)).unwrap_err().is_unavailable());
    }
}
