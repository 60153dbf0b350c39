//! The `sessiongate` command line (clap): run, dev, config check, keys, session, token.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use exchange::store::SessionStore;
use exchange::store::redis::RedisStore;

use crate::config::Config;
use crate::server::{self, SessionBackend};

/// sessiongate: session cookies in, short-lived JWTs out.
#[derive(Debug, Parser)]
#[command(name = "sessiongate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The config file argument shared by most commands.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Path to the TOML config.
    #[arg(long, env = "SESSIONGATE_CONFIG", value_name = "PATH")]
    pub config: PathBuf,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (proxy listener + admin listener).
    Run {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// Take over the listening sockets of a running instance (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// A one-command local demo: in-memory sessions, an echo upstream, printed curl commands.
    Dev(crate::dev::DevArgs),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and drive the signing keyring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create and revoke sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Debug tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate; print the effective config, or every error with where it is.
    Check(ConfigArg),
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List keys with their states.
    List(ConfigArg),
    /// Add a new key; it signs after `publish_ahead` (or at once with --now).
    Rotate {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// Make the new key current immediately (verifiers that cache the JWKS may reject
        /// its tokens until they refetch).
        #[arg(long)]
        now: bool,
    },
    /// Emergency: stop publishing and using a key at once.
    Retire {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// The key id (kids are base64url, so one may start with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

/// `session` subcommands.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Write a session in the documented schema and print its cookie value.
    Create {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// The subject.
        #[arg(long, allow_hyphen_values = true)]
        sub: String,
        /// Extra claim `name=value`; the value is parsed as JSON when it can be, else kept as a string.
        #[arg(long = "claim", value_name = "K=V")]
        claims: Vec<String>,
        /// Lifetime.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Revoke one session; `-` reads the cookie value from stdin (keeps it out of shell history).
    Revoke {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// The cookie value (which may start with `-`), or `-`.
        #[arg(allow_hyphen_values = true)]
        token: String,
    },
    /// Revoke every session of a subject.
    RevokeUser {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// The subject.
        #[arg(allow_hyphen_values = true)]
        sub: String,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Decode a JWT's header and claims without verifying it; `-` reads stdin.
    Inspect {
        /// The JWT, or `-`.
        #[arg(allow_hyphen_values = true)]
        jwt: String,
    },
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs a parsed command line.
///
/// # Errors
/// [`UsageError`] (exit 2) for bad input or config; anything else is a runtime failure (exit 1).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, upgrade } => {
            let config_path = config.config;
            let config = load(&config_path)?;
            let _log = crate::telemetry::init(&config.log);
            let assembly =
                server::assemble(&config, Some(&config_path), SessionBackend::Redis, upgrade)?;
            tracing::info!(listen = %config.server.listen, admin = %config.server.admin_listen, "sessiongate starting.");
            server::run(assembly);
            Ok(())
        }
        Command::Dev(args) => crate::dev::run(args),
        Command::Config(ConfigCommand::Check(arg)) => {
            let config = load(&arg.config)?;
            print!("{}", config.to_effective_toml());
            Ok(())
        }
        Command::Keys(cmd) => keys_command(cmd),
        Command::Session(cmd) => session_command(cmd),
        Command::Token(TokenCommand::Inspect { jwt }) => {
            let jwt = read_arg(&jwt)?;
            println!("{}", inspect(&jwt)?);
            Ok(())
        }
    }
}

/// Loads and validates a config file, turning every error into one [`UsageError`].
///
/// # Errors
/// [`UsageError`] listing every problem.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|errors| {
        let mut msg = format!("{} has {} error(s):", path.display(), errors.len());
        for e in errors {
            msg.push_str("\n  ");
            msg.push_str(&e.to_string());
        }
        anyhow::Error::new(UsageError(msg))
    })
}

fn read_arg(value: &str) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value.trim().to_owned());
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading stdin")?;
    Ok(s.trim().to_owned())
}

/// Decodes a JWT's header and claims as pretty JSON, without verification.
///
/// # Errors
/// [`UsageError`] when it is not a JWT.
pub fn inspect(jwt: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(
            UsageError("not a compact JWT (expected three dot-separated parts)".into()).into(),
        );
    }
    let decode = |part: &str, what: &str| -> anyhow::Result<serde_json::Value> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| UsageError(format!("{what} is not base64url")))?;
        serde_json::from_slice(&raw).map_err(|_| UsageError(format!("{what} is not JSON")).into())
    };
    let out = serde_json::json!({
        "header": decode(parts[0], "header")?,
        "claims": decode(parts[1], "claims")?,
        "verified": false,
    });
    Ok(serde_json::to_string_pretty(&out)?)
}

