// Several namespaces, each isolated. Broker-only: needs BROKER_NAMESPACES.

import assert from 'node:assert/strict';

import {
  NAMESPACE,
  brokerOnly,
  chatTest,
  connectError,
  connectUsers,
  join,
  joinAll,
  nextAny,
  once,
  send,
  token,
  useBroker,
  userId,
} from './helpers.mjs';

const skip = brokerOnly('needs BROKER_NAMESPACES=/a,/b');
const broker = useBroker({ BROKER_NAMESPACES: '/a,/b' });
const it = (name, fn) => chatTest(broker, name, { skip }, fn);

it('the same room name in two namespaces is two isolated rooms', async () => {
  const [a1, a2] = await connectUsers(broker, 2, { namespace: '/a' });
  const [b1, b2] = await connectUsers(broker, 2, { namespace: '/b' });
  const room = 'lobby';
  await joinAll(room, a1, a2);
  // The first member in /b is alone there, whatever /a holds.
  assert.deepEqual(await join(b1, room), { roomId: room, members: 1 });
  assert.deepEqual(await once(b1, 'status'), { roomId: room, members: 1, joined: true });
  assert.deepEqual(await join(b2, room), { roomId: room, members: 2 });
  await once(b2, 'status');
  assert.equal((await once(b1, 'user_joined')).userId, b2.sub);

  const inA = await send(a1, 'only in /a', room);
  assert.equal((await once(a2, 'message')).id, inA.id);
  const inB = await send(b1, 'only in /b', room);
  for (const socket of [b1, b2]) {
    const [event, payload] = await nextAny(socket);
    assert.equal(event, 'message', `next event in /b is the /b message, got ${event} ${JSON.stringify(payload)}`);
    assert.equal(payload.id, inB.id);
    assert.equal(payload.content, 'only in /b');
  }
  // And /a saw nothing of /b: a2's next event is the next /a message.
  await once(a1, 'message');
  const marker = await send(a1, 'marker', room);
  const [event, payload] = await nextAny(a2);
  assert.equal(event, 'message', `a2's next event is the /a marker, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
});

it('a client disconnecting from one namespace sends user_left only in that namespace', async () => {
  const [a1, a2] = await connectUsers(broker, 2, { namespace: '/a' });
  const [b1, b2] = await connectUsers(broker, 2, { namespace: '/b' });
  const room = 'shared-name';
  await joinAll(room, a1, a2);
  await joinAll(room, b1, b2);
  a2.disconnect();
  assert.equal((await once(a1, 'user_left')).userId, a2.sub);
  const marker = await send(b2, 'marker', room);
  const [event, payload] = await nextAny(b1);
  assert.equal(event, 'message', `b1's next event is the marker, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
});

it('the default namespace is unknown when BROKER_NAMESPACES replaces it', async () => {
  const err = await connectError(broker.url, { namespace: NAMESPACE, query: { token: token({ sub: userId() }, broker.secret) } });
  assert.equal(err.message, 'Invalid namespace');
});
