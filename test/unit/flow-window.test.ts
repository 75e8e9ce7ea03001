import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CloseCode } from '../../shared/constants.js';
import { ErrorCode, ProtocolError } from '../../shared/errors.js';
import { ADVERTISE_AFTER_BYTES, ReceiveWindow, SendWindow } from '../../shared/flow-window.js';

function isFlowControlError(error: unknown): boolean {
  return error instanceof ProtocolError && error.code === ErrorCode.FLOW_CONTROL && error.closeCode === CloseCode.PROTOCOL_ERROR;
}

describe('SendWindow', () => {
  it('starts with the whole window as credit', () => {
    assert.equal(new SendWindow(1000).available, 1000);
  });

  it('shrinks by what was sent and grows by what the peer acknowledged', () => {
    const window = new SendWindow(1000);
    window.consume(600);
    assert.equal(window.available, 400);
    assert.equal(window.update(250), true);
    assert.equal(window.available, 650);
    assert.equal(window.acknowledged, 250);
  });

  it('treats a repeated WINDOW offset as no new credit', () => {
    const window = new SendWindow(1000);
    window.consume(100);
    window.update(100);
    assert.equal(window.update(100), false);
  });

  it('throws FLOW_CONTROL when WINDOW acknowledges bytes never sent (credit overflow)', () => {
    const window = new SendWindow(1000);
    window.consume(10);
    assert.throws(() => window.update(11), isFlowControlError);
  });

  it('throws FLOW_CONTROL when the WINDOW offset goes backwards', () => {
    const window = new SendWindow(1000);
    window.consume(100);
    window.update(80);
    assert.throws(() => window.update(79), isFlowControlError);
  });

  it('refuses to send beyond the credit (a local bug, not a protocol error)', () => {
    const window = new SendWindow(10);
    assert.throws(() => window.consume(11), (e) => !(e instanceof ProtocolError));
  });
});

describe('ReceiveWindow', () => {
  it('accepts exactly one window of DATA before any WINDOW was sent', () => {
    const window = new ReceiveWindow(1000);
    window.receive(1000);
    assert.equal(window.received, 1000);
  });

  it('throws FLOW_CONTROL when DATA goes beyond the granted window', () => {
    const window = new ReceiveWindow(1000);
    window.receive(999);
    assert.throws(() => window.receive(2), isFlowControlError);
  });

  it('advertises only after a quarter of the window was consumed', () => {
    const window = new ReceiveWindow(1000);
    window.receive(1000);
    window.markConsumed(249);
    assert.equal(window.takeAdvertisement(), undefined);
    window.markConsumed(1);
    assert.equal(window.takeAdvertisement(), 250);
    assert.equal(window.takeAdvertisement(), undefined);
  });

  it('advertises after 128 KiB however large the window', () => {
    const window = new ReceiveWindow(4 * 1024 * 1024);
    window.receive(ADVERTISE_AFTER_BYTES);
    window.markConsumed(ADVERTISE_AFTER_BYTES - 1);
    assert.equal(window.takeAdvertisement(), undefined);
    window.markConsumed(1);
    assert.equal(window.takeAdvertisement(), 128 * 1024);
  });

  it('advertises any freed credit when forced, and nothing when none was freed', () => {
    const window = new ReceiveWindow(1000);
    assert.equal(window.takeAdvertisement(true), undefined);
    window.receive(10);
    window.markConsumed(10);
    assert.equal(window.takeAdvertisement(true), 10);
  });

  it('grants new credit relative to the advertised offset, not the consumed one', () => {
    const window = new ReceiveWindow(1000);
    window.receive(1000);
    window.markConsumed(500);
    // Consumed but not yet advertised: the peer cannot know, so it may not send more.
    assert.throws(() => window.receive(1), isFlowControlError);
    window.takeAdvertisement();
    window.receive(500);
    assert.equal(window.received, 1500);
  });
});
