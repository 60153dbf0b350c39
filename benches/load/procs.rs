//! Child processes of the harness (the upstream and the bare proxy re-execute this bench
//! binary with a role argument), their memory, and facts about the machine.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::eventually::pause;

/// A child process of this bench binary, killed and waited for on drop.
pub(crate) struct Role {
    child: Child,
    /// The address it listens on.
    pub(crate) addr: SocketAddr,
}

impl Role {
    /// Re-executes this binary as `role ARGS...` and waits until `addr` accepts connections.
    ///
    /// # Panics
    /// If it cannot be spawned, exits, or does not listen within 20 s.
    pub(crate) fn spawn(name: &'static str, addr: SocketAddr, args: &[String]) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut role = Role { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = role.child.try_wait() {
                panic!("{name} exited with {status} before listening on {addr}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return role;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {addr} within 20 s"
            );
            pause(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rss {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

impl Rss {
    /// Reads `/proc/PID/status`; zeros if the process is gone.
    pub(crate) fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Rss {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    /// `VmRSS` in MiB.
    pub(crate) fn mib(self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after it are positional.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after `)`.
    (ticks(11) + ticks(12)) as f64 / clock_ticks()
}

/// `sysconf(_SC_CLK_TCK)` by way of `getconf` (100 on Linux almost everywhere).
fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The 1, 5 and 15 minute load averages as printed by `/proc/loadavg`.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `N cores, MODEL` from `/proc/cpuinfo`, and the kernel release.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB RAM", kib as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} cores, {model}{mem}, Linux {kernel}")
}

/// The commit the bench was built from, if git can tell.
pub(crate) fn git_rev() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

/// The opening lines of a report: `### {title} {time} (commit …)`, the machine, and the
/// load average before and after the run.
pub(crate) fn report_header(title: &str, load_before: &str, load_after: &str) -> String {
    format!(
        "### {title} {} (commit {})\n\n- machine: {}\n- load average (1/5/15 min): {load_before} before, {load_after} after\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        git_rev(),
        machine(),
    )
}
