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
async fn an_unreachable_redis_is_an_error_at_start() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("redis://{}", unused.local_addr().expect("bound"));
    drop(unused);
    let (tx, _rx) = mpsc::unbounded_channel();
    let started = Bus::connect(
        &url,
        Subscriptions::default(),
        Arc::new(Forward(tx)),
        &TaskTracker::new(),
        CancellationToken::new(),
    )
    .await;
    assert!(started.is_err());
}
