// join_room, leave_room, the handshake room, and the notices they produce.
// Peer subset: every test here runs against TARGET_URL too.

import assert from 'node:assert/strict';

import {
  chatTest,
  connectUser,
  connectUsers,
  emitAck,
  expectError,
  assertAckError,
  isEpochMs,
  join,
  joinAll,
  leave,
  nextAny,
  once,
  roomId,
  send,
  useBroker,
} from './helpers.mjs';

const broker = useBroker();
const it = (name, fn) => chatTest(broker, name, fn);

function assertNotice(notice, userId, room) {
  assert.deepEqual(Object.keys(notice).sort(), ['roomId', 'timestamp', 'userId']);
  assert.equal(notice.userId, userId);
  assert.equal(notice.roomId, room);
  assert.ok(isEpochMs(notice.timestamp), `timestamp is epoch ms: ${notice.timestamp}`);
}

it('join_room acks {roomId, members} with the member count after the join', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  assert.deepEqual(await join(a, room), { roomId: room, members: 1 });
  assert.deepEqual(await join(b, room), { roomId: room, members: 2 });
});

it('join_room sends status {roomId, members, joined:true} to the joiner', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await join(a, room);
  assert.deepEqual(await once(a, 'status'), { roomId: room, members: 1, joined: true });
  await join(b, room);
  assert.deepEqual(await once(b, 'status'), { roomId: room, members: 2, joined: true });
});

it('join_room sends user_joined {userId, roomId, timestamp} to the other members only', async () => {
  const [a, b, c] = await connectUsers(broker, 3);
  const room = roomId();
  await joinAll(room, a, b);
  await join(c, room);
  assertNotice(await once(a, 'user_joined'), c.sub, room);
  assertNotice(await once(b, 'user_joined'), c.sub, room);
  // The joiner itself gets its status, then the marker: no user_joined about itself.
  assert.deepEqual(await nextAny(c), ['status', { roomId: room, members: 3, joined: true }]);
  const marker = await send(a, 'marker', room);
  const [event, payload] = await nextAny(c);
  assert.equal(event, 'message');
  assert.equal(payload.id, marker.id);
});

it('a user in a different room gets no user_joined', async () => {
  const [a, outsider, b] = await connectUsers(broker, 3);
  const room = roomId();
  const elsewhere = roomId('elsewhere');
  await joinAll(elsewhere, outsider);
  await joinAll(room, a, b);
  const marker = await send(outsider, 'marker', elsewhere);
  const [event, payload] = await nextAny(outsider);
  assert.equal(event, 'message');
  assert.equal(payload.id, marker.id);
});

it('handshake query roomId joins on connect: others get user_joined, the joiner gets status', async () => {
  const { socket: a } = await connectUser(broker);
  const room = roomId('handshake');
  await joinAll(room, a);
  const { socket: b, sub } = await connectUser(broker, { query: { roomId: room } });
  assertNotice(await once(a, 'user_joined'), sub, room);
  assert.deepEqual(await once(b, 'status'), { roomId: room, members: 2, joined: true });
  // b is a member: it can send to the room and a receives it.
  const ack = await send(b, 'from the handshake member', room);
  const message = await once(a, 'message');
  assert.equal(message.id, ack.id);
  assert.equal(message.senderId, sub);
});

it('handshake roomId and join_room with the same roomId are the same room (no second user_joined)', async () => {
  const { socket: a } = await connectUser(broker);
  const room = roomId('same');
  await joinAll(room, a);
  const { socket: b, sub } = await connectUser(broker, { query: { roomId: room } });
  assertNotice(await once(a, 'user_joined'), sub, room);
  assert.deepEqual(await once(b, 'status'), { roomId: room, members: 2, joined: true });

  assert.deepEqual(await join(b, room), { roomId: room, members: 2 });
  const marker = await send(b, 'marker', room);
  const [event, payload] = await nextAny(a);
  assert.equal(event, 'message', `a's next event after b re-joined is the marker, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
});

it('joining a room twice gives no second user_joined and the same member count', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  assert.deepEqual(await join(b, room), { roomId: room, members: 2 });
  assert.deepEqual(await once(b, 'status'), { roomId: room, members: 2, joined: true });
  const marker = await send(b, 'marker', room);
  const [event, payload] = await nextAny(a);
  assert.equal(event, 'message', `a's next event after b joined twice is the marker, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
});

it('leave_room acks {roomId, members}, sends user_left to the rest and status joined:false to the leaver', async () => {
  const [a, b, c] = await connectUsers(broker, 3);
  const room = roomId();
  await joinAll(room, a, b, c);
  assert.deepEqual(await leave(c, room), { roomId: room, members: 2 });
  assertNotice(await once(a, 'user_left'), c.sub, room);
  assertNotice(await once(b, 'user_left'), c.sub, room);
  assert.deepEqual(await nextAny(c), ['status', { roomId: room, members: 2, joined: false }]);
});

it('after leave_room the leaver gets no more messages from the room and may not send to it', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  await leave(b, room);
  await once(a, 'user_left');
  await once(b, 'status');
  await send(a, 'after b left', room);
  await once(a, 'message');
  assertAckError(await send(b, 'not a member any more', room), 403);
  // b's next event is the 403 error, not a's message.
  const [event, payload] = await nextAny(b);
  assert.equal(event, 'error', `b's next event is its 403, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.code, 403);
});

it('leaving a room the client is not in is error 404', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a);
  assertAckError(await leave(b, room), 404);
  await expectError(b, 404);
  // Nothing reached the member: its next event is the marker.
  const marker = await send(a, 'marker', room);
  const [event, payload] = await nextAny(a);
  assert.equal(event, 'message', `a's next event is the marker, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
  b.emit('leave_room', { roomId: roomId('never-joined') });
  await expectError(b, 404);
});

it('leaving the same room twice: the second leave is error 404', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  assert.deepEqual(await leave(a, room), { roomId: room, members: 0 });
  assert.deepEqual(await once(a, 'status'), { roomId: room, members: 0, joined: false });
  assertAckError(await emitAck(a, 'leave_room', { roomId: room }), 404);
  await expectError(a, 404);
});

it('a client can be in several rooms at once and rejoin a room it left', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const [r1, r2] = [roomId('r1'), roomId('r2')];
  await joinAll(r1, a, b);
  await joinAll(r2, a, b);
  await leave(b, r1);
  await once(a, 'user_left');
  await once(b, 'status');
  assert.deepEqual(await join(b, r1), { roomId: r1, members: 2 });
  assertNotice(await once(a, 'user_joined'), b.sub, r1);
});
