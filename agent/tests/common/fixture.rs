//! Fixture roots made real: a copy of `tests/fixtures/<name>` with its
//! `<name>.setup` applied (modes, owners, sparse files and FIFOs that git
//! cannot carry). Shared, as a file, by the agent's tests and by the
//! end-to-end OpenSCAP comparison (`tests/tests/openscap.rs` includes it with
//! `#[path]`), so both audit exactly the same roots. It uses only std and nix.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Copy a tree: symlinks as they are, regular files with mode 0644 (git
/// keeps no modes; `.setup` sets the ones that matter).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        let to = dst.join(entry.file_name());
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &to).unwrap();
        } else if ty.is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Copy fixture `name` from `fixtures` into `dst` and apply its `.setup`.
pub fn prepare(fixtures: &Path, name: &str, dst: &Path) {
    let src = fixtures.join(name);
    assert!(src.is_dir(), "no fixture {name}");
    copy_tree(&src, dst);
    let setup = fixtures.join(format!("{name}.setup"));
    let text = std::fs::read_to_string(&setup).unwrap_or_default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let target = dst.join(parts[1].trim_start_matches('/'));
        match parts[0] {
            "mode" => {
                let mode = u32::from_str_radix(parts[2], 8).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            "owner" => {
                let uid: u32 = parts[2].parse().unwrap();
                let gid: u32 = parts[3].parse().unwrap();
                std::os::unix::fs::chown(&target, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e} (fixture tests run as root)", target.display()));
            }
            "sparse" => {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let f = std::fs::File::create(&target).unwrap();
                f.set_len(parts[2].parse().unwrap()).unwrap();
            }
            "fifo" => {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&target);
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            }
            other => panic!("{}: unknown setup op {other}", setup.display()),
        }
    }
}
