#!/bin/sh
# Starts the peer under the broker's start contract (BROKER_LISTEN, BROKER_JWT_SECRET,
# and the few BROKER_* limits the peer also has), so tests/js can spawn it itself:
#   BROKER_BIN=bench/peers/nestjs/run-as-broker.sh node --test rooms.test.mjs
set -e
export NODE_ENV=production
export HOST="${BROKER_LISTEN%:*}" PORT="${BROKER_LISTEN##*:}" JWT_SECRET="$BROKER_JWT_SECRET"
[ -n "$BROKER_MAX_MESSAGE_LENGTH" ] && export MAX_MESSAGE_LENGTH="$BROKER_MAX_MESSAGE_LENGTH"
[ -n "$BROKER_MAX_ROOM_ID_LENGTH" ] && export MAX_ROOM_ID_LENGTH="$BROKER_MAX_ROOM_ID_LENGTH"
[ -n "$BROKER_PING_INTERVAL_MS" ] && export PING_INTERVAL_MS="$BROKER_PING_INTERVAL_MS"
[ -n "$BROKER_PING_TIMEOUT_MS" ] && export PING_TIMEOUT_MS="$BROKER_PING_TIMEOUT_MS"
[ -n "$BROKER_JWT_LEEWAY_MS" ] && export JWT_LEEWAY_MS="$BROKER_JWT_LEEWAY_MS"
[ -n "$BROKER_RECOVERY_WINDOW_MS" ] && export RECOVERY_WINDOW_MS="$BROKER_RECOVERY_WINDOW_MS"
exec node "$(dirname "$0")/dist/main.js"
