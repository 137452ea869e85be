import { describe, expect, test } from 'vitest';
import { buildUpstreamHeaders } from '../../src/routing/forward-headers.ts';
import { checkIdentityHeaders, isImpersonationHeader } from '../../src/routing/identity-headers.ts';
import { KUBE_API_TARGET } from '../../src/routing/request-target.ts';

const names = (out: string[]): string[] => out.filter((_v, i) => i % 2 === 0).map((n) => n.toLowerCase());

describe('checkIdentityHeaders', () => {
  test.each([
    [['Authorization', 'a', 'authorization', 'b'], /2 Authorization headers/],
    [['AUTHORIZATION', 'a', 'Authorization', 'a'], /2 Authorization headers/],
    [['Host', 'a', 'HOST', 'b'], /2 Host headers/],
    [[':authority', 'a', ':authority', 'b'], /2 :authority pseudo-headers/],
    [[':authority', 'a:1', 'host', 'b:1'], /:authority "a:1" and Host "b:1" disagree/],
  ])('%j is refused with 400 DUPLICATE_IDENTITY_HEADER', (raw, message) => {
    const err = checkIdentityHeaders(raw, 'pass');
    expect(err).toMatchObject({ code: 'DUPLICATE_IDENTITY_HEADER', statusCode: 400, reason: 'BadRequest' });
    expect(err!.message).toMatch(message);
  });

  test('one of each, or :authority equal to Host, passes', () => {
    expect(checkIdentityHeaders(['Host', 'a', 'Authorization', 'Bearer x', 'X-Host', 'b', 'Proxy-Authorization', 'y'], 'refuse')).toBeUndefined();
    expect(checkIdentityHeaders([':authority', 'a:1', 'host', 'a:1', 'authorization', 'x'], 'pass')).toBeUndefined();
  });

  test.each(['Impersonate-User', 'impersonate-group', 'IMPERSONATE-UID', 'Impersonate-Extra-Scopes'])('%s: passed by pass and strip, 403 with refuse', (name) => {
    expect(checkIdentityHeaders([name, 'x'], 'pass')).toBeUndefined();
    expect(checkIdentityHeaders([name, 'x'], 'strip')).toBeUndefined();
    expect(checkIdentityHeaders([name, 'x'], 'refuse')).toMatchObject({ code: 'IMPERSONATION_REFUSED', statusCode: 403, reason: 'Forbidden' });
  });

  test('isImpersonationHeader matches the prefix in any case and nothing else', () => {
    expect(['Impersonate-User', 'impersonate-extra-a', 'IMPERSONATE-GROUP'].every(isImpersonationHeader)).toBe(true);
    expect(['Impersonate-', 'Impersonate_User', 'X-Impersonate-User', 'impersonate'].some(isImpersonationHeader)).toBe(false);
  });
});

describe('buildUpstreamHeaders and identity', () => {
  const raw = ['Host', 'h', 'Impersonate-User', 'alice', 'impersonate-group', 'g', 'Impersonate-Extra-Scopes', 's', 'Authorization', 'Bearer t'];

  test('stripImpersonation drops every Impersonate-* field and keeps Authorization', () => {
    const out = buildUpstreamHeaders({ rawHeaders: raw, clientAddress: undefined, target: KUBE_API_TARGET, stripImpersonation: true });
    expect(names(out).filter((n) => n.startsWith('impersonate-'))).toEqual([]);
    expect(out).toContain('Bearer t');
    const passed = buildUpstreamHeaders({ rawHeaders: raw, clientAddress: undefined, target: KUBE_API_TARGET });
    expect(names(passed).filter((n) => n.startsWith('impersonate-'))).toEqual(['impersonate-user', 'impersonate-group', 'impersonate-extra-scopes']);
  });

  test('names listed in Connection never remove what the proxy sets (Cluster-Proxy-*, X-Forwarded-For, Host, the upgrade)', () => {
    const out = buildUpstreamHeaders({
      rawHeaders: ['Host', 'h', 'Connection', 'Cluster-Proxy-Service, cluster-proxy-port, X-Forwarded-For, Host, Upgrade', 'Cluster-Proxy-Service', 'evil', 'X-Forwarded-For', '10.0.0.1'],
      clientAddress: '127.0.0.1',
      target: { proto: 'https', namespace: 'tools', service: 'echo', port: '8443' },
      upgrade: 'SPDY/3.1',
    });
    const get = (n: string): string[] => out.filter((_v, i) => i % 2 === 1 && out[i - 1]!.toLowerCase() === n);
    expect(get('cluster-proxy-service')).toEqual(['echo']);
    expect(get('cluster-proxy-port')).toEqual(['8443']);
    expect(get('cluster-proxy-namespace')).toEqual(['tools']);
    expect(get('cluster-proxy-proto')).toEqual(['https']);
    expect(get('x-forwarded-for')).toEqual(['127.0.0.1']);
    expect(get('host')).toEqual(['h']);
    expect(get('upgrade')).toEqual(['SPDY/3.1']);
    expect(get('connection')).toEqual(['Upgrade']);
  });
});
