/**
 * Just enough Dockerfile and .dockerignore reading to check the image's
 * structure where no Docker engine runs: instructions split into build
 * stages, and the build context filtered the way Docker filters it.
 */

export interface Instruction {
  keyword: string;
  /** The raw argument text, continuation lines joined. */
  args: string;
  /** 1-based line of the keyword. */
  line: number;
}

export interface Stage {
  /** The FROM line's `AS name`, if any. */
  name: string | undefined;
  image: string;
  instructions: Instruction[];
}

/** Splits a Dockerfile into instructions: comments and parser directives dropped, `\` continuations joined. */
export function parseInstructions(text: string): Instruction[] {
  const result: Instruction[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    const first = lines[i]!;
    if (/^\s*(#|$)/.test(first)) continue;
    const start = i;
    const continues = (line: string): boolean => /\\\s*$/.test(line);
    let joined = first.replace(/\\\s*$/, '');
    let continued = continues(first);
    while (continued && i + 1 < lines.length) {
      i += 1;
      const next = lines[i]!;
      if (/^\s*#/.test(next)) continue; // comment lines inside a continuation are skipped, as Docker does
      continued = continues(next);
      joined += ` ${next.replace(/\\\s*$/, '')}`;
    }
    const match = /^\s*(\S+)\s*(.*)$/.exec(joined)!;
    result.push({ keyword: match[1]!.toUpperCase(), args: match[2]!.trim(), line: start + 1 });
  }
  return result;
}

/** Groups instructions by FROM. ARGs before the first FROM are left out. */
export function parseStages(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of parseInstructions(text)) {
    if (instruction.keyword === 'FROM') {
      const words = instruction.args.split(/\s+/).filter((word) => !word.startsWith('--'));
      const as = words.findIndex((word) => word.toUpperCase() === 'AS');
      stages.push({ name: as >= 0 ? words[as + 1] : undefined, image: words[0]!, instructions: [] });
    } else if (stages.length > 0) {
      stages[stages.length - 1]!.instructions.push(instruction);
    }
  }
  return stages;
}

/** The exec (JSON array) form of CMD, ENTRYPOINT, HEALTHCHECK CMD…, or undefined for the shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(args);
  return Array.isArray(parsed) && parsed.every((item) => typeof item === 'string') ? (parsed as string[]) : undefined;
}

export interface CopyInstruction {
  flags: Record<string, string>;
  sources: string[];
  destination: string;
}

/** COPY/ADD flags, sources and destination (shell-word form or JSON form). */
export function parseCopy(args: string): CopyInstruction {
  const flags: Record<string, string> = {};
  let rest = args;
  for (let match = /^--([a-z-]+)(?:=(\S+))?\s+/.exec(rest); match !== null; match = /^--([a-z-]+)(?:=(\S+))?\s+/.exec(rest)) {
    flags[match[1]!] = match[2] ?? 'true';
    rest = rest.slice(match[0].length);
  }
  const words = execForm(rest) ?? rest.split(/\s+/);
  return { flags, sources: words.slice(0, -1), destination: words[words.length - 1]! };
}

function patternToRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i += 1) {
    const char = pattern[i]!;
    if (char === '*' && pattern[i + 1] === '*') {
      i += 1;
      if (pattern[i + 1] === '/') {
        i += 1;
        source += '(?:.*/)?';
      } else {
        source += '.*';
      }
    } else if (char === '*') {
      source += '[^/]*';
    } else if (char === '?') {
      source += '[^/]';
    } else {
      source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  // A pattern that matches a directory excludes everything below it.
  return new RegExp(`^${source}(?:/.*)?$`);
}

/**
 * A .dockerignore as Docker applies it: patterns relative to the context
 * root, `*`, `?` and `**`, later lines win, `!` re-includes.
 */
export function dockerignore(text: string): (relativePath: string) => boolean {
  const rules = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negated = line.startsWith('!');
      const pattern = (negated ? line.slice(1) : line).trim().replace(/^\/+/, '').replace(/\/+$/, '').replace(/^\.\//, '');
      return { negated, regex: patternToRegExp(pattern) };
    });
  return (relativePath) => {
    const clean = relativePath.replace(/^\.\//, '').replace(/\/+$/, '');
    let excluded = false;
    for (const rule of rules) if (rule.regex.test(clean)) excluded = !rule.negated;
    return excluded;
  };
}
