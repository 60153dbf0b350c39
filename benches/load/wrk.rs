//! Closed-loop runs with `wrk` (Debian's package): N connections, each sending its next
//! request as soon as the previous answer arrived, for a fixed time.
//!
//! A Lua script rotates every request through a list of session cookies and prints the
//! numbers in one machine-readable line from `done()` (latencies in microseconds, from
//! wrk's own histogram), so nothing is scraped from wrk's human output.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = r#"
local reqs = {}
local n = 0
local i = 0
init = function(args)
  local path = args[1]
  for line in io.lines(args[2]) do
    n = n + 1
    reqs[n] = wrk.format("GET", path, { ["Cookie"] = args[3] .. "=" .. line })
  end
  i = math.random(n) - 1
end
request = function()
  i = i % n + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "SGWRK requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50.0), latency:percentile(99.0), latency:percentile(99.9), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    /// Answers that were not 2xx/3xx.
    pub(crate) status_errors: u64,
    /// Connect, read, write and timeout errors.
    pub(crate) socket_errors: u64,
}

/// The script and cookie list, written once into a directory.
pub(crate) struct Wrk {
    script: PathBuf,
    cookies: PathBuf,
    cookie_name: String,
    threads: usize,
}

impl Wrk {
    /// Writes the script and the cookie values (one per line) into `dir`.
    pub(crate) fn new(dir: &Path, cookie_name: &str, cookies: &[String], threads: usize) -> Self {
        let script = dir.join("sg.lua");
        let list = dir.join("cookies.txt");
        std::fs::write(&script, SCRIPT).expect("write wrk script");
        std::fs::write(&list, cookies.join("\n") + "\n").expect("write cookie list");
        Wrk {
            script,
            cookies: list,
            cookie_name: cookie_name.to_owned(),
            threads,
        }
    }

    /// `wrk -t THREADS -c CONNECTIONS -d DURATION` against `http://addr{path}`.
    ///
    /// # Panics
    /// If wrk cannot run or prints no result line.
    pub(crate) fn run(
        &self,
        addr: SocketAddr,
        path: &str,
        connections: usize,
        duration: Duration,
    ) -> WrkResult {
        let out = Command::new("wrk")
            .arg("-t")
            .arg(self.threads.min(connections).to_string())
            .arg("-c")
            .arg(connections.to_string())
            .arg("-d")
            .arg(format!("{}s", duration.as_secs().max(1)))
            .arg("--timeout")
            .arg("5s")
            .arg("-s")
            .arg(&self.script)
            .arg(format!("http://{addr}{path}"))
            .arg("--")
            .arg(path)
            .arg(&self.cookies)
            .arg(&self.cookie_name)
            .output()
            .expect("run wrk (apt-get install wrk)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("SGWRK "))
            .unwrap_or_else(|| {
                panic!(
                    "wrk printed no result:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line}"))
        };
        let requests = field("requests");
        let duration_us = field("duration_us").max(1);
        WrkResult {
            requests,
            rps: requests as f64 * 1e6 / duration_us as f64,
            p50_us: field("p50_us"),
            p99_us: field("p99_us"),
            p999_us: field("p999_us"),
            max_us: field("max_us"),
            status_errors: field("status_errors"),
            socket_errors: field("socket_errors"),
        }
    }
}
