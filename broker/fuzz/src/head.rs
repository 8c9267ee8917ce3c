//! Structured HTTP/1 request heads: the upgrade a client sends, with every
//! part bent — methods, targets and percent-encoded queries (invalid UTF-8
//! included), versions, header lines (many, long, folded, binary), bearer
//! tokens, line endings.

use std::fmt::Write as _;

use arbitrary::Arbitrary;

/// Heads are cut here: four times the broker's default limit is plenty to
/// cross it.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A request head, possibly followed by bytes a client sent early.
#[derive(Arbitrary, Debug)]
pub enum RequestHead {
    /// Any bytes.
    Raw(Vec<u8>),
    /// A structured head.
    Head(Head),
}

/// The parts of a structured head.
#[derive(Arbitrary, Debug)]
pub struct Head {
    method: Method,
    path: Path,
    query: Vec<(QueryPart, QueryPart)>,
    version: Version,
    headers: Vec<HeaderLine>,
    /// One header line written many times (over the size or count limit).
    repeated: Option<(u16, HeaderLine)>,
    ending: LineEnding,
    /// Bytes after the head (a WebSocket frame sent early, say).
    after: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Engine,
    EngineNoSlash,
    Health,
    Metrics,
    Other(String),
    Absolute,
    Asterisk,
}

#[derive(Arbitrary, Debug)]
enum QueryPart {
    Eio,
    Four,
    Transport,
    Websocket,
    Token,
    Sid,
    /// Text, percent-encoded where needed.
    Text(String),
    /// Text as is.
    Raw(String),
    /// Every byte percent-encoded (the bytes need not be UTF-8).
    Bytes(Vec<u8>),
    /// A lone or truncated `%`.
    BadPercent(u8),
}

#[derive(Arbitrary, Debug)]
enum Version {
    Http11,
    Http10,
    Http2,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderLine {
    Host,
    Upgrade,
    Connection,
    WebSocketVersion,
    WebSocketKey,
    Origin(String),
    Bearer(String),
    /// `Authorization` with any bytes.
    Authorization(Vec<u8>),
    /// Any name, any value bytes.
    Raw(String, Vec<u8>),
    /// A value `len` bytes long.
    Long(u16),
    /// An obsolete folded continuation line.
    Folded(String),
    /// A line with no colon.
    NoColon(String),
}

#[derive(Arbitrary, Debug)]
enum LineEnding {
    Crlf,
    Lf,
    /// The head is never finished.
    Unfinished,
    /// CRLF inside, something else at the end.
    Mixed(Vec<u8>),
}

impl RequestHead {
    /// The bytes on the wire.
    #[must_use]
    pub fn render(&self) -> Vec<u8> {
        match self {
            Self::Raw(bytes) => bytes.clone(),
            Self::Head(head) => head.render(),
        }
    }
}

impl Head {
    fn render(&self) -> Vec<u8> {
        let newline: &[u8] = match self.ending {
            LineEnding::Lf => b"\n",
            _ => b"\r\n",
        };
        let mut out = Vec::new();
        match &self.method {
            Method::Get => out.extend_from_slice(b"GET"),
            Method::Post => out.extend_from_slice(b"POST"),
            Method::Options => out.extend_from_slice(b"OPTIONS"),
            Method::Other(method) => out.extend_from_slice(method.as_bytes()),
        }
        out.push(b' ');
        match &self.path {
            Path::Engine => out.extend_from_slice(b"/socket.io/"),
            Path::EngineNoSlash => out.extend_from_slice(b"/socket.io"),
            Path::Health => out.extend_from_slice(b"/health"),
            Path::Metrics => out.extend_from_slice(b"/metrics"),
            Path::Other(path) => out.extend_from_slice(path.as_bytes()),
            Path::Absolute => out.extend_from_slice(b"http://127.0.0.1/socket.io/"),
            Path::Asterisk => out.push(b'*'),
        }
        if !self.query.is_empty() {
            out.push(b'?');
            for (index, (key, value)) in self.query.iter().enumerate() {
                if index > 0 {
                    out.push(b'&');
                }
                key.write(&mut out);
                out.push(b'=');
                value.write(&mut out);
            }
        }
        out.push(b' ');
        match &self.version {
            Version::Http11 => out.extend_from_slice(b"HTTP/1.1"),
            Version::Http10 => out.extend_from_slice(b"HTTP/1.0"),
            Version::Http2 => out.extend_from_slice(b"HTTP/2.0"),
            Version::Other(version) => out.extend_from_slice(version.as_bytes()),
        }
        out.extend_from_slice(newline);
        let repeated = self.repeated.iter().flat_map(|(count, line)| std::iter::repeat_n(line, usize::from(*count)));
        for line in self.headers.iter().chain(repeated) {
            if out.len() > MAX_HEAD_BYTES {
                break;
            }
            line.write(&mut out);
            out.extend_from_slice(newline);
        }
        match &self.ending {
            LineEnding::Crlf | LineEnding::Lf => out.extend_from_slice(newline),
            LineEnding::Unfinished => {}
            LineEnding::Mixed(bytes) => out.extend_from_slice(bytes),
        }
        out.extend_from_slice(&self.after);
        out
    }
}

impl QueryPart {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Eio => out.extend_from_slice(b"EIO"),
            Self::Four => out.push(b'4'),
            Self::Transport => out.extend_from_slice(b"transport"),
            Self::Websocket => out.extend_from_slice(b"websocket"),
            Self::Token => out.extend_from_slice(b"token"),
            Self::Sid => out.extend_from_slice(b"sid"),
            Self::Text(text) => percent_encode(text.as_bytes(), out),
            Self::Raw(text) => out.extend_from_slice(text.as_bytes()),
            Self::Bytes(bytes) => {
                for byte in bytes {
                    let mut hex = String::new();
                    let _ = write!(hex, "%{byte:02X}");
                    out.extend_from_slice(hex.as_bytes());
                }
            }
            Self::BadPercent(byte) => {
                out.push(b'%');
                if byte.is_ascii_graphic() {
                    out.push(*byte);
                }
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(byte) {
            out.push(*byte);
        } else {
            let mut hex = String::new();
            let _ = write!(hex, "%{byte:02X}");
            out.extend_from_slice(hex.as_bytes());
        }
    }
}

impl HeaderLine {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Host => out.extend_from_slice(b"Host: 127.0.0.1:3000"),
            Self::Upgrade => out.extend_from_slice(b"Upgrade: websocket"),
            Self::Connection => out.extend_from_slice(b"Connection: Upgrade"),
            Self::WebSocketVersion => out.extend_from_slice(b"Sec-WebSocket-Version: 13"),
            Self::WebSocketKey => out.extend_from_slice(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
            Self::Origin(origin) => {
                out.extend_from_slice(b"Origin: ");
                out.extend_from_slice(origin.as_bytes());
            }
            Self::Bearer(token) => {
                out.extend_from_slice(b"Authorization: Bearer ");
                out.extend_from_slice(token.as_bytes());
            }
            Self::Authorization(value) => {
                out.extend_from_slice(b"Authorization: ");
                out.extend_from_slice(value);
            }
            Self::Raw(name, value) => {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
            }
            Self::Long(len) => {
                out.extend_from_slice(b"X-Long: ");
                out.extend(std::iter::repeat_n(b'a', usize::from(*len)));
            }
            Self::Folded(text) => {
                out.extend_from_slice(b"X-Folded: a\r\n ");
                out.extend_from_slice(text.as_bytes());
            }
            Self::NoColon(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}
