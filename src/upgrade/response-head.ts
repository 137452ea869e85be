import { STATUS_CODES } from 'node:http';
import { renderStatusResponse } from '../errors/kube-status.ts';
import type { ProxyError } from '../errors/proxy-error.ts';
import { buildResponseHeaders } from '../routing/forward-headers.ts';

/** Sent on every answer, as on the plain path (proxy-handler.ts REQUEST_ID_HEADER). */
const REQUEST_ID = 'x-request-id';

/**
 * Response heads written straight onto a client socket taken over for an upgrade. Node's response
 * objects are not available there, so the proxy serialises HTTP/1.1 itself.
 */

/** Header names and values must not carry CR or LF: a value that did would split the head. */
function line(name: string, value: string): string {
  return `${name}: ${value.replace(/[\r\n]/g, ' ')}\r\n`;
}

/** The upstream's end-to-end headers, with the proxy's X-Request-Id in place of any the upstream sent. */
function relayedHeaders(rawHeaders: readonly string[], requestId: string | undefined): string {
  const kept = buildResponseHeaders(rawHeaders);
  let out = '';
  for (let i = 0; i < kept.length; i += 2) {
    if (requestId !== undefined && kept[i]!.length === REQUEST_ID.length && kept[i]!.toLowerCase() === REQUEST_ID) continue;
    out += line(kept[i]!, kept[i + 1]!);
  }
  return requestId === undefined ? out : out + line(REQUEST_ID, requestId);
}

function statusLine(statusCode: number, statusMessage: string | undefined): string {
  const text = statusMessage !== undefined && statusMessage !== '' ? statusMessage : (STATUS_CODES[statusCode] ?? '');
  return `HTTP/1.1 ${statusCode} ${text.replace(/[\r\n]/g, ' ')}\r\n`;
}

/**
 * The upstream's 101, relayed: its end-to-end headers (Sec-WebSocket-Accept and -Protocol,
 * X-Stream-Protocol-Version...) in their order and case, the request id, then `Connection: Upgrade` and
 * the protocol the upstream switched to.
 */
export function switchingProtocolsHead(rawHeaders: readonly string[], statusMessage: string | undefined, protocol: string, requestId?: string): string {
  const head = statusLine(101, statusMessage) + relayedHeaders(rawHeaders, requestId);
  return `${head}${line('Connection', 'Upgrade')}${line('Upgrade', protocol)}\r\n`;
}

/**
 * Whether a 101 switched to a protocol the client asked for: its Upgrade must name one of the requested
 * protocols, compared without regard to case (Go's ReverseProxy compares the two headers the same way and
 * answers 502 otherwise). A client speaking SPDY must never be handed a WebSocket, or nothing at all.
 */
export function switchedToRequested(requested: string, switchedTo: string | undefined): boolean {
  if (switchedTo === undefined) return false;
  const chosen = switchedTo.trim().toLowerCase();
  if (chosen === '') return false;
  return requested.split(',').some((p) => p.trim().toLowerCase() === chosen);
}

/**
 * An upstream's refusal of an upgrade (any status but 101), relayed as a normal response on a
 * connection that then closes. Node has decoded any chunked framing, so Transfer-Encoding goes;
 * Content-Length stays when the upstream sent one, and without it the body ends where the connection does.
 */
export function refusalHead(statusCode: number, statusMessage: string | undefined, rawHeaders: readonly string[], requestId?: string): string {
  const head = statusLine(statusCode, statusMessage) + relayedHeaders(rawHeaders, requestId);
  return `${head}${line('Connection', 'close')}\r\n`;
}

/** A proxy-made failure before the 101, as a complete Kubernetes Status response. */
export function statusResponse(err: ProxyError, cluster?: string, requestId?: string): string {
  const { statusCode, headers, body } = renderStatusResponse(err, cluster);
  if (requestId !== undefined) headers[REQUEST_ID] = requestId;
  let head = statusLine(statusCode, undefined);
  for (const [name, value] of Object.entries(headers)) head += line(name, value);
  return `${head}${line('connection', 'close')}\r\n${body}`;
}
