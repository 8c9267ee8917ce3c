// Configuration from the environment, read once at start.

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function listEnv(name: string): string[] | undefined {
  const raw = process.env[name];
  if (!raw) return undefined;
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

export const config = {
  host: process.env.HOST || '127.0.0.1',
  port: intEnv('PORT', 3001),
  namespace: process.env.NAMESPACE || '/api/v1/chat',
  jwtSecret: process.env.JWT_SECRET ?? '',
  /** Leeway for exp/nbf, as the broker's default (5 s). */
  jwtLeewaySeconds: Math.floor(intEnv('JWT_LEEWAY_MS', 5000) / 1000),
  jwtIssuer: process.env.JWT_ISSUER || undefined,
  jwtAudience: process.env.JWT_AUDIENCE || undefined,
  /** Allowed CORS origins; unset = any (socket.io's `origin: true` reflects the request). */
  corsOrigins: listEnv('CORS_ORIGINS'),
  maxMessageLength: intEnv('MAX_MESSAGE_LENGTH', 4096),
  maxRoomIdLength: intEnv('MAX_ROOM_ID_LENGTH', 128),
  /** PROTOCOL.md defaults. */
  pingInterval: intEnv('PING_INTERVAL_MS', 25000),
  pingTimeout: intEnv('PING_TIMEOUT_MS', 20000),
  maxPayload: intEnv('MAX_PAYLOAD', 1_000_000),
  /**
   * socket.io's connection state recovery: how long a dropped client's session (rooms, missed
   * packets) is kept; 0 (the default, as socket.io's) turns it off. The broker's default is 120000.
   */
  recoveryWindowMs: intEnv('RECOVERY_WINDOW_MS', 0),
} as const;
