import * as jwt from 'jsonwebtoken';
import type { ExtendedError, Socket } from 'socket.io';

import { config } from './config';

/** What the JWT middleware puts in `socket.data` for the gateway. */
export interface ChatUser {
  /** The `sub` claim exactly as the token holds it (a number stays a number). */
  sub: string | number;
  name?: string;
  /** `exp` in ms since the epoch plus leeway, if the token has one. */
  expiresAt?: number;
}

export interface SocketData {
  user: ChatUser;
  /** Chat rooms joined and not left, oldest first (the last one is the default room). */
  rooms: string[];
  expiry?: NodeJS.Timeout;
}

export type ChatSocket = Socket<any, any, any, SocketData>;

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** The token, from the query `token`, then `Authorization: Bearer`, then CONNECT `auth.token`. */
export function tokenOf(socket: Socket): string | undefined {
  const { query, headers, auth } = socket.handshake;
  const fromQuery = query.token;
  if (typeof fromQuery === 'string' && fromQuery !== '') return fromQuery;
  const header = headers.authorization;
  if (typeof header === 'string') {
    const match = BEARER.exec(header);
    if (match) return match[1];
  }
  const fromAuth = auth?.token;
  if (typeof fromAuth === 'string' && fromAuth !== '') return fromAuth;
  return undefined;
}

const verifyOptions: jwt.VerifyOptions & { complete?: false } = {
  algorithms: ['HS256'],
  clockTolerance: config.jwtLeewaySeconds,
  ...(config.jwtIssuer ? { issuer: config.jwtIssuer } : {}),
  ...(config.jwtAudience ? { audience: config.jwtAudience } : {}),
};

/** Verifies `token` (HS256, exp/nbf enforced); undefined when refused. */
export function verify(token: string): ChatUser | undefined {
  let claims: jwt.JwtPayload | string;
  try {
    claims = jwt.verify(token, config.jwtSecret, verifyOptions);
  } catch {
    return undefined;
  }
  if (typeof claims !== 'object' || claims === null) return undefined;
  // jsonwebtoken's typings say string, but verify() hands back whatever the payload holds.
  const sub: unknown = claims.sub;
  if (typeof sub !== 'string' && !(typeof sub === 'number' && Number.isFinite(sub))) return undefined;
  const user: ChatUser = { sub };
  if (typeof claims.name === 'string') user.name = claims.name;
  if (typeof claims.exp === 'number') user.expiresAt = (claims.exp + config.jwtLeewaySeconds) * 1000;
  return user;
}

function unauthorized(): ExtendedError {
  const error: ExtendedError = new Error('Unauthorized');
  error.data = { code: 401 };
  return error;
}

/**
 * Socket.IO namespace middleware: runs before the namespace accepts the client,
 * so a refused client gets CONNECT_ERROR {"message":"Unauthorized","data":{"code":401}}.
 */
export function jwtMiddleware(socket: ChatSocket, next: (err?: ExtendedError) => void): void {
  const token = tokenOf(socket);
  const user = token === undefined ? undefined : verify(token);
  if (!user) {
    next(unauthorized());
    return;
  }
  socket.data.user = user;
  socket.data.rooms = [];
  next();
}
