// Error events and error acks (PROTOCOL.md "Errors"). Peer subset, except the
// roomId length test. Against the spawned broker the content limit is set to
// 64 bytes; against TARGET_URL the protocol default of 4096 bytes is assumed.

import assert from 'node:assert/strict';

import {
  EXTERNAL,
  assertAckError,
  brokerOnly,
  chatTest,
  connectUsers,
  emitAck,
  expectError,
  join,
  joinAll,
  nextAny,
  once,
  roomId,
  send,
  useBroker,
} from './helpers.mjs';

const LIMIT = EXTERNAL ? 4096 : 64;
const ROOM_ID_LIMIT = 128; // the broker's default max_room_id_length

const broker = useBroker({ BROKER_MAX_MESSAGE_LENGTH: LIMIT });
const it = (name, options, fn) => chatTest(broker, name, options, fn);

/** Emits with an ack; checks both the error ack and the error event. */
async function expectAckAndEvent(socket, code, event, ...args) {
  assertAckError(await emitAck(socket, event, ...args), code);
  return expectError(socket, code);
}

it('an unknown event is error 404, emitted as an error event and answered on its ack', async () => {
  const [a] = await connectUsers(broker, 1);
  a.emit('no_such_event', { roomId: 'x' });
  await expectError(a, 404);
  await expectAckAndEvent(a, 404, 'no_such_event', { roomId: 'x' });
});

it('error payloads are {code, message, timestamp} and go to the sender only', async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  b.emit('send_message', { content: '   ', roomId: room });
  await expectError(b, 400); // checks the exact shape
  const marker = await send(b, 'marker', room);
  const [event, payload] = await nextAny(a);
  assert.equal(event, 'message', `a's next event is the marker, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
});

it('empty content is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  await expectAckAndEvent(a, 400, 'send_message', { content: '', roomId: room });
});

it('whitespace-only content is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  await expectAckAndEvent(a, 400, 'send_message', { content: ' \t\n  \r\n ', roomId: room });
});

it(`content of exactly the limit (${LIMIT} bytes) is accepted`, async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  const content = 'x'.repeat(LIMIT);
  const ack = await send(a, content, room);
  assert.equal(typeof ack.id, 'string', `ack: ${JSON.stringify(ack)}`);
  assert.equal((await once(a, 'message')).content, content);
});

it(`content over the limit (${LIMIT + 1} bytes) is error 413`, async () => {
  const [a, b] = await connectUsers(broker, 2);
  const room = roomId();
  await joinAll(room, a, b);
  await expectAckAndEvent(a, 413, 'send_message', { content: 'x'.repeat(LIMIT + 1), roomId: room });
  const marker = await send(a, 'marker', room);
  const [event, payload] = await nextAny(b);
  assert.equal(event, 'message', `nothing but the marker reached b, got ${event} ${JSON.stringify(payload)}`);
  assert.equal(payload.id, marker.id);
});

it('the content limit counts UTF-8 bytes, not characters', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  const euros = '€'.repeat(Math.floor(LIMIT / 3) + 1); // under LIMIT characters, over LIMIT bytes
  assert.ok(euros.length <= LIMIT && Buffer.byteLength(euros) > LIMIT);
  await expectAckAndEvent(a, 413, 'send_message', { content: euros, roomId: room });
  const fits = '€'.repeat(Math.floor(LIMIT / 3)) + 'x'.repeat(LIMIT % 3);
  assert.equal(Buffer.byteLength(fits), LIMIT);
  const ack = await send(a, fits, room);
  assert.equal(typeof ack.id, 'string', `ack: ${JSON.stringify(ack)}`);
});

it('a payload that is a number instead of an object is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  await expectAckAndEvent(a, 400, 'join_room', 42);
  await expectAckAndEvent(a, 400, 'leave_room', 42);
  await expectAckAndEvent(a, 400, 'send_message', 42);
  await expectAckAndEvent(a, 400, 'send_message', 'just a string');
});

it('a missing payload is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  await expectAckAndEvent(a, 400, 'join_room');
  await expectAckAndEvent(a, 400, 'send_message');
  await expectAckAndEvent(a, 400, 'join_room', null);
});

it('a roomId that is not a string is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  await expectAckAndEvent(a, 400, 'join_room', { roomId: 5 });
  await expectAckAndEvent(a, 400, 'join_room', { roomId: ['a'] });
  await expectAckAndEvent(a, 400, 'join_room', {});
  await expectAckAndEvent(a, 400, 'leave_room', { roomId: null });
  const room = roomId();
  await joinAll(room, a);
  await expectAckAndEvent(a, 400, 'send_message', { content: 'hi', roomId: 7 });
});

it('content that is not a string is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  const room = roomId();
  await joinAll(room, a);
  await expectAckAndEvent(a, 400, 'send_message', { content: 5, roomId: room });
  await expectAckAndEvent(a, 400, 'send_message', { content: { text: 'hi' }, roomId: room });
  await expectAckAndEvent(a, 400, 'send_message', { roomId: room });
});

it('an empty roomId is error 400', async () => {
  const [a] = await connectUsers(broker, 1);
  await expectAckAndEvent(a, 400, 'join_room', { roomId: '' });
});

it(
  `a roomId longer than ${ROOM_ID_LIMIT} bytes is error 400`,
  { skip: brokerOnly('the roomId limit is the broker default, not a protocol constant') },
  async () => {
    const [a] = await connectUsers(broker, 1);
    await expectAckAndEvent(a, 400, 'join_room', { roomId: 'r'.repeat(ROOM_ID_LIMIT + 1) });
    assert.deepEqual(await join(a, 'r'.repeat(ROOM_ID_LIMIT)), { roomId: 'r'.repeat(ROOM_ID_LIMIT), members: 1 });
  },
);

it('the connection stays up after errors and the client can still chat', async () => {
  const [a, b] = await connectUsers(broker, 2);
  a.emit('no_such_event');
  await expectError(a, 404);
  a.emit('join_room', 42);
  await expectError(a, 400);
  a.emit('send_message', { content: '' });
  await expectError(a, 400);
  const room = roomId();
  await joinAll(room, a, b);
  const ack = await send(a, 'still here', room);
  assert.equal((await once(b, 'message')).id, ack.id);
  assert.equal(a.connected, true);
});
