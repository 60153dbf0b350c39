//! The fast upstream every proxy under test forwards to, run in its own process.
//!
//! hyper 1 HTTP/1.1 with keep-alive on a two-worker tokio runtime. It answers every
//! request with 200 and a fixed 64-byte body, records nothing (the integration harness's
//! echo upstream keeps every request, which would grow without bound under load), and
//! says in `x-bearer: yes|no` whether the request carried `Authorization: Bearer`, so the
//! harness can check before measuring that the gateway really minted and forwarded a token.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The body of every answer: 64 bytes.
const BODY: &[u8] = b"{\"ok\":true,\"pad\":\"0123456789abcdef0123456789abcdef0123456789\"}\n";

/// Serves on `listen` until the process is killed.
pub(crate) fn serve(listen: SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("upstream runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("upstream bind {listen}: {e}"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    // Drain the body so the connection can be reused.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-bearer",
        HeaderValue::from_static(if bearer { "yes" } else { "no" }),
    );
    Ok(resp)
}
