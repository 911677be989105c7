//! Mount checks (family `mounts`): world-writable scratch directories are
//! separate mounts with `nodev`, `nosuid` and `noexec`.
//!
//! Live hosts are judged on PID 1's `/proc/1/mountinfo` and on what mounts
//! the path at boot (`/etc/fstab` or an enabled mount unit: CIS 1.1.2.1.1
//! wants /tmp mounted at boot too, and a boot entry lacking an option fails
//! the SSG rules even while the running mount has it); offline roots on
//! `/etc/fstab` and enabled systemd mount units (see
//! [`crate::audit::facts::mounts`]). `/dev/shm` is special: systemd always mounts
//! it (tmpfs, `nosuid,nodev`) before reading fstab, so an offline root
//! without an fstab entry gets exactly those options — and fails `noexec`.

use std::collections::BTreeSet;

use serde_json::json;

use crate::audit::check::{Check, ParamSpec, Params};
use crate::audit::facts::Facts;
use crate::audit::facts::mounts::{FSTAB, MountEntry, mount_at};
use crate::audit::model::{Outcome, Reference, Severity, anssi, cis_debian, ssg};

const DEFAULT_OPTIONS: [&str; 3] = ["nodev", "nosuid", "noexec"];

fn judge(entry: &MountEntry, required: &[String]) -> (Vec<String>, BTreeSet<String>) {
    let mut present: BTreeSet<String> = entry.flags().into_iter().map(str::to_string).collect();
    present.extend(entry.options.iter().filter(|o| !DEFAULT_OPTIONS.contains(&o.as_str())).cloned());
    let missing = required.iter().filter(|r| !present.contains(*r)).cloned().collect();
    (missing, present)
}

fn evaluate(facts: &Facts<'_>, path: &str, params: &Params) -> Outcome {
    let required = params.list("required_options");
    let expected = json!({ "separate_mount": true, "options": required });
    let answer = match mount_at(facts, path) {
        Ok(a) => a,
        Err(e) => return Outcome::error(e),
    };
    let live = facts.host().is_live();
    let mut entry = answer.entry;
    let mut evidence = answer.consulted;
    let mut note = None;
    if entry.is_none() && path == "/dev/shm" && !live {
        // systemd's built-in API mount (src/shared/mount-setup.c).
        let e = MountEntry {
            mount_point: "/dev/shm".into(),
            fs_type: "tmpfs".into(),
            device: "tmpfs".into(),
            options: ["nosuid", "nodev", "strictatime", "mode=1777"].map(String::from).into(),
            super_options: Vec::new(),
            origin: "systemd".into(),
        };
        evidence.push(crate::audit::model::Evidence::new(
            "systemd (built-in mount)",
            format!("no {FSTAB} entry for /dev/shm: systemd mounts it as {}", e.describe()),
        ));
        note = Some("no fstab entry for /dev/shm: systemd's default mount has nosuid,nodev but not noexec".to_string());
        entry = Some(e);
    }
    let Some(entry) = entry else {
        let why = if live {
            format!("no separate {path}: it is part of its parent file system")
        } else {
            format!("no separate {path}: no {FSTAB} entry and no enabled mount unit")
        };
        return Outcome::fail()
            .note(why)
            .observed(json!({ "separate_mount": false }))
            .expected(expected)
            .with_evidence(evidence);
    };
    let (mut missing, present) = judge(&entry, &required);
    // Live, what is mounted now is only half of it: CIS 1.1.2.1.1 also wants
    // /tmp mounted at boot (an fstab entry or an enabled tmp.mount), and the
    // SSG rules fail an fstab entry that lacks an option even when the
    // running mount has it (it would come back without it at the next boot).
    if live && path != "/dev/shm" {
        match crate::audit::facts::mounts::boot_mount_at(facts, path) {
            Err(e) => return Outcome::error(format!("{path} is mounted, but its boot configuration is unknown: {e}")),
            Ok(boot) => {
                evidence.extend(boot.consulted);
                match boot.entry {
                    None if path == "/tmp" => {
                        let m = format!(
                            "{path} is mounted now, but neither {FSTAB} nor an enabled tmp.mount mounts it at boot"
                        );
                        note = Some(match note {
                            Some(n) => format!("{m}; {n}"),
                            None => m,
                        });
                        missing.push("a boot-time mount".into());
                    }
                    None => {}
                    Some(b) => {
                        let (boot_missing, _) = judge(&b, &required);
                        if !boot_missing.is_empty() {
                            let m = format!("its boot configuration ({}) lacks {}", b.origin, boot_missing.join(","));
                            note = Some(match note {
                                Some(n) => format!("{m}; {n}"),
                                None => m,
                            });
                            missing.push(format!("{} at boot", boot_missing.join(",")));
                        }
                    }
                }
            }
        }
    }
    let mut o = Outcome::verdict(missing.is_empty())
        .observed(json!({
            "separate_mount": true,
            "fs_type": entry.fs_type,
            "options": present.into_iter().collect::<Vec<_>>(),
            "source": entry.origin,
        }))
        .expected(expected)
        .with_evidence(evidence);
    let runtime_missing: Vec<&String> = missing.iter().filter(|m| required.contains(m)).collect();
    if !runtime_missing.is_empty() {
        let m = format!(
            "{path} is mounted without {}",
            runtime_missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
        );
        note = Some(match note {
            Some(n) => format!("{m} ({n})"),
            None => m,
        });
    }
    if let Some(n) = note {
        o = o.note(n);
    }
    o
}

