//! `sessiongate dev` (SPEC "Binary and CLI"): the one-command demo works as printed.
//!
//! The test starts the demo on free ports, takes the curl commands it prints, runs each
//! one exactly as a user would paste it (through `sh -c`, with the real `curl`), and
//! checks what each shows: a verified token for the demo session, 401 and the login
//! redirect without it, `chk` on the critical route, no token on the public route, the
//! exchange answer, the JWKS, metrics and readiness. Then Ctrl-C (SIGINT) stops it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::assert_refusal;
use crate::harness::eventually::pause;
use crate::harness::gateway::BIN;
use crate::harness::ports::free_port;
use crate::harness::raw::{self, RawResponse};

/// The demo process; SIGKILLed on drop if still running.
struct Dev {
    child: Child,
    printed: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- sessiongate dev printed -----\n{}",
                self.printed.join("\n")
            );
        }
    }
}

/// Starts `sessiongate dev` on free ports and returns it once it printed its banner.
fn start() -> Dev {
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", &listen, "--admin-listen", &admin])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sessiongate dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut dev = Dev {
        child,
        printed: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("Ctrl-C stops it.");
                dev.printed.push(line);
                if done {
                    return dev;
                }
            }
            Err(e) => panic!("sessiongate dev printed no banner within 20 s ({e})"),
        }
    }
}

/// The printed curl commands, continuation lines (`\` at the end) joined.
fn curl_commands(printed: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for line in printed {
        let line = line.trim();
        if let Some(mut cmd) = pending.take() {
            cmd.push(' ');
            cmd.push_str(line.trim_end_matches('\\').trim());
            if line.ends_with('\\') {
                pending = Some(cmd);
            } else {
                out.push(cmd);
            }
        } else if line.starts_with("curl ") {
            if line.ends_with('\\') {
                pending = Some(line.trim_end_matches('\\').trim().to_owned());
            } else {
                out.push(line.to_owned());
            }
        }
    }
    out
}

/// Runs a printed command with `sh -c` and returns its stdout.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(out.status.success(), "`{cmd}` failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `curl -si` printed, as a response (the body as curl printed it).
fn response(printed: &str) -> RawResponse {
    let (head, body) = printed
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {printed:?}"));
    let (status, headers) =
        raw::parse_head(head.as_bytes()).unwrap_or_else(|e| panic!("{e}: {printed:?}"));
    RawResponse {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

fn json(text: &str, cmd: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("`{cmd}` printed no JSON ({e}): {text}"))
}

#[test]
fn dev_demo_commands_work_as_printed() {
    let mut dev = start();
    let cmds = curl_commands(&dev.printed);
    assert_eq!(cmds.len(), 9, "the demo prints nine commands: {cmds:#?}");
    let find = |needle: &str| -> &str {
        cmds.iter()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no printed command contains {needle}: {cmds:#?}"))
    };

    let with_session = find("/api/hello -H 'Cookie:");
    let echo = json(&sh(with_session), with_session);
    assert_eq!(echo["token"]["verified"], true, "{echo}");
    assert_eq!(echo["token"]["claims"]["sub"], "demo-user", "{echo}");
    assert_eq!(echo["token"]["claims"]["aud"], "echo", "{echo}");
    assert_eq!(echo["token"]["header"]["typ"], "at+jwt", "{echo}");
    let cookie_seen = echo["headers"]["cookie"].as_str().unwrap_or_default();
    assert!(
        !cookie_seen.contains("__Host-session"),
        "the session cookie reached the upstream: {echo}"
    );

    let anonymous_cmd = cmds
        .iter()
        .find(|c| c.ends_with("/api/hello"))
        .expect("a command without the cookie");
    assert_refusal(&response(&sh(anonymous_cmd)), 401, "unauthenticated");
    let navigation = response(&sh(find("Accept: text/html")));
    assert!(
        navigation
            .header("location")
            .is_some_and(|l| l.starts_with("/login")),
        "{navigation:?}"
    );
    assert_refusal(&navigation, 302, "unauthenticated");

    let critical_cmd = find("/api/critical/pay");
    let critical = json(&sh(critical_cmd), critical_cmd);
    assert_eq!(critical["token"]["verified"], true, "{critical}");
    assert_eq!(critical["token"]["claims"]["aud"], "payments", "{critical}");
    assert!(critical["token"]["claims"]["chk"].is_u64(), "{critical}");

    let public_cmd = find("/public/info");
    let public = json(&sh(public_cmd), public_cmd);
    assert_eq!(public["token"], Value::Null, "{public}");
    assert_eq!(public["path"], "/public/info", "{public}");

    let exchange_cmd = find("/auth/token");
    let exchange = json(&sh(exchange_cmd), exchange_cmd);
    assert_eq!(exchange["token_type"], "Bearer", "{exchange}");
    assert_eq!(exchange["expires_in"], 300, "{exchange}");
    assert_eq!(
        exchange["access_token"]
            .as_str()
            .map(|t| t.split('.').count()),
        Some(3),
        "{exchange}"
    );

    let jwks_cmd = find("jwks.json");
    let jwks = json(&sh(jwks_cmd), jwks_cmd);
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    let metrics = sh(find("/metrics"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sessiongate_requests_total{")),
        "{metrics}"
    );
    assert!(metrics.lines().all(|l| l.starts_with("sessiongate_")));
    sh(find("/readyz"));

    // Ctrl-C stops it, promptly and cleanly.
    let pid = dev.child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "dev did not stop on SIGINT");
        pause(Duration::from_millis(20));
    };
    assert!(status.success(), "dev exited with {status}");
}
