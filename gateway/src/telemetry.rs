//! Logging: `tracing` with one env-filter, human or JSON output, and Pingora's `log` bridged in.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

use crate::config::{LogConfig, LogFormat};

/// Keeps the log writer thread alive; dropping it flushes what is queued.
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the config's filter.
/// Log lines are handed to a dedicated writer thread, so request threads never block on
/// stderr; if it falls behind, lines are dropped rather than stalling requests. Keep the
/// returned guard until exit. Safe to call more than once (later calls are ignored).
#[must_use = "dropping the guard stops the log writer"]
pub fn init(log: &LogConfig) -> LogGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&log.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .thread_name("sessiongate-log")
        .finish(std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    // try_init also installs the `log` → tracing bridge (Pingora logs through `log`). It
    // fails when a subscriber is already installed (a second call); only then is this
    // writer unused.
    let installed = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}
