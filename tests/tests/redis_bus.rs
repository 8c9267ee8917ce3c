//! The Redis bus against a real Redis: what is published comes back on the
//! subscriptions, in order, and the request channel's subscriber count
//! counts the servers.

use std::sync::Arc;

use broker::adapter::redis::bus::{Bus, Receiver, Subscriptions};
use broker::adapter::redis::wire::{Channels, DEFAULT_KEY};
use tests::WAIT;
use tests::redis::{redis_url, unique_namespace};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Forward(mpsc::UnboundedSender<(String, Vec<u8>)>);

impl Receiver for Forward {
    fn receive(&self, channel: &str, payload: &[u8]) {
        let _ = self.0.send((channel.to_owned(), payload.to_vec()));
    }

    fn receive_unordered(&self, channel: &str, parts: &[bytes::Bytes]) -> String {
        panic!("an ordered message on {channel} was not published ({parts:?})")
    }
}

async fn bus(
    url: &str,
    channels: &Channels,
) -> (Bus, mpsc::UnboundedReceiver<(String, Vec<u8>)>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscriptions = Subscriptions {
        patterns: vec![channels.broadcast_pattern()],
        channels: vec![channels.request().to_owned()],
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::connect(url, subscriptions, Arc::new(Forward(tx)), &TaskTracker::new(), shutdown.clone())
        .await
        .expect("the test Redis is reachable");
    (bus, rx, shutdown)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> (String, Vec<u8>) {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a message within the wait").expect("the bus is open")
}

#[tokio::test]
async fn published_messages_arrive_in_order_on_every_subscriber() {
    let Some(url) = redis_url() else { return };
    let channels = Channels::new(DEFAULT_KEY, &unique_namespace("bus"));
    let (first, mut first_rx, first_stop) = bus(&url, &channels).await;
    let (_second, mut second_rx, second_stop) = bus(&url, &channels).await;
    for i in 0..100_u32 {
        assert!(first.publish(channels.room("lobby"), i.to_be_bytes().to_vec()));
    }
    assert!(first.publish(channels.request().to_owned(), b"{}".to_vec()));
    for rx in [&mut first_rx, &mut second_rx] {
        for i in 0..100_u32 {
            assert_eq!(next(rx).await, (channels.room("lobby"), i.to_be_bytes().to_vec()));
        }
        assert_eq!(next(rx).await, (channels.request().to_owned(), b"{}".to_vec()));
    }
    assert_eq!(first.subscriber_count(channels.request()).await.expect("NUMSUB answers"), 2);
    first_stop.cancel();
    second_stop.cancel();
}

#[tokio::test]
async fn an_unreachable_redis_starts_the_bus_disconnected_and_an_invalid_url_is_an_error() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("redis://{}", unused.local_addr().expect("bound"));
    drop(unused);
    let (tx, _rx) = mpsc::unbounded_channel();
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    let bus =
        Bus::connect(&url, Subscriptions::default(), Arc::new(Forward(tx.clone())), &tracker, stop.clone())
            .await
            .expect("starts without Redis");
    assert!(!bus.is_connected());
    assert_eq!(bus.metrics().snapshot().outages, 1, "the outage at start is counted");
    stop.cancel();

    let invalid =
        Bus::connect("http://not-redis", Subscriptions::default(), Arc::new(Forward(tx)), &tracker, stop)
            .await;
    assert!(invalid.is_err());
}

#[tokio::test]
async fn ordered_ids_increase_in_the_order_redis_relays_whoever_publishes() {
    let Some(url) = redis_url() else { return };
    let channels = Channels::new(DEFAULT_KEY, &unique_namespace("ordered"));
    let (first, mut first_rx, first_stop) = bus(&url, &channels).await;
    let (second, _second_rx, second_stop) = bus(&url, &channels).await;
    let counter: Arc<str> = Arc::from(channels.message_ids());
    let mut given = Vec::new();
    for index in 0..50_u8 {
        for (bus, name) in [(&first, b'a'), (&second, b'b')] {
            let (done, id) = tokio::sync::oneshot::channel();
            let parts = vec![vec![name].into(), vec![index].into()];
            assert!(bus.publish_ordered(channels.room("r"), Arc::clone(&counter), parts, done));
            given.push(id);
        }
    }
    let mut acknowledged = std::collections::HashSet::new();
    for id in given {
        acknowledged.insert(tokio::time::timeout(WAIT, id).await.expect("in time").expect("an id"));
    }
    let mut last = 0_u64;
    for _ in 0..100 {
        let (_, payload) = next(&mut first_rx).await;
        // The publisher's byte, the id as a MessagePack fixstr, the suffix byte.
        let (header, digits) = (payload[1], &payload[2..payload.len() - 1]);
        assert_eq!(usize::from(header & 0x1f), digits.len());
        let id = std::str::from_utf8(digits).expect("digits");
        assert!(acknowledged.remove(id), "{id} was given to its publisher");
        let id: u64 = id.parse().expect("a number");
        assert!(id > last, "{id} after {last}: ids increase in relay order");
        last = id;
    }
    first_stop.cancel();
    second_stop.cancel();
}
