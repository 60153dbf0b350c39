//! Interop: PyJWT, an independent JOSE implementation, verifies the gateway's tokens
//! against its JWKS URL (tests/interop/verify.py), for ES256 and EdDSA.
//!
//! The test makes (once) a virtualenv at `$CARGO_TARGET_TMPDIR/interop-venv` with
//! `python3 -m venv` and `pip install "PyJWT[crypto]==2.*"`. Without network access to
//! PyPI the test fails and says so: it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::{Route, Stack, Upstream};

const VERIFY_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/verify.py");

/// The virtualenv's python, created on first use (once per test process); shared with
/// the keyring module's rotation interop test and the verifying examples.
pub(crate) fn venv_python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| make_venv(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-venv")))
        .clone()
        .unwrap_or_else(|e| panic!("cannot set up the PyJWT virtualenv for the interop test: {e}"))
}

fn run(cmd: &mut Command) -> Result<Output, String> {
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

fn make_venv(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin").join("python");
    let ready = dir.join(".sessiongate-ready");
    if ready.exists() && python.exists() {
        return Ok(python);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("removing a half-made venv at {}: {e}", dir.display()))?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(dir))
        .map_err(|e| format!("python3 -m venv failed (is python3-venv installed?): {e}"))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "PyJWT[crypto]==2.*",
    ]))
    .map_err(|e| format!("pip install PyJWT[crypto] failed (no network access to PyPI?): {e}"))?;
    run(Command::new(&python).args(["-c", "import jwt, cryptography"]))?;
    std::fs::write(&ready, b"ok").map_err(|e| e.to_string())?;
    Ok(python)
}

fn verify_py(python: &Path, jwks_url: &str, token: &str, audience: &str, issuer: &str) -> Output {
    Command::new(python)
        .arg(VERIFY_PY)
        .args([
            "--jwks-url",
            jwks_url,
            "--token",
            token,
            "--audience",
            audience,
            "--issuer",
            issuer,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run verify.py")
}

/// Flips one character in the middle of the signature.
fn tamper(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').expect("three parts");
    let mut sig: Vec<char> = sig.chars().collect();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == 'A' { 'B' } else { 'A' };
    format!("{rest}.{}", sig.into_iter().collect::<String>())
}

fn interop(alg: &str) {
    let python = venv_python();
    let s = Stack::start(|b, up: &Upstream| {
        b.algorithm(alg)
            .route(Route::new("orders", "/api/orders", &[up.addr()]).audience("orders-api"))
    });
    let cookie = s.login("user-py");
    assert_eq!(s.status("/api/orders", Some(&cookie)), 200);
    let token = s.up.last().bearer().to_owned();
    let issuer = s.gw.issuer().to_owned();

    for jwks_url in [
        s.gw.url("/.well-known/jwks.json"),
        s.gw.admin_url("/.well-known/jwks.json"),
    ] {
        let out = verify_py(&python, &jwks_url, &token, "orders-api", &issuer);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "PyJWT rejected a {alg} token from {jwks_url}:\n{stderr}"
        );
        let printed: Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(printed["sub"], "user-py");
        assert_eq!(printed["alg"], alg);
    }

    // The script does verify: a wrong audience and a tampered signature fail.
    let jwks_url = s.gw.url("/.well-known/jwks.json");
    let out = verify_py(&python, &jwks_url, &token, "billing", &issuer);
    assert_eq!(out.status.code(), Some(1), "wrong audience must fail");
    let out = verify_py(&python, &jwks_url, &tamper(&token), "orders-api", &issuer);
    assert_eq!(out.status.code(), Some(1), "tampered signature must fail");
}

#[test]
fn pyjwt_verifies_es256_tokens_against_the_jwks_url() {
    interop("ES256");
}

#[test]
fn pyjwt_verifies_eddsa_tokens_against_the_jwks_url() {
    interop("EdDSA");
}
