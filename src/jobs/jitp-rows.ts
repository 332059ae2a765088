/**
 * What AWS will do with each device of a JITP lot at its first connect, tried at submit before
 * anything is signed: the CA's template evaluated with the parameters AWS will take from each
 * device certificate's subject (CN the thing name, the profile's subject attributes), and the
 * resulting thing name and attribute values held to AWS's patterns. A row that would leave its
 * certificate PENDING_ACTIVATION in the field is refused at its line. Pure.
 */
import { ATTRIBUTE_VALUE_RE } from '../batch/index.js';
import {
  evaluateTemplate,
  JITP_CERTIFICATE_ID,
  JITP_SUBJECT_PARAMETERS,
  parseTemplate,
  TemplateError,
  type ParsedTemplate,
} from '../cloud/template/index.js';
import { AWS_NAME_RE } from '../config/index.js';

export interface JitpRowProblem {
  line: number;
  serial: string;
  /** Where in the template the value goes, e.g. `/Resources/thing/Properties/AttributePayload/maker`. */
  field: string;
  value: string;
  message: string;
}

/** A certificate id's shape, for evaluation (AWS fills in the real one). */
const SAMPLE_CERTIFICATE_ID = '0'.repeat(64);

export function parseJitpTemplate(body: string): ParsedTemplate {
  return parseTemplate(body, 'jitp');
}

/** The problems of one device, empty when AWS would provision it. */
export function jitpRowProblems(
  template: ParsedTemplate,
  device: { line: number; serial: string; thingName: string },
  subject: Readonly<Record<string, string>>,
): JitpRowProblem[] {
  const values: Record<string, string> = { ...subject, CN: device.thingName };
  const parameters: Record<string, string> = { [JITP_CERTIFICATE_ID]: SAMPLE_CERTIFICATE_ID };
  for (const [name, attr] of Object.entries(JITP_SUBJECT_PARAMETERS))
    if (values[attr] !== undefined && template.parameters[name] !== undefined)
      parameters[name] = values[attr];
  const at = { line: device.line, serial: device.serial };
  let plan;
  try {
    plan = evaluateTemplate(template, parameters);
  } catch (e) {
    if (!(e instanceof TemplateError)) throw e;
    return [{ ...at, field: e.path, value: '', message: e.message }];
  }
  const problems: JitpRowProblem[] = [];
  const thing = plan.thing;
  if (!thing) return problems;
  const base = `/Resources/${thing.logicalId}/Properties`;
  if (!AWS_NAME_RE.test(thing.thingName))
    problems.push({
      ...at,
      field: `${base}/ThingName`,
      value: thing.thingName,
      message: 'AWS refuses this thing name: 1-128 characters of a-z A-Z 0-9 : _ -',
    });
  for (const [name, value] of Object.entries(thing.attributes ?? {}))
    if (value.length > 800 || !ATTRIBUTE_VALUE_RE.test(value))
      problems.push({
        ...at,
        field: `${base}/AttributePayload/${name}`,
        value,
        message:
          'AWS refuses this attribute value: at most 800 characters of a-z A-Z 0-9 _ . , @ / : # = [ ] - (no spaces); change the subject attribute it comes from, or the template',
      });
  return problems;
}
