//! The Redis server of the test run: `tests/run.sh` starts one and exports
//! its URL as `BROKER_TEST_REDIS_URL`.

/// The test Redis URL, or `None` (the test then skips) when none was
/// started outside CI.
///
/// # Panics
/// When `CI` is set and no Redis is: in CI the Redis tests must run.
#[must_use]
pub fn redis_url() -> Option<String> {
    match std::env::var("BROKER_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "CI is set but BROKER_TEST_REDIS_URL is not: run the suite with tests/run.sh, which starts Redis"
            )
        }
        _ => {
            eprintln!("skipped: BROKER_TEST_REDIS_URL is not set (tests/run.sh starts a Redis and sets it)");
            None
        }
    }
}

/// Two brokers of `base` on one private channel prefix of the test Redis
/// (`--adapter redis`), or `None` when no Redis runs (outside CI).
pub async fn cluster_pair(base: crate::Config) -> Option<(crate::TestServer, crate::TestServer)> {
    let url = redis_url()?;
    let key = format!("cluster-test-{:016x}", rand_u64());
    let config = crate::Config {
        adapter: broker::config::AdapterKind::Redis,
        redis_url: url,
        redis_key: key,
        rate_limit_per_sec: 0,
        ..base
    };
    let first = crate::TestServer::start(config.clone()).await;
    let second = crate::TestServer::start(config).await;
    Some((first, second))
}

/// A namespace name no other test uses, so tests sharing one Redis never
/// see each other's channels.
#[must_use]
pub fn unique_namespace(label: &str) -> String {
    format!("/{label}-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.finish()
}

/// A TCP relay to a Redis server that a test can cut: a broker given
/// [`Link::url`] reaches Redis through it, and after [`Link::cut`] its
/// connections are gone and new ones are refused, as if the broker's host
/// had vanished from the network (or the broker had died, for the others).
#[derive(Debug)]
pub struct Link {
    addr: std::net::SocketAddr,
    cut: tokio_util::sync::CancellationToken,
}

impl Link {
    /// Starts relaying `127.0.0.1:<ephemeral>` to the Redis at `url`
    /// (`redis://host:port`).
    ///
    /// # Panics
    /// When the URL names no host and port, or no port can be bound.
    pub async fn to(url: &str) -> Self {
        let target = url
            .trim_start_matches("redis://")
            .split(['/', '?'])
            .next()
            .and_then(|authority| authority.rsplit('@').next())
            .expect("a redis://host:port URL")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let cut = tokio_util::sync::CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let (target, stop) = (target.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    /// The URL to give a broker.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}
