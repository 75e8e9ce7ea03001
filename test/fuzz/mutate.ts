/**
 * Seeded randomness and mutators for the fuzzer: every input is a pure
 * function of (seed, target, index), so any finding can be replayed alone.
 */

/** mulberry32: small, fast, good enough to drive mutations. Not for keys. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** FNV-1a over the text, mixed with the numbers: the per-input seed. */
export function inputSeed(seed: number, target: string, index: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < target.length; i++) h = Math.imul(h ^ target.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ index, 0x01000193);
  h = Math.imul(h ^ (index / 2 ** 32), 0x01000193);
  return h >>> 0;
}

const INTERESTING_U8 = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_U32 = [0, 1, 2, 7, 8, 9, 0x7f, 0x80, 0xff, 0x100, 0x3f, 0x40, 1024, 8192, 65535, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

/** Byte-level mutations: flips, interesting values, length fields, splices, truncation. */
export function mutateBytes(rng: Rng, input: Buffer, maxOps = 6): Buffer {
  let out = Buffer.from(input);
  const ops = rng.range(1, maxOps);
  for (let op = 0; op < ops; op++) {
    const at = out.length === 0 ? 0 : rng.int(out.length);
    switch (rng.int(10)) {
      case 0:
        if (out.length > 0) out[at] = out[at]! ^ (1 << rng.int(8));
        break;
      case 1:
        if (out.length > 0) out[at] = rng.pick(INTERESTING_U8);
        break;
      case 2:
        if (out.length >= 4) {
          const pos = rng.int(out.length - 3);
          const value = rng.chance(0.5) ? rng.pick(INTERESTING_U32) : (rng.pick(INTERESTING_U32) + rng.range(-2, 2)) >>> 0;
          out.writeUInt32BE(value, pos);
        }
        break;
      case 3:
        out = Buffer.concat([out.subarray(0, at), rng.bytes(rng.range(1, 16)), out.subarray(at)]);
        break;
      case 4:
        out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + rng.range(1, 16)))]);
        break;
      case 5: {
        const end = Math.min(out.length, at + rng.range(1, 32));
        out = Buffer.concat([out.subarray(0, end), out.subarray(at, end), out.subarray(end)]);
        break;
      }
      case 6:
        out = out.subarray(0, at);
        break;
      case 7:
        out = Buffer.concat([out, rng.bytes(rng.range(1, 32))]);
        break;
      case 8:
        if (out.length > 0) out[at] = rng.int(256);
        break;
      default:
        if (out.length >= 8) {
          const pos = rng.int(out.length - 7);
          out.writeBigUInt64BE(rng.pick([0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]), pos);
        }
    }
  }
  return out;
}

/** Characters that matter to JSON, base64url, JWS, YAML and host:port syntax, plus hard Unicode. */
const INTERESTING_CHARS = [
  '"', '\\', '{', '}', '[', ']', ',', ':', '.', '=', '-', '_', '+', '/', '0', '1', '9', 'A', 'a', 'z', ' ', '\t', '\n', '\r',
  '\u0000', '\u001f', 'é', '\u2028', '\uFFFF', '\uD800', '\uDC00', '😀', '*', '&', '!', '|', '>', '#', '%', '@', '`', "'", '?', '~', '<<',
];

export function randomText(rng: Rng, maxLength = 16): string {
  let out = '';
  const length = rng.int(maxLength + 1);
  for (let i = 0; i < length; i++) {
    out += rng.chance(0.6) ? rng.pick(INTERESTING_CHARS) : String.fromCharCode(rng.chance(0.9) ? rng.range(0x20, 0x7e) : rng.int(0x10000));
  }
  return out;
}

