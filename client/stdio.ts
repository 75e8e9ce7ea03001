/**
 * `--stdio SERVICE`: one stream joined to this process's stdin and stdout, for
 * inetd-style use or as an ssh ProxyCommand. Resolves when the stream ended
 * cleanly in both directions; rejects with the StreamError that ended it otherwise.
 */
import type { Readable, Writable } from 'node:stream';
import type { StreamError } from '../shared/errors.js';
import { bridge } from '../shared/socket-bridge.js';
import type { ReflectorClient } from './client.js';

export async function runStdio(
  client: ReflectorClient,
  service: string,
  io: { input: Readable; output: Writable } = { input: process.stdin, output: process.stdout },
): Promise<void> {
  const stream = await client.openStream(service);
  await new Promise<void>((resolve, reject) => {
    let failure: StreamError | Error | undefined;
    bridge(stream, {
      readable: io.input,
      writable: io.output,
      abort: () => {
        io.input.destroy();
      },
    }, {
      onClose: (summary) => {
        failure = summary.error;
        if (summary.outcome === 'fin') {
          // Resolve once stdout has flushed what the stream delivered.
          if (io.output.writableFinished) resolve();
          else io.output.once('finish', () => resolve());
        } else {
          reject(failure ?? new Error(`stream ended: ${summary.outcome}`));
        }
      },
    });
  });
}
