/**
 * The one logger factory. Library code receives a Logger from the composition
 * root (bin/ or a test) and forks children with `logger.child({...})`; nothing
 * else creates loggers or writes to stdout/stderr.
 *
 * `pretty` formats in-process with pino-pretty used as a stream (not a worker
 * transport), so it works in tests, in a bundle and right before process.exit.
 */
import { pino } from 'pino';
import pretty from 'pino-pretty';

export type Logger = pino.Logger;
export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  level: string;
  format: LogFormat;
  /** Where log lines go; stdout by default. The client uses stderr (stdout carries --stdio data). */
  destination?: 'stdout' | 'stderr' | NodeJS.WritableStream;
  name?: string;
}

/**
 * Never log key material or credentials, even by accident: the JWK private
 * part `d`, tokens, keys, authorization headers.
 */
export const REDACT_PATHS: readonly string[] = [
  'token',
  '*.token',
  'key',
  '*.key',
  'privateKey',
  '*.d',
  'authorization',
  '*.authorization',
];

export function createLogger(options: LoggerOptions): Logger {
  const pinoOptions: pino.LoggerOptions = {
    level: options.level,
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
    ...(options.name === undefined ? {} : { name: options.name }),
  };
  const destination = options.destination ?? 'stdout';
  if (options.format === 'pretty') {
    const stream = pretty({
      destination: destinationFd(destination) ?? (destination as NodeJS.WritableStream),
      sync: true,
      colorize: isTty(destination),
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
    });
    return pino(pinoOptions, stream);
  }
  const fd = destinationFd(destination);
  const stream =
    fd === undefined ? (destination as pino.DestinationStream) : pino.destination({ dest: fd, sync: true });
  return pino(pinoOptions, stream);
}

/** A logger that drops everything: the default for library code called without one. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

function destinationFd(destination: LoggerOptions['destination']): 1 | 2 | undefined {
  if (destination === 'stdout') return 1;
  if (destination === 'stderr') return 2;
  return undefined;
}

function isTty(destination: NonNullable<LoggerOptions['destination']>): boolean {
  if (destination === 'stdout') return process.stdout.isTTY === true;
  if (destination === 'stderr') return process.stderr.isTTY === true;
  return (destination as { isTTY?: boolean }).isTTY === true;
}
