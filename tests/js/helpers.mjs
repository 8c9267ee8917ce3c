// Shared fixtures for the real-client compatibility suite: start the broker
// (or point at an external peer), mint JWTs, connect stock socket.io-client
// sockets, and wait for events under a timeout.
//
// Every socket made by `connect` records what it receives, from the moment it
// is created, in arrival order. `once` and `nextAny` consume that record, so
// an event that arrived before the test started waiting is never missed and
// an event is never counted twice. Tests never sleep: they wait for an event
// under `WAIT_MS`, and prove that something did NOT arrive by sending a
// marker afterwards and checking the marker is the next thing seen.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes, sign as cryptoSign } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { io } from 'socket.io-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Repository root (tests/js/../..). */
export const REPO_ROOT = path.resolve(HERE, '..', '..');

/** True when the suite runs against an external server (TARGET_URL). */
export const EXTERNAL = Boolean(process.env.TARGET_URL);

/** Chat namespace, as in PROTOCOL.md; an external peer may use TARGET_NAMESPACE. */
export const NAMESPACE = (EXTERNAL && process.env.TARGET_NAMESPACE) || '/api/v1/chat';

/** How long any single wait (event, ack, connect, process exit) may take. */
export const WAIT_MS = Number(process.env.TEST_WAIT_MS ?? 5000);

/** Per-test limit, so a hung test fails instead of hanging the run. */
export const TEST_TIMEOUT_MS = Number(process.env.TEST_TIMEOUT_MS ?? 30_000);

/**
 * Skip reason for tests that need broker-specific settings, or false.
 * Use as `test(name, { skip: brokerOnly('why') }, fn)`.
 */
export function brokerOnly(what) {
  return EXTERNAL ? `broker-only (${what}); skipped because TARGET_URL is set` : false;
}

// ---------------------------------------------------------------- broker

/** Path of the broker binary: $BROKER_BIN, else <target>/debug/broker. */
export function brokerBin() {
  if (process.env.BROKER_BIN) return path.resolve(REPO_ROOT, process.env.BROKER_BIN);
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
    : path.join(REPO_ROOT, 'target');
  return path.join(target, 'debug', 'broker');
}

let lastSecret = process.env.JWT_SECRET;

/** A fresh random HS256 secret. */
export function randomSecret() {
  return randomBytes(24).toString('hex');
}

/** A temporary directory removed when the calling test file ends. */
export async function tempDir() {
  const dir = await mkdtemp(path.join(tmpdir(), 'broker-js-'));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const LOG_LIMIT = 256 * 1024;

/**
 * Spawns the broker on an ephemeral port and resolves once it prints
 * `listening on HOST:PORT`. With TARGET_URL set, spawns nothing and returns
 * the external server (extraEnv is then ignored).
 *
 * Resolves with { url, secret, token(claims), logs(), stop(), exited }.
 * `stop()` sends SIGTERM and resolves with { code, signal }.
 */
export async function startBroker(extraEnv = {}) {
  if (EXTERNAL) {
    if (!process.env.JWT_SECRET) throw new Error('TARGET_URL is set but JWT_SECRET is not');
    const secret = process.env.JWT_SECRET;
    lastSecret = secret;
    return {
      url: process.env.TARGET_URL.replace(/\/+$/, ''),
      secret,
      external: true,
      token: (claims) => token(claims, secret),
      logs: () => '',
      stop: async () => ({ code: null, signal: null, external: true }),
      exited: new Promise(() => {}),
    };
  }

  const bin = brokerBin();
  if (!existsSync(bin)) {
    throw new Error(`broker binary not found at ${bin}: run \`cargo build -p broker\` first or set BROKER_BIN`);
  }
  // A test that must mint tokens before the broker starts (e.g. to list a
  // whole token in a revocation file) passes its own BROKER_JWT_SECRET.
  const secret = extraEnv.BROKER_JWT_SECRET ?? randomSecret();
  lastSecret = secret;
  // Inherited BROKER_* settings from the developer's shell would change what
  // the tests see: start from the environment without them.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BROKER_')));
  const env = {
    ...inherited,
    ...Object.fromEntries(Object.entries(extraEnv).map(([k, v]) => [k, String(v)])),
    BROKER_LISTEN: '127.0.0.1:0',
    BROKER_JWT_SECRET: secret,
  };
  const child = spawn(bin, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });

  let log = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    if (process.env.BROKER_LOG) process.stderr.write(chunk);
    log += chunk;
    if (log.length > LOG_LIMIT) log = log.slice(-LOG_LIMIT);
  });

  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });

  const address = await new Promise((resolve, reject) => {
    let out = '';
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`broker did not print "listening on" within ${WAIT_MS} ms`)), WAIT_MS);
    function fail(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      err.message += `\nbroker stdout: ${JSON.stringify(out)}\nbroker stderr:\n${log}`;
      reject(err);
    }
    child.once('error', fail);
    exited.then(({ code, signal }) => fail(new Error(`broker exited early (code ${code}, signal ${signal})`)));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const match = /^listening on (\S+)\r?$/m.exec(out);
      if (match && !settled) {
        settled = true;
        clearTimeout(timer);
        child.removeListener('error', fail);
        resolve(match[1]);
      }
    });
  });

  let stopping = null;
  return {
    url: `http://${address}`,
    secret,
    external: false,
    child,
    exited,
    token: (claims) => token(claims, secret),
    logs: () => log,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return exited;
        child.kill('SIGTERM');
        const result = await Promise.race([exited, delay(WAIT_MS * 2).then(() => null)]);
        if (result) return result;
        child.kill('SIGKILL');
        const killed = await exited;
        return { ...killed, timedOut: true };
      })();
      return stopping;
    },
  };
}

