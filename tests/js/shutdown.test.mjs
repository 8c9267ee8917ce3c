// Graceful shutdown. Broker-only: the test sends SIGTERM to its own broker.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  TEST_TIMEOUT_MS,
  WAIT_MS,
  brokerOnly,
  connectUsers,
  delay,
  disconnected,
  joinAll,
  roomId,
  startBroker,
  unconsumed,
} from './helpers.mjs';

const skip = brokerOnly('sends SIGTERM to the broker process');

test('SIGTERM disconnects every client with "io server disconnect" and the broker exits 0', { skip, timeout: TEST_TIMEOUT_MS }, async () => {
  const broker = await startBroker();
  try {
    const [a, b, idle] = await connectUsers(broker, 3);
    await joinAll(roomId(), a, b);
    broker.child.kill('SIGTERM');
    for (const socket of [a, b, idle]) {
      assert.equal(await disconnected(socket), 'io server disconnect', `pending: ${JSON.stringify(unconsumed(socket))}`);
    }
    const exit = await Promise.race([broker.exited, delay(WAIT_MS * 2).then(() => 'still running')]);
    assert.deepEqual(exit, { code: 0, signal: null }, `broker exit after SIGTERM; stderr:\n${broker.logs()}`);
  } finally {
    await broker.stop();
  }
});