/** Character-level mutations of a text: delete, insert, replace, duplicate, nest. */
export function mutateText(rng: Rng, input: string, maxOps = 4, maxDepth = 5000): string {
  let out = input;
  const ops = rng.range(1, maxOps);
  for (let op = 0; op < ops; op++) {
    const at = rng.int(out.length + 1);
    const length = rng.range(1, 12);
    switch (rng.int(7)) {
      case 0:
        out = out.slice(0, at) + out.slice(at + length);
        break;
      case 1:
        out = out.slice(0, at) + randomText(rng, 6) + out.slice(at);
        break;
      case 2: {
        const text = randomText(rng, 6);
        out = out.slice(0, at) + text + out.slice(at + text.length);
        break;
      }
      case 3:
        out = out.slice(0, at) + out.slice(at, at + length) + out.slice(at);
        break;
      case 4:
        out = out.slice(0, at);
        break;
      case 5: {
        // Deep nesting: a classic for recursive parsers.
        const depth = Math.min(maxDepth, rng.pick([10, 100, 1000, 5000]));
        const [open, close] = rng.pick([['[', ']'], ['{"a":', '}'], ['- ', ''], ['[', '']]);
        out = out.slice(0, at) + open.repeat(depth) + '0' + close.repeat(depth) + out.slice(at);
        break;
      }
      default:
        out = out.slice(0, at) + rng.pick(INTERESTING_CHARS) + out.slice(at + 1);
    }
  }
  return out;
}

/** A random JSON-compatible value, with the awkward cases over-represented. */
export function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 3 ? 8 : 11)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1, 0.5, -0, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, 2 ** 31, 2 ** 32, 1023, 1024, 65535, 65536, NaN, Infinity]);
    case 3:
      return rng.range(-100_000, 100_000);
    case 4:
    case 5:
      return randomText(rng, 20);
    case 6:
      return rng.pick(['', '*', 'smtp', '127.0.0.1:25', '[::1]:25', 'EdDSA', 'none', 'OKP', 'Ed25519', '__proto__', 'constructor', 'toString', 'A'.repeat(43), 'a'.repeat(64), 'x'.repeat(10_000)]);
    case 7:
      return Buffer.from(rng.bytes(rng.pick([16, 32, 64, 1088, 1184]))).toString('base64url');
    case 8:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) object[rng.chance(0.3) ? rng.pick(['__proto__', 'constructor', 'toString', 'x', 'type']) : randomText(rng, 8)] = randomValue(rng, depth + 1);
      return object;
    }
  }
}

/** Structure-level mutations of a JSON value: replace, delete or add a member anywhere in it. */
export function mutateJson(rng: Rng, input: unknown, maxOps = 3): unknown {
  let out = structuredClone(input);
  const ops = rng.range(1, maxOps);
  for (let op = 0; op < ops; op++) out = mutateAt(rng, out, 0);
  return out;
}

function mutateAt(rng: Rng, node: unknown, depth: number): unknown {
  const container = typeof node === 'object' && node !== null;
  if (!container || rng.chance(depth === 0 ? 0.05 : 0.3)) return randomValue(rng);
  if (Array.isArray(node)) {
    const at = rng.int(node.length + 1);
    switch (rng.int(4)) {
      case 0:
        node.splice(at, 1);
        return node;
      case 1:
        node.splice(at, 0, randomValue(rng));
        return node;
      default:
        if (node.length === 0) return node;
        node[at % node.length] = mutateAt(rng, node[at % node.length], depth + 1);
        return node;
    }
  }
  const object = node as Record<string, unknown>;
  const keys = Object.keys(object);
  switch (rng.int(4)) {
    case 0:
      if (keys.length > 0) delete object[rng.pick(keys)];
      return object;
    case 1:
      Object.defineProperty(object, rng.chance(0.2) ? rng.pick(['__proto__', 'constructor', 'extra']) : randomText(rng, 8), {
        value: randomValue(rng),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      return object;
    default: {
      if (keys.length === 0) return object;
      const key = rng.pick(keys);
      object[key] = mutateAt(rng, object[key], depth + 1);
      return object;
    }
  }
}

/** A short, printable picture of an input for a report. */
export function preview(input: unknown, max = 160): string {
  let text: string;
  if (Buffer.isBuffer(input)) text = `hex:${input.subarray(0, max / 2).toString('hex')}${input.length > max / 2 ? `… (${input.length} bytes)` : ''}`;
  else if (typeof input === 'string') text = JSON.stringify(input.length > max ? `${input.slice(0, max)}… (${input.length} chars)` : input);
  else {
    try {
      text = JSON.stringify(input) ?? String(input);
    } catch {
      text = String(input);
    }
  }
  return text.length > max + 40 ? `${text.slice(0, max + 40)}…` : text;
}
