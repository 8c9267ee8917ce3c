//! Every counter the broker keeps, in one place, rendered as OpenMetrics text
//! on `GET /metrics`. Counters are relaxed atomics: they are statistics, not
//! synchronization.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The broker's counters. One per server, shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open (WebSocket sessions).
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Sessions currently on long-polling (counted in `connections_open` too).
    pub polling_open: AtomicU64,
    /// Long-polling sessions upgraded to WebSocket since start.
    pub upgrades: AtomicU64,
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
    /// Sessions that panicked; each was closed (1011) and cleaned up alone.
    pub session_panics: AtomicU64,
    /// Suspended sessions taken up again by their clients.
    pub recoveries: AtomicU64,
    /// Refusals by each limit of [`Limit`], indexed by `Limit as usize`.
    pub limit_refusals: [AtomicU64; Limit::ALL.len()],
}

/// Every limit the broker enforces on what clients send; each refusal is
/// counted as `broker_limit_refusals_total{limit="…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A request head over `max_head_bytes` (HTTP 431).
    HeadSize,
    /// No complete request head within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// Over `max_connections_per_ip` (HTTP 503).
    ConnectionsPerIp,
    /// Over `max_connections` (HTTP 503).
    Connections,
    /// A message over `max_payload` (close 1009).
    Payload,
    /// JSON nested deeper than `max_json_depth` (protocol error, close 1002).
    JsonDepth,
    /// A binary packet over `max_attachments`, over `max_payload` in
    /// attachments, or for a namespace the session has not joined.
    Attachments,
    /// A string that is not valid Unicode (error 400, or a refused CONNECT).
    InvalidUnicode,
    /// A JSON object with a key twice (error 400, or a refused CONNECT).
    DuplicateKey,
    /// `join_room` over `max_rooms_per_socket` (error 429).
    RoomsPerSocket,
    /// More failed CONNECTs than `max_connect_failures` (close 1008).
    ConnectFailures,
    /// No namespace joined within `connect_timeout_ms`.
    ConnectTimeout,
    /// Events over the rate limit (error 429).
    EventRate,
}

impl Limit {
    /// Every limit, in the order of their counters.
    pub const ALL: [Self; 13] = [
        Self::HeadSize,
        Self::HandshakeTimeout,
        Self::ConnectionsPerIp,
        Self::Connections,
        Self::Payload,
        Self::JsonDepth,
        Self::Attachments,
        Self::InvalidUnicode,
        Self::DuplicateKey,
        Self::RoomsPerSocket,
        Self::ConnectFailures,
        Self::ConnectTimeout,
        Self::EventRate,
    ];

    /// The `limit` label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HeadSize => "head_size",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::ConnectionsPerIp => "connections_per_ip",
            Self::Connections => "connections",
            Self::Payload => "payload",
            Self::JsonDepth => "json_depth",
            Self::Attachments => "attachments",
            Self::InvalidUnicode => "invalid_unicode",
            Self::DuplicateKey => "duplicate_key",
            Self::RoomsPerSocket => "rooms_per_socket",
            Self::ConnectFailures => "connect_failures",
            Self::ConnectTimeout => "connect_timeout",
            Self::EventRate => "event_rate",
        }
    }
}

/// Gauges read from the broker's state when `/metrics` is rendered, not
/// kept as counters on the hot path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Sockets connected to a namespace.
    pub sockets: u64,
    /// Non-empty rooms.
    pub rooms: u64,
    /// Room memberships (one socket in three rooms counts three).
    pub room_members: u64,
    /// Bytes queued in outboxes and not yet taken by a writer.
    pub outbox_bytes: u64,
    /// Tasks the broker tracks (sessions, writers, background tasks).
    pub tasks: u64,
    /// Sessions suspended, waiting for their clients to recover them.
    pub suspended_sessions: u64,
    /// Packets kept for replay.
    pub replay_packets: u64,
    /// Bytes the replay stores hold (frames and their entries).
    pub replay_bytes: u64,
    /// The Redis bus, with the `redis` adapter.
    pub redis: Option<RedisCounters>,
}

