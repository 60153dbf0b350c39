//! docs/verifying.md's examples, run as written against a live gateway: the PyJWT
//! verifier (`docs/examples/verify_pyjwt.py`) and the Node.js `jose` verifier
//! (`docs/examples/verify_jose.mjs`) accept the gateway's ES256 and EdDSA tokens from
//! its JWKS URL, and reject a wrong audience, a wrong issuer, a tampered signature and
//! an unsigned (`alg: none`) token.
//!
//! Python runs in the interop test's virtualenv (`interop::venv_python`). For Node, the
//! test runs `npm install jose@5` once into `$CARGO_TARGET_TMPDIR/verify-jose` and runs a
//! copy of the example there (ES modules resolve `jose` next to the script). Without
//! `node`/`npm` or registry access the test fails and says so: it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::harness::{Route, Stack, Upstream, tamper};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples");

/// One way of running an example: the program and the script.
struct Verifier {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
}

impl Verifier {
    fn pyjwt() -> Self {
        Verifier {
            name: "PyJWT",
            program: crate::interop::venv_python(),
            script: Path::new(EXAMPLES).join("verify_pyjwt.py"),
        }
    }

    fn jose() -> Self {
        let dir = jose_dir();
        let script = dir.join("verify_jose.mjs");
        // A fresh copy of the documented example on every run.
        std::fs::copy(Path::new(EXAMPLES).join("verify_jose.mjs"), &script)
            .expect("copy verify_jose.mjs");
        Verifier {
            name: "jose",
            program: PathBuf::from("node"),
            script,
        }
    }

    fn run(&self, jwks_url: &str, issuer: &str, audience: &str, token: &str) -> Output {
        Command::new(&self.program)
            .arg(&self.script)
            .args(["--jwks-url", jwks_url, "--issuer", issuer])
            .args(["--audience", audience, "--token", token])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} ({}): {e}", self.name, self.program.display()))
    }
}

/// `$CARGO_TARGET_TMPDIR/verify-jose` with `jose@5` installed (once per test process).
fn jose_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("verify-jose");
        let ready = dir.join(".sessiongate-ready");
        if ready.exists() && dir.join("node_modules/jose").exists() {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg("jose@5")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run npm (are nodejs and npm installed?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install jose@5 failed (no access to the npm registry?):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(&ready, b"ok").map_err(|e| e.to_string())?;
        Ok(dir)
    })
    .clone()
    .unwrap_or_else(|e| panic!("cannot set up jose for the verifying test: {e}"))
}

/// The same claims with `{"alg": "none"}` and no signature.
fn unsigned(token: &str) -> String {
    let claims = token.split('.').nth(1).expect("claims");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    format!("{header}.{claims}.")
}

/// Valid tokens of both routes verify; with `refusals`, bad ones are rejected too.
fn check(verifier: &Verifier, alg: &str, refusals: bool) {
    let s = Stack::start(|b, up: &Upstream| {
        b.algorithm(alg)
            .route(Route::new("orders", "/api/orders", &[up.addr()]).audience("orders"))
            .route(Route::new("billing", "/api/billing", &[up.addr()]).critical())
    });
    let cookie = s.login("user-verify");
    let issuer = s.gw.issuer().to_owned();
    let jwks_url = s.gw.admin_url("/.well-known/jwks.json");
    let name = verifier.name;

    for (path, audience) in [("/api/orders/1", "orders"), ("/api/billing/1", "billing")] {
        assert_eq!(s.status(path, Some(&cookie)), 200);
        let token = s.up.last().bearer().to_owned();
        let out = verifier.run(&jwks_url, &issuer, audience, &token);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} rejected a valid {alg} token for {audience}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let claims: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{name} did not print JSON claims ({e}): {stdout}"));
        assert_eq!(claims["sub"], "user-verify", "{name}");
        assert_eq!(claims["aud"], audience, "{name}");
        assert_eq!(claims["iss"], issuer.as_str(), "{name}");
        assert_eq!(
            claims.get("chk").is_some(),
            audience == "billing",
            "{name}: chk only on the critical route"
        );
    }

    if !refusals {
        return;
    }
    let token = s.up.last().bearer().to_owned();
    let refused: [(&str, String, &str, &str); 4] = [
        ("a wrong audience", token.clone(), "orders", issuer.as_str()),
        (
            "a wrong issuer",
            token.clone(),
            "billing",
            "https://not-the-gateway",
        ),
        (
            "a tampered signature",
            tamper(&token),
            "billing",
            issuer.as_str(),
        ),
        ("alg none", unsigned(&token), "billing", issuer.as_str()),
    ];
    for (what, token, audience, iss) in &refused {
        let out = verifier.run(&jwks_url, iss, audience, token);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name} must reject {what} ({alg}); stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_pyjwt_example_verifies_es256_and_eddsa_tokens() {
    let verifier = Verifier::pyjwt();
    check(&verifier, "ES256", true);
    check(&verifier, "EdDSA", false);
}

#[test]
fn the_jose_example_verifies_es256_and_eddsa_tokens() {
    let verifier = Verifier::jose();
    check(&verifier, "ES256", true);
    check(&verifier, "EdDSA", false);
}
