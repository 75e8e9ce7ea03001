/**
 * A session caps the DATA it keeps for resumption (sent, not yet acknowledged):
 * at a 256 KiB window, 2 MiB. The receiver acknowledges a stream at once only
 * when a quarter of the window (64 KiB) was consumed on it. So 40 streams that
 * each send a 60 KiB message and wait for the answer (mail submission: a
 * message, then "250 OK", then the next command) hold 2.3 MiB that no
 * immediate WINDOW releases. Before receivers advertised small credit within
 * 20 ms, the last 5 messages never left the client. (The default 1 MiB window
 * moves the same edge to 8 MiB and 128 KiB; the small window keeps this quick.)
 */
import assert from 'node:assert/strict';
import type net from 'node:net';
import { describe, it } from 'node:test';
import {
  clientOptions,
  connectLocal,
  makeKeys,
  serverConfig,
  startBackend,
  startClient,
  startServer,
  waitConnected,
  waitFor,
  type Backend,
} from '../helpers/fixtures.js';
import type { ReflectorClient } from '../../client/index.js';
import type { ReflectorServer } from '../../server/index.js';

const STREAMS = 40;
const MESSAGE_BYTES = 60 * 1024;

/** Answers "250 OK\n" once a whole message arrived, then "221 <total>\n" and closes after "QUIT\n". */
function startSubmissionBackend(onConnection: () => void): Promise<Backend> {
  return startBackend((socket) => {
    onConnection();
    let total = 0;
    let answered = false;
    let tail = '';
    socket.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (!answered && total >= MESSAGE_BYTES) {
        answered = true;
        socket.write('250 OK\n');
      }
      tail = (tail + chunk.toString('latin1')).slice(-5);
      if (answered && tail === 'QUIT\n') socket.end(`221 ${total}\n`);
    });
  });
}

function nextLine(socket: net.Socket, received: { text: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const end = received.text.indexOf('\n');
      if (end < 0) return;
      const line = received.text.slice(0, end);
      received.text = received.text.slice(end + 1);
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(line);
    };
    const onData = (chunk: Buffer): void => {
      received.text += chunk.toString('latin1');
      check();
    };
    const onClose = (): void => reject(new Error(`closed before a line (had ${JSON.stringify(received.text)})`));
    socket.on('data', onData);
    socket.once('close', onClose);
    check();
  });
}

describe('streams below the acknowledgement threshold', () => {
  it(`keep flowing when ${STREAMS} of them hold more unacknowledged DATA than the session keeps for resumption`, { timeout: 60_000 }, async (t) => {
    const keys = await makeKeys();
    let backend: Backend | undefined;
    let server: ReflectorServer | undefined;
    let client: ReflectorClient | undefined;
    try {
      let connections = 0;
      backend = await startSubmissionBackend(() => (connections += 1));
      server = await startServer(serverConfig(keys, { mail: backend.target }, { limits: { windowBytes: 256 * 1024 } }));
      client = await startClient(clientOptions(keys, server, [{ host: '127.0.0.1', port: 0, service: 'mail' }]));
      await waitConnected(client);
      const port = client.listeners[0]!.address.port;

      // All 40 connections are up (the backend holds them) before any message goes out...
      const sockets = await Promise.all(Array.from({ length: STREAMS }, () => connectLocal(port)));
      const received = sockets.map(() => ({ text: '' }));
      await waitFor(() => connections === STREAMS, `${STREAMS} backend connections`);
      try {
        const started = performance.now();
        sockets.forEach((socket, i) => socket.write(Buffer.alloc(MESSAGE_BYTES, i)));
        // ...and no stream says QUIT before every message was accepted, so nothing
        // acknowledges or closes its way out: all 40 messages are outstanding at once.
        let accepted = 0;
        const answers = await Promise.race([
          Promise.all(sockets.map((socket, i) => nextLine(socket, received[i]!).then((line) => ((accepted += 1), line)))),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error(`only ${accepted} of ${STREAMS} messages were accepted within 15 s: the rest never left the client`)), 15_000),
          ),
        ]);
        assert.deepEqual(answers, sockets.map(() => '250 OK'));
        t.diagnostic(`${STREAMS} messages of ${MESSAGE_BYTES} bytes accepted in ${(performance.now() - started).toFixed(0)} ms`);
        sockets.forEach((socket) => socket.write('QUIT\n'));
        const closing = await Promise.all(sockets.map((socket, i) => nextLine(socket, received[i]!)));
        assert.deepEqual(closing, sockets.map(() => `221 ${MESSAGE_BYTES + 5}`));
      } finally {
        for (const socket of sockets) socket.destroy();
      }
    } finally {
      await client?.close();
      await server?.close();
      await backend?.close();
      await keys.cleanup();
    }
  });
});
