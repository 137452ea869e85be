import { describe, expect, test } from 'vitest';
import {
  MAX_REPLY_HEAD_BYTES,
  classifyConnectFailure,
  looksLikeInBandHttp,
  parseReplyHead,
  parseStatusLine,
} from '../../src/tunnel/connect-reply.ts';

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('parseReplyHead', () => {
  test('an incomplete head gives undefined', () => {
    expect(parseReplyHead(latin1(''))).toBeUndefined();
    expect(parseReplyHead(latin1('HTTP/1.1 200 Connection Established\r\n'))).toBeUndefined();
    expect(parseReplyHead(latin1('HTTP/1.1 200 Connection Established\r\n\r'))).toBeUndefined();
  });

  test('a complete era C reply gives its status and no rest', () => {
    const head = parseReplyHead(latin1('HTTP/1.1 200 Connection Established\r\n\r\n'));
    expect(head).toBeDefined();
    expect(head!.statusCode).toBe(200);
    expect(head!.statusText).toBe('Connection Established');
    expect(head!.rest.length).toBe(0);
  });

  test('bytes after the head are returned as rest, unchanged', () => {
    const tls = Buffer.from([0x16, 0x03, 0x03, 0x00, 0x2a, 0x0d, 0x0a, 0x0d, 0x0a, 0xff]);
    const head = parseReplyHead(Buffer.concat([latin1('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'), tls]));
    expect(head?.statusCode).toBe(200);
    expect(head?.rest).toEqual(tls);
  });

  test('an error reply returns its body as rest', () => {
    const head = parseReplyHead(latin1('HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\r\nconnection refused\n'));
    expect(head?.statusCode).toBe(502);
    expect(head?.statusText).toBe('Bad Gateway');
    expect(head?.rest.toString('latin1')).toBe('connection refused\n');
  });

  test('a head that grows past the limit without ending throws', () => {
    const big = Buffer.alloc(MAX_REPLY_HEAD_BYTES + 1, 0x61);
    expect(() => parseReplyHead(big)).toThrow(/exceeds/);
  });

  test('a head exactly at the limit without an end is still waited for', () => {
    expect(parseReplyHead(Buffer.alloc(MAX_REPLY_HEAD_BYTES, 0x61))).toBeUndefined();
  });

  test('a complete head with a malformed status line throws and names the line', () => {
    expect(() => parseReplyHead(latin1('SSH-2.0-OpenSSH\r\n\r\n'))).toThrow(/malformed reply status line "SSH-2.0-OpenSSH"/);
  });
});

describe('parseStatusLine', () => {
  test.each([
    ['HTTP/1.1 200 Connection Established', 200, 'Connection Established'],
    ['HTTP/1.0 200 OK', 200, 'OK'],
    ['HTTP/0.0 503 Service Unavailable', 503, 'Service Unavailable'],
    ['HTTP/1.1 500 Internal Server Error', 500, 'Internal Server Error'],
    ['HTTP/1.1 204', 204, ''],
    ['HTTP/1.1 404 ', 404, ''],
  ])('%j parses to %i %j', (line, code, text) => {
    expect(parseStatusLine(line)).toEqual({ statusCode: code, statusText: text });
  });

  test.each([
    '',
    'garbage',
    'HTTP/1.1',
    'HTTP/1.1 20 OK',
    'HTTP/1.1 2000 OK',
    'HTTP/11 200 OK',
    'HTTP/1.1  200 OK',
    'http/1.1 200 OK',
    ' HTTP/1.1 200 OK',
    'HTTP/1.1 abc OK',
    'HTTP/1.1 200OK',
  ])('%j is not a status line', (line) => {
    expect(parseStatusLine(line)).toBeUndefined();
  });
});

describe('looksLikeInBandHttp', () => {
  test('bytes that start with HTTP/ look like an in-band error', () => {
    expect(looksLikeInBandHttp(latin1('HTTP/0.0 503 Service Unavailable\r\n'))).toBe(true);
    expect(looksLikeInBandHttp(latin1('HTTP/'))).toBe(true);
  });

  test('a TLS record, short input and other text do not', () => {
    expect(looksLikeInBandHttp(Buffer.from([0x16, 0x03, 0x03, 0x00, 0x2a, 0x02]))).toBe(false);
    expect(looksLikeInBandHttp(latin1('HTTP'))).toBe(false);
    expect(looksLikeInBandHttp(latin1(''))).toBe(false);
    expect(looksLikeInBandHttp(latin1('http/1.1 200'))).toBe(false);
  });
});

describe('classifyConnectFailure', () => {
  test('500 with "No agent available" is no-agent', () => {
    expect(classifyConnectFailure(500, 'currently no tunnels available: No agent available')).toBe('no-agent');
  });

  test('no backend available in any status is no-agent', () => {
    expect(classifyConnectFailure(503, 'failed to get a backend: No backend available')).toBe('no-agent');
  });

  test('500 with an empty body is no-agent', () => {
    expect(classifyConnectFailure(500, '')).toBe('no-agent');
    expect(classifyConnectFailure(500, ' \n')).toBe('no-agent');
  });

  test('504 is dial-timeout', () => {
    expect(classifyConnectFailure(504, 'dial timeout')).toBe('dial-timeout');
    expect(classifyConnectFailure(504, '')).toBe('dial-timeout');
  });

  test('503 with an i/o timeout in the body is dial-timeout', () => {
    expect(classifyConnectFailure(503, 'dial tcp 10.0.0.5:7443: i/o timeout')).toBe('dial-timeout');
  });

  test('deadline exceeded and timed out in the body are dial-timeout', () => {
    expect(classifyConnectFailure(502, 'context deadline exceeded')).toBe('dial-timeout');
    expect(classifyConnectFailure(503, 'connect: connection timed out')).toBe('dial-timeout');
  });

  test('502 and 503 with connection refused are dial-failed', () => {
    expect(classifyConnectFailure(502, 'dial tcp 10.0.0.5:7443: connect: connection refused')).toBe('dial-failed');
    expect(classifyConnectFailure(503, 'dial tcp 10.0.0.5:7443: connect: connection refused')).toBe('dial-failed');
  });

  test('other statuses are unexpected', () => {
    expect(classifyConnectFailure(405, 'method not allowed')).toBe('unexpected');
    expect(classifyConnectFailure(400, '')).toBe('unexpected');
    expect(classifyConnectFailure(500, 'internal error')).toBe('unexpected');
  });
});

describe('reply head size', () => {
  test('an oversized header block is refused even when it arrives complete in one read', () => {
    const big = Buffer.from(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(() => parseReplyHead(big)).toThrow(/exceeds/);
  });
});
