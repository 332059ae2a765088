/**
 * Which AWS account and region a profile's own documents name (pure). Policies, templates and
 * the hook's ARN are written for the user's real account, so `arn:aws:iot:eu-west-1:
 * 111122223333:…` in them is right for that account; a rehearsal runs its stand-in as that
 * account and region so its lint and its data plane judge them as AWS would. Wildcards (`*`,
 * `?`), policy variables and empty fields (IAM's region, S3's both) name nothing. Two accounts,
 * or two regions, in one profile cannot all be right: each is reported with where it is.
 */

/** A document to scan: where it comes from (a path, `claim.hookArn`) and its text. */
export interface ScopeSource {
  source: string;
  text: string;
}

/** One value and every source that names it, in order. */
export interface Named {
  value: string;
  sources: string[];
}

export interface ArnScope {
  /** Every distinct account named, in order of first appearance. */
  accounts: Named[];
  regions: Named[];
  /** One sentence per disagreement (two accounts, two regions); empty when they agree. */
  conflicts: string[];
}

/** partition, service, region, account: the fields before the resource. */
const ARN = /arn:(aws[a-z-]*):([a-z0-9-]+):([^:"'\s]*):([^:"'\s]*):/g;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d$/;
const ACCOUNT = /^\d{12}$/;

function note(into: Named[], value: string, source: string): void {
  const hit = into.find((n) => n.value === value);
  if (!hit) into.push({ value, sources: [source] });
  else if (!hit.sources.includes(source)) hit.sources.push(source);
}

const listed = (named: Named[]): string =>
  named.map((n) => `${n.value} (${n.sources.join(', ')})`).join(' and ');

export function arnScope(sources: readonly ScopeSource[]): ArnScope {
  const accounts: Named[] = [];
  const regions: Named[] = [];
  for (const { source, text } of sources)
    for (const m of text.matchAll(ARN)) {
      const [, , , region, account] = m as unknown as [string, string, string, string, string];
      if (REGION.test(region)) note(regions, region, source);
      if (ACCOUNT.test(account)) note(accounts, account, source);
    }
  const conflicts: string[] = [];
  if (accounts.length > 1)
    conflicts.push(
      `the profile names ${accounts.length} accounts: ${listed(accounts)}; its policies, templates and hook must all be for one account`,
    );
  if (regions.length > 1)
    conflicts.push(
      `the profile names ${regions.length} regions: ${listed(regions)}; its policies, templates and hook must all be for one region`,
    );
  return { accounts, regions, conflicts };
}
