import { aeadBackend, sodiumAvailable, type AeadBackend } from '../../shared/aead.js';

/**
 * Every AEAD backend this machine has. sodium-native is an optional
 * dependency: CI installs it (npm ci on linux-x64), so there its absence fails
 * the suite; locally the sodium cases are skipped with a message.
 */
export function availableBackends(): AeadBackend[] {
  if (!sodiumAvailable) {
    if (process.env.CI) throw new Error('sodium-native is not installed or its addon does not load; CI must test the sodium backend (npm ci installs it)');
    process.stderr.write('SKIPPING the sodium AEAD backend: the optional package sodium-native is not installed\n');
  }
  return [aeadBackend('node'), aeadBackend('noble'), ...(sodiumAvailable ? [aeadBackend('sodium')] : [])];
}
