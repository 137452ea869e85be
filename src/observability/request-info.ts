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

  let parts = splitPath(path);
  if (parts.length < 3 || !API_PREFIXES.has(parts[0]!)) return info;
  const prefix = parts[0]!;
  parts = parts.slice(1);
  if (!GROUPLESS_PREFIXES.has(prefix)) {
    if (parts.length < 3) return info;
    info.apiGroup = parts[0]!;
    parts = parts.slice(1);
  }
  // parts[0] is the version.
  parts = parts.slice(1);

  let verb: string;
  if (SPECIAL_VERBS.has(parts[0]!)) {
    // The apiserver refuses "/api/v1/watch" alone; there is nothing to describe.
    if (parts.length < 2) return info;
    verb = parts[0]!;
    parts = parts.slice(1);
  } else {
    verb = METHOD_VERBS[method] ?? '';
  }
  info.isResourceRequest = true;

  if (parts[0] === 'namespaces') {
    if (parts.length > 1) {
      info.namespace = parts[1]!;
      if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2]!)) parts = parts.slice(2);
    }
  }
  if (parts.length >= 3 && verb !== 'proxy') info.subresource = parts[2]!;
  if (parts.length >= 2) info.name = parts[1]!;
  if (parts.length >= 1) info.resource = parts[0]!;

  if (info.name === '' && verb === 'get') {
    const params = parseQuery(query);
    verb = isWatch(params.get('watch')) ? 'watch' : 'list';
    const name = exactNameFromFieldSelector(params.get('fieldSelector'));
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

/** Go's url.ParseQuery: '&'-separated, '+' is a space, first value of each key kept. */
function parseQuery(query: string): Map<string, string> {
  const out = new Map<string, string>();
  if (query === '') return out;
  for (const pair of query.split('&')) {
    if (pair === '' || pair.includes(';')) continue;
    const eq = pair.indexOf('=');
    const key = decodeQueryComponent(eq === -1 ? pair : pair.slice(0, eq));
    const value = decodeQueryComponent(eq === -1 ? '' : pair.slice(eq + 1));
    if (key === undefined || value === undefined) continue;
    if (!out.has(key)) out.set(key, value);
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
