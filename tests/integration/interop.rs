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

use crate::harness::python::{run, venv};
use crate::harness::{Route, Stack, Upstream, tamper};

const VERIFY_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/verify.py");

/// The virtualenv's python with PyJWT, created on first use (once per test process);
/// shared with the keyring module's rotation interop test and the verifying examples.
pub(crate) fn venv_python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let bin = venv("interop-venv", &["PyJWT[crypto]==2.*"])?;
        let python = bin.join("python");
        run(Command::new(&python).args(["-c", "import jwt, cryptography"]))?;
        Ok(python)
    })
    .clone()
    .unwrap_or_else(|e| panic!("cannot set up the PyJWT virtualenv for the interop test: {e}"))
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