/**
 * Starts one broker for the calling test file (before all tests, SIGTERM
 * after all tests) and returns a handle whose fields are filled in once it
 * runs: { url, secret, token(claims), logs(), stop() }.
 */
export function useBroker(extraEnv = {}) {
  const handle = {};
  before(async () => {
    Object.assign(handle, await startBroker(extraEnv));
  });
  after(async () => {
    if (!handle.stop) return;
    const result = await handle.stop();
    if (result.timedOut) process.stderr.write('warning: broker did not exit on SIGTERM; killed\n');
  });
  return handle;
}

/**
 * `node:test`'s `test`, plus: every socket `connect`ed during the test is
 * closed at its end, and on failure the broker's stderr is printed.
 * `broker` is the handle from `useBroker` (or null).
 */
export function chatTest(broker, name, options, fn) {
  if (typeof options === 'function') [fn, options] = [options, {}];
  return test(name, { timeout: TEST_TIMEOUT_MS, ...options }, async (t) => {
    const before = new Set(openSockets);
    try {
      await fn(t);
    } catch (err) {
      const logs = broker?.logs?.();
      if (logs) process.stderr.write(`\n--- broker stderr (test "${name}" failed) ---\n${logs}\n--- end broker stderr ---\n`);
      throw err;
    } finally {
      for (const socket of openSockets) {
        if (!before.has(socket)) {
          socket.disconnect();
          openSockets.delete(socket);
        }
      }
    }
  });
}

// ---------------------------------------------------------------- tokens

function base64url(input) {
  return Buffer.from(input).toString('base64url');
}

/**
 * Mints an HS256 JWT. `claims` defaults: `iat` now, `exp` in one hour; pass
 * `exp: undefined` to leave a claim out. `secret` defaults to the secret of
 * the broker started last (or $JWT_SECRET).
 */
export function token(claims = {}, secret = lastSecret) {
  if (!secret) throw new Error('token(): no secret (start a broker first or set JWT_SECRET)');
  return signJwt({ alg: 'HS256', typ: 'JWT' }, withDefaults(claims), (data) =>
    createHmac('sha256', secret).update(data).digest());
}

/** Mints an RS256 JWT with a PEM (or KeyObject) RSA private key. */
export function tokenRS256(claims, privateKey) {
  return signJwt({ alg: 'RS256', typ: 'JWT' }, withDefaults(claims), (data) =>
    cryptoSign('sha256', Buffer.from(data), privateKey));
}

/** Builds a JWT from a header, claims and a signing function over "h.p". */
export function signJwt(header, claims, signer) {
  const data = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const signature = signer ? base64url(signer(data)) : '';
  return `${data}.${signature}`;
}

/** Seconds since the epoch, as JWT `exp`/`nbf`/`iat` use. */
export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

function withDefaults(claims) {
  const now = nowSeconds();
  const full = { iat: now, exp: now + 3600, ...claims };
  for (const key of Object.keys(full)) if (full[key] === undefined) delete full[key];
  return full;
}

