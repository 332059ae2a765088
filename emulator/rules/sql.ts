/**
 * The subset of AWS IoT SQL the stand-in's rules engine runs: `SELECT * FROM '<topic filter>'`.
 *
 * A statement that is not SQL at all (no SELECT … FROM '…') is AWS's SqlParseException; a
 * statement AWS would accept but the stand-in cannot run (a select list other than `*`, a
 * WHERE clause, functions) is an InvalidRequestException that says what is supported, so a
 * rule never runs with a meaning other than the one written. Pure functions.
 */
import { topicProblem } from '../mqtt/topics.js';

export const SQL_VERSIONS = ['2015-10-08', '2016-03-23', 'beta'] as const;

export const SUPPORTED_SQL = "SELECT * FROM '<topic filter>'";

export type SqlProblem = { kind: 'parse' | 'unsupported'; message: string };

export type ParsedSql = { topicFilter: string } | SqlProblem;

const SELECT_FROM = /^\s*select\s+([\s\S]*?)\s+from\s+('(?:[^']*)'|"(?:[^"]*)"|\S+)([\s\S]*)$/i;

/** Parses a rule's SQL; a problem names what was found and what the stand-in supports. */
export function parseRuleSql(sql: string): ParsedSql {
  const m = SELECT_FROM.exec(sql);
  if (!m)
    return {
      kind: 'parse',
      message: `Unable to parse the rule SQL "${short(sql)}": expected SELECT <fields> FROM '<topic filter>'`,
    };
  const [, fields, source, rest] = m as unknown as [string, string, string, string];
  const unsupported = (what: string): SqlProblem => ({
    kind: 'unsupported',
    message: `The AWS IoT stand-in runs only rules of the form ${SUPPORTED_SQL}; this rule has ${what}`,
  });
  if (fields.trim() !== '*') return unsupported(`the select list "${short(fields.trim())}"`);
  if (!source.startsWith("'"))
    return {
      kind: 'parse',
      message: `Unable to parse the rule SQL "${short(sql)}": the topic after FROM must be in single quotes`,
    };
  const trailing = rest.trim().replace(/;$/, '').trim();
  if (trailing) return unsupported(`"${short(trailing)}" after the topic`);
  const topicFilter = source.slice(1, -1);
  const bad = topicProblem(topicFilter, 'filter');
  if (bad) return { kind: 'parse', message: `The topic after FROM in the rule SQL is not valid: ${bad}` };
  return { topicFilter };
}

function short(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
