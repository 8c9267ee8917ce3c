import { BeforeApplicationShutdown, UseFilters } from '@nestjs/common';
import {
  ConnectedSocket,
  MessageBody,
  OnGatewayConnection,
  OnGatewayDisconnect,
  OnGatewayInit,
  SubscribeMessage,
  WebSocketGateway,
  WebSocketServer,
} from '@nestjs/websockets';
import type { Namespace } from 'socket.io';

import { ChatSocket, jwtMiddleware } from './auth';
import { ChatException, ChatExceptionFilter, replyError } from './chat.errors';
import { config } from './config';

/**
 * Socket.IO room names of chat rooms. Prefixed so that a chat room can never be
 * the room socket.io gives every socket under its own id.
 */
const ROOM_PREFIX = 'room:';

const EVENTS = new Set(['join_room', 'leave_room', 'send_message']);

/** Longest wait for the DISCONNECT frames to flush on shutdown. */
const SHUTDOWN_TIMEOUT_MS = 5000;

/** Longest setTimeout delay; longer expiries re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function roomIdOf(value: unknown): string {
  if (typeof value !== 'string') throw new ChatException(400, 'roomId must be a string');
  if (value.trim() === '') throw new ChatException(400, 'roomId is empty');
  if (value.length > config.maxRoomIdLength || Buffer.byteLength(value) > config.maxRoomIdLength) {
    throw new ChatException(400, `roomId is longer than ${config.maxRoomIdLength} bytes`);
  }
  return value;
}

function roomArg(body: unknown): string {
  if (!isObject(body) || !('roomId' in body)) {
    throw new ChatException(400, 'payload must be an object {roomId}');
  }
  return roomIdOf(body.roomId);
}

/** Bytes of `text` in UTF-8, computed only when the character count does not settle it. */
function overLimit(text: string, limit: number): boolean {
  if (text.length > limit) return true;
  if (text.length * 3 <= limit) return false;
  return Buffer.byteLength(text) > limit;
}

