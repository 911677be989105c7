//! Shared helpers for unit tests: temporary roots and single-check evaluation.

use std::path::Path;

use crate::audit::check::Params;
use crate::audit::checks::registry;
use crate::audit::facts::Facts;
use crate::audit::host::{Host, OfflineRunner};
use crate::audit::model::Outcome;

/// A temporary root holding the given files (path in the audited system, content).
pub fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, t) in files {
        write(d.path(), p, t.as_bytes());
    }
    d
}

/// Write a file under a root, creating parent directories.
pub fn write(root: &Path, path: &str, content: &[u8]) {
    let full = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
}

/// Set the mode of a file under a root.
#[allow(dead_code)] // used by the file-permission check families
pub fn chmod(root: &Path, path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let full = root.join(path.trim_start_matches('/'));
    std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An offline host over a root.
pub fn offline(root: &Path) -> Host {
    Host::offline(root)
}

/// A host that treats `root` as the live system (its /proc, /sys, /run are
/// read as runtime state) but runs no commands.
pub fn live_like(root: &Path) -> Host {
    Host::with_runner(root, true, Box::new(OfflineRunner))
}

/// Evaluate one registered check with its default parameters, or with the
/// given overrides (TOML-like JSON values).
pub fn eval(id: &str, host: &Host) -> Outcome {
    eval_with(id, host, &[])
}

pub fn eval_with(id: &str, host: &Host, overrides: &[(&str, serde_json::Value)]) -> Outcome {
    let all = registry();
    let c = all.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}"));
    let o: std::collections::BTreeMap<String, serde_json::Value> =
        overrides.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let params = Params::new(&c.params, Some(&o));
    let facts = Facts::new(host);
    crate::audit::engine::evaluate(c, &facts, &params)
}

/// A host that treats `root` as the live system and replays the commands
/// recorded in `<root>/.commands/`.
pub fn live_recorded(root: &Path) -> Host {
    Host::with_runner(root, true, Box::new(crate::audit::host::RecordedRunner::new(root.join(".commands"))))
}
