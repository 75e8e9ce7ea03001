import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ResetCode, ResumeFlag } from '../../shared/constants.js';
import { decodeFrames, type Frame } from '../../shared/frames.js';
import { StreamMux, type RecordSink } from '../../shared/stream-mux.js';
import type { TunnelStream } from '../../shared/tunnel-stream.js';

/** Two muxes joined by a wire the test can cut: records sent while cut are lost. */
function pair(window = 1024) {
  const wire = { cut: false };
  const opened: TunnelStream[] = [];
  const make = (role: 'client' | 'server', deliver: () => StreamMux): StreamMux => {
    const sink: RecordSink = {
      congested: false,
      sendRecord: (plaintext) => {
        if (!wire.cut) deliver().receiveRecord(Buffer.from(plaintext));
      },
    };
    return new StreamMux({
      role,
      windowBytes: window,
      maxRecordBytes: 4096,
      maxStreams: 8,
      resumable: true,
      sink,
      onOpen: (stream) => opened.push(stream),
      onSessionFrame: () => undefined,
    });
  };
  const client: StreamMux = make('client', () => server);
  const server: StreamMux = make('server', () => client);
  return { client, server, wire, opened };
}

function collect(stream: TunnelStream): { data: Buffer[]; text: () => string } {
  const data: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => {
    data.push(Buffer.from(chunk));
    stream.consumed(chunk.length);
  });
  return { data, text: () => Buffer.concat(data).toString() };
}

describe('stream resumption', () => {
  it('resends exactly the DATA the peer lacks after records were lost', () => {
    const { client, server, wire, opened } = pair();
    const stream = client.openStream('echo');
    client.flush();
    opened[0]!.accept();
    server.flush();
    const received = collect(opened[0]!);
    stream.write(Buffer.from('hello '));
    client.flush();
    wire.cut = true;
    stream.write(Buffer.from('lost in flight '));
    client.flush();
    wire.cut = false;
    // Both sides state what they have; each reconciles against the other.
    const clientEntries = client.resumeEntries();
    const serverEntries = server.resumeEntries();
    assert.deepEqual(serverEntries, [{ streamId: 1, received: 6, flags: ResumeFlag.OPENED }]);
    server.reconcile(clientEntries);
    client.reconcile(serverEntries);
    client.flush();
    server.flush();
    stream.write(Buffer.from('and after'));
    client.flush();
    assert.equal(received.text(), 'hello lost in flight and after');
  });

  it('resends OPEN_OK and a FIN that were lost', () => {
    const { client, server, wire, opened } = pair();
    const stream = client.openStream('echo');
    client.flush();
    let opens = 0;
    stream.on('open', () => opens++);
    wire.cut = true;
    opened[0]!.accept();
    opened[0]!.write(Buffer.from('greeting'));
    opened[0]!.end();
    server.flush();
    wire.cut = false;
    const fromClient = collect(stream);
    let ended = false;
    stream.on('end', () => (ended = true));
    const clientEntries = client.resumeEntries();
    assert.deepEqual(clientEntries, [{ streamId: 1, received: 0, flags: 0 }]);
    const serverEntries = server.resumeEntries();
    server.reconcile(clientEntries);
    server.flush();
    client.reconcile(serverEntries);
    client.flush();
    assert.equal(opens, 1);
    assert.equal(fromClient.text(), 'greeting');
    assert.equal(ended, true);
  });

  it('resets a stream only one side still has, and spends the id of an OPEN the server never saw', () => {
    const { client, server, wire } = pair();
    wire.cut = true;
    const stream = client.openStream('echo');
    client.flush();
    wire.cut = false;
    let reset: unknown;
    stream.on('reset', (error) => (reset = error));
    const sent: Frame[] = [];
    const serverEntries = server.resumeEntries();
    assert.deepEqual(serverEntries, []);
    // Server side: the unknown id is reset, not a protocol error.
    const original = (server as unknown as { options: { sink: RecordSink } }).options.sink.sendRecord;
    (server as unknown as { options: { sink: RecordSink } }).options.sink.sendRecord = (plaintext) => {
      sent.push(...decodeFrames(Buffer.from(plaintext)));
      original(plaintext);
    };
    server.reconcile(client.resumeEntries());
    server.flush();
    assert.deepEqual(sent, [{ type: 'RST', streamId: 1, code: ResetCode.SESSION_CLOSED }]);
    assert.equal(server.highestStreamId, 1);
    client.reconcile(serverEntries);
    assert.ok(reset, 'the client reset its stream');
    assert.equal(client.streamCount, 0);
  });
});