@WebSocketGateway({
  namespace: config.namespace,
  cors: { origin: config.corsOrigins ?? true, credentials: true },
  transports: ['websocket'],
  pingInterval: config.pingInterval,
  pingTimeout: config.pingTimeout,
  maxHttpBufferSize: config.maxPayload,
  perMessageDeflate: false,
  serveClient: false,
  // socket.io's own recovery with its defaults, middlewares skipped on a recovered session included.
  ...(config.recoveryWindowMs > 0
    ? { connectionStateRecovery: { maxDisconnectionDuration: config.recoveryWindowMs } }
    : {}),
})
@UseFilters(new ChatExceptionFilter())
export class ChatGateway
  implements OnGatewayInit<Namespace>, OnGatewayConnection<ChatSocket>, OnGatewayDisconnect<ChatSocket>, BeforeApplicationShutdown
{
  @WebSocketServer()
  server: Namespace;

  private shuttingDown = false;

  /** Unique and increasing for the process, so increasing within every room; seeded with µs. */
  private nextMessageId = Date.now() * 1000;

  afterInit(server: Namespace): void {
    server.use(jwtMiddleware);
  }

  handleConnection(client: ChatSocket): void {
    const { user } = client.data;
    // An event no @SubscribeMessage handles: 404 (Nest would silently drop it).
    client.onAny((event: string, ...args: unknown[]) => {
      if (!EVENTS.has(event)) {
        replyError(client, args[args.length - 1], 404, `Unknown event: ${String(event).slice(0, 64)}`);
      }
    });
    if (user.expiresAt !== undefined) this.armExpiry(client, user.expiresAt);

    const room = client.handshake.query.roomId;
    if (room !== undefined) {
      try {
        this.join(client, roomIdOf(room));
      } catch (error) {
        if (!(error instanceof ChatException)) throw error;
        replyError(client, undefined, error.code, error.message);
      }
    }
  }

  handleDisconnect(client: ChatSocket): void {
    const { user, rooms, expiry } = client.data;
    if (expiry) clearTimeout(expiry);
    if (!user || this.shuttingDown) return;
    // socket.io has already taken the socket out of every room.
    const timestamp = Date.now();
    for (const roomId of rooms) {
      this.server.to(ROOM_PREFIX + roomId).emit('user_left', { userId: user.sub, roomId, timestamp });
    }
    // With recovery on, socket.io has kept this very `data` object for the session it may restore
    // (it is handed back as the recovered socket's `data`): its room list must survive.
    if (config.recoveryWindowMs === 0) client.data.rooms = [];
  }

  /**
   * On shutdown every client gets a Socket.IO DISCONNECT, and the server closes only
   * once those frames are flushed (closing it sooner discards what is still buffered).
   */
  async beforeApplicationShutdown(): Promise<void> {
    if (!this.server) return;
    this.shuttingDown = true;
    const flushed = [...this.server.sockets.values()].map(
      (socket) => new Promise<void>((resolve) => socket.conn.once('close', () => resolve())),
    );
    this.server.disconnectSockets(true);
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<void>((resolve) => (timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS)));
    await Promise.race([Promise.all(flushed), limit]);
    clearTimeout(timer);
  }

  @SubscribeMessage('join_room')
  handleJoin(@ConnectedSocket() client: ChatSocket, @MessageBody() body: unknown) {
    return this.join(client, roomArg(body));
  }

  @SubscribeMessage('leave_room')
  handleLeave(@ConnectedSocket() client: ChatSocket, @MessageBody() body: unknown) {
    const roomId = roomArg(body);
    const key = ROOM_PREFIX + roomId;
    const rooms = client.data.rooms;
    const index = rooms.indexOf(roomId);
    if (index < 0) throw new ChatException(404, 'Not a member of this room');
    rooms.splice(index, 1);
    client.leave(key);
    client.to(key).emit('user_left', { userId: client.data.user.sub, roomId, timestamp: Date.now() });
    const members = this.members(key);
    client.emit('status', { roomId, members, joined: false });
    return { roomId, members };
  }

  @SubscribeMessage('send_message')
  handleSend(@ConnectedSocket() client: ChatSocket, @MessageBody() body: unknown) {
    if (!isObject(body)) throw new ChatException(400, 'send_message takes an object {content, roomId?}');
    const content = body.content;
    if (typeof content !== 'string') throw new ChatException(400, 'content must be a string');
    if (content.trim() === '') throw new ChatException(400, 'content is empty');
    if (overLimit(content, config.maxMessageLength)) {
      throw new ChatException(413, `content is longer than ${config.maxMessageLength} bytes`);
    }
    let roomId: string;
    if (body.roomId === undefined) {
      const rooms = client.data.rooms;
      if (rooms.length === 0) throw new ChatException(400, 'No room joined: give a roomId');
      roomId = rooms[rooms.length - 1];
    } else {
      roomId = roomIdOf(body.roomId);
    }
    const key = ROOM_PREFIX + roomId;
    if (!client.rooms.has(key)) throw new ChatException(403, 'Not a member of this room');

    const id = String(this.nextMessageId++);
    const timestamp = Date.now();
    // To the whole room, sender included; written before the ack is sent.
    this.server.to(key).emit('message', { id, roomId, content, senderId: client.data.user.sub, timestamp });
    return { id, timestamp };
  }

  private join(client: ChatSocket, roomId: string) {
    const key = ROOM_PREFIX + roomId;
    if (!client.rooms.has(key)) {
      client.join(key);
      client.data.rooms.push(roomId);
      client.to(key).emit('user_joined', { userId: client.data.user.sub, roomId, timestamp: Date.now() });
    }
    const members = this.members(key);
    client.emit('status', { roomId, members, joined: true });
    return { roomId, members };
  }

  private members(key: string): number {
    return this.server.adapter.rooms.get(key)?.size ?? 0;
  }

  /** Token expired while connected: error 401, then disconnected. */
  private armExpiry(client: ChatSocket, expiresAt: number): void {
    const left = expiresAt - Date.now();
    client.data.expiry = setTimeout(
      () => {
        if (!client.connected) return;
        if (Date.now() < expiresAt) return this.armExpiry(client, expiresAt);
        replyError(client, undefined, 401, 'Token expired');
        client.disconnect(true);
      },
      Math.max(0, Math.min(left, MAX_TIMER_MS)),
    );
    client.data.expiry.unref();
  }
}
