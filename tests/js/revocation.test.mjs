// Revoked and expiring tokens. Broker-only: needs BROKER_REVOCATION_FILE, a
// fast revocation reload and zero JWT leeway.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { appendFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

import {
  WAIT_MS,
  brokerOnly,
  chatTest,
  connect,
  connectError,
  connectUser,
  joinAll,
  nowSeconds,
  once,
  onceWhere,
  randomSecret,
  roomId,
  tempDir,
  token,
  useBroker,
  userId,
} from './helpers.mjs';

const skip = brokerOnly('needs BROKER_REVOCATION_FILE, BROKER_REVOCATION_RELOAD_MS and BROKER_JWT_LEEWAY_MS');

const secret = randomSecret();
const dir = await tempDir();
const revocationFile = path.join(dir, 'revoked.txt');
const revokedJti = `jti-${randomUUID()}`;
const revokedWholeToken = token({ sub: userId('whole') }, secret); // no jti: listed as the whole token
await writeFile(revocationFile, `# revoked tokens\n\n${revokedJti}\n${revokedWholeToken}\n`);

const broker = useBroker({
  BROKER_JWT_SECRET: secret,
  BROKER_REVOCATION_FILE: revocationFile,
  BROKER_REVOCATION_RELOAD_MS: 100,
  BROKER_JWT_LEEWAY_MS: 0,
});
const it = (name, fn) => chatTest(broker, name, { skip }, fn);

function assertRevoked(err) {
  assert.equal(err.message, 'Token revoked');
  assert.deepEqual(err.data, { code: 401 });
}

/** Error 401 arrives, then the disconnect, and the room sees user_left. */
async function assertCutOff(socket, observer, room) {
  const error = await once(socket, 'error', WAIT_MS * 2);
  assert.equal(error.code, 401);
  const reason = await once(socket, 'disconnect');
  assert.ok(['io server disconnect', 'transport close'].includes(reason), `disconnect reason: ${reason}`);
  const log = socket.inbox.log;
  const errorAt = log.findIndex((e) => e.event === 'error');
  const disconnectAt = log.findIndex((e) => e.event === 'disconnect');
  assert.ok(errorAt < disconnectAt, 'the 401 error arrives before the disconnect');
  const left = await onceWhere(observer, 'user_left', (u) => u?.roomId === room, `roomId ${room}`);
  assert.equal(left.userId, socket.sub);
}

it('a token whose jti is in the revocation file is refused with Token revoked', async () => {
  const revoked = token({ sub: userId(), jti: revokedJti }, secret);
  assertRevoked(await connectError(broker.url, { query: { token: revoked } }));
  assertRevoked(await connectError(broker.url, { auth: { token: revoked } }));
});

it('a token listed whole in the revocation file is refused with Token revoked', async () => {
  assertRevoked(await connectError(broker.url, { query: { token: revokedWholeToken } }));
});

it('a token with a jti that is not revoked is accepted', async () => {
  await connect(broker.url, { query: { token: token({ sub: userId(), jti: `jti-${randomUUID()}` }, secret) } });
});

it('a token revoked while connected gets error 401 and is disconnected', async () => {
  const jti = `jti-${randomUUID()}`;
  const { socket } = await connectUser(broker, { claims: { jti } });
  const { socket: observer } = await connectUser(broker);
  const room = roomId();
  await joinAll(room, observer, socket);
  await appendFile(revocationFile, `${jti}\n`);
  await assertCutOff(socket, observer, room);
});

it('a token that expires while connected gets error 401 and is disconnected', async () => {
  // Valid for one to two seconds; the broker runs with zero leeway.
  const { socket } = await connectUser(broker, { claims: { exp: nowSeconds() + 2 } });
  const { socket: observer } = await connectUser(broker);
  const room = roomId();
  await joinAll(room, observer, socket);
  await assertCutOff(socket, observer, room);
});
