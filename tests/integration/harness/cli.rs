//! The `sessiongate` CLI as a child process: [`sg`] for any command, [`sg_ok`] for one
//! that must succeed, and the text of what it printed.
//!
//! Every run starts from a clean environment as far as the gateway is concerned: no
//! inherited `SESSIONGATE_CONFIG` or `SESSIONGATE_KEK` (a developer's shell must not
//! change a test), `NO_COLOR=1`, and only the variables the test passes. Stdout and
//! stderr are drained on their own threads, so a chatty command cannot block on a full
//! pipe, and a command that has not exited within its limit is killed and the test
//! panics with what it printed.

use std::io::{Read, Write as _};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use super::eventually;
use super::gateway::BIN;

/// How long a CLI command may run before [`sg`] kills it.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `sessiongate ARGS` with `stdin` (none: `/dev/null`) and `env`; kills it and
/// panics if it has not exited within 30 s.
///
/// # Panics
/// If it cannot be spawned or does not exit in time.
pub(crate) fn sg(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    sg_within(args, stdin, env, LIMIT)
}

/// [`sg`] with another time limit (e.g. for a runtime failure that must be prompt).
///
/// # Panics
/// If it cannot be spawned or does not exit within `limit`.
pub(crate) fn sg_within(
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
    limit: Duration,
) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("SESSIONGATE_CONFIG")
        .env_remove("SESSIONGATE_KEK")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessiongate");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    if let Some(input) = stdin {
        // Dropped at the end of the statement: the command sees EOF.
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let exited = eventually::poll(|| matches!(child.try_wait(), Ok(Some(_))), limit);
    if exited.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait sessiongate");
    let output = Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        exited.is_ok(),
        "sessiongate {args:?} did not exit within {limit:?}{}",
        printed(&output)
    );
    output
}

/// [`sg`] without stdin that must exit 0; returns its stdout.
///
/// # Panics
/// If it exits otherwise (with what it printed).
#[track_caller]
pub(crate) fn sg_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = sg(args, None, env);
    assert_exit(&out, 0, &format!("sessiongate {args:?}"));
    stdout(&out)
}

/// Asserts the exit code, printing stdout and stderr when it differs.
#[track_caller]
pub(crate) fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}{}", printed(out));
}

/// What a command printed on stdout, as text.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a command printed on stderr, as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout and stderr under headings, for a failure message.
fn printed(out: &Output) -> String {
    format!(
        "\n--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout(out),
        stderr(out)
    )
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}
