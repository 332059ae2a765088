/** IoT policies and their targets (certificates, thing groups). */
import { IotError, invalid, notFound } from '../errors.js';
import { MAX_POLICIES_PER_TARGET, RULES, checkOne, checkPolicyDocument } from '../validate.js';
import { getCert } from './certs.js';
import { markerPage, requiredStr } from './members.js';
import { C, R, arn, hex, parseArn, type Ctx, type Handler, type PolicyRec } from './model.js';
import { getGroup } from './things.js';

export function getPolicy(ctx: Ctx, name: string): PolicyRec {
  const p = ctx.store.get<PolicyRec>(C.policies, name);
  if (!p) throw notFound(`Policy not found: ${name}`);
  return p;
}

export function createPolicy(ctx: Ctx, name: string, document: string): PolicyRec {
  checkOne('policyName', name, RULES.policyName);
  checkPolicyDocument(document);
  const existing = ctx.store.get<PolicyRec>(C.policies, name);
  if (existing)
    throw new IotError(
      'ResourceAlreadyExistsException',
      `Policy cannot be created - name already exists (name=${name})`,
      { resourceId: name, resourceArn: existing.policyArn },
    );
  const now = ctx.now();
  const rec: PolicyRec = {
    policyName: name,
    policyArn: arn.policy(ctx, name),
    policyDocument: document,
    generationId: hex(32),
    creationDate: now,
    lastModifiedDate: now,
  };
  ctx.store.put(C.policies, name, rec);
  return rec;
}

/** Checks a policy target: an existing certificate or thing group ARN. */
function checkTarget(ctx: Ctx, target: string): void {
  const a = parseArn(target);
  if (a?.type === 'cert') getCert(ctx, a.id);
  else if (a?.type === 'thinggroup') getGroup(ctx, a.id);
  else throw invalid(`Target ${target} is not a certificate or thing group ARN.`);
}

export function attachPolicy(ctx: Ctx, name: string, target: string): void {
  getPolicy(ctx, name);
  checkTarget(ctx, target);
  if (ctx.store.linked(R.policyTarget, name, target)) return;
  if (ctx.store.countLeftOf(R.policyTarget, target) >= MAX_POLICIES_PER_TARGET) {
    throw new IotError(
      'LimitExceededException',
      `The number of policies attached to ${target} would exceed the limit of ${MAX_POLICIES_PER_TARGET}.`,
    );
  }
  ctx.store.link(R.policyTarget, name, target);
}

export function policyOps(ctx: Ctx): Record<string, Handler> {
  const { store } = ctx;
  return {
    CreatePolicy: (r) => {
      const p = createPolicy(ctx, r.path.policyName!, requiredStr(r.body, 'policyDocument'));
      return {
        policyName: p.policyName,
        policyArn: p.policyArn,
        policyDocument: p.policyDocument,
        policyVersionId: '1',
      };
    },

    GetPolicy: (r) => {
      const p = getPolicy(ctx, r.path.policyName!);
      return {
        policyName: p.policyName,
        policyArn: p.policyArn,
        policyDocument: p.policyDocument,
        defaultVersionId: '1',
        creationDate: p.creationDate,
        lastModifiedDate: p.lastModifiedDate,
        generationId: p.generationId,
      };
    },

    ListPolicies: (r) => {
      const all = store.values<PolicyRec>(C.policies).sort((a, b) => (a.policyName < b.policyName ? -1 : 1));
      const page = markerPage(r.query, all);
      return {
        policies: page.items.map((p) => ({ policyName: p.policyName, policyArn: p.policyArn })),
        nextMarker: page.next,
      };
    },

    AttachPolicy: (r) => {
      attachPolicy(ctx, r.path.policyName!, requiredStr(r.body, 'target'));
      return undefined;
    },

    DetachPolicy: (r) => {
      const target = requiredStr(r.body, 'target');
      getPolicy(ctx, r.path.policyName!);
      checkTarget(ctx, target);
      store.unlink(R.policyTarget, r.path.policyName!, target);
      return undefined;
    },

    ListAttachedPolicies: (r) => {
      const target = r.path.target!;
      checkTarget(ctx, target);
      const all = store
        .leftOf(R.policyTarget, target)
        .sort()
        .map((name) => ({ policyName: name, policyArn: arn.policy(ctx, name) }));
      const page = markerPage(r.query, all);
      return { policies: page.items, nextMarker: page.next };
    },

    ListTargetsForPolicy: (r) => {
      getPolicy(ctx, r.path.policyName!);
      const page = markerPage(r.query, store.rightOf(R.policyTarget, r.path.policyName!).sort());
      return { targets: page.items, nextMarker: page.next };
    },
  };
}