/// The Redis bus's counters (`adapter::redis::bus::BusMetrics`, read once).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisCounters {
    /// 1 while the subscription is up.
    pub connected: u64,
    /// Subscription losses.
    pub outages: u64,
    /// Messages published.
    pub published: u64,
    /// Messages not published (queue full, pipeline failed).
    pub publish_dropped: u64,
    /// Messages received.
    pub received: u64,
    /// Messages refused (too large, malformed).
    pub refused: u64,
    /// Other brokers found silent for the heartbeat timeout with members.
    pub nodes_lost: u64,
    /// Broadcasts with binary data from other nodes, not delivered.
    pub binary_refused: u64,
    /// Server-side emits from other nodes.
    pub server_side_emits: u64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts one refusal by `limit`.
    pub fn refuse(&self, limit: Limit) {
        if let Some(counter) = self.limit_refusals.get(limit as usize) {
            Self::add(counter, 1);
        }
    }

    /// Refusals by `limit` so far.
    #[must_use]
    pub fn refusals(&self, limit: Limit) -> u64 {
        self.limit_refusals.get(limit as usize).map_or(0, |counter| counter.load(Relaxed))
    }

    /// The counters and `gauges` in the OpenMetrics text format, encoded by
    /// `prometheus-client`. Counters live as plain atomics on the hot path;
    /// each rendering copies them into a registry of its own.
    #[must_use]
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut registry = Registry::default();
        let counters: [(&str, &str, &AtomicU64); 12] = [
            ("broker_connections", "Sessions accepted", &self.connections_total),
            ("broker_upgrades", "Long-polling sessions upgraded to WebSocket", &self.upgrades),
            ("broker_auth_refusals", "Connects refused by auth", &self.auth_refusals),
            ("broker_slow_consumers", "Sessions cut off as slow", &self.slow_consumers),
            ("broker_packets_in", "Socket.IO packets received", &self.packets_in),
            ("broker_frames_out", "WebSocket frames written", &self.frames_out),
            ("broker_writes", "writev calls by connection writers", &self.writes),
            ("broker_bytes_out", "Bytes written to sockets", &self.bytes_out),
            ("broker_messages", "Chat messages broadcast", &self.messages),
            ("broker_deliveries", "Frames queued by broadcasts", &self.deliveries),
            ("broker_session_panics", "Sessions closed after a panic", &self.session_panics),
            ("broker_recoveries", "Sessions recovered by their clients", &self.recoveries),
        ];
        for (name, help, value) in counters {
            registry.register(name, help, ConstCounter::new(value.load(Relaxed)));
        }
        let gauge_rows = [
            ("broker_connections_open", "Open sessions", self.connections_open.load(Relaxed)),
            ("broker_polling_sessions_open", "Sessions on long-polling", self.polling_open.load(Relaxed)),
            (
                "broker_write_delay_us",
                "Pacer's delay between a connection's writes",
                self.write_delay_us.load(Relaxed),
            ),
            ("broker_sockets", "Sockets connected to a namespace", gauges.sockets),
            ("broker_rooms", "Non-empty rooms", gauges.rooms),
            ("broker_room_members", "Room memberships", gauges.room_members),
            ("broker_outbox_bytes", "Bytes queued for writers", gauges.outbox_bytes),
            ("broker_tasks", "Tasks tracked by the broker", gauges.tasks),
            (
                "broker_suspended_sessions",
                "Sessions waiting for their clients to recover them",
                gauges.suspended_sessions,
            ),
            ("broker_replay_packets", "Packets kept for connection state recovery", gauges.replay_packets),
            ("broker_replay_bytes", "Bytes kept for connection state recovery", gauges.replay_bytes),
        ];
        for (name, help, value) in gauge_rows {
            registry.register(name, help, ConstGauge::new(value));
        }
        let refusals = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for limit in Limit::ALL {
            refusals.get_or_create(&[("limit", limit.as_str())]).inc_by(self.refusals(limit));
        }
        registry.register(
            "broker_limit_refusals",
            "Requests, packets and events refused by a limit",
            refusals,
        );
        if let Some(redis) = gauges.redis {
            registry.register(
                "broker_redis_connected",
                "1 while the Redis subscription is up",
                ConstGauge::new(redis.connected),
            );
            let rows = [
                ("broker_redis_outages", "Redis subscription losses", redis.outages),
                ("broker_redis_published", "Messages published to Redis", redis.published),
                (
                    "broker_redis_publish_dropped",
                    "Messages not published (queue full, Redis down)",
                    redis.publish_dropped,
                ),
                ("broker_redis_received", "Messages received from Redis", redis.received),
                (
                    "broker_redis_refused",
                    "Messages from or for Redis refused (too large, malformed)",
                    redis.refused,
                ),
                (
                    "broker_redis_nodes_lost",
                    "Other brokers found silent for the heartbeat timeout with members, taken out",
                    redis.nodes_lost,
                ),
                (
                    "broker_redis_binary_refused",
                    "Broadcasts with binary data from other nodes, not delivered (JSON only)",
                    redis.binary_refused,
                ),
                (
                    "broker_redis_server_side_emits",
                    "Server-side emits from other nodes (no listeners here; answered with error 501 when asked)",
                    redis.server_side_emits,
                ),
            ];
            for (name, help, value) in rows {
                registry.register(name, help, ConstCounter::new(value));
            }
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_in_the_exposition_format() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.frames_out, 7);
        metrics.refuse(Limit::JsonDepth);
        metrics.refuse(Limit::JsonDepth);
        let text = metrics.render(&Gauges { rooms: 3, ..Gauges::default() });
        for line in [
            "# TYPE broker_frames_out counter",
            "broker_frames_out_total 7",
            "broker_rooms 3",
            "broker_connections_open 0",
            "broker_limit_refusals_total{limit=\"json_depth\"} 2",
            "broker_limit_refusals_total{limit=\"head_size\"} 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|got| got == line), "no line {line:?} in:\n{text}");
        }
    }
}
