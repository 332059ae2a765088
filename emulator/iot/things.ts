/** Things, thing types and thing groups (aws-iot.md §5.2). */
import { IotError, invalid, notFound } from '../errors.js';
import {
  MAX_ATTRIBUTES_TYPED,
  MAX_ATTRIBUTES_UNTYPED,
  MAX_GROUPS_PER_THING,
  MAX_GROUP_ATTRIBUTES,
  MAX_GROUP_DEPTH,
  RULES,
  Validation,
  checkAttributes,
  checkOne,
} from '../validate.js';
import { bool, obj, qbool, str, stringMap, tokenPage } from './members.js';
import {
  C,
  R,
  arn,
  newId,
  type Ctx,
  type Handler,
  type OpRequest,
  type ThingGroupRec,
  type ThingRec,
  type ThingTypeRec,
} from './model.js';

export function getThing(ctx: Ctx, name: string): ThingRec {
  const t = ctx.store.get<ThingRec>(C.things, name);
  if (!t) throw notFound(`Thing ${name} cannot be found.`);
  return t;
}

export function getGroup(ctx: Ctx, name: string): ThingGroupRec {
  const g = ctx.store.get<ThingGroupRec>(C.thingGroups, name);
  if (!g) throw notFound(`Thing Group ${name} cannot be found.`);
  return g;
}

/** A thing type usable for new things (exists and is not deprecated). */
export function usableThingType(ctx: Ctx, name: string): ThingTypeRec {
  const t = ctx.store.get<ThingTypeRec>(C.thingTypes, name);
  if (!t) throw notFound(`Thing Type ${name} cannot be found.`);
  if (t.deprecated) throw invalid(`Can not create new thing with deprecated thing type: ${name}`);
  return t;
}

export function checkThingAttributes(attributes: Record<string, string>, typed: boolean): void {
  checkAttributes(
    'attributePayload.attributes',
    attributes,
    typed ? MAX_ATTRIBUTES_TYPED : MAX_ATTRIBUTES_UNTYPED,
  );
}

export interface NewThing {
  thingName: string;
  thingTypeName?: string;
  attributes: Record<string, string>;
  billingGroupName?: string;
}

/** Validates and creates (or idempotently returns) a thing; used by CreateThing and templates. */
export function createThing(ctx: Ctx, t: NewThing): ThingRec {
  checkOne('thingName', t.thingName, RULES.thingName);
  if (t.thingTypeName !== undefined) checkOne('thingTypeName', t.thingTypeName, RULES.thingName);
  checkThingAttributes(t.attributes, t.thingTypeName !== undefined);
  const existing = ctx.store.get<ThingRec>(C.things, t.thingName);
  if (existing) {
    // Idempotent: the same configuration answers 200 again (aws-iot.md §5.2).
    if (
      existing.thingTypeName === t.thingTypeName &&
      existing.billingGroupName === t.billingGroupName &&
      sameMap(existing.attributes, t.attributes)
    )
      return existing;
    throw new IotError(
      'ResourceAlreadyExistsException',
      `Thing ${t.thingName} already exists in account with different attributes`,
      {
        resourceId: existing.thingId,
        resourceArn: existing.thingArn,
      },
    );
  }
  if (t.thingTypeName !== undefined) usableThingType(ctx, t.thingTypeName);
  if (t.billingGroupName !== undefined)
    throw notFound(`Billing Group ${t.billingGroupName} cannot be found.`);
  const rec: ThingRec = {
    thingName: t.thingName,
    thingId: newId(),
    thingArn: arn.thing(ctx, t.thingName),
    attributes: { ...t.attributes },
    version: 1,
  };
  if (t.thingTypeName !== undefined) rec.thingTypeName = t.thingTypeName;
  ctx.store.put(C.things, t.thingName, rec);
  return rec;
}

