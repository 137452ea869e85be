import { Writable } from 'node:stream';
import { describe, expect, test, vi } from 'vitest';
import { createLogger, isoTimestamp, scrubSecrets } from '../../src/observability/logger.ts';
import { saneRequestId } from '../../src/observability/request-id.ts';

const SECRET = 'sEcReT-ToKeN-42';

function capture(): { logger: ReturnType<typeof createLogger>; text: () => string } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: createLogger('trace', sink), text: () => lines.join('') };
}

describe('scrubSecrets', () => {
  test.each([
    `GET /api/v1/pods?access_token=${SECRET}&watch=true`,
    `https://x/y?a=1&token=${SECRET}`,
    `https://x/y?id_token=${SECRET}#frag`,
    `Authorization: Bearer ${SECRET}`,
    `basic auth Basic ${SECRET}=`,
    `https://user:${SECRET}@example.com/x`,
  ])('%s', (text) => {
    const out = scrubSecrets(text);
    expect(out).not.toContain(SECRET);
    expect(out).toContain('[REDACTED]');
  });

  test('leaves ordinary queries alone', () => {
    expect(scrubSecrets('/api/v1/pods?watch=true&labelSelector=a%3Db')).toBe('/api/v1/pods?watch=true&labelSelector=a%3Db');
  });
});

describe('isoTimestamp', () => {
  test('is pino\'s isoTime for every millisecond, across seconds, days and years', () => {
    vi.useFakeTimers();
    try {
      for (const start of [Date.UTC(2026, 11, 31, 23, 59, 59, 990), Date.UTC(2027, 0, 1, 0, 0, 0, 0), 5, 0]) {
        vi.setSystemTime(start);
        for (let i = 0; i < 1100; i += 7) {
          vi.setSystemTime(start + i);
          expect(isoTimestamp()).toBe(`,"time":"${new Date(start + i).toISOString()}"`);
        }
      }
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('logger redaction', () => {
  test('headers, cookies and tokens in logged objects are censored', () => {
    const { logger, text } = capture();
    logger.info({ authorization: `Bearer ${SECRET}`, cookie: SECRET, token: SECRET }, 'top level');
    logger.info({ req: { method: 'GET', url: `/c/api?access_token=${SECRET}`, headers: { authorization: SECRET, 'x-remote-token': SECRET } } }, 'a request');
    logger.info({ request: { headers: { 'x-remote-token': SECRET }, rawHeaders: ['X-Remote-Token', SECRET] } }, 'nested');
    logger.info({ upstream: { options: { headers: { cookie: SECRET } } } }, 'deep');
    expect(text()).not.toContain(SECRET);
    expect(text()).toContain('"path":"/c/api"');
  });

  test('errors keep their message and code but lose tokens, also in causes and extra properties', () => {
    const { logger, text } = capture();
    const cause = Object.assign(new Error(`request to https://h/x?access_token=${SECRET} failed`), { code: 'ECONNRESET', headers: { authorization: SECRET } });
    const err = Object.assign(new Error(`upstream said Bearer ${SECRET}`, { cause }), { code: 'UND_ERR_SOCKET', request: { headers: { authorization: SECRET } } });
    logger.error({ err }, 'failed');
    logger.warn({ error: err }, 'failed again');
    logger.error(err);
    const out = text();
    expect(out).not.toContain(SECRET);
    expect(out).toContain('UND_ERR_SOCKET');
    expect(out).toContain('ECONNRESET');
  });
});

describe('saneRequestId', () => {
  test.each(['abc', '0f8fad5b-d9cb-469f-a165-70867728950e', '4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7', 'YWJj+/=='])('%s is kept', (id) => {
    expect(saneRequestId(id)).toBe(id);
  });

  test.each([undefined, '', 'a b', 'x\r\nInjected: 1', '"quoted"', 'a'.repeat(129), ['a', 'b'], 'ünï'])('%j is replaced', (id) => {
    expect(saneRequestId(id as string | string[] | undefined)).toBeUndefined();
  });
});
