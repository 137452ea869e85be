import { ProxyError } from '../errors/proxy-error.ts';

/** What happens to client Impersonate-* headers (`--impersonation`). */
export type ImpersonationPolicy = 'pass' | 'strip' | 'refuse';

const IMPERSONATE_PREFIX = 'impersonate-';

/** Impersonate-User, -Group, -Uid and -Extra-<key>: the apiserver's impersonation headers, any case. */
export function isImpersonationHeader(name: string): boolean {
  return name.length > IMPERSONATE_PREFIX.length && name.slice(0, IMPERSONATE_PREFIX.length).toLowerCase() === IMPERSONATE_PREFIX;
}

/**
 * Checks the headers that say who the client is and where it is going, on Node's rawHeaders (every field
 * as received; `req.headers` keeps only the first Authorization or Host and would hide a second one):
 * - two Authorization fields, or two Host fields, in any case: 400. Which one a hop down the chain uses
 *   differs (Go takes the first, others the last or a join), so the request is ambiguous and never guessed;
 * - HTTP/2: `:authority` and a Host field that disagree (RFC 9113 section 8.3.1), or `:authority` twice: 400;
 * - with `policy: 'refuse'`, any Impersonate-* field: 403.
 * Returns the error to answer with, or undefined when the request may go on.
 */
export function checkIdentityHeaders(raw: readonly string[], policy: ImpersonationPolicy): ProxyError | undefined {
  let authorization = 0;
  let host: string | undefined;
  let hosts = 0;
  let authority: string | undefined;
  let authorities = 0;
  let impersonation: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') {
          hosts++;
          host ??= raw[i + 1]!;
        }
        break;
      case 10:
        if (name === ':authority') {
          authorities++;
          authority ??= raw[i + 1]!;
        }
        break;
      case 13:
        if (name.toLowerCase() === 'authorization') authorization++;
        break;
    }
    if (impersonation === undefined && name.charCodeAt(0) !== 0x3a && isImpersonationHeader(name)) impersonation = name;
  }
  if (authorization > 1) return duplicate(`${authorization} Authorization headers`);
  if (hosts > 1) return duplicate(`${hosts} Host headers`);
  if (authorities > 1) return duplicate(`${authorities} :authority pseudo-headers`);
  if (host !== undefined && authority !== undefined && host !== authority) {
    return duplicate(`:authority ${JSON.stringify(truncate(authority))} and Host ${JSON.stringify(truncate(host))} disagree`);
  }
  if (policy === 'refuse' && impersonation !== undefined) {
    return new ProxyError('IMPERSONATION_REFUSED', `impersonation is not accepted through this proxy (${truncate(impersonation)} header; the user-server runs with --impersonation=refuse)`);
  }
  return undefined;
}

function duplicate(what: string): ProxyError {
  return new ProxyError('DUPLICATE_IDENTITY_HEADER', `ambiguous request: ${what}; send exactly one`);
}

function truncate(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}...` : s;
}
