//! What the gateway knows of HTTP at its edge: the request target, the `Cookie` header,
//! and the headers it removes and sets on the way upstream. `exchange` knows none of
//! this; it gets a cookie value and hands back a token.

pub mod cookie;
pub mod forwarding;
pub mod target;

/// The `Authorization` scheme of the tokens sent upstream, with its separator.
pub const BEARER: &str = "Bearer ";
