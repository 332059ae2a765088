/**
 * Name patterns such as `sensor-{serial}`: literal text with `{name}` placeholders.
 * `{{` and `}}` stand for literal braces. Compiled once, applied per row.
 */
import { ProvlineError } from '../core/index.js';

export type Pattern = {
  source: string;
  /** Placeholder names in order of appearance (duplicates kept once). */
  names: string[];
  apply(values: (name: string) => string): string;
};

export function compilePattern(source: string, where: string): Pattern {
  const parts: Array<{ lit: string } | { name: string }> = [];
  let lit = '';
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '{' && source[i + 1] === '{') {
      lit += '{';
      i++;
    } else if (c === '}' && source[i + 1] === '}') {
      lit += '}';
      i++;
    } else if (c === '{') {
      const end = source.indexOf('}', i);
      const name = end < 0 ? '' : source.slice(i + 1, end);
      if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(name)) {
        throw new ProvlineError('PATTERN_INVALID', `${where}: bad placeholder in pattern "${source}"`, {
          kind: 'invalid-input',
          hint: 'Placeholders look like {column_name}; write {{ or }} for a literal brace.',
        });
      }
      if (lit) parts.push({ lit });
      lit = '';
      parts.push({ name });
      i = end;
    } else if (c === '}') {
      throw new ProvlineError('PATTERN_INVALID', `${where}: unmatched "}" in pattern "${source}"`, {
        kind: 'invalid-input',
        hint: 'Write }} for a literal brace.',
      });
    } else {
      lit += c;
    }
  }
  if (lit) parts.push({ lit });
  const names = [...new Set(parts.flatMap((p) => ('name' in p ? [p.name] : [])))];
  return {
    source,
    names,
    apply(values) {
      let out = '';
      for (const p of parts) out += 'lit' in p ? p.lit : values(p.name);
      return out;
    },
  };
}
