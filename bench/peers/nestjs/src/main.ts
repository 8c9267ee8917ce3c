import 'reflect-metadata';

import { ConsoleLogger, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';

import { AppModule } from './app.module';
import { config } from './config';

/** Nest's ConsoleLogger writes warnings to stdout; stdout is kept for the one `listening on` line. */
class StderrLogger extends ConsoleLogger {
  protected printMessages(
    messages: unknown[],
    context?: string,
    logLevel?: LogLevel,
    _stream?: 'stdout' | 'stderr',
    errorStack?: unknown,
  ): void {
    super.printMessages(messages, context, logLevel, 'stderr', errorStack);
  }
}

async function bootstrap(): Promise<void> {
  if (!config.jwtSecret) {
    process.stderr.write('JWT_SECRET is not set\n');
    process.exit(2);
  }
  const app = await NestFactory.create(AppModule, {
    logger: new StderrLogger({ logLevels: ['error', 'warn'] }),
    bodyParser: false,
  });
  // SIGTERM/SIGINT: disconnect every client, close the servers, exit 0.
  app.enableShutdownHooks(['SIGTERM', 'SIGINT'], { useProcessExit: true });
  await app.listen(config.port, config.host);
  const { port } = app.getHttpServer().address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  process.stdout.write(`listening on ${host}:${port}\n`);
}

bootstrap().catch((error) => {
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1);
});
