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
