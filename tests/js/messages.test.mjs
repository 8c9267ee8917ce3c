// send_message: fan-out, acks, ids, the default room, membership.
// Peer subset: every test here runs against TARGET_URL too.

import assert from 'node:assert/strict';

import {
  assertAckError,
  chatTest,
  compareIds,
  connectUsers,
  emitAck,
  expectError,
  isEpochMs,
  joinAll,
  nextAny,
  once,
  roomId,
  send,
  useBroker,
} from './helpers.mjs';

const broker = useBroker();
const it = (name, fn) => chatTest(broker, name, fn);

function assertAck(ack) {
  assert.deepEqual(Object.keys(ack).sort(), ['id', 'timestamp'], `send_message ack: ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.id, 'string');
  assert.ok(ack.id.length > 0);
  assert.ok(isEpochMs(ack.timestamp), `ack timestamp is epoch ms: ${ack.timestamp}`);
}

function assertMessage(message, { id, room, content, senderId }) {
  assert.deepEqual(Object.keys(message).sort(), ['content', 'id', 'roomId', 'senderId', 'timestamp']);
  assert.equal(message.id, id);
  assert.equal(message.roomId, room);
  assert.equal(message.content, content);
  assert.equal(message.senderId, senderId);
  assert.ok(isEpochMs(message.timestamp), `message timestamp is epoch ms: ${message.timestamp}`);
}

/** Asserts that the next event of each socket is the message `id`. */
async function assertNextIsMessage(sockets, id) {
  for (const socket of sockets) {
    const [event, payload] = await nextAny(socket);
    assert.equal(event, 'message', `${socket.sub}: next event is message ${id}, got ${event} ${JSON.stringify(payload)}`);
    assert.equal(payload.id, id, `${socket.sub}: next message is ${id}, got ${JSON.stringify(payload)}`);
  }
}

it('send_message reaches every member, sender included, exactly once, and acks {id, timestamp}', async () => {
  const [a, b, c] = await connectUsers(broker, 3);
  const room = roomId();
  await joinAll(room, a, b, c);
  const ack = await send(a, 'hello room', room);
  assertAck(ack);
  for (const socket of [a, b, c]) {
    assertMessage(await once(socket, 'message'), { id: ack.id, room, content: 'hello room', senderId: a.sub });
  }
  // Exactly once: the next thing each member sees is the next message.
  const marker = await send(b, 'marker', room);
  await assertNextIsMessage([a, b, c], marker.id);
});

it("the sender's own message arrives before its ack", async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  const ack = await send(a, 'ordering', room);
  const log = a.inbox.log;
  const messageAt = log.findIndex((e) => e.event === 'message' && e.payload?.id === ack.id);
  const ackAt = log.findIndex((e) => e.event === '<ack:send_message>' && e.payload?.id === ack.id);
  assert.ok(messageAt >= 0, 'the message had arrived when the ack arrived');
  assert.ok(messageAt < ackAt, `message (#${messageAt}) before ack (#${ackAt})`);
});

it('message content arrives byte for byte (unicode, newlines, quotes)', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  const content = 'héllo 🌍 "quoted" \\ back\nslash\t<tag> &amp; 日本語';
  const ack = await send(a, content, room);
  assertMessage(await once(b, 'message'), { id: ack.id, room, content, senderId: a.sub });
});

it('message ids increase within a room, in the order members receive them', async () => {
  const [a, b, c] = await connectUsers(broker, 3);
  const room = roomId();
  await joinAll(room, a, b, c);
  const acked = [];
  for (let i = 0; i < 10; i += 1) {
    const sender = i % 2 === 0 ? a : b;
    acked.push((await send(sender, `n${i}`, room)).id);
  }
  for (let i = 1; i < acked.length; i += 1) {
    assert.ok(compareIds(acked[i - 1], acked[i]) < 0, `id ${acked[i - 1]} < ${acked[i]}`);
  }
  const received = [];
  for (let i = 0; i < acked.length; i += 1) received.push((await once(c, 'message')).id);
  assert.deepEqual(received, acked);
});

it('message ids are unique across rooms', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const [r1, r2] = [roomId('r1'), roomId('r2')];
  await joinAll(r1, a);
  await joinAll(r2, b);
  const ids = [];
  for (let i = 0; i < 5; i += 1) {
    ids.push((await send(a, `r1-${i}`, r1)).id);
    ids.push((await send(b, `r2-${i}`, r2)).id);
  }
  assert.equal(new Set(ids).size, ids.length, `ids are unique: ${ids.join(', ')}`);
});

it('send_message without roomId goes to the room joined last', async () => {
  const [a, b, c] = await connectUsers(broker, 3);
  const [first, last] = [roomId('first'), roomId('last')];
  await joinAll(first, a, b);
  await joinAll(last, a, c);
  const ack = await emitAck(a, 'send_message', { content: 'no room given' });
  assertAck(ack);
  assertMessage(await once(c, 'message'), { id: ack.id, room: last, content: 'no room given', senderId: a.sub });
  assertMessage(await once(a, 'message'), { id: ack.id, room: last, content: 'no room given', senderId: a.sub });
  // b, in the other room, got nothing: its next event is a marker sent to `first`.
  const marker = await send(a, 'marker', first);
  await assertNextIsMessage([b], marker.id);
});

it('send_message without roomId and no room joined is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  assertAckError(await emitAck(a, 'send_message', { content: 'nowhere to go' }), 400);
  await expectError(a, 400);
});

it('send_message to a room the sender has not joined is error 403 and nothing is delivered', async () => {
  const [a, b, outsider] = await connectUsers(broker, 3);
  const room = roomId();
  await joinAll(room, a, b);
  assertAckError(await send(outsider, 'intruder', room), 403);
  await expectError(outsider, 403);
  outsider.emit('send_message', { content: 'intruder without ack', roomId: room });
  await expectError(outsider, 403);
  // The first thing the members receive after that is the marker.
  const marker = await send(a, 'marker', room);
  await assertNextIsMessage([a, b], marker.id);
});

it('send_message to a room that does not exist is error 403', async () => {
  const [a] = await connectUsers(broker, 1);
  assertAckError(await send(a, 'hello?', roomId('empty')), 403);
  await expectError(a, 403);
});

it('a message is delivered only to its room', async () => {
  const [a, b, other] = await connectUsers(broker, 3);
  const [room, elsewhere] = [roomId(), roomId('elsewhere')];
  await joinAll(room, a, b);
  await joinAll(elsewhere, other);
  await send(a, 'for room only', room);
  await once(b, 'message');
  const marker = await send(other, 'marker', elsewhere);
  await assertNextIsMessage([other], marker.id);
});
