import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { DEFAULT_TARGET_TEMPLATE, clusterHash, compileTargetTemplate } from '../../src/tunnel/target-host.ts';

describe('clusterHash', () => {
  test.each([
    ['cluster1', 'a140791d2b20a847f2c74c62c384f93fb83691d871e80385'],
    ['local-cluster', '1a5d5c2f2bf4ee4fe8024e013e92dbe1d830715878ae3db7'],
    ['loopback', '64edaa3fb9310e98cdb183cddbf156d9964a05c017fa7f8e'],
  ])('%s hashes to the host production agents register', (cluster, hash) => {
    expect(clusterHash(cluster)).toBe(hash);
  });

  test('the hash is the first 48 lowercase hex characters of sha256', () => {
    const name = '1-digit-first.example';
    const h = clusterHash(name);
    expect(h).toMatch(/^[0-9a-f]{48}$/);
    expect(h).toBe(createHash('sha256').update(name).digest('hex').slice(0, 48));
  });
});

describe('compileTargetTemplate', () => {
  test('the default template gives the hashed host on port 7443', () => {
    const resolve = compileTargetTemplate(DEFAULT_TARGET_TEMPLATE);
    expect(resolve('cluster1')).toEqual({
      host: 'cluster-a140791d2b20a847f2c74c62c384f93fb83691d871e80385.open-cluster-management.proxy',
      port: 7443,
    });
    expect(resolve('local-cluster').host).toBe('cluster-1a5d5c2f2bf4ee4fe8024e013e92dbe1d830715878ae3db7.open-cluster-management.proxy');
    expect(resolve('loopback').host).toBe('cluster-64edaa3fb9310e98cdb183cddbf156d9964a05c017fa7f8e.open-cluster-management.proxy');
  });

  test('the {cluster} placeholder is replaced with the name', () => {
    expect(compileTargetTemplate('{cluster}.agents.local:8443')('c1')).toEqual({ host: 'c1.agents.local', port: 8443 });
  });

  test('every occurrence of both placeholders is replaced', () => {
    const resolve = compileTargetTemplate('{cluster}-{hash}.{cluster}:1');
    expect(resolve('loopback')).toEqual({ host: 'loopback-64edaa3fb9310e98cdb183cddbf156d9964a05c017fa7f8e.loopback', port: 1 });
  });

  test('a resolver gives the same target for the same cluster and different targets for different clusters', () => {
    const resolve = compileTargetTemplate(DEFAULT_TARGET_TEMPLATE);
    expect(resolve('a')).toBe(resolve('a'));
    expect(resolve('a').host).not.toBe(resolve('b').host);
  });

  test('port 65535 is accepted', () => {
    expect(compileTargetTemplate('{hash}.x:65535')('c').port).toBe(65535);
  });

  test.each([
    ['no port', 'cluster-{hash}.example'],
    ['an empty host', ':7443'],
    ['port 0', 'cluster-{hash}.example:0'],
    ['a port above 65535', 'cluster-{hash}.example:65536'],
    ['a non-numeric port', 'cluster-{hash}.example:https'],
    ['a fractional port', 'cluster-{hash}.example:1.5'],
    ['no placeholder', 'fixed.example:7443'],
    ['an unknown placeholder', '{name}.example:7443'],
    ['an unclosed brace', '{hash.example:7443'],
    ['a slash', 'cluster-{hash}/x:7443'],
    ['an underscore', 'cluster_{hash}.example:7443'],
    ['a space', 'cluster {hash}.example:7443'],
  ])('a template with %s throws', (_why, template) => {
    expect(() => compileTargetTemplate(template)).toThrow(/target template/);
  });
});

describe('template ports are plain decimal numbers', () => {
  test.each(['{hash}.x:0x1d13', '{hash}.x: 7443', '{hash}.x:1e3', '{hash}.x:07443', '{hash}.x:65536'])('%s is refused', (t) => {
    expect(() => compileTargetTemplate(t)).toThrow(/port/);
  });
});
