//! The sessiongate edge gateway: a Pingora proxy that turns session cookies into
//! short-lived JWTs for the upstream each route points at.
//!
//! Map: [`cli`] parses commands; [`config`] parses and validates TOML; [`server`]
//! assembles the Pingora server; [`proxy`] is the `ProxyHttp` implementation, which
//! reads the edge with [`http`], matches with [`route`] and [`path`], decides with
//! [`decide`] and answers through [`respond`] (the one outcome → response map);
//! [`exchange_endpoint`] is the token exchange; [`admin`] serves metrics, health and the
//! JWKS; [`dev`] is the demo.
//! docs/ARCHITECTURE.md has the full map and the invariants.

pub mod admin;
pub mod cli;
pub mod config;
pub mod decide;
pub mod dev;
pub mod exchange_endpoint;
pub mod http;
pub mod jwks;
pub mod keystore;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod route;
pub mod server;
pub mod stream;
pub mod telemetry;
mod tidy;
pub mod tls;
pub mod tunnel;
