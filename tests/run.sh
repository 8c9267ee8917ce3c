#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need
# (the npm packages of the real-client suite), builds, and runs the Rust unit
# and integration tests, then the socket.io-client suite against the broker.
# A private Redis server (installed from Debian's package if missing) runs for
# the duration: tests that need one read BROKER_TEST_REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/redis.sh
source tests/redis.sh
start_test_redis

echo "== installing npm packages for the real-client suite (tests/js) and the mixed cluster (tests/cluster)"
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
npm ci --prefix tests/cluster --no-audit --no-fund --loglevel=error

echo "== cargo test (unit and integration tests)"
cargo build -p broker
cargo test --workspace

echo "== socket.io-client suite against target/debug/broker"
(cd tests/js && npm test)

echo "== mixed cluster: two brokers and a Node socket.io gateway on one Redis (tests/cluster)"
(cd tests/cluster && node --test --test-reporter=spec cluster.test.mjs)

echo "== the Redis wire goldens still regenerate (tests/cluster/goldens.mjs, to a scratch file)"
GOLDENS_OUT="$(mktemp)" node tests/cluster/goldens.mjs
