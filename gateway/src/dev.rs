//! `sessiongate dev`: the whole gateway in one command, with no Redis and no config file.
//!
//! It runs the real proxy with an in-memory session store (behind the same trait as
//! Redis), a file keyring in a temp dir, a built-in echo upstream that verifies and
//! decodes the token it receives, and a demo session; then prints curl commands.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Args;
use exchange::store::memory::MemoryStore;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::config::Config;
use crate::server::{self, SessionBackend};

/// Options of `sessiongate dev`.
#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// Proxy listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Signing algorithm: ES256 or EdDSA.
    #[arg(long, default_value = "ES256")]
    pub algorithm: String,
}

/// The demo's config: three routes onto the echo upstream.
pub fn dev_config(args: &DevArgs, echo: SocketAddr, key_dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
threads = 2
grace_period = "1s"

[session]
claims = ["roles", "email"]
login_url = "/login"

[token]
issuer = "http://{listen}"
algorithm = "{alg}"

[keys]
store = "file"
dir = "{dir}"

[exchange]
allowed_origins = ["http://{listen}"]

[[route]]
name = "echo"
path_prefix = "/api"
upstreams = ["{echo}"]
audience = "echo"

[[route]]
name = "critical"
path_prefix = "/api/critical"
upstreams = ["{echo}"]
audience = "payments"
critical = true

[[route]]
name = "public"
path_prefix = "/public"
upstreams = ["{echo}"]
auth = "none"
"#,
        listen = args.listen,
        admin = args.admin_listen,
        alg = args.algorithm,
        dir = key_dir.display(),
    )
}

/// Runs the demo until Ctrl-C.
///
/// # Errors
/// When a port is taken or the demo cannot start.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let echo_addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let key_dir = std::env::temp_dir().join(format!("sessiongate-dev-keys-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir)?;
    let config = Config::parse(&dev_config(&args, echo_addr, &key_dir)).map_err(|errors| {
        let msg: Vec<String> = errors.iter().map(ToString::to_string).collect();
        crate::cli::UsageError(format!("dev config invalid: {}", msg.join("; ")))
    })?;
    let _log = crate::telemetry::init(&config.log);

    let store = Arc::new(MemoryStore::new());
    let mut assembly =
        server::assemble(&config, None, SessionBackend::Memory(store.clone()), false)?;

    let mut claims = serde_json::Map::new();
    claims.insert("roles".into(), serde_json::json!(["admin"]));
    claims.insert("email".into(), serde_json::json!("demo@example.com"));
    let settings = assembly.exchange.settings();
    let created = assembly
        .background
        .block_on(exchange::revocation::create_session(
            &*store,
            &settings.keyspace(),
            &settings.fields,
            "demo-user",
            claims,
            Duration::from_secs(8 * 3600),
            exchange::unix_now(),
        ))?;

    let mut echo = Service::new(
        "sessiongate dev echo upstream".to_owned(),
        Echo {
            keyring: assembly.keys.keyring().clone(),
        },
    );
    echo.add_tcp(&echo_addr.to_string());
    echo.threads = Some(1);
    assembly.server.add_service(echo);

    let cookie = format!("{}={}", config.session.cookie, created.token.expose());
    let l = args.listen;
    let a = args.admin_listen;
    println!(
        r#"
sessiongate dev is running.
  proxy  http://{l}    admin  http://{a}    echo upstream {echo_addr}
  session store: in memory; keys: {dir}

A demo session for "demo-user" exists. Try:

  # with the session: the echo upstream shows the verified token it received
  curl -s http://{l}/api/hello -H 'Cookie: {cookie}'

  # without it: 401 (or a redirect to /login for browser navigations)
  curl -si http://{l}/api/hello
  curl -si http://{l}/api/hello -H 'Accept: text/html'

  # a critical route: re-checked on every request, token carries "chk"
  curl -s http://{l}/api/critical/pay -H 'Cookie: {cookie}'

  # a public route: no session needed, no token sent
  curl -s http://{l}/public/info

  # exchange the cookie for a token (for single-page apps)
  curl -s -X POST http://{l}/auth/token -H 'Cookie: {cookie}' \
       -H 'Origin: http://{l}' -d '{{"audience":"echo"}}'

  # the JWKS, metrics and readiness
  curl -s http://{a}/.well-known/jwks.json
  curl -s http://{a}/metrics | grep ^sessiongate_
  curl -s http://{a}/readyz

Ctrl-C stops it.
"#,
        dir = key_dir.display(),
    );
    server::run(assembly);
    let _ = std::fs::remove_dir_all(&key_dir);
    Ok(())
}

/// The demo upstream: answers with the request it saw and the token, verified
/// against the gateway's own keyring and decoded.
struct Echo {
    keyring: Arc<keys::Keyring>,
}

impl Echo {
    fn token_report(&self, auth: Option<&str>) -> serde_json::Value {
        let Some(jwt) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
            return serde_json::Value::Null;
        };
        let header = match jsonwebtoken::decode_header(jwt) {
            Ok(h) => h,
            Err(e) => return serde_json::json!({ "error": e.to_string() }),
        };
        let set = self.keyring.load();
        let key = header.kid.as_deref().and_then(|kid| set.get(kid));
        let verified = key.and_then(|k| {
            let decoding = jsonwebtoken::DecodingKey::from_jwk(k.jwk()).ok()?;
            let mut validation = jsonwebtoken::Validation::new(k.alg().to_jwt());
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(jwt, &decoding, &validation).ok()
        });
        match verified {
            Some(data) => serde_json::json!({
                "verified": true,
                "header": { "alg": format!("{:?}", header.alg), "typ": header.typ, "kid": header.kid },
                "claims": data.claims,
            }),
            None => serde_json::json!({ "verified": false, "kid": header.kid }),
        }
    }
}

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = self.token_report(auth);
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if k == "authorization" {
                    "Bearer <redacted: see token>".to_owned()
                } else {
                    v.to_str().unwrap_or("<binary>").to_owned()
                };
                (k.as_str().to_owned(), serde_json::Value::String(shown))
            })
            .collect();
        let body = serde_json::json!({
            "upstream": "sessiongate dev echo",
            "method": req.method.as_str(),
            "path": req.uri.path_and_query().map_or("/", |p| p.as_str()),
            "headers": headers,
            "token": token,
        });
        let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
        bytes.push(b'\n');
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("content-length", bytes.len())
            .body(bytes)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
