import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { createLogger } from '../../src/observability/logger.ts';
import type { ServiceTarget } from '../../src/routing/request-target.ts';
import { ServiceAllowlist, parseExposedServices } from '../../src/routing/service-allowlist.ts';
import { ExposedServices } from '../../src/server/exposed-services.ts';

const target = (namespace: string, service: string, port = '443', proto: 'http' | 'https' = 'https'): ServiceTarget => ({ namespace, service, port, proto });

describe('parseExposedServices', () => {
  test('a list of entries (one ConfigMap key), ports as strings or numbers, optional port and protocol', () => {
    expect(parseExposedServices('- namespace: monitoring\n  service: prometheus\n  port: "9090"\n  protocol: https\n- namespace: default\n  service: my-api\n- {namespace: a, service: b, port: 80}\n')).toEqual([
      { namespace: 'monitoring', service: 'prometheus', port: '9090', protocol: 'https' },
      { namespace: 'default', service: 'my-api' },
      { namespace: 'a', service: 'b', port: '80' },
    ]);
  });

  test('a ConfigMap data mapping: every key holds a list as a string, empty keys count as none', () => {
    const data = 'team-a: |\n  - namespace: monitoring\n    service: prometheus\nteam-b: |\n  - namespace: default\n    service: my-api\nempty: ""\n';
    expect(parseExposedServices(data).map((e) => `${e.namespace}/${e.service}`)).toEqual(['monitoring/prometheus', 'default/my-api']);
  });

  test.each(['', '\n', '# nothing exposed\n', '[]'])('%j is an empty list (deny all)', (text) => {
    expect(parseExposedServices(text)).toEqual([]);
  });

  test.each([
    ['- service: prometheus\n', /entry\[0\]: namespace is required/],
    ['- namespace: monitoring\n', /entry\[0\]: service is required/],
    ['- namespace: monitoring\n  service: prometheus\n  protcol: https\n', /unknown field "protcol"/],
    ['- namespace: monitoring\n  service: prometheus\n  port: "9090"\n  port: "9443"\n', /invalid YAML/],
    ['- namespace: monitoring\n  service: prometheus\n  port: 0\n', /port 0 is not a port number/],
    ['- namespace: monitoring\n  service: prometheus\n  protocol: grpc\n', /protocol "grpc" must be http or https/],
    ['- namespace: Monitoring\n  service: prometheus\n', /namespace "Monitoring" is not a lowercase RFC 1123 label/],
    ['this: is: not: valid: yaml: [[[', /invalid YAML/],
    ['team-a: |\n  - service: x\n', /key "team-a": entry\[0\]: namespace is required/],
    ['team-a:\n  - namespace: a\n    service: b\n', /key "team-a": expected a string/],
    ['- a\n', /entry\[0\]: expected a mapping/],
    ['- namespace: a\n  service: b\n---\n- namespace: c\n  service: d\n', /invalid YAML/],
    ['42', /expected a list of services/],
  ])('%j is refused: %s', (text, message) => {
    expect(() => parseExposedServices(text)).toThrow(message);
  });
});

describe('ServiceAllowlist', () => {
  const list = new ServiceAllowlist([
    { namespace: 'monitoring', service: 'prometheus', port: '9090', protocol: 'https' },
    { namespace: 'default', service: 'my-api' },
  ]);

  test('namespace and service must match; port and protocol when the entry names them', () => {
    expect(list.allows(target('monitoring', 'prometheus', '9090'))).toBe(true);
    expect(list.allows(target('monitoring', 'prometheus', '9091'))).toBe(false);
    expect(list.allows(target('monitoring', 'prometheus', '9090', 'http'))).toBe(false);
    expect(list.allows(target('default', 'my-api', '1', 'http'))).toBe(true);
    expect(list.allows(target('default', 'other'))).toBe(false);
    expect(list.allows(target('other', 'my-api'))).toBe(false);
  });

  test('an empty list denies everything', () => {
    expect(new ServiceAllowlist().allows(target('default', 'kubernetes'))).toBe(false);
  });
});

describe('ExposedServices (the file)', () => {
  const setup = (): { dir: string; file: string; logs: string[]; make: (file?: string) => ExposedServices } => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-allow-'));
    const logs: string[] = [];
    const sink = new Writable({ write: (c: Buffer, _e, cb) => (logs.push(...c.toString().split('\n').filter(Boolean)), cb()) });
    const logger = createLogger('info', sink);
    const file = path.join(dir, 'services');
    return { dir, file, logs, make: (f = file) => new ExposedServices({ file: f, logger, intervalMs: 0 }) };
  };

  test('loads at start; a malformed change keeps the last good list and logs why; deletion denies all; a new file is read again', () => {
    const { dir, file, logs, make } = setup();
    try {
      writeFileSync(file, '- namespace: tools\n  service: echo\n');
      const s = make();
      expect(s.allowlist.allows(target('tools', 'echo'))).toBe(true);
      writeFileSync(file, '- namespace: tools\n  service: echo\n  bad: 1\n');
      s.check();
      expect(s.allowlist.allows(target('tools', 'echo'))).toBe(true);
      expect(logs.some((l) => l.includes('exposed-services file is invalid') && l.includes('unknown field'))).toBe(true);
      rmSync(file);
      s.check();
      expect(s.allowlist.allows(target('tools', 'echo'))).toBe(false);
      expect(logs.some((l) => l.includes('exposed-services file is missing'))).toBe(true);
      writeFileSync(file, '- namespace: tools\n  service: echo\n');
      s.check();
      expect(s.allowlist.allows(target('tools', 'echo'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('missing or malformed at start: deny all, and say so', () => {
    const { dir, file, logs, make } = setup();
    try {
      expect(make().allowlist.entries).toEqual([]);
      writeFileSync(file, '- {namespace: tools}\n');
      expect(make().allowlist.entries).toEqual([]);
      expect(logs.some((l) => l.includes('"level":"warn"') && l.includes('exposed-services file is missing'))).toBe(true);
      expect(logs.some((l) => l.includes('"level":"error"') && l.includes('service is required'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without a file no Service is allowed', () => {
    const s = new ExposedServices({ file: undefined, logger: createLogger('silent'), intervalMs: 0 });
    expect(s.allowlist.allows(target('tools', 'echo'))).toBe(false);
  });
});
