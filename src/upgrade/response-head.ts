import { STATUS_CODES } from 'node:http';
import { renderStatusResponse } from '../errors/kube-status.ts';
import type { ProxyError } from '../errors/proxy-error.ts';
import { buildResponseHeaders } from '../routing/forward-headers.ts';

/**
 * Response heads written straight onto a client socket taken over for an upgrade. Node's response
 * objects are not available there, so the proxy serialises HTTP/1.1 itself.
 */

/** Header names and values must not carry CR or LF: a value that did would split the head. */
function line(name: string, value: string): string {
  return `${name}: ${value.replace(/[\r\n]/g, ' ')}\r\n`;
}

function statusLine(statusCode: number, statusMessage: string | undefined): string {
  const text = statusMessage !== undefined && statusMessage !== '' ? statusMessage : (STATUS_CODES[statusCode] ?? '');
  return `HTTP/1.1 ${statusCode} ${text.replace(/[\r\n]/g, ' ')}\r\n`;
}

/**
 * The upstream's 101, relayed: its end-to-end headers (Sec-WebSocket-Accept and -Protocol,
 * X-Stream-Protocol-Version...) in their order and case, then `Connection: Upgrade` and the protocol
 * the upstream switched to.
 */
export function switchingProtocolsHead(rawHeaders: readonly string[], statusMessage: string | undefined, protocol: string): string {
  let head = statusLine(101, statusMessage);
  const kept = buildResponseHeaders(rawHeaders);
  for (let i = 0; i < kept.length; i += 2) head += line(kept[i]!, kept[i + 1]!);
  return `${head}${line('Connection', 'Upgrade')}${line('Upgrade', protocol)}\r\n`;
}

/**
 * An upstream's refusal of an upgrade (any status but 101), relayed as a normal response on a
 * connection that then closes. Node has decoded any chunked framing, so Transfer-Encoding goes;
 * Content-Length stays when the upstream sent one, and without it the body ends where the connection does.
 */
export function refusalHead(statusCode: number, statusMessage: string | undefined, rawHeaders: readonly string[]): string {
  let head = statusLine(statusCode, statusMessage);
  const kept = buildResponseHeaders(rawHeaders);
  for (let i = 0; i < kept.length; i += 2) head += line(kept[i]!, kept[i + 1]!);
  return `${head}${line('Connection', 'close')}\r\n`;
}

/** A proxy-made failure before the 101, as a complete Kubernetes Status response. */
export function statusResponse(err: ProxyError, cluster?: string): string {
  const { statusCode, headers, body } = renderStatusResponse(err, cluster);
  let head = statusLine(statusCode, undefined);
  for (const [name, value] of Object.entries(headers)) head += line(name, value);
  return `${head}${line('connection', 'close')}\r\n${body}`;
}
