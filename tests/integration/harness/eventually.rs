//! `assert_eventually!`: poll a condition until it holds or a deadline passes.
//!
//! This is the one place where the tests may sleep: between polls, for 15 ms. Tests never
//! sleep for a fixed time to "let something happen"; they poll for the effect.

use std::time::{Duration, Instant};

/// How long to wait between two polls.
const POLL_EVERY: Duration = Duration::from_millis(15);

/// Polls `cond` until it returns true (returns how long that took) or `timeout` passes
/// (returns `Err` with the elapsed time).
pub(crate) fn poll(
    mut cond: impl FnMut() -> bool,
    timeout: Duration,
) -> Result<Duration, Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        pause(POLL_EVERY);
    }
}

/// Sleeps the current (test) thread.
#[allow(clippy::disallowed_methods)]
pub(crate) fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Asserts that a condition becomes true within a timeout (default 5 s), polling it
/// every 15 ms.
///
/// ```ignore
/// assert_eventually!(gw.get("/readyz").status() == 503, Duration::from_secs(5));
/// ```
macro_rules! assert_eventually {
    ($cond:expr) => {
        $crate::harness::eventually::assert_eventually!($cond, ::std::time::Duration::from_secs(5))
    };
    ($cond:expr, $timeout:expr) => {{
        let timeout: ::std::time::Duration = $timeout;
        if let Err(elapsed) = $crate::harness::eventually::poll(|| $cond, timeout) {
            panic!("condition `{}` did not hold within {:?} (waited {:?})", stringify!($cond), timeout, elapsed);
        }
    }};
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let timeout: ::std::time::Duration = $timeout;
        if let Err(elapsed) = $crate::harness::eventually::poll(|| $cond, timeout) {
            panic!(
                "condition `{}` did not hold within {:?} (waited {:?}): {}",
                stringify!($cond),
                timeout,
                elapsed,
                format!($($msg)+)
            );
        }
    }};
}

pub(crate) use assert_eventually;
