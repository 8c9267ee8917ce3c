// Captures what the Node side of a socket.io cluster writes to Redis, so the
// broker's Redis adapter can be pinned byte for byte against it.
//
// Two socket.io 4.8 servers (A and B) share one Redis through
// @socket.io/redis-adapter 8.x; one socket.io-client user sits on B in the
// room "golden-room". A tap subscribed to `socket.io*` records every message
// published while A broadcasts, runs each cluster request, and while
// @socket.io/redis-emitter publishes. The result is written, in publish order,
// to tests/fixtures/redis-wire.json: name, channel, and the exact bytes (hex),
// plus the text for the JSON ones.
//
//   BROKER_TEST_REDIS_URL=redis://127.0.0.1:6379 node tests/cluster/goldens.mjs
//
// (tests/run.sh starts a private Redis and exports that variable.) The uids and
// request ids are random, so the bytes differ between runs; the Rust tests
// take them from the fixture.

import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Server } from "socket.io";
import { io as connect } from "socket.io-client";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { Redis } from "ioredis";

const NS = "/api/v1/chat";
const ROOM = "golden-room";
const STEP_TIMEOUT_MS = 5000;
const url = process.env.BROKER_TEST_REDIS_URL;
if (!url) {
  console.error("BROKER_TEST_REDIS_URL is not set (tests/run.sh starts a Redis and sets it)");
  process.exit(2);
}
// GOLDENS_OUT: write elsewhere (tests/run.sh checks the script still runs).
const output = process.env.GOLDENS_OUT ?? fileURLToPath(new URL("../fixtures/redis-wire.json", import.meta.url));

const clients = [];
const redis = () => {
  const client = new Redis(url, { lazyConnect: false });
  clients.push(client);
  return client;
};

const admin = redis();
// The tap: every message on every socket.io channel, in the order Redis relays them.
const tap = redis();
const captured = [];
let waiter = null;
tap.on("pmessageBuffer", (_pattern, channel, message) => {
  captured.push({ channel: channel.toString(), bytes: Buffer.from(message) });
  if (waiter && captured.length >= waiter.count) {
    waiter.resolve();
    waiter = null;
  }
});
await tap.psubscribe("socket.io*");

const fixtures = [];
// Runs `action`, awaits exactly `names.length` published messages (under a
// timeout), and files them under `names`, in order.
async function step(names, action) {
  const start = captured.length;
  const arrived = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${names.join(", ")}: got ${captured.length - start} of ${names.length} messages`)),
      STEP_TIMEOUT_MS,
    );
    waiter = { count: start + names.length, resolve: () => { clearTimeout(timer); resolve(); } };
  });
  await action();
  await arrived;
  captured.slice(start, start + names.length).forEach(({ channel, bytes }, i) => {
    const isJson = bytes[0] === 0x7b;
    fixtures.push({
      name: names[i],
      channel,
      encoding: isJson ? "json" : "msgpack",
      hex: bytes.toString("hex"),
      ...(isJson ? { text: bytes.toString("utf8") } : {}),
    });
  });
}

async function startServer() {
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(redis(), redis()) });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  return { io, http, port: http.address().port };
}

const a = await startServer();
const b = await startServer();
// Server-side emits reach the other node's namespace listeners.
b.io.of(NS).on("golden-ping", () => {});
b.io.of(NS).on("golden-hello", (_data, callback) => callback({ answer: "from B" }));
b.io.of(NS).on("connection", (socket) => socket.join(ROOM));

const user = connect(`http://127.0.0.1:${b.port}${NS}`, { transports: ["websocket"], forceNew: true });
user.on("golden-ask", (_n, callback) => callback({ ok: 1 }));
await new Promise((resolve, reject) => {
  user.on("connect", resolve);
  user.on("connect_error", reject);
});
const nsp = a.io.of(NS);
// Both adapters subscribe asynchronously: wait (bounded) until the request
// channel counts two subscribers, or the requests below would skip B.
const deadline = Date.now() + STEP_TIMEOUT_MS;
for (;;) {
  const [, subscribers] = await admin.pubsub("NUMSUB", `socket.io-request#${NS}#`);
  if (subscribers === 2) break;
  if (Date.now() > deadline) throw new Error(`expected 2 request subscribers, got ${subscribers}`);
  await new Promise((resolve) => setTimeout(resolve, 20));
}
const message = { id: "17", roomId: ROOM, content: "héllo ✓", senderId: 42, timestamp: 1764490000123 };

await step(["broadcast.room"], () => nsp.to(ROOM).emit("message", message));
await step(["broadcast.room_except_socket"], () =>
  nsp.to(ROOM).except("AbCdEfGhIjKlMnOpAAAB").emit("user_joined", { userId: "u-1", roomId: ROOM, timestamp: 1764490000456 }),
);
await step(["broadcast.namespace"], () =>
  nsp.emit("announce", { text: "all", negative: -5, small: -100, float: 1.5, yes: true, none: null, big: 4294967296 }),
);
await step(["broadcast.two_rooms"], () => nsp.to(["room-1", "room-2"]).emit("message", "several", 3));
await step(["broadcast.binary"], () => nsp.to(ROOM).emit("blob", Buffer.from([1, 2, 3])));
await step(["broadcast.flags"], () => nsp.compress(false).volatile.to(ROOM).emit("flagged", 1));
await step(["request.all_rooms", "response.all_rooms"], () => nsp.adapter.allRooms());
await step(["request.fetch_sockets", "response.fetch_sockets"], () => nsp.in(ROOM).fetchSockets());
await step(["request.sockets_join"], () => nsp.in(ROOM).socketsJoin("joined-by-a"));
await step(["request.sockets_leave"], () => nsp.in(ROOM).socketsLeave("joined-by-a"));
await step(["request.server_side_emit"], () => nsp.serverSideEmit("golden-ping", { n: 1 }));
await step(["request.server_side_emit_with_ack", "response.server_side_emit_with_ack"], () =>
  nsp.serverSideEmitWithAck("golden-hello", { n: 2 }),
);
await step(
  ["request.broadcast_with_ack", "response.broadcast_client_count", "response.broadcast_ack"],
  () => nsp.timeout(2000).to(ROOM).emitWithAck("golden-ask", 5),
);

const emitter = new Emitter(redis()).of(NS);
await step(["emitter.broadcast.room"], () => emitter.to(ROOM).emit("message", message));
await step(["emitter.broadcast.namespace"], () => emitter.emit("announce", "from an emitter"));
await step(["emitter.sockets_join"], () => emitter.in(ROOM).socketsJoin("joined-by-emitter"));
await step(["emitter.server_side_emit"], () => emitter.serverSideEmit("golden-ping", 7));
// Last: the disconnect closes the user.
await step(["request.disconnect_sockets"], () => nsp.in(ROOM).disconnectSockets(true));

writeFileSync(output, JSON.stringify({ generator: "tests/cluster/goldens.mjs", messages: fixtures }, null, 2) + "\n");
console.log(`wrote ${fixtures.length} messages to ${output}`);

user.close();
a.io.close();
b.io.close();
for (const client of clients) client.disconnect();
