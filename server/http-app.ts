/**
 * The Express app on the gateway's HTTP listener: security headers, health and
 * readiness. The tunnel itself is not an Express route; it is an upgrade on the
 * same server (see gateway.ts).
 */
import express, { type Express } from 'express';
import helmet from 'helmet';

export interface HttpAppState {
  /** False before the config is loaded and while draining: /readyz answers 503. */
  ready: () => boolean;
  trustProxy: boolean | number | string;
}

export function createHttpApp(state: HttpAppState): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', state.trustProxy);
  app.use(helmet());
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res) => {
    const ready = state.ready();
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'draining' });
  });
  app.use((_req, res) => {
    res.status(404).json({ error: 'not found' });
  });
  return app;
}
