// Transports: long-polling only, the upgrade while a room is broadcast to,
// and a client that never upgrades (as behind a proxy that strips
// WebSocket). Each case sets its own transports, whatever CLIENT_TRANSPORTS
// says. Broker-only: needs BROKER_RATE_LIMIT_PER_SEC=0 for the burst.

import assert from 'node:assert/strict';

import {
  WAIT_MS,
  brokerOnly,
  chatTest,
  connectUser,
  delay,
  joinAll,
  once,
  roomId,
  send,
  useBroker,
} from './helpers.mjs';

const skip = brokerOnly('needs BROKER_RATE_LIMIT_PER_SEC=0');
const broker = useBroker({ BROKER_RATE_LIMIT_PER_SEC: 0 });
const it = (name, fn) => chatTest(broker, name, { skip }, fn);

/** Resolves once `socket`'s Engine.IO session has upgraded to WebSocket. */
function upgraded(socket) {
  const engine = socket.io.engine;
  if (engine.transport.name === 'websocket') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no upgrade within ${WAIT_MS} ms`)), WAIT_MS);
    engine.once('upgrade', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

it('a polling-only client chats with a WebSocket client and stays on polling', async () => {
  const { socket: poller } = await connectUser(broker, { transports: ['polling'] });
  const { socket: websocket } = await connectUser(broker, { transports: ['websocket'] });
  const room = roomId();
  await joinAll(room, poller, websocket);
  const fromPoller = await send(poller, 'by polling', room);
  assert.equal((await once(websocket, 'message')).id, fromPoller.id);
  assert.equal((await once(poller, 'message')).id, fromPoller.id);
  const fromWebsocket = await send(websocket, 'to the poller', room);
  assert.equal((await once(poller, 'message')).id, fromWebsocket.id);
  assert.equal((await once(websocket, 'message')).id, fromWebsocket.id);
  assert.equal(poller.io.engine.transport.name, 'polling');
});

it('a client that never upgrades (upgrade: false) chats on polling', async () => {
  const { socket: proxied } = await connectUser(broker, { transports: ['polling', 'websocket'], upgrade: false });
  const { socket: other } = await connectUser(broker, { transports: ['websocket'] });
  let upgrades = 0;
  proxied.io.engine.on('upgrade', () => {
    upgrades += 1;
  });
  const room = roomId();
  await joinAll(room, proxied, other);
  for (let i = 0; i < 5; i += 1) {
    const ack = await send(other, `to the proxied client ${i}`, room);
    assert.equal((await once(proxied, 'message')).id, ack.id);
    assert.equal((await once(other, 'message')).id, ack.id);
  }
  assert.equal(proxied.io.engine.transport.name, 'polling');
  assert.equal(upgrades, 0, 'never upgraded');
});

it('a client that upgrades while its room is broadcast to gets every message once, in order', async () => {
  const room = roomId('burst');
  const { socket: publisher } = await connectUser(broker, { transports: ['websocket'] });
  await joinAll(room, publisher);

  // Publish without pause from before the client connects until well after
  // its upgrade; it joins the room at CONNECT (handshake query roomId).
  let sent = 0;
  let publishing = true;
  const publisherDone = (async () => {
    while (publishing) {
      publisher.emit('send_message', { roomId: room, content: `burst-${sent}` });
      sent += 1;
      if (sent % 20 === 0) await delay(1);
    }
  })();

  const seen = [];
  const transports = new Set();
  let waiting = null;
  /** Resolves once `done()` holds for what was seen; fails after WAIT_MS. */
  const seenUntil = (done, what) =>
    new Promise((resolve, reject) => {
      if (done()) return resolve();
      const timer = setTimeout(() => reject(new Error(`${what}: got ${seen.length}, up to ${seen.at(-1)}`)), WAIT_MS);
      waiting = () => {
        if (!done()) return;
        clearTimeout(timer);
        waiting = null;
        resolve();
      };
    });
  // The client's own upgrade starts as soon as the session opens, before it
  // is even in the room; it is held back here (upgrade: false) and started
  // by hand, once messages flow over polling.
  const { socket: upgrader } = await connectUser(broker, {
    transports: ['polling', 'websocket'],
    upgrade: false,
    query: { roomId: room },
  });
  upgrader.on('message', (message) => {
    seen.push(Number(message.content.slice('burst-'.length)));
    transports.add(upgrader.io.engine.transport.name);
    waiting?.();
  });
  await seenUntil(() => seen.length >= 20, 'messages over polling');
  const engine = upgrader.io.engine;
  assert.equal(typeof engine._probe, 'function', 'engine.io-client internals changed');
  engine._probe('websocket');
  await upgraded(upgrader);
  // Some messages over the WebSocket too, then stop and wait for the last one.
  const afterUpgrade = seen.length + 50;
  await seenUntil(() => seen.length >= afterUpgrade, 'messages after the upgrade');
  publishing = false;
  await publisherDone;
  const last = sent - 1;
  await seenUntil(() => seen.at(-1) === last, `the last message (${last})`);

  // Consecutive from the first message received to the last sent: nothing
  // lost, repeated or reordered across the switch.
  const first = seen[0];
  assert.deepEqual(seen, Array.from({ length: last - first + 1 }, (_, i) => first + i));
  assert.deepEqual([...transports], ['polling', 'websocket'], 'messages arrived before and after the upgrade');
});
