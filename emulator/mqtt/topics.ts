/**
 * Topic names and topic filters as AWS IoT's message broker checks them (pure).
 *
 * Limits (AWS IoT Core message-broker quotas): a topic name or filter is at most 256 bytes of
 * UTF-8 and has at most 7 forward slashes (8 levels). `+` and `#` are wildcards only in
 * filters; `#` must be the last level; neither may share a level with other characters.
 * Wildcards at the first level never match a topic that starts with `$` (MQTT 3.1.1
 * §4.7.2), so `#` does not see `$aws/events/...`.
 */

export const MAX_TOPIC_BYTES = 256;
export const MAX_TOPIC_SLASHES = 7;

/** Why a topic or filter is refused, or undefined when it is fine. */
export function topicProblem(topic: string, kind: 'name' | 'filter'): string | undefined {
  if (topic.length === 0) return `the topic ${kind} is empty`;
  const bytes = Buffer.byteLength(topic, 'utf8');
  if (bytes > MAX_TOPIC_BYTES)
    return `the topic ${kind} is ${bytes} bytes long; AWS IoT allows at most ${MAX_TOPIC_BYTES}`;
  let slashes = 0;
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 0x2f) slashes++;
  if (slashes > MAX_TOPIC_SLASHES)
    return `the topic ${kind} has ${slashes} forward slashes; AWS IoT allows at most ${MAX_TOPIC_SLASHES}`;
  if (topic.includes('\u0000')) return `the topic ${kind} contains a NUL character`;
  if (kind === 'name') {
    if (topic.includes('+') || topic.includes('#'))
      return 'a topic name in PUBLISH may not contain the wildcards + or #';
    return undefined;
  }
  const levels = topic.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1))
      return "'#' must be a whole level and the last one in a topic filter";
    if (level.includes('+') && level !== '+') return "'+' must be a whole level in a topic filter";
  }
  return undefined;
}

/** True when `filter` (already valid) matches the topic name `topic`. */
export function filterMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** True when the filter has a wildcard (a plain filter can be looked up exactly). */
export function hasWildcard(filter: string): boolean {
  return filter.includes('+') || filter.includes('#');
}
