//! The target's own view of itself: the gauges and counters of its
//! Prometheus `/metrics`, and the resident memory of its process.
//!
//! Owns fetching (one plain HTTP/1.0 GET, so no chunked bodies), parsing the
//! text exposition format line by line, and reading `VmRSS` from
//! `/proc/PID/status`. A gauge the target does not expose is "not reported"
//! (`None`), never an error, so the soak runs against any server. It knows
//! nothing of clients or scenarios.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The gauges the soak watches: its label and the broker's metric name.
pub const GAUGES: [(&str, &str); 6] = [
    ("connections", "broker_connections_open"),
    ("sockets", "broker_sockets"),
    ("rooms", "broker_rooms"),
    ("room members", "broker_room_members"),
    ("outbox bytes", "broker_outbox_bytes"),
    ("tasks", "broker_tasks"),
];

/// Longest `/metrics` response read (a broker's is a few KiB).
const MAX_METRICS_BYTES: usize = 4 << 20;
/// Longest time one `/metrics` fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Every series of a metrics page, by metric name; series of one name that
/// differ only in labels are summed (sockets per namespace → sockets).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    for (name, _, value) in series(text) {
        *metrics.entry(name.to_owned()).or_insert(0.0) += value;
    }
    metrics
}

/// Every series of a metrics page, keyed by name and labels as written
/// (`broker_limit_refusals_total{limit="payload"}`).
pub fn parse_series(text: &str) -> BTreeMap<String, f64> {
    series(text).map(|(name, labels, value)| (format!("{name}{labels}"), value)).collect()
}

/// `(name, labels with their braces or "", value)` of each sample line;
/// comments and lines that do not parse are skipped.
fn series(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        let (labels, rest) = if rest.starts_with('{') {
            let close = labels_end(rest)?;
            rest.split_at(close + 1)
        } else {
            ("", rest)
        };
        let value = rest.split_ascii_whitespace().next()?.parse::<f64>().ok()?;
        Some((name, labels, value))
    })
}

/// Index of the `}` closing a label set that starts at `labels[0]`; quoted
/// label values may hold `}` and escaped quotes.
fn labels_end(labels: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, byte) in labels.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(index),
            _ => {}
        }
    }
    None
}

/// `VmRSS` of process `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Where a target's `/metrics` is.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl MetricsEndpoint {
    /// Resolves an `http://host:port/path` URL.
    ///
    /// # Errors
    /// Another scheme than http, or a host that does not resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let rest = match url.split_once("://") {
            Some(("http" | "ws", rest)) => rest,
            Some((scheme, _)) => bail!("unsupported scheme {scheme}:// for the metrics URL"),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/metrics"),
        };
        let addr = crate::client::resolve_authority(authority).await?;
        Ok(Self { addr, authority: authority.to_owned(), path: path.to_owned() })
    }

    /// The URL of `/metrics` next to a target's base URL.
    pub fn url_for_target(target: &str) -> String {
        let base = target.trim_end_matches('/');
        let base =
            base.strip_prefix("ws://").map_or_else(|| base.to_owned(), |rest| format!("http://{rest}"));
        // The target URL may carry a path of its own; metrics live at the root.
        match base.split_once("://") {
            Some((scheme, rest)) => {
                format!("{scheme}://{}/metrics", rest.split('/').next().unwrap_or(rest))
            }
            None => format!("http://{}/metrics", base.split('/').next().unwrap_or(&base)),
        }
    }

    /// Fetches the metrics page.
    ///
    /// # Errors
    /// The connection failed, timed out, or the answer was not a 200.
    pub async fn fetch(&self) -> anyhow::Result<String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_text())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {FETCH_TIMEOUT:?}"))?
    }

    async fn fetch_text(&self) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(self.addr).await.context("connecting")?;
        let request =
            format!("GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/plain\r\n\r\n", self.path, self.authority);
        stream.write_all(request.as_bytes()).await.context("sending the request")?;
        let mut response = Vec::new();
        (&mut stream).take(MAX_METRICS_BYTES as u64).read_to_end(&mut response).await.context("reading")?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").context("no end of the response head")?;
        let status = head.split_ascii_whitespace().nth(1).unwrap_or("?");
        if status != "200" {
            bail!("HTTP {status}");
        }
        Ok(body.to_owned())
    }
}

/// One look at the target: its watched gauges (`None`: not reported), its
/// RSS, and every counter (`*_total`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reading {
    /// Seconds since the run began.
    pub at_s: f64,
    /// The [`GAUGES`], in order.
    pub gauges: [Option<f64>; GAUGES.len()],
    /// Resident memory of the target's process, KiB.
    pub rss_kib: Option<u64>,
    /// Counter series (`*_total`, by name and labels), for before/after deltas.
    #[serde(skip)]
    pub counters: BTreeMap<String, f64>,
}

impl Reading {
    /// A reading from a metrics page (or none) and an RSS.
    pub fn new(at_s: f64, page: Option<&str>, rss_kib: Option<u64>) -> Self {
        let mut gauges = [None; GAUGES.len()];
        let mut counters = BTreeMap::new();
        if let Some(page) = page {
            let metrics = parse_metrics(page);
            for (slot, (_, name)) in gauges.iter_mut().zip(GAUGES) {
                *slot = metrics.get(name).copied();
            }
            counters = series(page)
                .filter(|(name, _, _)| name.ends_with("_total"))
                .map(|(name, labels, value)| (format!("{name}{labels}"), value))
                .collect();
        }
        Self { at_s, gauges, rss_kib, counters }
    }

