// "On disconnect, whatever the cause, the members of every room the client
// was in get user_left, and the client is gone from every room."
// Peer subset: every test here runs against TARGET_URL too.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  NAMESPACE,
  WAIT_MS,
  chatTest,
  connectUser,
  connectUsers,
  disconnected,
  isEpochMs,
  join,
  joinAll,
  once,
  onceWhere,
  roomId,
  token,
  useBroker,
  userId,
} from './helpers.mjs';

// A lost connection's rooms hear user_left when its recovery window closes
// (socket.disconnect() is a leave, heard at once): a short window here.
const broker = useBroker({ BROKER_RECOVERY_WINDOW_MS: 300 });
const it = (name, fn) => chatTest(broker, name, fn);

const MEMBER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'member.mjs');

/**
 * Sets up `leaver` in two rooms, with a different other member in each, and
 * returns what `assertLeftEverywhere` needs.
 */
async function twoRoomsWith(leaver) {
  const [inFirst, inSecond] = await connectUsers(broker, 2);
  const [first, second] = [roomId('first'), roomId('second')];
  await joinAll(first, inFirst, leaver);
  await joinAll(second, inSecond, leaver);
  return { leaverId: leaver.sub, rooms: [[first, inFirst], [second, inSecond]] };
}

/**
 * Each room's other member gets user_left about the leaver, and a newcomer
 * joining the room afterwards sees the leaver gone from the member count.
 */
async function assertLeftEverywhere({ leaverId, rooms }) {
  for (const [room, member] of rooms) {
    const left = await onceWhere(member, 'user_left', (u) => u?.roomId === room, `roomId ${room}`);
    assert.equal(left.userId, leaverId);
    assert.ok(isEpochMs(left.timestamp));
  }
  for (const [room] of rooms) {
    const { socket: newcomer } = await connectUser(broker);
    assert.deepEqual(await join(newcomer, room), { roomId: room, members: 2 }, `${room} holds the member and the newcomer only`);
  }
}

it('socket.disconnect() sends user_left to the members of every room the client was in', async () => {
  const { socket: leaver } = await connectUser(broker);
  const setup = await twoRoomsWith(leaver);
  leaver.disconnect();
  await assertLeftEverywhere(setup);
});

it('closing the Engine.IO transport without a Socket.IO DISCONNECT sends user_left everywhere', async () => {
  const { socket: leaver } = await connectUser(broker);
  const setup = await twoRoomsWith(leaver);
  leaver.io.engine.close();
  await assertLeftEverywhere(setup);
});

it('a TCP connection cut without any close frame sends user_left everywhere', async () => {
  // The WebSocket's own TCP connection is cut, so this client uses nothing else.
  const { socket: leaver } = await connectUser(broker, { transports: ['websocket'] });
  const setup = await twoRoomsWith(leaver);
  const ws = leaver.io.engine.transport.ws;
  assert.ok(ws?._socket, 'the websocket transport exposes its TCP socket');
  ws._socket.destroy();
  await assertLeftEverywhere(setup);
});

it('a client process killed with SIGKILL sends user_left everywhere', async () => {
  const [inFirst, inSecond] = await connectUsers(broker, 2);
  const [first, second] = [roomId('first'), roomId('second')];
  await joinAll(first, inFirst);
  await joinAll(second, inSecond);

  const sub = userId('process');
  const child = spawn(process.execPath, [MEMBER_SCRIPT, broker.url, NAMESPACE, token({ sub }, broker.secret), first, second], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`member process did not join within ${WAIT_MS} ms: ${stderr}`)), WAIT_MS);
      child.stdout.on('data', (chunk) => {
        if (String(chunk).includes('joined')) {
          clearTimeout(timer);
          resolve();
        }
      });
      exited.then(({ code }) => reject(new Error(`member process exited (${code}): ${stderr}`)));
    });
    for (const [room, member] of [[first, inFirst], [second, inSecond]]) {
      const joined = await onceWhere(member, 'user_joined', (u) => u?.roomId === room, `roomId ${room}`);
      assert.equal(joined.userId, sub);
    }
    child.kill('SIGKILL');
    await exited;
    await assertLeftEverywhere({ leaverId: sub, rooms: [[first, inFirst], [second, inSecond]] });
  } finally {
    child.kill('SIGKILL');
  }
});

it('a client that left a room before disconnecting gets no second user_left there', async () => {
  const [stays, leaver] = await connectUsers(broker, 2);
  const [left, kept] = [roomId('left'), roomId('kept')];
  await joinAll(left, stays, leaver);
  await joinAll(kept, stays, leaver);
  leaver.emit('leave_room', { roomId: left });
  assert.equal((await onceWhere(stays, 'user_left', (u) => u?.roomId === left, 'the first leave')).userId, leaver.sub);
  leaver.disconnect();
  const next = await once(stays, 'user_left');
  assert.equal(next.roomId, kept, `the only other user_left is for ${kept}: ${JSON.stringify(next)}`);
  assert.equal(next.userId, leaver.sub);
});

it('after a member disconnects, the rest of the room keeps chatting', async () => {
  const [a, b, leaver] = await connectUsers(broker, 3);
  const room = roomId();
  await joinAll(room, a, b, leaver);
  leaver.disconnect();
  assert.equal(await disconnected(leaver), 'io client disconnect');
  await once(a, 'user_left');
  await once(b, 'user_left');
  a.emit('send_message', { content: 'still chatting', roomId: room });
  assert.equal((await once(b, 'message')).content, 'still chatting');
});
