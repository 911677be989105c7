//! `kosmos-gen-docs OUTDIR`: writes the man pages and shell completions of
//! `kosmos-node-agent` and `kosmos-collector`, generated from their clap
//! definitions so they cannot drift from the real command lines.
//!
//! Layout (what `packaging/build.sh` installs from):
//! - `OUTDIR/man/man1/NAME.1` and one `NAME-SUB[-SUB].1` per subcommand
//!   (`MANPATH=OUTDIR/man man NAME` reads them before installation);
//! - `OUTDIR/completions/bash/NAME`, `OUTDIR/completions/zsh/_NAME`,
//!   `OUTDIR/completions/fish/NAME.fish`.
//!
//! Build-time only: it is not shipped in any package.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: kosmos-gen-docs OUTDIR");
    };
    let out = PathBuf::from(out);
    for cmd in [kosmos_node_agent::cli::Cli::command(), kosmos_collector::cli::Cli::command()] {
        generate(cmd, &out)?;
    }
    Ok(())
}

fn generate(cmd: clap::Command, out: &Path) -> Result<()> {
    let name = cmd.get_name().to_string();
    let man = out.join("man").join("man1");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    // One page for the command and one per subcommand, each listing its
    // own options (`kosmos-collector-token-create.1`, ...).
    clap_mangen::generate_to(cmd.clone(), &man).with_context(|| format!("man pages of {name}"))?;
    for (shell, dir, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        let path = dir.join(file);
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
