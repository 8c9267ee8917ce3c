// The mixed cluster: two of our brokers (`--adapter redis`) and a Node
// socket.io 4.8 gateway with @socket.io/redis-adapter (gateway.mjs) share
// one Redis, with stock socket.io-client users on each. Every chat case
// crosses every ordered pair of nodes; then the Node side's tools
// (@socket.io/redis-emitter, fetchSockets, socketsJoin, emitWithAck,
// disconnectSockets) reach sockets on our brokers, serverSideEmitWithAck gets
// our brokers' answer and binary emits are refused by them; a client cut off
// on one broker reconnects through the other and recovers its session; last,
// a broker killed with SIGKILL is taken out of its rooms by the others.
//
// Needs BROKER_TEST_REDIS_URL (tests/run.sh starts a Redis); without it the
// file is skipped, unless CI is set, where that is a failure.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Emitter } from "@socket.io/redis-emitter";
import { Redis } from "ioredis";

import {
  NAMESPACE,
  connect,
  connectUser,
  contentsUntil,
  disconnected,
  join,
  leave,
  messageStream,
  noticesAbout,
  once,
  onceWhere,
  randomSecret,
  relay,
  roomId,
  send,
  startBroker,
  token,
} from "../js/helpers.mjs";
import { startGateway } from "./gateway.mjs";
import { startSidProxy } from "./sid-proxy.mjs";

const redisUrl = process.env.BROKER_TEST_REDIS_URL;
if (!redisUrl && process.env.CI) {
  throw new Error("CI is set but BROKER_TEST_REDIS_URL is not: run the suite with tests/run.sh");
}
const skip = redisUrl ? false : "BROKER_TEST_REDIS_URL is not set (tests/run.sh starts a Redis)";

const key = `mixed-${randomBytes(4).toString("hex")}`;
const secret = randomSecret();
const nodes = [];
let gateway;
let publisher;

/** The environment of a broker of the cluster, with `extra` settings. */
function clusterEnv(extra = {}) {
  return {
    BROKER_ADAPTER: "redis",
    BROKER_REDIS_URL: redisUrl,
    BROKER_REDIS_KEY: key,
    BROKER_JWT_SECRET: secret,
    BROKER_RATE_LIMIT_PER_SEC: 0,
    ...extra,
  };
}

before(async () => {
  if (skip) return;
  const env = clusterEnv();
  nodes.push({ name: "rust-1", ...(await startBroker(env)) });
  nodes.push({ name: "rust-2", ...(await startBroker(env)) });
  gateway = await startGateway({ redisUrl, key, secret, namespace: NAMESPACE });
  nodes.push({ name: "node", url: `http://127.0.0.1:${gateway.port}`, secret, stop: () => gateway.close() });
  publisher = new Redis(redisUrl);
});

after(async () => {
  await Promise.all(nodes.map((node) => node.stop()));
  publisher?.disconnect();
});

const SERVER_SIDE_EMITS = "broker_redis_server_side_emits_total";
const BINARY_REFUSED = "broker_redis_binary_refused_total";
/** What our brokers answer a server-side emit that asks for answers (README, "Many brokers as one"). */
const NOT_HANDLED = { error: { code: 501, message: "server-side events are not handled by this broker" } };

/** The value of counter `name` on a broker's `/metrics`. */
async function metric(node, name) {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split("\n").find((row) => row.startsWith(`${name} `));
  assert.ok(line, `${name} is on /metrics`);
  return Number(line.slice(name.length + 1));
}

/** Waits (at most 5 s) until `check` resolves true. */
async function eventually(check) {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, "the condition did not hold within 5 s");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Contents of every `message` `socket` received, in arrival order. */
function messagesOf(socket) {
  return socket.inbox.log.filter((entry) => entry.event === "message").map((entry) => entry.payload.content);
}