/// A runtime and a connected Redis store for one-shot commands.
fn redis_for(config: &Config) -> anyhow::Result<(tokio::runtime::Runtime, RedisStore)> {
    let rt = server::background_runtime()?;
    let store = rt.block_on(async {
        let store = RedisStore::connect(
            &server::redis_settings(config),
            Arc::new(exchange::Metrics::unregistered()),
        )?;
        store.wait_connected(Duration::from_secs(5)).await?;
        Ok::<_, exchange::Error>(store)
    })?;
    Ok((rt, store))
}

fn session_command(cmd: SessionCommand) -> anyhow::Result<()> {
    match cmd {
        SessionCommand::Create {
            config,
            sub,
            claims,
            ttl,
        } => {
            let config = load(&config.config)?;
            let mut map = serde_json::Map::new();
            for pair in claims {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    UsageError(format!("--claim expects name=value, got `{pair}`"))
                })?;
                let value = serde_json::from_str(v)
                    .unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
                map.insert(k.to_owned(), value);
            }
            if config.session.format != crate::config::SessionFormat::Sessiongate {
                return Err(UsageError(format!(
                    "session create writes sessions in the sessiongate format; with session.format = \"{}\" sessions are written by {}, not by sessiongate",
                    config.session.format.as_str(),
                    match config.session.format {
                        crate::config::SessionFormat::Express => "your Express app (express-session with connect-redis)",
                        _ => "your Django app (its cache or cached_db session engine)",
                    }
                ))
                .into());
            }
            let (rt, store) = redis_for(&config)?;
            let settings = server::session_settings(&config, server::format_settings(&config)?);
            let created = rt
                .block_on(exchange::revocation::create_session(
                    &store,
                    &settings.keyspace(),
                    &settings.fields,
                    &sub,
                    map,
                    ttl,
                    exchange::unix_now(),
                ))
                .map_err(|e| match e {
                    exchange::Error::Config(m) => anyhow::Error::new(UsageError(m)),
                    other => other.into(),
                })?;
            println!("{}", created.token.expose());
            Ok(())
        }
        SessionCommand::Revoke { config, token } => {
            let config = load(&config.config)?;
            let raw = read_arg(&token)?;
            let settings = server::session_settings(&config, server::format_settings(&config)?);
            let keyspace = settings.keyspace();
            // A cookie value as the browser sends it, in the configured format; a badly
            // signed one deletes nothing.
            let id = keyspace.format().session_id(raw.trim()).map_err(|e| {
                UsageError(format!(
                    "not a session cookie of the {} format ({e}); nothing was deleted",
                    config.session.format.as_str()
                ))
            })?;
            let (rt, store) = redis_for(&config)?;
            let existed = rt.block_on(exchange::revocation::revoke(&store, &keyspace, &id))?;
            println!(
                "{}",
                if existed {
                    "revoked"
                } else {
                    "no such session"
                }
            );
            Ok(())
        }
        SessionCommand::RevokeUser { config, sub } => {
            let config = load(&config.config)?;
            let settings = server::session_settings(&config, server::format_settings(&config)?);
            let (rt, store) = redis_for(&config)?;
            let started = std::time::Instant::now();
            let mut last = started;
            let mut progress = |p: exchange::revocation::Progress| {
                // Every 2 s at most: a million keys scan in seconds.
                if last.elapsed() >= Duration::from_secs(2) {
                    last = std::time::Instant::now();
                    eprintln!(
                        "scanned {} session keys, deleted {} ({:.1}s)",
                        p.examined,
                        p.deleted,
                        p.elapsed.as_secs_f64()
                    );
                }
            };
            let revoked = rt.block_on(exchange::revocation::revoke_user(
                &store,
                &settings.keyspace(),
                &settings.fields,
                &sub,
                &mut progress,
            ))?;
            let via = match revoked.via {
                exchange::revocation::Via::Index => "the per-subject index",
                exchange::revocation::Via::Scan => "a scan of the prefix",
            };
            println!(
                "revoked {} session(s) in {:.2}s ({} session keys examined through {via})",
                revoked.deleted,
                started.elapsed().as_secs_f64(),
                revoked.examined,
            );
            Ok(())
        }
    }
}