fn mount_check(
    path: &'static str,
    id: &str,
    title: &str,
    severity: Severity,
    refs: Vec<Reference>,
    rationale: &str,
    remediation: &str,
) -> Check {
    Check::new(format!("mounts.{id}"), title, severity, move |facts, params| evaluate(facts, path, params))
        .rationale(rationale)
        .remediation(remediation)
        .refs(refs)
        .param(ParamSpec::list(
            "required_options",
            &DEFAULT_OPTIONS,
            "Mount options that must be in effect (drop noexec if a workload really executes from here)",
        ))
}

/// All mount checks.
pub fn checks() -> Vec<Check> {
    vec![
        mount_check(
            "/tmp",
            "tmp",
            "/tmp is a separate mount with nodev, nosuid and noexec",
            Severity::Medium,
            vec![
                cis_debian("1.1.2.1.1"),
                cis_debian("1.1.2.1.2"),
                cis_debian("1.1.2.1.3"),
                cis_debian("1.1.2.1.4"),
                anssi("R28"),
                ssg("partition_for_tmp"),
                ssg("mount_option_tmp_nodev"),
                ssg("mount_option_tmp_nosuid"),
                ssg("mount_option_tmp_noexec"),
            ],
            "/tmp is writable by every user and process: a separate mount stops it from filling the root file system, and nodev/nosuid/noexec stop it from being used to plant devices, set-uid programs or executables. Some installers execute from /tmp; the required options are a parameter.",
            "Enable a tmpfs /tmp with the options, e.g. on Debian: `cp /usr/share/systemd/tmp.mount /etc/systemd/system/`, set `Options=mode=1777,strictatime,nosuid,nodev,noexec,size=50%` in its [Mount] section and `systemctl enable --now tmp.mount`; or add `tmpfs /tmp tmpfs defaults,rw,nosuid,nodev,noexec,relatime,size=2G 0 0` to /etc/fstab.",
        ),
        mount_check(
            "/var/tmp",
            "var_tmp",
            "/var/tmp is a separate mount with nodev, nosuid and noexec",
            Severity::Low,
            vec![
                cis_debian("1.1.2.5.1"),
                cis_debian("1.1.2.5.2"),
                cis_debian("1.1.2.5.3"),
                cis_debian("1.1.2.5.4"),
                anssi("R28"),
                ssg("partition_for_var_tmp"),
                ssg("mount_option_var_tmp_nodev"),
                ssg("mount_option_var_tmp_nosuid"),
                ssg("mount_option_var_tmp_noexec"),
            ],
            "/var/tmp is world-writable and survives reboots. A separate mount with nodev/nosuid/noexec limits its abuse. CIS Level 2 only, hence the low severity: it usually needs repartitioning.",
            "Add a /var/tmp entry to /etc/fstab (a dedicated partition or logical volume, or a bind mount) with the options nodev,nosuid,noexec, and remount.",
        ),
        mount_check(
            "/dev/shm",
            "dev_shm",
            "/dev/shm is mounted with nodev, nosuid and noexec",
            Severity::Medium,
            vec![
                cis_debian("1.1.2.2.2"),
                cis_debian("1.1.2.2.3"),
                cis_debian("1.1.2.2.4"),
                ssg("mount_option_dev_shm_nodev"),
                ssg("mount_option_dev_shm_nosuid"),
                ssg("mount_option_dev_shm_noexec"),
            ],
            "/dev/shm is world-writable shared memory, a classic place to drop and run payloads without touching disk. systemd mounts it with nosuid,nodev but not noexec.",
            "Add `tmpfs /dev/shm tmpfs defaults,rw,nosuid,nodev,noexec,relatime 0 0` to /etc/fstab and `mount -o remount /dev/shm` (systemd-remount-fs applies it at boot).",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use crate::audit::model::Status;
    use crate::testutil::{eval, eval_with, live_like, offline, root_with};
    use serde_json::Value;
    use std::os::unix::fs::symlink;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
24 22 0:21 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,inode64
30 22 0:25 / /tmp rw,nosuid,nodev,noexec,relatime shared:9 - tmpfs tmpfs rw,size=1g
";

    #[test]
    fn live_mountinfo_decides() {
        let d = root_with(&[
            ("/proc/1/mountinfo", MOUNTINFO),
            ("/etc/fstab", "tmpfs /tmp tmpfs rw,nosuid,nodev,noexec,size=1g 0 0\n"),
        ]);
        let h = live_like(d.path());
        let o = eval("mounts.tmp", &h);
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert_eq!(o.evidence[0].source, "/proc/1/mountinfo:3");
        let o = eval("mounts.dev_shm", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("without noexec"));
        let o = eval("mounts.var_tmp", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("no separate /var/tmp"));
        let o = eval_with("mounts.dev_shm", &h, &[("required_options", serde_json::json!(["nodev", "nosuid"]))]);
        assert_eq!(o.status, Status::Pass);
    }

    #[test]
    fn live_tmp_must_also_be_mounted_at_boot_with_the_options() {
        // Mounted by hand: CIS 1.1.2.1.1 wants it mounted at boot too.
        let d = root_with(&[("/proc/1/mountinfo", MOUNTINFO)]);
        let o = eval("mounts.tmp", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("neither /etc/fstab nor an enabled tmp.mount mounts it at boot"));
        // The fstab entry lacks noexec (remounted by hand with it): fails.
        crate::testutil::write(d.path(), "/etc/fstab", b"tmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n");
        let o = eval("mounts.tmp", &live_like(d.path()));
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("/etc/fstab:1) lacks noexec"));
        // An enabled tmp.mount with the options.
        crate::testutil::write(d.path(), "/etc/fstab", b"");
        crate::testutil::write(
            d.path(),
            "/etc/systemd/system/tmp.mount",
            b"[Mount]\nWhat=tmpfs\nWhere=/tmp\nType=tmpfs\nOptions=mode=1777,nosuid,nodev,noexec\n[Install]\nWantedBy=local-fs.target\n",
        );
        std::fs::create_dir_all(d.path().join("etc/systemd/system/local-fs.target.wants")).unwrap();
        symlink("/etc/systemd/system/tmp.mount", d.path().join("etc/systemd/system/local-fs.target.wants/tmp.mount"))
            .unwrap();
        let o = eval("mounts.tmp", &live_like(d.path()));
        assert_eq!(o.status, Status::Pass, "{o:?}");
    }

    #[test]
    fn offline_fstab_and_missing_tmp() {
        let d = root_with(&[(
            "/etc/fstab",
            "UUID=1 / ext4 defaults 0 1\ntmpfs /var/tmp tmpfs defaults,nodev,nosuid 0 0\n",
        )]);
        let h = offline(d.path());
        let o = eval("mounts.tmp", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("no separate /tmp"));
        assert_eq!(o.observed.unwrap()["separate_mount"], Value::Bool(false));
        let o = eval("mounts.var_tmp", &h);
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.evidence[0].source, "/etc/fstab:2");
        assert!(o.reason.unwrap().contains("without noexec"));
    }

    #[test]
    fn offline_dev_shm_defaults_to_systemd_mount() {
        let d = root_with(&[("/etc/fstab", "")]);
        let h = offline(d.path());
        let o = eval("mounts.dev_shm", &h);
        assert_eq!(o.status, Status::Fail);
        assert!(o.reason.unwrap().contains("systemd's default mount"));
        std::fs::write(d.path().join("etc/fstab"), "tmpfs /dev/shm tmpfs defaults,nosuid,nodev,noexec 0 0\n").unwrap();
        assert_eq!(eval("mounts.dev_shm", &h).status, Status::Pass);
    }

    #[test]
    fn offline_enabled_tmp_mount_unit() {
        let d = root_with(&[(
            "/etc/systemd/system/tmp.mount",
            "[Mount]\nWhat=tmpfs\nWhere=/tmp\nType=tmpfs\nOptions=mode=1777,strictatime,nosuid,nodev,noexec\n",
        )]);
        let wants = d.path().join("etc/systemd/system/local-fs.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        symlink("/etc/systemd/system/tmp.mount", wants.join("tmp.mount")).unwrap();
        let o = eval("mounts.tmp", &offline(d.path()));
        assert_eq!(o.status, Status::Pass, "{o:?}");
        assert!(o.evidence.iter().any(|e| e.source == "/etc/systemd/system/tmp.mount:5"));
    }

    #[test]
    fn unreadable_sources_are_errors() {
        let d = root_with(&[]);
        crate::testutil::write(d.path(), "/etc/fstab", &[0xff, 0xfe]);
        assert_eq!(eval("mounts.tmp", &offline(d.path())).status, Status::Error);
        assert_eq!(eval("mounts.dev_shm", &live_like(d.path())).status, Status::Error);
    }
}
