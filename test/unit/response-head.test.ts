import { describe, expect, test } from 'vitest';
import { ProxyError } from '../../src/errors/proxy-error.ts';
import { refusalHead, statusResponse, switchedToRequested, switchingProtocolsHead } from '../../src/upgrade/response-head.ts';

describe('switchingProtocolsHead', () => {
  test('keeps end-to-end headers in order and case, drops hop-by-hop ones, ends with Connection and Upgrade', () => {
    const head = switchingProtocolsHead(
      ['Sec-WebSocket-Accept', 'abc=', 'connection', 'upgrade', 'Upgrade', 'websocket', 'Keep-Alive', 'timeout=5', 'Sec-WebSocket-Protocol', 'v5.channel.k8s.io'],
      'Switching Protocols',
      'websocket',
    );
    expect(head).toBe(
      'HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
  });

  test('duplicate headers such as X-Stream-Protocol-Version stay separate', () => {
    const head = switchingProtocolsHead(['X-Stream-Protocol-Version', 'v4.channel.k8s.io', 'X-Stream-Protocol-Version', 'channel.k8s.io'], '', 'SPDY/3.1');
    expect(head.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
    expect(head.match(/X-Stream-Protocol-Version/g)).toHaveLength(2);
  });

  test('a CR or LF in a relayed value cannot split the head', () => {
    const head = switchingProtocolsHead(['X-Evil', 'a\r\nSet-Cookie: x=1'], 'OK\r\nX: y', 'SPDY/3.1');
    expect(head.split('\r\n').some((l) => l.startsWith('Set-Cookie'))).toBe(false);
    expect(head.split('\r\n').some((l) => l.startsWith('X: y'))).toBe(false);
  });
});

describe('refusalHead', () => {
  test('drops Transfer-Encoding (Node decoded the chunks), keeps Content-Length, closes the connection', () => {
    expect(refusalHead(403, 'Forbidden', ['Content-Type', 'application/json', 'Transfer-Encoding', 'chunked'])).toBe(
      'HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n',
    );
    expect(refusalHead(400, undefined, ['Content-Length', '12', 'Connection', 'keep-alive'])).toBe(
      'HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\n',
    );
  });
});

describe('statusResponse', () => {
  test('is a complete response: Status JSON with its length, Retry-After when set, Connection: close', () => {
    const text = statusResponse(new ProxyError('AGENT_UNAVAILABLE', 'no agent', { retryAfterSeconds: 5 }), 'c1');
    const [head, body] = text.split('\r\n\r\n') as [string, string];
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
    expect(head).toContain('\r\nretry-after: 5');
    expect(head).toContain('\r\nconnection: close');
    expect(head).toContain(`\r\ncontent-length: ${Buffer.byteLength(body)}`);
    expect(JSON.parse(body)).toMatchObject({ kind: 'Status', code: 503, reason: 'ServiceUnavailable', details: { name: 'c1', retryAfterSeconds: 5 } });
  });
});

describe('request id and the switched protocol', () => {
  test('statusResponse, the 101 and a relayed refusal carry X-Request-Id; the upstream\'s own is replaced', () => {
    expect(statusResponse(new ProxyError('BAD_PATH', 'x'), undefined, 'rid-1')).toMatch(/\r\nx-request-id: rid-1\r\n/);
    const ok = switchingProtocolsHead(['X-Request-Id', 'theirs', 'X-Stream-Protocol-Version', 'v4.channel.k8s.io'], '', 'SPDY/3.1', 'rid-2');
    expect(ok).toMatch(/\r\nx-request-id: rid-2\r\n/);
    expect(ok).not.toContain('theirs');
    const refused = refusalHead(403, 'Forbidden', ['x-request-id', 'theirs', 'Content-Type', 'application/json'], 'rid-3');
    expect(refused).toBe('HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nx-request-id: rid-3\r\nConnection: close\r\n\r\n');
  });

  test.each([
    ['SPDY/3.1', 'SPDY/3.1', true],
    ['websocket', 'WebSocket', true],
    ['h2c, websocket', 'websocket', true],
    ['SPDY/3.1', 'websocket', false],
    ['SPDY/3.1', '', false],
    ['SPDY/3.1', undefined, false],
    ['websocket', 'websocket, SPDY/3.1', false],
  ] as const)('requested %j, switched to %j: accepted %s', (requested, switchedTo, ok) => {
    expect(switchedToRequested(requested, switchedTo)).toBe(ok);
  });
});