describe("chat across every pair of nodes", { skip }, () => {
  const pairs = [];
  for (const from of ["rust-1", "rust-2", "node"]) {
    for (const to of ["rust-1", "rust-2", "node"]) if (from !== to) pairs.push([from, to]);
  }
  for (const [from, to] of pairs) {
    test(`${from} -> ${to}: join, message both ways, leave, disconnect`, async () => {
      const a = nodes.find((node) => node.name === from);
      const b = nodes.find((node) => node.name === to);
      const room = roomId("pair");
      const { socket: x, sub: xSub } = await connectUser(a);
      const { socket: y, sub: ySub } = await connectUser(b);

      assert.equal((await join(x, room)).members, 1);
      assert.equal((await join(y, room)).members, 2, "the ack counts the member on the other node");
      assert.equal((await once(x, "user_joined")).userId, ySub);

      const first = await send(x, "first", room);
      assert.equal(typeof first.id, "string");
      await onceWhere(y, "message", (m) => m.content === "first");
      await send(y, "second", room);
      await onceWhere(x, "message", (m) => m.content === "second");
      await onceWhere(y, "message", (m) => m.content === "second");
      await send(x, "marker", room);
      await onceWhere(x, "message", (m) => m.content === "marker");
      await onceWhere(y, "message", (m) => m.content === "marker");
      // Exactly once each, and the same order on both nodes.
      assert.deepEqual(messagesOf(x), ["first", "second", "marker"]);
      assert.deepEqual(messagesOf(y), ["first", "second", "marker"]);

      assert.equal((await leave(y, room)).members, 1, "the leave ack counts the whole room");
      assert.equal((await once(x, "user_left")).userId, ySub);

      await join(y, room);
      assert.equal((await once(x, "user_joined")).userId, ySub);
      y.disconnect();
      const left = await once(x, "user_left");
      assert.deepEqual([left.userId, left.roomId], [ySub, room]);
      assert.equal(x.sub, xSub);
      x.disconnect();
    });
  }
});

