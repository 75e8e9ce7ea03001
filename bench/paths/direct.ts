/** Direct TCP to the target: the limit every tunnel is compared with. */
import type { BenchContext, BenchPath, PathEndpoint } from './types.js';

export class DirectPath implements BenchPath {
  readonly id = 'direct';
  readonly label = 'direct TCP (the limit)';

  unavailable(): string | undefined {
    return undefined;
  }

  async setup(ctx: BenchContext): Promise<PathEndpoint> {
    return { port: ctx.targetPort };
  }

  async teardown(): Promise<void> {
    // nothing of its own to stop
  }

  processes(): Array<{ role: string; pid: number }> {
    return [];
  }

  details(): string {
    return 'load generator → target, no tunnel';
  }
}
