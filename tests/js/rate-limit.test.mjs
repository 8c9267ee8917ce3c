// Per-connection rate limit. Broker-only: needs BROKER_RATE_LIMIT_PER_SEC and
// BROKER_RATE_LIMIT_BURST.

import assert from 'node:assert/strict';

import {
  brokerOnly,
  chatTest,
  connectUsers,
  joinAll,
  onceWhere,
  roomId,
  send,
  useBroker,
} from './helpers.mjs';

const skip = brokerOnly('needs BROKER_RATE_LIMIT_PER_SEC=5 and BROKER_RATE_LIMIT_BURST=5');
const broker = useBroker({ BROKER_RATE_LIMIT_PER_SEC: 5, BROKER_RATE_LIMIT_BURST: 5 });
const it = (name, fn) => chatTest(broker, name, { skip }, fn);

it('events within the burst are not limited', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a); // one event
  for (let i = 0; i < 4; i += 1) {
    const ack = await send(a, `within burst ${i}`, room);
    assert.equal(typeof ack.id, 'string', `send ${i} was accepted: ${JSON.stringify(ack)}`);
  }
});

it('a burst of 20 sends over a 5/s limit with burst 5 yields error 429', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  for (let i = 0; i < 20; i += 1) a.emit('send_message', { content: `flood ${i}`, roomId: room });
  const error = await onceWhere(a, 'error', (e) => e?.code === 429, 'code 429');
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0);
});