    /// Whether every gauge reported both here and in `idle` is back at (or
    /// below) its idle value.
    pub fn is_idle(&self, idle: &Reading) -> bool {
        self.gauges.iter().zip(&idle.gauges).all(|pair| match pair {
            (Some(now), Some(idle)) => now <= idle,
            _ => true,
        })
    }

    /// Names of the gauges above their idle value.
    pub fn busy_gauges(&self, idle: &Reading) -> Vec<String> {
        GAUGES
            .iter()
            .zip(self.gauges.iter().zip(&idle.gauges))
            .filter_map(|((label, _), pair)| match pair {
                (Some(now), Some(idle)) if now > idle => Some(format!("{label} {now} (idle {idle})")),
                _ => None,
            })
            .collect()
    }
}

/// Reads the target now: `/metrics` when there is an endpoint, RSS when
/// there is a pid. A failed fetch is `Err` text beside the reading.
pub async fn read(
    endpoint: Option<&MetricsEndpoint>,
    pid: Option<u32>,
    at_s: f64,
) -> (Reading, Option<String>) {
    let (page, error) = match endpoint {
        Some(endpoint) => match endpoint.fetch().await {
            Ok(page) => (Some(page), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        },
        None => (None, None),
    };
    (Reading::new(at_s, page.as_deref(), pid.and_then(rss_kib)), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text_summing_labelled_series() {
        let text = "# HELP broker_sockets Sockets\n# TYPE broker_sockets gauge\n\
                    broker_sockets{namespace=\"/a\"} 3\n\
                    broker_sockets{namespace=\"/b}\\\"\"} 4 1700000000\n\
                    broker_connections_open 7\n\
                    broker_bytes_out_total 1.5e3\n\
                    weird{unterminated=\"x\n\
                    novalue\n\
                    nan_metric NaN\n";
        let metrics = parse_metrics(text);
        assert_eq!(metrics.get("broker_sockets"), Some(&7.0));
        assert_eq!(metrics.get("broker_connections_open"), Some(&7.0));
        assert_eq!(metrics.get("broker_bytes_out_total"), Some(&1500.0));
        assert!(!metrics.contains_key("weird"));
        assert!(!metrics.contains_key("novalue"));
        assert!(metrics.get("nan_metric").is_some_and(|v| v.is_nan()));
        let series = parse_series(text);
        assert_eq!(series.get("broker_sockets{namespace=\"/a\"}"), Some(&3.0));
        assert_eq!(series.get("broker_connections_open"), Some(&7.0));
    }

    #[test]
    fn readings_compare_only_what_both_report() {
        let idle = Reading::new(
            0.0,
            Some("broker_connections_open 1\nbroker_tasks 4\nbroker_messages_total 3\nx_total{a=\"b\"} 2\n"),
            None,
        );
        assert_eq!(idle.gauges[0], Some(1.0));
        assert_eq!(idle.gauges[1], None, "not reported");
        assert_eq!(idle.counters.get("broker_messages_total"), Some(&3.0));
        let busy = Reading::new(1.0, Some("broker_connections_open 2\nbroker_sockets 9\n"), None);
        assert!(!busy.is_idle(&idle));
        assert_eq!(busy.busy_gauges(&idle), vec!["connections 2 (idle 1)".to_owned()]);
        let back = Reading::new(2.0, Some("broker_connections_open 1\nbroker_tasks 4\n"), None);
        assert!(back.is_idle(&idle));
        assert!(Reading::new(3.0, None, None).is_idle(&idle), "nothing reported, nothing busy");
    }

    #[test]
    fn metrics_url_sits_at_the_target_root() {
        assert_eq!(
            MetricsEndpoint::url_for_target("http://127.0.0.1:3000/"),
            "http://127.0.0.1:3000/metrics"
        );
        assert_eq!(MetricsEndpoint::url_for_target("ws://h:1/x"), "http://h:1/metrics");
        assert_eq!(MetricsEndpoint::url_for_target("h:1"), "http://h:1/metrics");
    }

    /// Serves one canned HTTP response; returns the URL to fetch.
    async fn serve_once(response: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 256];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "request head cut short");
                head.extend_from_slice(&buf[..n]);
            }
            assert!(head.starts_with(b"GET /metrics HTTP/1.0\r\n"), "{}", String::from_utf8_lossy(&head));
            stream.write_all(response.as_bytes()).await.expect("write");
        });
        format!("http://{addr}/metrics")
    }

    #[tokio::test]
    async fn fetches_a_page_and_treats_a_missing_one_as_not_reported() {
        let url =
            serve_once("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbroker_sockets 5\n# EOF\n").await;
        let endpoint = MetricsEndpoint::resolve(&url).await.expect("resolves");
        let (reading, error) = read(Some(&endpoint), None, 0.0).await;
        assert_eq!(error, None);
        assert_eq!(reading.gauges[1], Some(5.0));
        assert_eq!(reading.gauges[0], None, "not on the page, not reported");

        let url = serve_once("HTTP/1.1 404 Not Found\r\n\r\n").await;
        let endpoint = MetricsEndpoint::resolve(&url).await.expect("resolves");
        let (reading, error) = read(Some(&endpoint), None, 0.0).await;
        assert_eq!(error.as_deref(), Some("HTTP 404"));
        assert!(reading.gauges.iter().all(Option::is_none));
        assert!(MetricsEndpoint::resolve("https://x/metrics").await.is_err());
    }

    #[test]
    fn reads_this_process_rss() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
