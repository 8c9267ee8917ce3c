// A small Node chat gateway speaking the contract of PROTOCOL.md on
// socket.io 4.8 with @socket.io/redis-adapter: the Node side of the mixed
// cluster test. Rooms are named by their roomId, as our broker names them,
// so a room spans Node and Rust nodes. Member counts ask the whole cluster
// (fetchSockets), as our broker counts them.
//
// startGateway({ redisUrl, key, secret, namespace }) -> { port, io, close() }

import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";
import jwt from "jsonwebtoken";

const MAX_CONTENT_BYTES = 4096;
const MAX_ROOM_ID_BYTES = 128;

class ChatError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function roomIdOf(value) {
  if (typeof value !== "string") throw new ChatError(400, "roomId must be a string");
  if (value.trim() === "") throw new ChatError(400, "roomId is empty");
  if (Buffer.byteLength(value) > MAX_ROOM_ID_BYTES) throw new ChatError(400, "roomId is too long");
  return value;
}

function tokenOf(socket) {
  const query = socket.handshake.query.token;
  if (typeof query === "string" && query !== "") return query;
  const header = socket.handshake.headers.authorization;
  if (typeof header === "string" && header.toLowerCase().startsWith("bearer ")) return header.slice(7).trim();
  return socket.handshake.auth?.token;
}

export async function startGateway({ redisUrl, key = "socket.io", secret, namespace = "/api/v1/chat" }) {
  const pub = new Redis(redisUrl);
  const sub = new Redis(redisUrl);
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(pub, sub, { key }), transports: ["websocket"] });
  const nsp = io.of(namespace);
  let nextId = Date.now() * 1000;

  nsp.use((socket, next) => {
    try {
      const claims = jwt.verify(tokenOf(socket) ?? "", secret, { algorithms: ["HS256"] });
      socket.data.user = { sub: claims.sub };
      socket.data.rooms = [];
      next();
    } catch {
      const error = new Error("Unauthorized");
      error.data = { code: 401 };
      next(error);
    }
  });

  const members = async (room) => (await nsp.in(room).fetchSockets()).length;
  const reply = (socket, ack, error) => {
    socket.emit("error", { code: error.code, message: error.message, timestamp: Date.now() });
    if (typeof ack === "function") ack({ error: { code: error.code, message: error.message } });
  };

  async function join(socket, roomId) {
    if (!socket.data.rooms.includes(roomId)) {
      socket.data.rooms.push(roomId);
      socket.join(roomId);
      socket.to(roomId).emit("user_joined", { userId: socket.data.user.sub, roomId, timestamp: Date.now() });
    }
    const count = await members(roomId);
    socket.emit("status", { roomId, members: count, joined: true });
    return { roomId, members: count };
  }

  nsp.on("connection", (socket) => {
    const handle = (event, work) =>
      socket.on(event, async (body, ack) => {
        try {
          const answer = await work(body);
          if (typeof ack === "function") ack(answer);
        } catch (error) {
          if (!(error instanceof ChatError)) throw error;
          reply(socket, ack, error);
        }
      });
    handle("join_room", (body) => join(socket, roomIdOf(body?.roomId)));
    handle("leave_room", async (body) => {
      const roomId = roomIdOf(body?.roomId);
      const index = socket.data.rooms.indexOf(roomId);
      if (index < 0) throw new ChatError(404, "Not a member of this room");
      socket.data.rooms.splice(index, 1);
      socket.leave(roomId);
      socket.to(roomId).emit("user_left", { userId: socket.data.user.sub, roomId, timestamp: Date.now() });
      const count = await members(roomId);
      socket.emit("status", { roomId, members: count, joined: false });
      return { roomId, members: count };
    });
    handle("send_message", async (body) => {
      const content = body?.content;
      if (typeof content !== "string" || content.trim() === "") throw new ChatError(400, "content is empty");
      if (Buffer.byteLength(content) > MAX_CONTENT_BYTES) throw new ChatError(413, "content is too long");
      const roomId = body.roomId === undefined ? socket.data.rooms.at(-1) : roomIdOf(body.roomId);
      if (roomId === undefined) throw new ChatError(400, "No room joined: give a roomId");
      // Membership by socket.io's own rooms, so a remote socketsJoin counts too.
      if (!socket.rooms.has(roomId)) throw new ChatError(403, "Not a member of this room");
      const id = `${nextId++}-node`;
      const timestamp = Date.now();
      nsp.to(roomId).emit("message", { id, roomId, content, senderId: socket.data.user.sub, timestamp });
      return { id, timestamp };
    });
    socket.on("disconnect", () => {
      for (const roomId of socket.data.rooms) {
        nsp.to(roomId).emit("user_left", { userId: socket.data.user.sub, roomId, timestamp: Date.now() });
      }
    });
  });

  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  return {
    port: http.address().port,
    io,
    nsp,
    async close() {
      await new Promise((resolve) => io.close(() => resolve()));
      pub.disconnect();
      sub.disconnect();
    },
  };
}
