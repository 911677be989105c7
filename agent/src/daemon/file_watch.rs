//! File watches that trigger an early re-audit: kubelet configuration and
//! unit, sshd configuration, sysctl and modprobe drop-ins, nftables.
//!
//! inotify (through the notify crate) cannot watch a path that does not
//! exist yet and loses a file's watch when an editor replaces it by rename,
//! so each target's parent directory is watched (non-recursively) as well as
//! the target itself when it is a directory, and events are filtered by
//! path. Directories that appear later are picked up by [`FileWatch::rearm`],
//! which the daemon calls on every scheduled run. Reads are not events: the
//! audit itself reads these files and must not trigger itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watched paths on the audited system (resolved under the root).
pub const WATCHED: &[&str] = &[
    "/var/lib/kubelet/config.yaml",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/kubelet",
    "/etc/default/kubelet",
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service.d",
    "/lib/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/kubelet.service",
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/etc/sysctl.conf",
    "/etc/sysctl.d",
    "/etc/nftables.conf",
    "/etc/modprobe.d",
];

/// Live watches; changed paths arrive on [`FileWatch::changes`].
#[derive(Debug)]
pub struct FileWatch {
    watcher: RecommendedWatcher,
    watched_dirs: BTreeSet<PathBuf>,
    targets: Vec<PathBuf>,
    pub changes: mpsc::UnboundedReceiver<PathBuf>,
}

fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
    }
}

impl FileWatch {
    /// Watch [`WATCHED`] under `root`.
    pub fn start(root: &Path) -> notify::Result<FileWatch> {
        let targets: Vec<PathBuf> = WATCHED.iter().map(|p| root.join(p.trim_start_matches('/'))).collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let filter = targets.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !relevant(&event.kind) {
                return;
            }
            for p in event.paths {
                if filter.iter().any(|t| p == *t || p.starts_with(t)) {
                    let _ = tx.send(p);
                }
            }
        })?;
        let mut w = FileWatch { watcher, watched_dirs: BTreeSet::new(), targets, changes: rx };
        w.rearm();
        Ok(w)
    }

    /// Add watches for directories that exist now and were not watched.
    /// Returns how many were added.
    pub fn rearm(&mut self) -> usize {
        let mut wanted = BTreeSet::new();
        for t in &self.targets {
            if t.is_dir() {
                wanted.insert(t.clone());
            }
            if let Some(parent) = t.parent()
                && parent.is_dir()
            {
                wanted.insert(parent.to_path_buf());
            }
        }
        let mut added = 0;
        for dir in wanted {
            if self.watched_dirs.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched_dirs.insert(dir);
                    added += 1;
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
            }
        }
        added
    }

    /// Directories currently watched.
    pub fn watched_dirs(&self) -> impl Iterator<Item = &Path> {
        self.watched_dirs.iter().map(PathBuf::as_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next_change(w: &mut FileWatch) -> Option<PathBuf> {
        tokio::time::timeout(Duration::from_secs(5), w.changes.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn edits_to_watched_files_are_reported_and_reads_are_not() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
        std::fs::write(root.join("etc/unrelated"), "x").unwrap();
        let mut w = FileWatch::start(root).unwrap();
        assert!(w.watched_dirs().any(|d| d == root.join("etc/ssh")));

        // Reading a watched file and touching an unrelated one: no event.
        let _ = std::fs::read(root.join("etc/ssh/sshd_config")).unwrap();
        std::fs::write(root.join("etc/unrelated"), "y").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), w.changes.recv()).await.is_err());

        std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
        assert_eq!(next_change(&mut w).await.unwrap(), root.join("etc/ssh/sshd_config"));

        // A drop-in directory created later is picked up by rearm().
        std::fs::create_dir_all(root.join("etc/sysctl.d")).unwrap();
        while tokio::time::timeout(Duration::from_millis(200), w.changes.recv()).await.is_ok() {}
        assert!(w.rearm() >= 1);
        std::fs::write(root.join("etc/sysctl.d/99-k8s.conf"), "net.ipv4.ip_forward = 1\n").unwrap();
        assert_eq!(next_change(&mut w).await.unwrap(), root.join("etc/sysctl.d/99-k8s.conf"));
    }
}
