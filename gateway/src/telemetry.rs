//! Logging: `tracing` with one env-filter, human or JSON output, and Pingora's `log` bridged in.
//!
//! Whatever the filter says, [`QUIET_TARGETS`] never print below INFO: Pingora's debug
//! and trace records dump whole request and response headers, which hold the minted
//! bearer token and the client's cookies. The gateway's own events never carry a
//! cookie, token or key at any level.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::fmt;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};

/// Target prefixes whose DEBUG and TRACE events are always dropped, because they print
/// request or response headers (`Authorization: Bearer …`, `Cookie: …`).
pub const QUIET_TARGETS: &[&str] = &["pingora"];

/// Keeps the log writer thread alive; dropping it flushes what is queued.
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Whether an event may be printed at all: everything at INFO and above, and the
/// debug/trace events of targets outside [`QUIET_TARGETS`].
pub fn may_print(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO || !QUIET_TARGETS.iter().any(|t| meta.target().starts_with(t))
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
    let output = fmt::layer().with_writer(writer).with_ansi(ansi);
    let output = match log.format {
        LogFormat::Json => output.json().flatten_event(true).boxed(),
        LogFormat::Human => output.boxed(),
    };
    // try_init also installs the `log` → tracing bridge (Pingora logs through `log`),
    // with `log`'s max level taken from the filter. It fails when a subscriber is
    // already installed (a second call); only then is this writer unused.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(FilterFn::new(may_print))
        .with(output)
        .try_init();
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}

#[cfg(test)]
mod tests {
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    use super::*;

    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static SITE: Site = Site;

    #[test]
    fn pingora_below_info_never_prints() {
        let cases: &[(&str, Level, bool)] = &[
            ("pingora_proxy::proxy_h1", Level::DEBUG, false),
            ("pingora_core::apps::http_app", Level::TRACE, false),
            ("pingora_core::server", Level::INFO, true),
            ("pingora_core::server", Level::WARN, true),
            ("sessiongate::access", Level::INFO, true),
            ("gateway::reload", Level::DEBUG, true),
            ("fred::router", Level::TRACE, true),
        ];
        for &(target, level, printed) in cases {
            let meta = Metadata::new(
                "event",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            );
            assert_eq!(may_print(&meta), printed, "{target} at {level}");
        }
    }
}