describe("the Node side's tools reach our sockets", { skip }, () => {
  test("@socket.io/redis-emitter publishes into a room on our brokers", async () => {
    const room = roomId("emitter");
    const { socket: one } = await connectUser(nodes[0]);
    const { socket: two } = await connectUser(nodes[1]);
    await join(one, room);
    await join(two, room);
    await once(one, "user_joined");
    new Emitter(publisher, { key }).of(NAMESPACE).to(room).emit("message", { content: "from the emitter" });
    for (const socket of [one, two]) {
      const message = await onceWhere(socket, "message", (m) => m.content === "from the emitter");
      assert.equal(message.content, "from the emitter");
    }
    one.disconnect();
    two.disconnect();
  });

  test("an emit to one of our sockets by its id reaches just that socket", async () => {
    const { socket: one } = await connectUser(nodes[0]);
    const { socket: other } = await connectUser(nodes[0]);
    gateway.nsp.to(one.id).emit("direct", { to: one.id });
    assert.deepEqual(await once(one, "direct"), { to: one.id });
    gateway.nsp.to(other.id).emit("direct", { to: other.id });
    assert.deepEqual(await once(other, "direct"), { to: other.id });
    // The marker came after the first emit: had `other` got it, it would be first.
    assert.equal(other.inbox.log.filter((entry) => entry.event === "direct").length, 1);
    one.disconnect();
    other.disconnect();
  });

  test("fetchSockets on the Node server lists the sockets on our brokers", async () => {
    const room = roomId("fetch");
    const { socket: one } = await connectUser(nodes[0]);
    const { socket: two } = await connectUser(nodes[1]);
    await join(one, room);
    await join(two, room);
    const found = await gateway.nsp.in(room).fetchSockets();
    assert.deepEqual(found.map((socket) => socket.id).sort(), [one.id, two.id].sort());
    assert.ok(found.every((socket) => socket.rooms.has(room)));
    one.disconnect();
    two.disconnect();
  });

  test("socketsJoin on the Node server makes our socket a member", async () => {
    const room = roomId("joined-remotely");
    const { socket: ours } = await connectUser(nodes[0]);
    const { socket: theirs } = await connectUser(nodes[2]);
    await join(theirs, room);
    gateway.nsp.in(ours.id).socketsJoin(room);
    // Requests are handled in order: once fetchSockets sees the room, the join is done.
    const found = await gateway.nsp.in(room).fetchSockets();
    assert.ok(found.some((socket) => socket.id === ours.id));
    const ack = await send(ours, "member by socketsJoin", room);
    assert.equal(ack.error, undefined);
    await onceWhere(theirs, "message", (m) => m.content === "member by socketsJoin");
    ours.disconnect();
    theirs.disconnect();
  });

  test("a broadcast with acks from the Node server collects our clients' answers", async () => {
    const room = roomId("acks");
    const { socket: one } = await connectUser(nodes[0]);
    const { socket: two } = await connectUser(nodes[1]);
    for (const [socket, name] of [[one, "rust-1"], [two, "rust-2"]]) {
      socket.on("roll-call", (n, answer) => answer({ from: name, n }));
      await join(socket, room);
    }
    const answers = await gateway.nsp.timeout(4000).to(room).emitWithAck("roll-call", 7);
    assert.deepEqual(answers.map((answer) => answer.from).sort(), ["rust-1", "rust-2"]);
    assert.ok(answers.every((answer) => answer.n === 7));
    one.disconnect();
    two.disconnect();
  });

  test("disconnectSockets on the Node server disconnects our socket", async () => {
    const { socket: ours } = await connectUser(nodes[1]);
    gateway.nsp.in(ours.id).disconnectSockets(true);
    await disconnected(ours);
  });

  test("serverSideEmitWithAck from the Node server gets our brokers' answer, not a timeout", async () => {
    const before = await Promise.all([metric(nodes[0], SERVER_SIDE_EMITS), metric(nodes[1], SERVER_SIDE_EMITS)]);
    const answers = await gateway.nsp.serverSideEmitWithAck("inventory", { n: 1 });
    // One answer per other server: our two brokers, which have no server-side listeners and say so.
    assert.deepEqual(answers, [NOT_HANDLED, NOT_HANDLED]);
    gateway.nsp.serverSideEmit("inventory", { n: 2 });
    // Counted by both brokers: the one with an ack, then the one without.
    await eventually(async () => {
      const after = await Promise.all([metric(nodes[0], SERVER_SIDE_EMITS), metric(nodes[1], SERVER_SIDE_EMITS)]);
      return after.every((count, index) => count === before[index] + 2);
    });
  });

  test("a binary emit from the Node server is refused by our brokers, counted, and what follows still arrives", async () => {
    const room = roomId("binary");
    const { socket: ours } = await connectUser(nodes[0]);
    await join(ours, room);
    const before = await metric(nodes[0], BINARY_REFUSED);
    gateway.nsp.to(room).emit("file", Buffer.from([1, 2, 3]));
    gateway.nsp.to(room).emit("after", { n: 1 });
    assert.deepEqual(await once(ours, "after"), { n: 1 });
    assert.equal(ours.inbox.log.filter((entry) => entry.event === "file").length, 0);
    assert.equal(await metric(nodes[0], BINARY_REFUSED), before + 1);
    ours.disconnect();
  });
});

describe("connection state recovery across brokers, with the stock client", { skip }, () => {
  test("a client cut off on one broker comes back through the other and misses nothing", async () => {
    const [one, two] = nodes;
    const tcp = await relay(one.url);
    try {
      const { socket: bob } = await connectUser(two);
      const sub = `alice-${randomBytes(4).toString("hex")}`;
      const alice = await connect(tcp.url, {
        transports: ["websocket"],
        reconnection: true,
        query: { token: token({ sub }, secret) },
      });
      const firstSid = alice.id;
      const room = roomId("recover");
      await join(alice, room);
      await join(bob, room);
      const sent = [];
      const stream = messageStream(bob, room, sent);
      stream(0, 10);
      const seen = [];
      while (seen.length < 3) seen.push((await once(alice, "message")).content);
      tcp.sever();
      await once(alice, "disconnect");
      // Its broker stores the session in Redis as it suspends it.
      await eventually(async () => (await publisher.exists(`sio:session:${alice._pid}`)) === 1);
      stream(10, 20);
      // The client reconnects to the same address, which now leads to the other broker.
      tcp.heal(two.url);
      await once(alice, "connect");
      assert.equal(alice.recovered, true, "recovered on the other broker");
      assert.equal(alice.id, firstSid, "the same socket id");
      bob.emit("send_message", { roomId: room, content: "end" });
      await contentsUntil(alice, "end", seen);
      assert.deepEqual(seen, sent, "every message once, in order");
      await onceWhere(bob, "message", (m) => m?.content === "end", "his marker");
      assert.equal(noticesAbout(bob, "user_left", sub), 0, "no user_left for a member that moved");
      assert.equal(noticesAbout(bob, "user_joined", sub), 0, "no user_joined for a member that moved");
      const ack = await leave(bob, room);
      assert.equal(ack.members, 1, "alice counts once, on her new broker");
      alice.disconnect();
      bob.disconnect();
    } finally {
      tcp.sever();
      await tcp.close();
    }
  });
});