let serial = 0;

/** A string user id unique within this run. */
export function userId(label = 'user') {
  serial += 1;
  return `${label}-${process.pid}-${serial}-${randomBytes(3).toString('hex')}`;
}

/** A numeric user id unique within this run (safe integer). */
export function numericUserId() {
  serial += 1;
  return 1_000_000 + (process.pid % 100_000) * 1000 + serial;
}

/** A room name unique within this run. */
export function roomId(label = 'room') {
  serial += 1;
  return `${label}-${serial}-${randomBytes(3).toString('hex')}`;
}

// ---------------------------------------------------------------- sockets

const openSockets = new Set();

/**
 * How every chat case connects, from CLIENT_TRANSPORTS: `websocket` (the
 * default: `transports: ["websocket"]`), `default` (the client's own
 * defaults: long-polling first, then the upgrade to WebSocket) or `polling`
 * (`transports: ["polling"]`). `npm test` runs the suite with the first two.
 */
export const TRANSPORT_MODE = process.env.CLIENT_TRANSPORTS || 'websocket';

/** The `io()` options of a transport mode (see TRANSPORT_MODE). */
export function transportOptions(mode = TRANSPORT_MODE) {
  switch (mode) {
    case 'websocket':
      return { transports: ['websocket'] };
    case 'polling':
      return { transports: ['polling'] };
    case 'default':
      return {};
    default:
      throw new Error(`CLIENT_TRANSPORTS must be websocket, default or polling, not ${JSON.stringify(mode)}`);
  }
}

/**
 * Creates a socket.io-client socket (transports as TRANSPORT_MODE says, no
 * reconnection, its own Manager) and starts recording what it receives.
 * Does not wait. `opts.namespace` overrides the chat namespace; the rest
 * goes to `io()` (and may set `transports` itself).
 */
export function createSocket(url, opts = {}) {
  const { namespace = NAMESPACE, ...rest } = opts;
  const socket = io(url + namespace, {
    ...transportOptions(),
    reconnection: false,
    forceNew: true,
    timeout: WAIT_MS,
    ...rest,
  });
  record(socket);
  openSockets.add(socket);
  return socket;
}

/** Resolves with a connected socket; rejects with the connect_error. */
export async function connect(url, opts = {}) {
  const socket = createSocket(url, opts);
  const [event, payload] = await nextOf(socket, ['connect', 'connect_error'], `connect to ${opts.namespace ?? NAMESPACE}`);
  if (event === 'connect_error') {
    const err = new Error(`connect_error: ${payload.message}`);
    err.cause = payload;
    throw err;
  }
  return socket;
}

/** Resolves with the `connect_error` error; rejects if the socket connects. */
export async function connectError(url, opts = {}) {
  const socket = createSocket(url, opts);
  const [event, payload] = await nextOf(socket, ['connect', 'connect_error'], 'connect_error');
  if (event === 'connect') throw new Error('expected connect_error, but the socket connected');
  return payload;
}

/** Connects with `query: {token}` for a fresh user; returns { socket, sub }. */
export async function connectUser(broker, { sub = userId(), claims = {}, query = {}, ...opts } = {}) {
  const jwt = token({ sub, ...claims }, broker.secret);
  const socket = await connect(broker.url, { ...opts, query: { token: jwt, ...query } });
  socket.sub = sub;
  return { socket, sub };
}

/** Connects `count` fresh users; resolves with their sockets (`.sub` set). */
export async function connectUsers(broker, count, opts = {}) {
  const sockets = [];
  for (let i = 0; i < count; i += 1) sockets.push((await connectUser(broker, opts)).socket);
  return sockets;
}

function record(socket) {
  const inbox = { log: [], pending: [], waiters: new Set() };
  socket.inbox = inbox;
  const push = (event, payload, args) => {
    const entry = { event, payload, args, seq: inbox.log.length };
    inbox.log.push(entry);
    inbox.pending.push(entry);
    for (const waiter of inbox.waiters) {
      if (waiter.try()) inbox.waiters.delete(waiter);
    }
  };
  inbox.push = push;
  socket.onAny((event, ...args) => push(event, args[0], args));
  socket.on('connect', () => push('connect', undefined, []));
  socket.on('connect_error', (err) => push('connect_error', err, [err]));
  socket.on('disconnect', (reason, description) => push('disconnect', reason, [reason, description]));
  // The Engine.IO open packet (sid, pingInterval, pingTimeout, maxPayload).
  socket.io.engine?.on('handshake', (data) => {
    inbox.handshake = data;
  });
}

