/**
 * Who may use what: service name → backend address, and each authorized client
 * key with its allow-list. An immutable snapshot; a reload builds a new one and
 * swaps it whole, so a check never sees half of an old config and half of a new.
 */
import type { KeyObject } from 'node:crypto';
import type { ServerConfig, ServiceTarget } from '../shared/config-schema.js';

export interface AuthorizedClient {
  name: string;
  thumbprint: string;
  publicKey: KeyObject;
  /** Service names this client may open; '*' in the config expands to all. */
  services: ReadonlySet<string>;
}

export type Authorization =
  | { allowed: true; target: ServiceTarget }
  | { allowed: false; reason: 'unknown-client' | 'unknown-service' | 'not-allowed' };

export class ServiceRegistry {
  private readonly services: ReadonlyMap<string, ServiceTarget>;
  private readonly clients: ReadonlyMap<string, AuthorizedClient>;

  constructor(config: Pick<ServerConfig, 'services' | 'clients'>) {
    this.services = new Map(Object.entries(config.services));
    const allServices = [...this.services.keys()];
    this.clients = new Map(
      config.clients.map((entry) => [
        entry.publicKey.thumbprint,
        {
          name: entry.name,
          thumbprint: entry.publicKey.thumbprint,
          publicKey: entry.publicKey.publicKey,
          services: new Set(entry.services.includes('*') ? allServices : entry.services),
        },
      ]),
    );
  }

  client(thumbprint: string): AuthorizedClient | undefined {
    return this.clients.get(thumbprint);
  }

  /** Checked on every OPEN against the snapshot in force at that moment. */
  authorize(thumbprint: string, service: string): Authorization {
    const client = this.clients.get(thumbprint);
    if (client === undefined) return { allowed: false, reason: 'unknown-client' };
    const target = this.services.get(service);
    if (target === undefined) return { allowed: false, reason: 'unknown-service' };
    if (!client.services.has(service)) return { allowed: false, reason: 'not-allowed' };
    return { allowed: true, target };
  }

  servicesFor(thumbprint: string): string[] {
    const client = this.clients.get(thumbprint);
    return client ? [...client.services].sort() : [];
  }
}