export function sameMap(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** Adds a thing to a group (idempotent; at most 10 groups per thing). */
export function addThingToGroup(ctx: Ctx, thingName: string, groupName: string): void {
  if (ctx.store.linked(R.thingGroup, thingName, groupName)) return;
  if (ctx.store.countRightOf(R.thingGroup, thingName) >= MAX_GROUPS_PER_THING) {
    throw invalid(
      `Thing ${thingName} is already in ${MAX_GROUPS_PER_THING} thing groups; a thing can be in at most ${MAX_GROUPS_PER_THING}.`,
    );
  }
  ctx.store.link(R.thingGroup, thingName, groupName);
}

function payload(body: Record<string, unknown>): {
  attributes: Record<string, string> | undefined;
  merge: boolean;
} {
  const p = obj(body, 'attributePayload');
  if (!p) return { attributes: undefined, merge: false };
  return {
    attributes:
      p.attributes === undefined ? undefined : stringMap(p.attributes, 'attributePayload.attributes'),
    merge: p.merge === true,
  };
}

function groupRec(ctx: Ctx, name: string): ThingGroupRec[] {
  const chain: ThingGroupRec[] = [];
  let g = ctx.store.get<ThingGroupRec>(C.thingGroups, name);
  while (g?.parentGroupName) {
    g = ctx.store.get<ThingGroupRec>(C.thingGroups, g.parentGroupName);
    if (g) chain.unshift(g);
  }
  return chain;
}

export function thingOps(ctx: Ctx): Record<string, Handler> {
  const { store } = ctx;
  return {
    CreateThing: (r: OpRequest) => {
      const p = payload(r.body);
      const thing: NewThing = { thingName: r.path.thingName!, attributes: p.attributes ?? {} };
      const type = str(r.body, 'thingTypeName');
      if (type !== undefined) thing.thingTypeName = type;
      const billing = str(r.body, 'billingGroupName');
      if (billing !== undefined) thing.billingGroupName = billing;
      const t = createThing(ctx, thing);
      return { thingName: t.thingName, thingArn: t.thingArn, thingId: t.thingId };
    },

    DescribeThing: (r) => {
      const t = getThing(ctx, r.path.thingName!);
      return {
        defaultClientId: t.thingName,
        thingName: t.thingName,
        thingId: t.thingId,
        thingArn: t.thingArn,
        thingTypeName: t.thingTypeName,
        attributes: t.attributes,
        version: t.version,
        billingGroupName: t.billingGroupName,
      };
    },

    ListThings: (r) => {
      const attrName = r.query.get('attributeName');
      const attrValue = r.query.get('attributeValue');
      const prefix = qbool(r.query, 'usePrefixAttributeValue') ?? false;
      const type = r.query.get('thingTypeName');
      const all = store
        .values<ThingRec>(C.things)
        .filter(
          (t) =>
            (type === null || t.thingTypeName === type) &&
            (attrName === null ||
              (attrName in t.attributes &&
                (attrValue === null ||
                  (prefix
                    ? t.attributes[attrName]!.startsWith(attrValue)
                    : t.attributes[attrName] === attrValue)))),
        )
        .sort((a, b) => (a.thingName < b.thingName ? -1 : 1));
      const page = tokenPage(r.query, all);
      return {
        things: page.items.map((t) => ({
          thingName: t.thingName,
          thingTypeName: t.thingTypeName,
          thingArn: t.thingArn,
          attributes: t.attributes,
          version: t.version,
        })),
        nextToken: page.next,
      };
    },

    UpdateThing: (r) => {
      const t = getThing(ctx, r.path.thingName!);
      const expected = r.body.expectedVersion;
      if (expected !== undefined && expected !== null && expected !== t.version)
        throw new IotError(
          'VersionConflictException',
          `The version for thing ${t.thingName} does not match the expected version.`,
        );
      const type = str(r.body, 'thingTypeName');
      const remove = bool(r.body, 'removeThingType') ?? false;
      if (remove && type !== undefined)
        throw invalid('Cannot set removeThingType to true and specify a thingTypeName at the same time.');
      const next: ThingRec = { ...t, attributes: { ...t.attributes }, version: t.version + 1 };
      if (type !== undefined) {
        checkOne('thingTypeName', type, RULES.thingName);
        usableThingType(ctx, type);
        next.thingTypeName = type;
      }
      if (remove) delete next.thingTypeName;
      const p = payload(r.body);
      if (p.attributes) {
        if (p.merge) {
          for (const [k, v] of Object.entries(p.attributes)) {
            if (v === '') delete next.attributes[k];
            else next.attributes[k] = v;
          }
        } else {
          next.attributes = Object.fromEntries(Object.entries(p.attributes).filter(([, v]) => v !== ''));
        }
      }
      checkThingAttributes(next.attributes, next.thingTypeName !== undefined);
      store.put(C.things, t.thingName, next);
      return undefined;
    },

    DeleteThing: (r) => {
      const name = r.path.thingName!;
      checkOne('thingName', name, RULES.thingName);
      const t = store.get<ThingRec>(C.things, name);
      if (!t) return undefined; // deleting a thing that does not exist succeeds (docs/emulator.md)
      const expected = r.query.get('expectedVersion');
      if (expected !== null && Number(expected) !== t.version)
        throw new IotError(
          'VersionConflictException',
          `The version for thing ${name} does not match the expected version.`,
        );
      if (store.countRightOf(R.thingPrincipal, name) > 0)
        throw invalid(`Cannot delete thing ${name} while it has principals attached; detach them first.`);
      store.transaction(() => {
        for (const g of store.rightOf(R.thingGroup, name)) store.unlink(R.thingGroup, name, g);
        store.del(C.things, name);
      });
      return undefined;
    },

    CreateThingType: (r) => {
      const name = r.path.thingTypeName!;
      const props = obj(r.body, 'thingTypeProperties') ?? {};
      const description = str(props, 'thingTypeDescription');
      const searchable = props.searchableAttributes;
      const v = new Validation()
        .check('thingTypeName', name, RULES.thingName)
        .check('thingTypeProperties.thingTypeDescription', description, RULES.description);
      if (
        searchable !== undefined &&
        (!Array.isArray(searchable) || searchable.some((s) => typeof s !== 'string'))
      )
        throw invalid("Value at 'thingTypeProperties.searchableAttributes' must be a list of strings");
      for (const s of (searchable as string[] | undefined) ?? [])
        v.check('thingTypeProperties.searchableAttributes', s, RULES.attributeName);
      v.done();
      if (((searchable as string[] | undefined) ?? []).length > 3)
        throw invalid('A thing type can have at most 3 searchable attributes.');
      const existing = store.get<ThingTypeRec>(C.thingTypes, name);
      if (existing)
        throw new IotError('ResourceAlreadyExistsException', `Thing Type ${name} already exists`, {
          resourceId: existing.thingTypeId,
          resourceArn: existing.thingTypeArn,
        });
      const rec: ThingTypeRec = {
        thingTypeName: name,
        thingTypeId: newId(),
        thingTypeArn: arn.thingType(ctx, name),
        properties: {},
        creationDate: ctx.now(),
        deprecated: false,
      };
      if (description !== undefined) rec.properties.thingTypeDescription = description;
      if (searchable !== undefined) rec.properties.searchableAttributes = searchable as string[];
      store.put(C.thingTypes, name, rec);
      return { thingTypeName: name, thingTypeArn: rec.thingTypeArn, thingTypeId: rec.thingTypeId };
    },

    DescribeThingType: (r) => {
      const t = store.get<ThingTypeRec>(C.thingTypes, r.path.thingTypeName!);
      if (!t) throw notFound(`Thing Type ${r.path.thingTypeName} cannot be found.`);
      return {
        thingTypeName: t.thingTypeName,
        thingTypeId: t.thingTypeId,
        thingTypeArn: t.thingTypeArn,
        thingTypeProperties: t.properties,
        thingTypeMetadata: {
          deprecated: t.deprecated,
          deprecationDate: t.deprecationDate,
          creationDate: t.creationDate,
        },
      };
    },

    CreateThingGroup: (r) => {
      const name = r.path.thingGroupName!;
      const parent = str(r.body, 'parentGroupName');
      const props = obj(r.body, 'thingGroupProperties') ?? {};
      const description = str(props, 'thingGroupDescription');
      const attrs = obj(props, 'attributePayload');
      const attributes = attrs
        ? stringMap(attrs.attributes, 'thingGroupProperties.attributePayload.attributes')
        : undefined;
      new Validation()
        .check('thingGroupName', name, RULES.thingName)
        .check('parentGroupName', parent, RULES.thingName)
        .check('thingGroupProperties.thingGroupDescription', description, RULES.description)
        .done();
      if (attributes)
        checkAttributes('thingGroupProperties.attributePayload.attributes', attributes, MAX_GROUP_ATTRIBUTES);
      const properties: ThingGroupRec['properties'] = {};
      if (description !== undefined) properties.thingGroupDescription = description;
      if (attributes) properties.attributePayload = { attributes };
      const existing = store.get<ThingGroupRec>(C.thingGroups, name);
      if (existing) {
        const same =
          existing.parentGroupName === parent &&
          existing.properties.thingGroupDescription === description &&
          sameMap(existing.properties.attributePayload?.attributes ?? {}, attributes ?? {});
        if (same)
          return {
            thingGroupName: name,
            thingGroupArn: existing.thingGroupArn,
            thingGroupId: existing.thingGroupId,
          };
        throw new IotError(
          'ResourceAlreadyExistsException',
          `Thing Group ${name} already exists in account with different properties`,
          { resourceId: existing.thingGroupId, resourceArn: existing.thingGroupArn },
        );
      }
      if (parent !== undefined) {
        getGroup(ctx, parent);
        if (groupRec(ctx, parent).length + 2 > MAX_GROUP_DEPTH)
          throw invalid(`Thing group hierarchy can be at most ${MAX_GROUP_DEPTH} levels deep.`);
      }
      const rec: ThingGroupRec = {
        thingGroupName: name,
        thingGroupId: newId(),
        thingGroupArn: arn.thingGroup(ctx, name),
        properties,
        version: 1,
        creationDate: ctx.now(),
      };
      if (parent !== undefined) rec.parentGroupName = parent;
      store.put(C.thingGroups, name, rec);
      return { thingGroupName: name, thingGroupArn: rec.thingGroupArn, thingGroupId: rec.thingGroupId };
    },

    DescribeThingGroup: (r) => {
      const g = getGroup(ctx, r.path.thingGroupName!);
      const chain = g.parentGroupName ? [...groupRec(ctx, g.thingGroupName)] : [];
      return {
        thingGroupName: g.thingGroupName,
        thingGroupId: g.thingGroupId,
        thingGroupArn: g.thingGroupArn,
        version: g.version,
        thingGroupProperties: g.properties,
        thingGroupMetadata: {
          parentGroupName: g.parentGroupName,
          rootToParentThingGroups: chain.length
            ? chain.map((p) => ({ groupName: p.thingGroupName, groupArn: p.thingGroupArn }))
            : undefined,
          creationDate: g.creationDate,
        },
      };
    },

    AddThingToThingGroup: (r) => {
      const groupName = str(r.body, 'thingGroupName') ?? arnName(str(r.body, 'thingGroupArn'), 'thinggroup');
      const thingName = str(r.body, 'thingName') ?? arnName(str(r.body, 'thingArn'), 'thing');
      if (!groupName) throw invalid('Either thingGroupName or thingGroupArn must be specified.');
      if (!thingName) throw invalid('Either thingName or thingArn must be specified.');
      getGroup(ctx, groupName);
      getThing(ctx, thingName);
      addThingToGroup(ctx, thingName, groupName);
      return undefined;
    },

    ListThingGroupsForThing: (r) => {
      const name = r.path.thingName!;
      getThing(ctx, name);
      const all = store
        .rightOf(R.thingGroup, name)
        .sort()
        .map((g) => ({ groupName: g, groupArn: arn.thingGroup(ctx, g) }));
      const page = tokenPage(r.query, all, 25);
      return { thingGroups: page.items, nextToken: page.next };
    },
  };
}

function arnName(value: string | undefined, type: string): string | undefined {
  if (value === undefined) return undefined;
  const m = new RegExp(`^arn:aws[a-z-]*:iot:[^:]*:[^:]*:${type}/(.+)$`).exec(value);
  if (!m) throw invalid(`Value '${value}' is not a valid ${type} ARN.`);
  return m[1];
}
