//! Raw HTTP/1.1 over a `TcpStream`, for requests an HTTP client would "fix".
//!
//! reqwest (through the `url` crate) resolves `..` and `%2e%2e` segments before sending,
//! so path tricks, garbage request lines and hand-made upgrade requests are written here
//! byte for byte. The response parser handles `Content-Length`, chunked and
//! read-to-close bodies, which is all a `Connection: close` exchange needs.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    /// The status code.
    pub(crate) status: u16,
    /// Headers, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A `Connection: close` request: `METHOD path HTTP/1.1`, `Host`, the given headers.
pub(crate) fn request_bytes(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

/// Sends a `GET path` with `headers` and reads the response.
///
/// # Errors
/// If the connection fails or the answer is not an HTTP response.
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<RawResponse, String> {
    send(addr, &request_bytes("GET", addr, path, headers))
}

/// Writes `bytes` to a new connection, then reads and parses one response.
///
/// # Errors
/// If the connection fails, is closed before a full response head, or times out.
pub(crate) fn send(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse, String> {
    let mut stream = connect(addr)?;
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    read_response(&mut stream)
}

/// A connection with 10 s read and write timeouts.
///
/// # Errors
/// If the connection fails.
pub(crate) fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Reads bytes up to and including the first `\r\n\r\n`.
///
/// # Errors
/// On EOF or timeout before the end of the head.
pub(crate) fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&head)
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => {
                return Err(format!(
                    "read head: {e} after {:?}",
                    String::from_utf8_lossy(&head)
                ));
            }
        }
        if head.len() > 1 << 20 {
            return Err("response head over 1 MiB".to_owned());
        }
    }
    Ok(head)
}

/// Parses a response head into status and headers.
///
/// # Errors
/// If the status line is not `HTTP/1.x NNN ...`.
pub(crate) fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

/// Reads one full response (head and body) from `stream`.
///
/// # Errors
/// On a malformed or truncated response.
pub(crate) fn read_response(stream: &mut TcpStream) -> Result<RawResponse, String> {
    let head = read_head(stream)?;
    let (status, headers) = parse_head(&head)?;
    let mut resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = read_chunked(stream)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        resp.body = body;
    } else {
        let mut body = Vec::new();
        stream
            .read_to_end(&mut body)
            .map_err(|e| format!("read body to close: {e}"))?;
        resp.body = body;
    }
    Ok(resp)
}

fn read_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Err("connection closed inside a chunked body".to_owned()),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("read chunk line: {e}")),
        }
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn read_chunked(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(stream)?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(stream)?.is_empty() {}
            return Ok(body);
        }
        let mut chunk = vec![0u8; size];
        stream
            .read_exact(&mut chunk)
            .map_err(|e| format!("read chunk: {e}"))?;
        body.extend_from_slice(&chunk);
        read_line(stream)?;
    }
}
