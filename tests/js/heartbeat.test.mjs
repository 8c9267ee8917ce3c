// Engine.IO heartbeat. Broker-only: needs a tiny BROKER_PING_INTERVAL_MS.

import assert from 'node:assert/strict';

import {
  TRANSPORT_MODE,
  WAIT_MS,
  brokerOnly,
  chatTest,
  connectUsers,
  joinAll,
  once,
  onceWhere,
  roomId,
  send,
  useBroker,
} from './helpers.mjs';

const PING_INTERVAL_MS = 100;
const PING_TIMEOUT_MS = 1000;

const skip = brokerOnly(`needs BROKER_PING_INTERVAL_MS=${PING_INTERVAL_MS}`);
// A silent client's rooms hear user_left when its recovery window closes: a short one here.
const broker = useBroker({
  BROKER_PING_INTERVAL_MS: PING_INTERVAL_MS,
  BROKER_PING_TIMEOUT_MS: PING_TIMEOUT_MS,
  BROKER_RECOVERY_WINDOW_MS: 300,
});
const it = (name, fn) => chatTest(broker, name, { skip }, fn);

/** Resolves after the client has answered `count` server pings. */
function pings(socket, count) {
  return new Promise((resolve, reject) => {
    let seen = 0;
    const timer = setTimeout(() => reject(new Error(`saw ${seen} of ${count} pings within ${WAIT_MS} ms`)), WAIT_MS);
    socket.io.on('ping', () => {
      seen += 1;
      if (seen === count) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

it('the Engine.IO open packet advertises the configured heartbeat, and the upgrade only to polling clients', async () => {
  const [a] = await connectUsers(broker, 1);
  const open = a.inbox.handshake;
  assert.ok(open, 'the handshake was recorded');
  assert.deepEqual(Object.keys(open).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
  assert.equal(typeof open.sid, 'string');
  // A session that starts on WebSocket has nowhere to upgrade to.
  assert.deepEqual(open.upgrades, TRANSPORT_MODE === 'websocket' ? [] : ['websocket']);
  assert.equal(open.pingInterval, PING_INTERVAL_MS);
  assert.equal(open.pingTimeout, PING_TIMEOUT_MS);
  assert.equal(open.maxPayload, 1_000_000);
});

it('a client that answers pings stays connected across many ping intervals', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  await Promise.all([pings(a, 10), pings(b, 10)]);
  assert.equal(a.connected, true);
  const ack = await send(a, 'after ten pings', room);
  assert.equal((await once(b, 'message')).id, ack.id);
  assert.deepEqual(a.inbox.log.filter((e) => e.event === 'disconnect'), []);
});

it('a client that stops answering pings is closed and its rooms get user_left', async () => {
  const [stays, silent] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, stays, silent);
  // Drop the client's pongs; everything else still goes out.
  const engine = silent.io.engine;
  const sendPacket = engine._sendPacket;
  assert.equal(typeof sendPacket, 'function', 'engine.io-client internals changed');
  engine._sendPacket = function dropPongs(type, ...rest) {
    if (type === 'pong') return undefined;
    return sendPacket.call(this, type, ...rest);
  };
  const left = await onceWhere(stays, 'user_left', (u) => u?.roomId === room, `roomId ${room}`);
  assert.equal(left.userId, silent.sub);
  await once(silent, 'disconnect');
});
