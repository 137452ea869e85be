import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import YAML from 'yaml';
import { ROOT } from './certs.ts';

/**
 * Offline validation of manifests against the schemas the API servers publish, extracted by
 * scripts/fetch-schemas.sh: Kubernetes' OpenAPI v3 documents (every kind, picked by its
 * x-kubernetes-group-version-kind) and the openAPIV3Schema of the OpenShift Route CRD and of the
 * prometheus-operator's ServiceMonitor and PrometheusRule CRDs. Unknown fields are
 * errors, as with `oc apply` (strict field validation): each object schema that lists its properties
 * gets additionalProperties: false unless it keeps unknown fields on purpose.
 */
export const SCHEMA_DIR = path.join(ROOT, '.cache/schemas');
const REF_PREFIX = '#/components/schemas/';
const OBJECT_META = 'io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta';

export interface ApiSchemas {
  /** The group/version/kinds that can be validated. */
  kinds(): string[];
  /** Errors as `<path> <message>`; empty when the object is valid. */
  validate(obj: unknown): string[];
}

export function loadApiSchemas(dir = SCHEMA_DIR): ApiSchemas {
  const kubeDir = findOne(dir, 'kubernetes-');
  const openshiftDir = findOne(dir, 'openshift-api-');
  const prometheusOperatorDir = findOne(dir, 'prometheus-operator-');
  const defs: Record<string, Record<string, unknown>> = {};
  const byKind = new Map<string, string>();
  for (const file of readdirSync(kubeDir).filter((f) => f.endsWith('.json'))) {
    const doc = JSON.parse(readFileSync(path.join(kubeDir, file), 'utf8')) as { components: { schemas: Record<string, Record<string, unknown>> } };
    for (const [name, schema] of Object.entries(doc.components.schemas)) {
      defs[name] = schema;
      for (const gvk of (schema['x-kubernetes-group-version-kind'] as { group: string; version: string; kind: string }[] | undefined) ?? []) {
        byKind.set(gvkKey(gvk.group, gvk.version, gvk.kind), name);
      }
    }
  }
  const crdFiles = [
    path.join(openshiftDir, 'routes.crd.yaml'),
    ...readdirSync(prometheusOperatorDir).filter((f) => f.endsWith('.yaml')).map((f) => path.join(prometheusOperatorDir, f)),
  ];
  for (const file of crdFiles) {
    const crd = YAML.parse(readFileSync(file, 'utf8')) as CRD;
    for (const version of crd.spec.versions) {
      const schema = structuredClone(version.schema.openAPIV3Schema);
      // A CRD schema leaves metadata open; the apiserver validates it as ObjectMeta.
      (schema.properties as Record<string, unknown>).metadata = { $ref: `${REF_PREFIX}${OBJECT_META}` };
      const name = `crd.${crd.spec.group}.${version.name}.${crd.spec.names.kind}`;
      defs[name] = schema;
      byKind.set(gvkKey(crd.spec.group, version.name, crd.spec.names.kind), name);
    }
  }
  for (const schema of Object.values(defs)) forbidUnknownFields(schema);

  const ajv = new Ajv({ strict: false, allErrors: true, logger: false, code: { regExp: goRegExp } });
  const int = (bits: number) => ({ type: 'number' as const, validate: (n: number) => Number.isInteger(n) && Math.abs(n) <= 2 ** (bits - 1) });
  ajv.addFormat('int32', int(32));
  ajv.addFormat('int64', int(64));
  ajv.addFormat('int-or-string', true);
  ajv.addFormat('byte', /^[A-Za-z0-9+/]*={0,2}$/);
  ajv.addFormat('date-time', true);
  ajv.addSchema({ $id: 'api', components: { schemas: defs } });
  const compiled = new Map<string, ValidateFunction>();

  return {
    kinds: () => [...byKind.keys()].sort(),
    validate(obj) {
      const o = obj as { apiVersion?: unknown; kind?: unknown } | null;
      if (typeof o?.apiVersion !== 'string' || typeof o.kind !== 'string') return ['/ must have string apiVersion and kind'];
      const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/', 2) : ['', o.apiVersion];
      const name = byKind.get(gvkKey(group!, version!, o.kind));
      if (name === undefined) return [`/ ${o.apiVersion} ${o.kind} is not a kind these API schemas serve`];
      let fn = compiled.get(name);
      if (fn === undefined) {
        fn = ajv.compile({ $ref: `api${REF_PREFIX}${name}` });
        compiled.set(name, fn);
      }
      if (fn(obj)) return [];
      return (fn.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? e.keyword}${e.keyword === 'additionalProperties' ? `: ${String(e.params.additionalProperty)}` : ''}${e.keyword === 'enum' ? `: ${JSON.stringify(e.params.allowedValues)}` : ''}`);
    },
  };
}

/**
 * CRD patterns are Go (RE2) regular expressions, which the apiserver checks with Go's regexp. An inline
 * flag group such as `(?i)` has no JavaScript syntax: it becomes a flag of the whole pattern, which is what
 * it means where CRDs put it (at the start, as in the PrometheusRule's `^(?i)(abort|warn)?$`).
 */
const goRegExp = Object.assign((pattern: string, flags: string): RegExp => {
  let extra = '';
  const js = pattern.replace(/\(\?([ims]+)\)/g, (_m, f: string) => {
    for (const c of f) if (!extra.includes(c)) extra += c;
    return '';
  });
  return new RegExp(js, flags + extra);
}, { code: 'goRegExp' });

interface CRD {
  spec: { group: string; names: { kind: string }; versions: { name: string; schema: { openAPIV3Schema: Record<string, unknown> } }[] };
}

const gvkKey = (group: string, version: string, kind: string): string => `${group === '' ? '' : `${group}/`}${version}/${kind}`;

function findOne(dir: string, prefix: string): string {
  const found = existsSync(dir) ? readdirSync(dir).filter((d) => d.startsWith(prefix)) : [];
  if (found.length === 0) throw new Error(`no ${prefix}* schemas in ${dir}: run scripts/fetch-schemas.sh (npm test does)`);
  // Several versions side by side: the newest name sorts last.
  return path.join(dir, found.sort().at(-1)!);
}

function forbidUnknownFields(schema: unknown): void {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return;
  const s = schema as Record<string, unknown>;
  // Generated CRDs carry `anyOf: null` where a marker was emptied; it means no constraint.
  for (const [k, v] of Object.entries(s)) if (v === null) delete s[k];
  if (s.properties !== undefined && s.additionalProperties === undefined && s['x-kubernetes-preserve-unknown-fields'] !== true) s.additionalProperties = false;
  // Walk only the structural parts. allOf/anyOf/oneOf/not hold partial schemas (constraints on some
  // fields), which must not forbid the others; in the Kubernetes documents they only wrap $refs.
  if (s.properties !== null && typeof s.properties === 'object') for (const p of Object.values(s.properties)) forbidUnknownFields(p);
  forbidUnknownFields(s.items);
  if (typeof s.additionalProperties === 'object') forbidUnknownFields(s.additionalProperties);
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

/**
 * Syntax rules the apiserver applies in code rather than in its schemas: object names, label and
 * annotation keys, label values, and port names (IANA service names, which probes and Routes refer to).
 */
export function nameRuleErrors(obj: Record<string, any>): string[] {
  const errors: string[] = [];
  const check = (ok: boolean, where: string, value: unknown, rule: string): void => {
    if (!ok) errors.push(`${where} ${JSON.stringify(value)} is not ${rule}`);
  };
  const name = obj.metadata?.name as string;
  if (obj.kind === 'Service') check(name.length <= 63 && DNS1035_LABEL.test(name), '/metadata/name', name, 'a DNS-1035 label');
  else check(name.length <= 253 && DNS1123_SUBDOMAIN.test(name), '/metadata/name', name, 'a DNS-1123 subdomain');
  const qualified = (key: string): boolean => {
    const [prefix, rest] = key.includes('/') ? key.split('/', 2) : [undefined, key];
    return (prefix === undefined || (prefix.length <= 253 && DNS1123_SUBDOMAIN.test(prefix))) && rest!.length <= 63 && LABEL_NAME.test(rest!);
  };
  const labelSets: [string, Record<string, string> | undefined][] = [
    ['/metadata/labels', obj.metadata?.labels],
    ['/spec/template/metadata/labels', obj.spec?.template?.metadata?.labels],
    ['/spec/selector/matchLabels', obj.spec?.selector?.matchLabels],
  ];
  for (const [where, labels] of labelSets) {
    for (const [k, v] of Object.entries(labels ?? {})) {
      check(qualified(k), `${where} key`, k, 'a qualified name');
      check(v === '' || (v.length <= 63 && LABEL_NAME.test(v)), `${where}/${k}`, v, 'a label value');
    }
  }
  for (const k of Object.keys(obj.metadata?.annotations ?? {})) check(qualified(k), '/metadata/annotations key', k, 'a qualified name');
  const portName = (n: string): boolean => n.length <= 15 && DNS1123_LABEL.test(n) && /[a-z]/.test(n) && !n.includes('--');
  for (const [i, c] of ((obj.spec?.template?.spec?.containers ?? []) as Record<string, any>[]).entries()) {
    check(DNS1123_LABEL.test(c.name) && c.name.length <= 63, `/spec/template/spec/containers/${i}/name`, c.name, 'a DNS-1123 label');
    for (const [j, p] of ((c.ports ?? []) as Record<string, any>[]).entries()) {
      if (p.name !== undefined) check(portName(p.name), `/spec/template/spec/containers/${i}/ports/${j}/name`, p.name, 'an IANA service name');
    }
  }
  if (obj.kind === 'Service') {
    for (const [j, p] of ((obj.spec?.ports ?? []) as Record<string, any>[]).entries()) check(DNS1123_LABEL.test(p.name ?? '') && p.name.length <= 63, `/spec/ports/${j}/name`, p.name, 'a DNS-1123 label');
  }
  return errors;
}
