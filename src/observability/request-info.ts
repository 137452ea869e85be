/**
 * What the kube-apiserver would record about a request (its RequestInfo): the verb, API group, resource,
 * subresource, namespace and name, derived from the method, path and query exactly by the apiserver's
 * rules (k8s.io/apiserver endpoints/request RequestInfoFactory). Pure: used for access logs only.
 */
export interface KubeRequestInfo {
  /** False for /version, /healthz, discovery roots and anything outside /api and /apis. */
  isResourceRequest: boolean;
  /** get, list, watch, create, update, patch, delete, deletecollection, proxy; the lower-case method otherwise. */
  verb: string;
  apiGroup: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
}

const API_PREFIXES = new Set(['api', 'apis']);
const GROUPLESS_PREFIXES = new Set(['api']);
/** Verbs the apiserver takes from the path: /api/v1/watch/..., /api/v1/proxy/... */
const SPECIAL_VERBS = new Set(['proxy', 'watch']);
/** Subresources of a namespace itself, not resources inside it. */
const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);

const METHOD_VERBS: Record<string, string> = { POST: 'create', GET: 'get', HEAD: 'get', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };

/**
 * `target` is the upstream request target (path and optional query) as the managed cluster receives it.
 * The apiserver splits the decoded path, so `%2F` separates segments there too.
 */
export function kubeRequestInfo(method: string, target: string): KubeRequestInfo {
  const q = target.indexOf('?');
  const path = safeDecode(q === -1 ? target : target.slice(0, q));
  const query = q === -1 ? '' : target.slice(q + 1);
  const info: KubeRequestInfo = { isResourceRequest: false, verb: method.toLowerCase(), apiGroup: '', resource: '', subresource: '', namespace: '', name: '' };

  // An index into the segments rather than slices of them: this runs for every access line.
  const parts = splitPath(path);
  if (parts.length < 3 || !API_PREFIXES.has(parts[0]!)) return info;
  let i = 1;
  if (!GROUPLESS_PREFIXES.has(parts[0]!)) {
    if (parts.length < 4) return info;
    info.apiGroup = parts[1]!;
    i = 2;
  }
  // parts[i] is the version.
  i++;

  let verb: string;
  if (SPECIAL_VERBS.has(parts[i]!)) {
    // The apiserver refuses "/api/v1/watch" alone; there is nothing to describe.
    if (parts.length - i < 2) return info;
    verb = parts[i]!;
    i++;
  } else {
    verb = METHOD_VERBS[method] ?? '';
  }
  info.isResourceRequest = true;

  if (parts[i] === 'namespaces') {
    if (parts.length - i > 1) {
      info.namespace = parts[i + 1]!;
      if (parts.length - i > 2 && !NAMESPACE_SUBRESOURCES.has(parts[i + 2]!)) i += 2;
    }
  }
  const left = parts.length - i;
  if (left >= 3 && verb !== 'proxy') info.subresource = parts[i + 2]!;
  if (left >= 2) info.name = parts[i + 1]!;
  if (left >= 1) info.resource = parts[i]!;

  if (info.name === '' && verb === 'get') {
    const params = listParams(query);
    verb = isWatch(params.watch) ? 'watch' : 'list';
    const name = exactNameFromFieldSelector(params.fieldSelector);
    if (name !== undefined) info.name = name;
  }
  if (info.name === '' && verb === 'delete') verb = 'deletecollection';
  info.verb = verb;
  return info;
}

/** Adds the apiserver's view of a request (verb, resource, ...) to a log line: what operators filter by. */
export function addKubeRequestFields(line: Record<string, unknown>, method: string, target: string): void {
  const info = kubeRequestInfo(method, target);
  line.verb = info.verb;
  if (!info.isResourceRequest) return;
  if (info.apiGroup !== '') line.apiGroup = info.apiGroup;
  if (info.resource !== '') line.resource = info.resource;
  if (info.subresource !== '') line.subresource = info.subresource;
  if (info.namespace !== '') line.namespace = info.namespace;
  if (info.name !== '') line.name = info.name;
}

/** Go's strings.Split(strings.Trim(path, "/"), "/"), with "" for the root. */
function splitPath(path: string): string[] {
  let start = 0;
  let end = path.length;
  while (start < end && path.charCodeAt(start) === 0x2f) start++;
  while (end > start && path.charCodeAt(end - 1) === 0x2f) end--;
  if (start === end) return [];
  return path.slice(start, end).split('/');
}

/** ListOptions' bool conversion: any value but "0" and "false" (any case) is true, the empty one included. */
function isWatch(value: string | undefined): boolean {
  if (value === undefined) return false;
  return value !== '0' && value.toLowerCase() !== 'false';
}

/**
 * The first `watch` and `fieldSelector` values of a query, as Go's url.ParseQuery reads them: '&'-separated,
 * '+' is a space, a pair with ';' or a bad escape is skipped. Other keys are decoded only when an escape
 * could make them one of these two.
 */
function listParams(query: string): { watch?: string; fieldSelector?: string } {
  const out: { watch?: string; fieldSelector?: string } = {};
  let start = 0;
  while (start <= query.length && query !== '') {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    const pair = query.slice(start, end);
    start = end + 1;
    if (pair === '' || pair.includes(';')) continue;
    const eq = pair.indexOf('=');
    const rawKey = eq === -1 ? pair : pair.slice(0, eq);
    if (rawKey !== 'watch' && rawKey !== 'fieldSelector' && !rawKey.includes('%') && !rawKey.includes('+')) continue;
    const key = decodeQueryComponent(rawKey);
    if ((key !== 'watch' && key !== 'fieldSelector') || out[key] !== undefined) continue;
    const value = decodeQueryComponent(eq === -1 ? '' : pair.slice(eq + 1));
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** fields.Selector.RequiresExactMatch("metadata.name"), kept only when the name is a valid path segment. */
function exactNameFromFieldSelector(selector: string | undefined): string | undefined {
  if (selector === undefined || selector === '') return undefined;
  for (const term of selector.split(',')) {
    const m = /^\s*metadata\.name\s*(==|=)(.*)$/.exec(term);
    if (m === null) continue;
    const name = m[2]!.trim();
    if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('%')) return undefined;
    return name;
  }
  return undefined;
}

function safeDecode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function decodeQueryComponent(s: string): string | undefined {
  const spaced = s.includes('+') ? s.replaceAll('+', ' ') : s;
  if (!spaced.includes('%')) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    return undefined;
  }
}
