//! Real HTTP/1.1 upstreams that record every request they get.
//!
//! [`Upstream::echo`] answers 200 with a JSON description of the request:
//! `{"upstream", "method", "path", "query", "headers": {name: [values]}, "body",
//! "body_len", "body_sha256"}`. [`Upstream::fixed`] answers a fixed status, headers and
//! body. Both run hyper 1 on a current-thread tokio runtime in a background thread, bound
//! to `127.0.0.1:0`, and stop (runtime dropped, thread joined) on [`Drop`].
//! [`Upstream::echo_tls`] is the echo upstream behind TLS. Every bearer token an upstream
//! receives is recorded as a secret (`super::secrets`) that no gateway log may contain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::redis::sha256_hex;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    /// The method.
    pub(crate) method: String,
    /// The path, as sent on the request line (not decoded).
    pub(crate) path: String,
    /// The query string, without `?`.
    pub(crate) query: Option<String>,
    /// Every header, in order, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The whole body.
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    /// Every value of a header (case-insensitive name).
    pub(crate) fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header, `None` when absent.
    ///
    /// # Panics
    /// If the header appears more than once.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let values = self.header_values(name);
        assert!(
            values.len() <= 1,
            "header {name} appears {} times: {values:?}",
            values.len()
        );
        values.first().copied()
    }

    /// The JWT of the single `Authorization: Bearer` header.
    ///
    /// # Panics
    /// If there is no `Authorization` header, more than one, or it is not `Bearer`.
    pub(crate) fn bearer(&self) -> &str {
        let auth = self
            .header("authorization")
            .unwrap_or_else(|| panic!("no Authorization header in {self:#?}"));
        auth.strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("Authorization is not Bearer: {auth:?}"))
    }

    /// Every header value joined, for "this secret appears nowhere" checks.
    pub(crate) fn all_header_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }
}

/// What an upstream answers.
#[derive(Clone, Debug)]
enum Mode {
    Echo,
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
}

struct State {
    name: String,
    mode: Mode,
    requests: Mutex<Vec<Recorded>>,
    handshake_failures: AtomicUsize,
}

/// A running upstream.
pub(crate) struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// An upstream that echoes every request as JSON.
    pub(crate) fn echo(name: &str) -> Self {
        Self::start(name, Mode::Echo, None)
    }

    /// An echo upstream that speaks TLS with `config` (its certificate, ALPN).
    pub(crate) fn echo_tls(name: &str, config: tokio_rustls::rustls::ServerConfig) -> Self {
        Self::start(
            name,
            Mode::Echo,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    /// How many TLS handshakes failed (the client gave up, e.g. on an untrusted certificate).
    pub(crate) fn handshake_failures(&self) -> usize {
        self.state.handshake_failures.load(Ordering::SeqCst)
    }

    /// An upstream that answers `status` with an empty body.
    pub(crate) fn fixed(name: &str, status: u16) -> Self {
        Self::fixed_with(name, status, &[], Vec::new())
    }

    /// An upstream that answers `status`, `headers` and `body`.
    pub(crate) fn fixed_with(
        name: &str,
        status: u16,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Self {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start(
            name,
            Mode::Fixed {
                status,
                headers,
                body: Bytes::from(body),
            },
            None,
        )
    }

    /// Its address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (echoed as `"upstream"`).
    pub(crate) fn name(&self) -> &str {
        &self.state.name
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// The last request received.
    ///
    /// # Panics
    /// If none was received.
    pub(crate) fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("upstream {} received no request", self.name()))
    }

    /// How many requests were received so far.
    pub(crate) fn count(&self) -> usize {
        self.state.requests.lock().len()
    }

    fn start(name: &str, mode: Mode, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            mode,
            requests: Mutex::new(Vec::new()),
            handshake_failures: AtomicUsize::new(0),
        });
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let state = Arc::clone(&thread_state);
                                let tls = tls.clone();
                                tokio::spawn(async move {
                                    let svc_state = Arc::clone(&state);
                                    let svc = service_fn(move |req| handle(Arc::clone(&svc_state), req));
                                    match tls {
                                        None => {
                                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                                        }
                                        Some(acceptor) => match acceptor.accept(stream).await {
                                            Ok(stream) => {
                                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                                            }
                                            Err(_) => {
                                                state.handshake_failures.fetch_add(1, Ordering::SeqCst);
                                            }
                                        },
                                    }
                                });
                            }
                        }
                    }
                });
            })
            .expect("spawn upstream thread");
        Upstream {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"body read failed")));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    for auth in recorded.header_values("authorization") {
        let token = auth.strip_prefix("Bearer ").unwrap_or(auth);
        super::secrets::record("bearer token", token);
    }
    state.requests.lock().push(recorded.clone());

    let resp = match &state.mode {
        Mode::Echo => {
            let mut headers = Map::new();
            for (k, v) in &recorded.headers {
                let entry = headers
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = entry {
                    values.push(Value::String(v.clone()));
                }
            }
            let doc = json!({
                "upstream": state.name,
                "method": recorded.method,
                "path": recorded.path,
                "query": recorded.query,
                "headers": headers,
                "body": String::from_utf8_lossy(&recorded.body),
                "body_len": recorded.body.len(),
                "body_sha256": sha256_hex(&recorded.body),
            });
            let mut resp = Response::new(Full::new(Bytes::from(doc.to_string())));
            resp.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp.headers_mut().insert(
                "x-upstream",
                hyper::header::HeaderValue::from_str(&state.name)
                    .expect("upstream name is a header value"),
            );
            resp
        }
        Mode::Fixed {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(Full::new(body.clone()));
            *resp.status_mut() = StatusCode::from_u16(*status).expect("valid status");
            for (k, v) in headers {
                resp.headers_mut().append(
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    hyper::header::HeaderValue::from_str(v).expect("header value"),
                );
            }
            resp
        }
    };
    Ok(resp)
}
