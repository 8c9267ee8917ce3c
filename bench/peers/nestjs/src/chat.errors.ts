import { ArgumentsHost, Catch, Logger, WsExceptionFilter } from '@nestjs/common';
import { WsException } from '@nestjs/websockets';
import type { Socket } from 'socket.io';

/** A protocol error: emitted as `error` {code, message, timestamp}, and answered on the ack. */
export class ChatException extends WsException {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Sends `error` to the sender and, when the event carried an ack, `{error:{code,message}}` on it. */
export function replyError(client: Socket, ack: unknown, code: number, message: string): void {
  client.emit('error', { code, message, timestamp: Date.now() });
  if (typeof ack === 'function') ack({ error: { code, message } });
}

/**
 * Replaces Nest's BaseWsExceptionFilter (which emits `exception` {status, message})
 * with the protocol's `error` event plus the error ack. The ws execution context's
 * arguments are [client, data, ack, pattern].
 */
@Catch()
export class ChatExceptionFilter implements WsExceptionFilter {
  private static readonly logger = new Logger('ChatGateway');

  catch(exception: unknown, host: ArgumentsHost): void {
    const client = host.switchToWs().getClient<Socket>();
    const ack = host.getArgByIndex(2);
    if (exception instanceof ChatException) {
      replyError(client, ack, exception.code, exception.message);
      return;
    }
    ChatExceptionFilter.logger.error(exception);
    replyError(client, ack, 500, 'Internal error');
  }
}
