// RS256 tokens verified with a public key. Broker-only: needs
// BROKER_JWT_ALGORITHM=RS256 and BROKER_JWT_PUBLIC_KEY_FILE.

import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

import {
  brokerOnly,
  chatTest,
  connect,
  connectError,
  joinAll,
  nowSeconds,
  once,
  roomId,
  signJwt,
  tempDir,
  token,
  tokenRS256,
  useBroker,
  userId,
} from './helpers.mjs';

const skip = brokerOnly('needs BROKER_JWT_ALGORITHM=RS256 and BROKER_JWT_PUBLIC_KEY_FILE');

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicPem = keys.publicKey.export({ type: 'spki', format: 'pem' });
const dir = await tempDir();
const publicKeyFile = path.join(dir, 'jwt-public.pem');
await writeFile(publicKeyFile, publicPem);

const broker = useBroker({ BROKER_JWT_ALGORITHM: 'RS256', BROKER_JWT_PUBLIC_KEY_FILE: publicKeyFile });
const it = (name, fn) => chatTest(broker, name, { skip }, fn);

function assertUnauthorized(err) {
  assert.equal(err.message, 'Unauthorized');
  assert.deepEqual(err.data, { code: 401 });
}

it('accepts an RS256 token signed with the configured key pair', async () => {
  const sub = userId('rsa');
  const socket = await connect(broker.url, { auth: { token: tokenRS256({ sub }, keys.privateKey) } });
  const observer = await connect(broker.url, { query: { token: tokenRS256({ sub: userId() }, keys.privateKey) } });
  const room = roomId();
  await joinAll(room, observer);
  socket.emit('join_room', { roomId: room });
  assert.equal((await once(observer, 'user_joined')).userId, sub);
});

it('refuses an RS256 token signed with another key', async () => {
  assertUnauthorized(await connectError(broker.url, { query: { token: tokenRS256({ sub: userId() }, otherKeys.privateKey) } }));
});

it('refuses an HS256 token when RS256 is configured', async () => {
  assertUnauthorized(await connectError(broker.url, { query: { token: token({ sub: userId() }, broker.secret) } }));
});

it('refuses an HS256 token keyed with the RSA public key (algorithm confusion)', async () => {
  const claims = { sub: userId(), iat: nowSeconds(), exp: nowSeconds() + 3600 };
  const confused = signJwt({ alg: 'HS256', typ: 'JWT' }, claims, (data) => createHmac('sha256', publicPem).update(data).digest());
  assertUnauthorized(await connectError(broker.url, { query: { token: confused } }));
});