function describePending(socket) {
  const pending = socket.inbox.pending.map((e) => `${e.event} ${safeJson(e.payload)}`);
  return pending.length ? `\n  unconsumed: ${pending.join('\n              ')}` : '\n  nothing unconsumed';
}

function safeJson(value) {
  if (value instanceof Error) return `Error(${JSON.stringify(value.message)}, data=${JSON.stringify(value.data)})`;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** Waits for the first unconsumed entry matching `pick`, consuming it. */
function take(socket, pick, what, timeoutMs = WAIT_MS) {
  const inbox = socket.inbox;
  return new Promise((resolve, reject) => {
    const waiter = {
      try() {
        const index = inbox.pending.findIndex(pick);
        if (index < 0) return false;
        const [entry] = inbox.pending.splice(index, 1);
        clearTimeout(timer);
        resolve(entry);
        return true;
      },
    };
    const timer = setTimeout(() => {
      inbox.waiters.delete(waiter);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describePending(socket)}`));
    }, timeoutMs);
    if (!waiter.try()) inbox.waiters.add(waiter);
  });
}

function nextOf(socket, events, what) {
  return take(socket, (e) => events.includes(e.event), what).then((e) => [e.event, e.payload]);
}

/**
 * Resolves with the payload (first argument) of the next unconsumed `event`
 * on `socket`, consuming it; rejects after `timeoutMs`. Works for server
 * events and for `disconnect` (payload = reason) and `connect_error`.
 */
export async function once(socket, event, timeoutMs = WAIT_MS) {
  const entry = await take(socket, (e) => e.event === event, `"${event}"`, timeoutMs);
  return entry.payload;
}

/** Like `once`, but the next `event` whose payload satisfies `predicate`. */
export async function onceWhere(socket, event, predicate, what = 'a matching payload') {
  const entry = await take(socket, (e) => e.event === event && predicate(e.payload), `"${event}" with ${what}`);
  return entry.payload;
}

/**
 * Resolves with [event, payload] of the next unconsumed entry of any kind.
 * Use after consuming every expected event, to prove what came next.
 */
export async function nextAny(socket, timeoutMs = WAIT_MS) {
  const entry = await take(socket, () => true, 'any event', timeoutMs);
  return [entry.event, entry.payload];
}

/** Names and payloads of everything not consumed yet (no waiting). */
export function unconsumed(socket) {
  return socket.inbox.pending.map((e) => [e.event, e.payload]);
}

/**
 * Emits `event` with an ack and resolves with the ack's first argument.
 * The ack is also recorded in the socket's log as event "<ack:event>", so
 * tests can check what arrived before it (`socket.inbox.log`).
 */
export function emitAck(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(WAIT_MS).emit(event, ...args, (err, ...response) => {
      if (err) {
        reject(new Error(`no ack for "${event}" within ${WAIT_MS} ms (${err.message})${describePending(socket)}`));
        return;
      }
      const entry = { event: `<ack:${event}>`, payload: response[0], args: response, seq: socket.inbox.log.length };
      socket.inbox.log.push(entry);
      resolve(response[0]);
    });
  });
}

/** join_room with ack; resolves with the ack. */
export function join(socket, room) {
  return emitAck(socket, 'join_room', { roomId: room });
}

/** leave_room with ack; resolves with the ack. */
export function leave(socket, room) {
  return emitAck(socket, 'leave_room', { roomId: room });
}

/** send_message with ack; resolves with the ack. */
export function send(socket, content, room) {
  return emitAck(socket, 'send_message', room === undefined ? { content } : { content, roomId: room });
}

/**
 * Resolves once `socket` is disconnected with the reason, consuming the
 * recorded `disconnect`.
 */
export function disconnected(socket, timeoutMs = WAIT_MS) {
  return once(socket, 'disconnect', timeoutMs);
}

/**
 * Joins `sockets` to `room` one after another and consumes what each join
 * produces (the ack, the joiner's `status`, the earlier members'
 * `user_joined`), so that afterwards nothing about this room is pending.
 * Every socket needs `.sub` (set by `connectUser`).
 */
export async function joinAll(room, ...sockets) {
  const members = [];
  for (const socket of sockets) {
    const ack = await join(socket, room);
    assert.deepEqual(ack, { roomId: room, members: members.length + 1 }, 'join_room ack');
    await onceWhere(socket, 'status', (s) => s?.roomId === room && s.joined === true, `roomId ${room}, joined`);
    for (const member of members) {
      await onceWhere(member, 'user_joined', (u) => u?.roomId === room && u.userId === socket.sub, `userId ${socket.sub}`);
    }
    members.push(socket);
  }
}

/**
 * Waits for the next `error` event on `socket`, checks its shape
 * ({code, message, timestamp}) and its code, and returns it.
 */
export async function expectError(socket, code) {
  const error = await once(socket, 'error');
  assertErrorPayload(error, code);
  return error;
}

/** Checks an `error` event payload: exactly {code, message, timestamp}. */
export function assertErrorPayload(error, code) {
  assert.equal(typeof error, 'object', `error payload is an object: ${safeJson(error)}`);
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'timestamp'], `error payload keys: ${safeJson(error)}`);
  assert.equal(error.code, code, `error code: ${safeJson(error)}`);
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0, 'error message is not empty');
  assert.ok(isEpochMs(error.timestamp), `error timestamp is epoch ms: ${error.timestamp}`);
}

/** Checks an ack that carries an error: {error: {code, message}}. */
export function assertAckError(ack, code) {
  assert.equal(typeof ack, 'object', `ack is an object: ${safeJson(ack)}`);
  assert.ok(ack !== null && 'error' in ack, `ack carries an error: ${safeJson(ack)}`);
  assert.deepEqual(Object.keys(ack), ['error'], `error ack has only "error": ${safeJson(ack)}`);
  assert.equal(ack.error.code, code, `ack error code: ${safeJson(ack)}`);
  assert.equal(typeof ack.error.message, 'string');
  assert.ok(ack.error.message.length > 0, 'ack error message is not empty');
}

// ---------------------------------------------------------------- checks

/** Milliseconds since the epoch, and within ten minutes of this clock. */
export function isEpochMs(value) {
  return Number.isInteger(value) && Math.abs(value - Date.now()) < 10 * 60 * 1000;
}

/**
 * Compares two message ids by the order PROTOCOL.md requires ("increases
 * within a room"): decimal ids numerically, others as strings of equal
 * length first by length then lexicographically.
 */
export function compareIds(a, b) {
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Resolves after `ms` — only for bounding a wait, never for ordering. */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * A TCP relay on 127.0.0.1:0 to the server at `target` (an http:// URL).
 * `sever()` resets every connection through it, both sides at once (no
 * close frame, no Engine.IO close), and every new one until `heal()`;
 * `heal(other)` relays to `other` from then on (a client that reconnects
 * lands on another server at the same address).
 */
export async function relay(target) {
  let upstreamUrl = new URL(target);
  const pairs = new Set();
  let severed = false;
  const server = net.createServer((client) => {
    if (severed) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(Number(upstreamUrl.port), upstreamUrl.hostname);
    const pair = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const forget = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', forget);
    upstream.on('error', forget);
    client.on('close', forget);
    upstream.on('close', forget);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    sever() {
      severed = true;
      for (const pair of pairs) for (const socket of pair) socket.resetAndDestroy();
      pairs.clear();
    },
    heal(other) {
      if (other) upstreamUrl = new URL(other);
      severed = false;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * Numbered messages from `sender` into `room`, without acks: returns
 * `stream(from, to)`, which sends `m<from>` … `m<to - 1>` and records each
 * content in `sent`.
 */
export function messageStream(sender, room, sent) {
  return (from, to) => {
    for (let i = from; i < to; i += 1) {
      const content = `m${String(i).padStart(2, '0')}`;
      sent.push(content);
      sender.emit('send_message', { roomId: room, content });
    }
  };
}

/** Appends to `seen` the contents of `socket`'s messages up to the one with `marker` (left out). */
export async function contentsUntil(socket, marker, seen) {
  for (;;) {
    const message = await once(socket, 'message');
    if (message.content === marker) return seen;
    seen.push(message.content);
  }
}

/** How many `event` notices about the user `sub` `socket` has received. */
export function noticesAbout(socket, event, sub) {
  return socket.inbox.log.filter((e) => e.event === event && e.payload?.userId === sub).length;
}
