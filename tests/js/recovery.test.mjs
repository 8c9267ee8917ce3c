// Connection state recovery with the stock client and its default options:
// "a client that reconnects within the window ... gets the same sid and pid
// back, its rooms, and every missed recoverable event once, in order, before
// anything newer; its rooms' members see no user_left/user_joined for it."
//
// The client reaches the broker through a TCP relay that the test severs
// mid-stream (both sides of every connection destroyed at once, no close
// frame, no Engine.IO close): the client notices, reconnects by itself after
// its usual delay, and recovers.

import assert from 'node:assert/strict';

import {
  TRANSPORT_MODE,
  brokerOnly,
  chatTest,
  connect,
  connectUser,
  contentsUntil,
  joinAll,
  messageStream,
  noticesAbout,
  once,
  onceWhere,
  relay,
  roomId,
  token,
  transportOptions,
  useBroker,
  userId,
} from './helpers.mjs';

const broker = useBroker();
const it = (name, fn) => chatTest(broker, name, { skip: brokerOnly('connection state recovery') }, fn);

/**
 * Bob streams 30 messages into a room Alice (through the relay, with the
 * client's default reconnection) is in; after she has seen 5, the relay is
 * severed; Bob streams 30 more. Alice must come back recovered and see all 60,
 * each once, in order, then Bob's marker; Bob must hear nothing of her absence.
 */
async function killMidStreamAndRecover(transport) {
  const tcp = await relay(broker.url);
  try {
    const { socket: bob } = await connectUser(broker);
    const sub = userId('alice');
    const alice = await connect(tcp.url, {
      ...transport,
      reconnection: true,
      query: { token: token({ sub }, broker.secret) },
    });
    alice.sub = sub;
    const firstSid = alice.id;
    assert.equal(alice.recovered, false, 'a first connection is not a recovery');
    const room = roomId('stream');
    await joinAll(room, bob, alice);

    const sent = [];
    const stream = messageStream(bob, room, sent);
    stream(0, 30);
    const seen = [];
    while (seen.length < 5) seen.push((await once(alice, 'message')).content);
    // A long-polling client may be between two requests: the next one fails too.
    tcp.sever();
    await once(alice, 'disconnect');
    stream(30, 60);
    tcp.heal();

    await once(alice, 'connect');
    assert.equal(alice.recovered, true, 'the session was recovered');
    assert.equal(alice.id, firstSid, 'the same socket id');
    bob.emit('send_message', { roomId: room, content: 'end' });

    // Everything Alice saw, in order, up to the marker: each message once.
    await contentsUntil(alice, 'end', seen);
    assert.deepEqual(seen, sent, 'every message once, in order');

    await onceWhere(bob, 'message', (m) => m?.content === 'end', 'his marker');
    assert.equal(noticesAbout(bob, 'user_left', sub), 0, 'no user_left for a recovered member');
    assert.equal(noticesAbout(bob, 'user_joined', sub), 1, 'no second user_joined for a recovered member');
  } finally {
    tcp.sever();
    await tcp.close();
  }
}

it(`a client cut off mid-stream recovers and sees every message once (${TRANSPORT_MODE})`, async () => {
  await killMidStreamAndRecover(transportOptions());
});

it('a client cut off mid-stream recovers and sees every message once (long-polling only)', async () => {
  await killMidStreamAndRecover({ transports: ['polling'] });
});