describe("a broker that is killed", { skip }, () => {
  test("its members leave the rooms on the other nodes: user_left, and the count drops", async () => {
    const env = clusterEnv({ BROKER_REDIS_HEARTBEAT_INTERVAL_MS: 200, BROKER_REDIS_HEARTBEAT_TIMEOUT_MS: 1000 });
    const survivor = await startBroker(env);
    const doomed = await startBroker(env);
    try {
      const room = roomId("killed");
      const { socket: stays, sub } = await connectUser(survivor);
      const { socket: goes, sub: goneSub } = await connectUser(doomed);
      await join(stays, room);
      await join(goes, room);
      await onceWhere(stays, "user_joined", (notice) => notice.userId === goneSub);
      goes.io.opts.reconnection = false;
      doomed.child.kill("SIGKILL");
      const left = await onceWhere(stays, "user_left", (notice) => notice.roomId === room);
      assert.equal(left.userId, goneSub);
      const { socket: later } = await connectUser(survivor);
      const ack = await join(later, room);
      assert.equal(ack.members, 2, `${sub} and the newcomer`);
      stays.disconnect();
      later.disconnect();
    } finally {
      await Promise.all([survivor.stop(), doomed.stop()]);
    }
  });
});

describe("long-polling behind a proxy that routes by the sid's first character", { skip }, () => {
  test("polling clients on two brokers, one address: a room spans them both ways", async () => {
    const a = await startBroker(clusterEnv({ BROKER_SID_PREFIX: "A" }));
    const b = await startBroker(clusterEnv({ BROKER_SID_PREFIX: "B" }));
    const proxy = await startSidProxy({ A: a.url, B: b.url });
    const front = { url: proxy.url, secret };
    try {
      const room = roomId("polling");
      // Handshakes take turns: the first client lands on A, the second on B.
      const { socket: x } = await connectUser(front, { transports: ["polling"] });
      const { socket: y, sub: ySub } = await connectUser(front, { transports: ["polling"] });
      assert.deepEqual([x.io.engine.id[0], y.io.engine.id[0]], ["A", "B"]);
      assert.equal(x.io.engine.transport.name, "polling");
      await join(x, room);
      const ack = await join(y, room);
      assert.equal(ack.members, 2);
      assert.equal((await onceWhere(x, "user_joined", (n) => n.roomId === room)).userId, ySub);
      await send(x, "from A", room);
      await send(y, "from B", room);
      for (const socket of [x, y]) {
        await onceWhere(socket, "message", (m) => m.content === "from A");
        await onceWhere(socket, "message", (m) => m.content === "from B");
        assert.deepEqual(messagesOf(socket), ["from A", "from B"]);
      }
      // A client with the default transports starts polling and upgrades through the proxy.
      const { socket: z } = await connectUser(front);
      if (z.io.engine.transport.name !== "websocket") {
        await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no upgrade to WebSocket within 5 s")), 5000);
          z.io.engine.once("upgrade", () => resolve(clearTimeout(timer)));
        });
      }
      assert.equal(z.io.engine.id[0], "A");
      await join(z, room);
      await send(y, "after the upgrade", room);
      await onceWhere(z, "message", (m) => m.content === "after the upgrade");
      await leave(y, room);
      assert.equal((await onceWhere(x, "user_left", (n) => n.roomId === room)).userId, ySub);
      for (const socket of [x, y, z]) socket.disconnect();
    } finally {
      await proxy.close();
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