fn keys_command(cmd: KeysCommand) -> anyhow::Result<()> {
    let (config_path, action) = match &cmd {
        KeysCommand::List(c) => (&c.config, "list"),
        KeysCommand::Rotate { config, .. } => (&config.config, "rotate"),
        KeysCommand::Retire { config, .. } => (&config.config, "retire"),
    };
    let config = load(config_path)?;
    keys::install_crypto_provider();
    // The Redis connection lives on the runtime that created it: keep that one.
    let (rt, redis) = match config.keys.store {
        crate::config::KeyStoreConfig::Redis => {
            let (rt, store) = redis_for(&config)?;
            (rt, Some(store))
        }
        crate::config::KeyStoreConfig::File { .. } => (server::background_runtime()?, None),
    };
    let store = rt.block_on(server::key_store(&config, redis.as_ref()))?;
    let keyring = Arc::new(keys::Keyring::new(keys::KeySet::empty()));
    let manager = keys::KeyManager::new(store, keyring, server::rotation_policy(&config));
    let now = keys::unix_now();
    rt.block_on(async {
        match cmd {
            KeysCommand::List(_) => {
                let records = manager.store().load().await?;
                let set = keys::KeySet::build(&records, now, manager.policy())?;
                println!(
                    "{:<46} {:<6} {:<9} {:<21} {:<21}",
                    "KID", "ALG", "STATE", "CREATED", "ACTIVATES"
                );
                for r in &records {
                    let state = if r.retired_at.is_some() {
                        "retired"
                    } else {
                        set.get(r.kid.as_str())
                            .map_or("expired", |k| k.state().as_str())
                    };
                    println!(
                        "{:<46} {:<6} {:<9} {:<21} {:<21}",
                        r.kid.as_str(),
                        r.alg.as_str(),
                        state,
                        fmt_time(r.created_at),
                        fmt_time(r.activate_at)
                    );
                }
            }
            KeysCommand::Rotate { now: immediate, .. } => {
                let rotation = retry_busy(|| manager.rotate(keys::unix_now(), immediate)).await?;
                let verb = if rotation.created {
                    "created"
                } else {
                    "already pending"
                };
                println!(
                    "{verb} {} (signs from {})",
                    rotation.kid,
                    fmt_time(rotation.activate_at)
                );
            }
            KeysCommand::Retire { kid, .. } => {
                let kid = keys::Kid::from(kid.as_str());
                retry_busy(|| manager.retire(&kid, keys::unix_now())).await?;
                println!("retired {kid}");
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .with_context(|| format!("keys {action}"))
}

/// How long `keys rotate|retire` wait for another process's rotation lease: a holder
/// keeps it for milliseconds, and a crashed holder's lease lapses after
/// [`keys::LEASE_TTL`].
const LEASE_WAIT: Duration = Duration::from_secs(12);

/// Runs `op` (which reads the clock afresh) again while another process holds the
/// rotation lease, for at most [`LEASE_WAIT`].
async fn retry_busy<T, F, Fut>(mut op: F) -> Result<T, keys::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, keys::Error>>,
{
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    loop {
        match op().await {
            Err(keys::Error::Busy) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

fn fmt_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Checks that a store answers (used by tests and `dev`).
///
/// # Errors
/// The store's error.
pub async fn ping(store: &dyn SessionStore) -> Result<(), exchange::Error> {
    store.ping().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_may_start_with_a_hyphen() {
        // Kids and cookie values are base64url: `-` is one of their characters.
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("sessiongate").chain(args.iter().copied()))
                .map(|cli| format!("{:?}", cli.command))
        };
        let cases: &[(&[&str], &str)] = &[
            (
                &["keys", "retire", "--config", "c", "-_KLKR5Iw"],
                "kid: \"-_KLKR5Iw\"",
            ),
            (
                &["keys", "retire", "-_KLKR5Iw", "--config", "c"],
                "kid: \"-_KLKR5Iw\"",
            ),
            (
                &["session", "revoke", "--config", "c", "-abc"],
                "token: \"-abc\"",
            ),
            (&["session", "revoke", "--config", "c", "-"], "token: \"-\""),
            (
                &["session", "revoke-user", "--config", "c", "-u"],
                "sub: \"-u\"",
            ),
            (
                &["session", "create", "--config", "c", "--sub", "-u"],
                "sub: \"-u\"",
            ),
            (&["token", "inspect", "-"], "jwt: \"-\""),
        ];
        for (args, want) in cases {
            let got = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(got.contains(want), "{args:?}: {got}");
        }
    }

    #[test]
    fn inspect_decodes_and_rejects() {
        // {"alg":"ES256","typ":"at+jwt","kid":"k"} . {"sub":"u"} . sig
        let jwt = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImsifQ.eyJzdWIiOiJ1In0.c2ln";
        let out = inspect(jwt).unwrap();
        assert!(out.contains("\"sub\": \"u\""), "{out}");
        assert!(out.contains("at+jwt"));
        for bad in ["", "a.b", "a.b.c", "!!!.e30.x"] {
            assert!(inspect(bad).is_err(), "{bad}");
        }
    }
}
