//! Fuzz target: `exchange::pickle::decode` on arbitrary bytes never panics, never
//! overflows the stack, and stays within its limits (libFuzzer's `-rss_limit_mb` and
//! `-timeout` catch blow-ups); what it returns is a JSON object no bigger than the limits
//! allow.

#![no_main]

use exchange::pickle::{Limits, decode};
use libfuzzer_sys::fuzz_target;

/// The gateway refuses session values over 64 KiB before decoding them.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let limits = Limits::default();
    if let Ok(value) = decode(data, limits) {
        assert!(value.is_object(), "decode returned a non-object");
        // Every value is at most a 24-character number or `null`, plus separators, and
        // string content at most 6 bytes per byte once escaped (`\u0000`).
        let json = serde_json::to_vec(&value).expect("a Value always serializes");
        let bound = 32 * limits.max_values + 6 * limits.max_bytes;
        assert!(json.len() <= bound, "{} bytes of JSON", json.len());
    }
});
