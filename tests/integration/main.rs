//! sessiongate's integration tests: one test binary driving the real `sessiongate`
//! process against a real `redis-server` and real upstreams, written from SPEC.md.
//!
//! Every test gets its own ports, Redis and gateway, so tests run in parallel. No test
//! sleeps for a fixed time: readiness and convergence are polled (`assert_eventually!`).
//! Sessions are written to Redis as literal JSON, as SPEC's schema says.

mod harness;

mod admin;
mod chaos;
mod claims;
mod cli;
mod critical_reads;
mod deploy;
mod dev;
mod edge;
mod exchange;
mod frameworks;
mod headers;
mod interop;
mod jwks;
mod keyring;
mod keystore;
mod lifecycle;
mod logs;
mod monitoring;
mod reload;
mod revocation;
mod robustness;
mod routing;
mod status_table;
mod streams;
mod tls;
mod topology;
mod verifying;
mod websocket;
