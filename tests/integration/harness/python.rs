//! [`venv`]: a Python virtualenv under Cargo's target dir with pinned PyPI packages,
//! made once per test process and reused across runs.
//!
//! The venv lives at `$CARGO_TARGET_TMPDIR/<name>` and is marked complete by a stamp file
//! that records the requirement list, so a changed list rebuilds it. Without `python3 -m
//! venv` or network access to PyPI the caller fails with the reason: nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `cmd` with no stdin; `Err` with its output unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Makes (or reuses) the virtualenv `name` with `requirements` installed, and returns
/// its `bin/` directory. Call it through a `OnceLock` so that one test process builds it
/// once.
///
/// # Errors
/// Why the venv could not be made.
pub(crate) fn venv(name: &str, requirements: &[&str]) -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let bin = dir.join("bin");
    let stamp = dir.join(".sessiongate-ready");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && bin.join("python").exists() {
        return Ok(bin);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("removing a stale venv at {}: {e}", dir.display()))?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&dir))
        .map_err(|e| format!("python3 -m venv failed (is python3-venv installed?): {e}"))?;
    run(Command::new(bin.join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(requirements))
    .map_err(|e| {
        format!("pip install {requirements:?} failed (no network access to PyPI?): {e}")
    })?;
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(bin)
}
