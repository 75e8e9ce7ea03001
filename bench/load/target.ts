/**
 * The bench's backend: the TCP service every path forwards to (what smtpd is
 * in production). Its own process, so its CPU is the same for every path.
 *
 * The server speaks first, like SMTP: one banner byte "R" on accept. Then the
 * client's first byte picks a mode:
 *   S  sink:     count bytes until EOF, answer the count as u64 BE, close
 *   E  echo:     send every byte back (Nagle off)
 *   G  generate: read a u64 BE n, send n bytes as fast as the reader takes them, close
 * Anything else, or nothing, keeps the connection idle until the peer ends it.
 *
 *   node --import tsx bench/load/target.ts [--port P]     prints {"event":"listening","port":P}
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

const CHUNK = randomBytes(256 * 1024);

function serve(socket: net.Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  socket.write('R');
  let mode: string | undefined;
  let header = Buffer.alloc(0);
  let sunk = 0;

  const generate = (total: number): void => {
    let left = total;
    const step = (): void => {
      while (left > 0 && !socket.destroyed) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!socket.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          socket.once('drain', step);
          return;
        }
      }
      if (left === 0) socket.end();
    };
    step();
  };

  socket.on('data', (chunk: Buffer) => {
    if (mode === undefined) {
      mode = String.fromCharCode(chunk[0]!);
      chunk = chunk.subarray(1);
    }
    switch (mode) {
      case 'S':
        sunk += chunk.length;
        return;
      case 'E':
        if (chunk.length > 0) socket.write(chunk);
        return;
      case 'G':
        if (header.length >= 8) return; // a generator ignores anything after its request
        header = Buffer.concat([header, chunk]);
        if (header.length >= 8) generate(Number(header.readBigUInt64BE(0)));
        return;
      default:
        return;
    }
  });
  socket.on('end', () => {
    if (mode === 'S') {
      const answer = Buffer.alloc(8);
      answer.writeBigUInt64BE(BigInt(sunk));
      socket.end(answer);
    } else {
      socket.end();
    }
  });
}

const portFlag = process.argv.indexOf('--port');
const port = portFlag > 0 ? Number(process.argv[portFlag + 1]) : 0;
const server = net.createServer({ allowHalfOpen: true, noDelay: true }, serve);
server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
  const address = server.address() as net.AddressInfo;
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: address.port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
