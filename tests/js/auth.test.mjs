// Authentication and namespace admission (PROTOCOL.md "Namespace and
// authentication"). Peer subset: every test here runs against TARGET_URL too.

import assert from 'node:assert/strict';

import {
  chatTest,
  connect,
  connectError,
  connectUser,
  join,
  joinAll,
  nowSeconds,
  numericUserId,
  once,
  roomId,
  send,
  signJwt,
  token,
  useBroker,
  userId,
} from './helpers.mjs';

const broker = useBroker();
const it = (name, fn) => chatTest(broker, name, fn);

/**
 * The user id the broker gave `socket`: an observer joins a fresh room,
 * `socket` joins it, and the observer's `user_joined` names the user.
 */
async function identityOf(socket) {
  const { socket: observer } = await connectUser(broker);
  const room = roomId('identity');
  await joinAll(room, observer);
  socket.emit('join_room', { roomId: room });
  const joined = await once(observer, 'user_joined');
  assert.equal(joined.roomId, room);
  return joined.userId;
}

function assertUnauthorized(err) {
  assert.equal(err.message, 'Unauthorized');
  assert.deepEqual(err.data, { code: 401 });
}

it('accepts a token from the handshake query', async () => {
  const sub = userId('query');
  const socket = await connect(broker.url, { query: { token: token({ sub }, broker.secret) } });
  assert.equal(await identityOf(socket), sub);
});

it('accepts a token from the Authorization: Bearer header of the upgrade request', async () => {
  const sub = userId('header');
  const socket = await connect(broker.url, {
    extraHeaders: { Authorization: `Bearer ${token({ sub }, broker.secret)}` },
  });
  assert.equal(await identityOf(socket), sub);
});

it('accepts a token from the CONNECT payload (auth option)', async () => {
  const sub = userId('auth');
  const socket = await connect(broker.url, { auth: { token: token({ sub }, broker.secret) } });
  assert.equal(await identityOf(socket), sub);
});

it('takes the query token before the header token and the header token before the CONNECT token', async () => {
  const [fromQuery, fromHeader, fromAuth] = [userId('q'), userId('h'), userId('a')];
  const all = await connect(broker.url, {
    query: { token: token({ sub: fromQuery }, broker.secret) },
    extraHeaders: { Authorization: `Bearer ${token({ sub: fromHeader }, broker.secret)}` },
    auth: { token: token({ sub: fromAuth }, broker.secret) },
  });
  assert.equal(await identityOf(all), fromQuery);
  const headerAndAuth = await connect(broker.url, {
    extraHeaders: { Authorization: `Bearer ${token({ sub: fromHeader }, broker.secret)}` },
    auth: { token: token({ sub: fromAuth }, broker.secret) },
  });
  assert.equal(await identityOf(headerAndAuth), fromHeader);
});

it('refuses a client without a token with Unauthorized 401', async () => {
  assertUnauthorized(await connectError(broker.url, {}));
});

it('refuses a token with a bad signature with Unauthorized 401', async () => {
  const forged = token({ sub: userId() }, `${broker.secret}-but-not-quite`);
  assertUnauthorized(await connectError(broker.url, { query: { token: forged } }));
  assertUnauthorized(await connectError(broker.url, { auth: { token: forged } }));
});

it('refuses an expired token with Unauthorized 401', async () => {
  const expired = token({ sub: userId(), iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 }, broker.secret);
  assertUnauthorized(await connectError(broker.url, { query: { token: expired } }));
});

it('refuses a token whose nbf is in the future with Unauthorized 401', async () => {
  const early = token({ sub: userId(), nbf: nowSeconds() + 3600 }, broker.secret);
  assertUnauthorized(await connectError(broker.url, { auth: { token: early } }));
});

it('refuses an unsigned token (alg none) with Unauthorized 401', async () => {
  const unsigned = signJwt({ alg: 'none', typ: 'JWT' }, { sub: userId(), exp: nowSeconds() + 3600 }, null);
  assertUnauthorized(await connectError(broker.url, { query: { token: unsigned } }));
});

it('refuses a token that is not a JWT with Unauthorized 401', async () => {
  assertUnauthorized(await connectError(broker.url, { query: { token: 'not-a-jwt' } }));
  assertUnauthorized(await connectError(broker.url, { extraHeaders: { Authorization: 'Bearer ' } }));
});

it('refuses a CONNECT to an unknown namespace with Invalid namespace', async () => {
  const err = await connectError(broker.url, {
    namespace: '/no/such/namespace',
    query: { token: token({ sub: userId() }, broker.secret) },
  });
  assert.equal(err.message, 'Invalid namespace');
});

it('keeps a numeric sub a number in user_joined.userId and message.senderId', async () => {
  const sub = numericUserId();
  const { socket: observer } = await connectUser(broker);
  const { socket } = await connectUser(broker, { sub });
  const room = roomId();
  await joinAll(room, observer, socket);
  const ack = await send(socket, 'numeric sender', room);
  const message = await once(observer, 'message');
  assert.equal(message.id, ack.id);
  assert.equal(message.senderId, sub);
  assert.equal(typeof message.senderId, 'number');

  socket.disconnect();
  const left = await once(observer, 'user_left');
  assert.equal(left.userId, sub);
  assert.equal(typeof left.userId, 'number');
});

it('keeps a string sub a string even when it looks like a number', async () => {
  const sub = String(numericUserId());
  const { socket: observer } = await connectUser(broker);
  const { socket } = await connectUser(broker, { sub });
  const room = roomId();
  await join(observer, room);
  socket.emit('join_room', { roomId: room });
  const joined = await once(observer, 'user_joined');
  assert.equal(joined.userId, sub);
  assert.equal(typeof joined.userId, 'string');
  const ack = await send(socket, 'string sender', room);
  const message = await once(observer, 'message');
  assert.equal(message.id, ack.id);
  assert.equal(message.senderId, sub);
});
