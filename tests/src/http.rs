//! A bare HTTP/1.1 client for the handshake's refusals, so a test sees the
//! status line, headers and body exactly as the broker wrote them.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::WAIT;

/// The headers a browser sends to upgrade to a WebSocket.
pub const UPGRADE_HEADERS: &[(&str, &str)] = &[
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked; empty for `101`.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (any case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    /// The body as text.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {:?}", self.text()))
    }
}

/// `GET target` with `headers` (plus `Host`, and `Connection: close` unless
/// the caller sets `Connection`).
pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(addr, "GET", target, headers, b"").await
}

/// `POST target` with `body` and `headers`.
pub async fn post(addr: SocketAddr, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    request(addr, "POST", target, headers, body).await
}

/// Any request: `method target` with `headers` and `body` (a
/// `Content-Length` is added for a non-empty body or a POST).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    match tokio::time::timeout(WAIT, exchange(addr, method, target, headers, body)).await {
        Ok(response) => response,
        Err(_) => panic!("no complete HTTP response to {method} {target} within {WAIT:?}"),
    }
}

/// `GET target` as a WebSocket upgrade request, with `extra` headers.
pub async fn upgrade(addr: SocketAddr, target: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let mut headers = UPGRADE_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    get(addr, target, &headers).await
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream =
        TcpStream::connect(addr).await.unwrap_or_else(|error| panic!("connecting to {addr}: {error}"));
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("connection")) {
        request.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer and close before reading a refused body.
    if stream.write_all(&bytes).await.is_err() {
        return HttpResponse { status: 0, headers: Vec::new(), body: Vec::new() };
    }

    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        let read = read_more(&mut stream, &mut buf).await;
        assert!(
            read > 0,
            "connection closed before the response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut response = HttpResponse { status, headers, body: Vec::new() };
    let mut rest = buf[head_end + 4..].to_vec();
    if status == 101 {
        return response;
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().expect("numeric content-length");
        while rest.len() < length {
            let read = read_more(&mut stream, &mut rest).await;
            assert!(read > 0, "connection closed inside a {length}-byte body");
        }
        rest.truncate(length);
        response.body = rest;
    } else if response.header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        response.body = dechunk(&mut stream, rest).await;
    } else {
        while read_more(&mut stream, &mut rest).await > 0 {}
        response.body = rest;
    }
    response
}

async fn dechunk(stream: &mut TcpStream, mut rest: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = find(&rest, b"\r\n") {
                break at;
            }
            assert!(read_more(stream, &mut rest).await > 0, "connection closed inside a chunk header");
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        while rest.len() < line_end + 2 + size + 2 {
            if size == 0 && rest.len() >= line_end + 2 {
                break;
            }
            assert!(read_more(stream, &mut rest).await > 0, "connection closed inside a chunk");
        }
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest.drain(..line_end + 2 + size + 2);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0_u8; 8192];
    // A reset after a complete response is the server closing; treat it as EOF.
    let read = stream.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..read]);
    read
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
