//! Every counter the broker keeps, in one place, rendered as Prometheus text
//! on `GET /metrics`. Counters are relaxed atomics: they are statistics, not
//! synchronization.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The broker's counters. One per server, shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open (WebSocket sessions).
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Namespace connects refused by authentication.
    pub auth_refusals: AtomicU64,
    /// Connections cut off because their outbox overflowed.
    pub slow_consumers: AtomicU64,
    /// Socket.IO packets received from clients.
    pub packets_in: AtomicU64,
    /// Frames written to sockets.
    pub frames_out: AtomicU64,
    /// Write system calls (`writev`) issued by connection writers.
    pub writes: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Chat messages accepted and broadcast.
    pub messages: AtomicU64,
    /// Deliveries queued by broadcasts (one per member and message).
    pub deliveries: AtomicU64,
    /// The write pacer's current delay between a connection's writes, in µs.
    pub write_delay_us: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// The counters in the Prometheus text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 11] = [
            ("broker_connections_open", "gauge", "Open WebSocket sessions", &self.connections_open),
            ("broker_connections_total", "counter", "Sessions accepted", &self.connections_total),
            ("broker_auth_refusals_total", "counter", "Connects refused by auth", &self.auth_refusals),
            ("broker_slow_consumers_total", "counter", "Sessions cut off as slow", &self.slow_consumers),
            ("broker_packets_in_total", "counter", "Socket.IO packets received", &self.packets_in),
            ("broker_frames_out_total", "counter", "WebSocket frames written", &self.frames_out),
            ("broker_writes_total", "counter", "writev calls by connection writers", &self.writes),
            ("broker_bytes_out_total", "counter", "Bytes written to sockets", &self.bytes_out),
            ("broker_messages_total", "counter", "Chat messages broadcast", &self.messages),
            ("broker_deliveries_total", "counter", "Frames queued by broadcasts", &self.deliveries),
            (
                "broker_write_delay_us",
                "gauge",
                "Pacer's delay between a connection's writes",
                &self.write_delay_us,
            ),
        ];
        let mut out = String::with_capacity(1024);
        for (name, kind, help, value) in rows {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Relaxed));
        }
        out
    }
}
