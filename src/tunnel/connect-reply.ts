/**
 * Pure parsing of the ANP proxy-server's answer to CONNECT. Three eras exist (anp.md section 1.3):
 * era C answers `200 Connection Established` only after the agent dialled, or an error status with a
 * plain-text body ended by EOF; eras A/B answer 200 at once (A adds `Transfer-Encoding: chunked`, which
 * means nothing on a CONNECT reply and is ignored) and report failures in-band, as an HTTP response
 * written into the tunnel (`HTTP/1.1 500 ...` or `HTTP/0.0 503 ...`).
 */
import { agentErrorKind } from './dialer.ts';

export interface ReplyHead {
  statusCode: number;
  statusText: string;
  /** Bytes that followed the header block in the same read: tunnel data or an error body. */
  rest: Buffer;
}

export const MAX_REPLY_HEAD_BYTES = 16 * 1024;

const HEAD_END = Buffer.from('\r\n\r\n');

/**
 * Finds and parses a complete header block in `buf`. Returns undefined while more bytes are needed and
 * throws on a malformed or oversized head.
 */
export function parseReplyHead(buf: Buffer): ReplyHead | undefined {
  const end = buf.indexOf(HEAD_END);
  if (end > MAX_REPLY_HEAD_BYTES || (end === -1 && buf.length > MAX_REPLY_HEAD_BYTES)) {
    throw new Error(`reply header block exceeds ${MAX_REPLY_HEAD_BYTES} bytes`);
  }
  if (end === -1) return undefined;
  const lineEnd = buf.indexOf('\r\n');
  const statusLine = buf.toString('latin1', 0, lineEnd);
  const status = parseStatusLine(statusLine);
  if (status === undefined) throw new Error(`malformed reply status line ${JSON.stringify(statusLine.slice(0, 80))}`);
  return { ...status, rest: buf.subarray(end + HEAD_END.length) };
}

/** `HTTP/<major>.<minor> <3 digits>[ <text>]`; HTTP/0.0 is what eras A/B write for in-band dial errors. */
export function parseStatusLine(line: string): { statusCode: number; statusText: string } | undefined {
  const m = /^HTTP\/\d\.\d (\d{3})(?: (.*))?$/.exec(line);
  if (m === null) return undefined;
  return { statusCode: Number(m[1]), statusText: m[2] ?? '' };
}

/**
 * Era A (ANP before v0.31) answers `200 OK` (Go's own status text) as soon as it takes the connection,
 * before it looks for an agent; eras B and C say `200 Connection Established`. Only era A's 200 can be
 * followed by an in-band error or a silent close once the dial fails.
 */
export function answeredBeforeDial(head: Pick<ReplyHead, 'statusCode' | 'statusText'>): boolean {
  return head.statusCode === 200 && head.statusText === 'OK';
}

/** True when tunnel bytes look like an in-band HTTP error rather than a TLS record. */
export function looksLikeInBandHttp(buf: Buffer): boolean {
  return buf.length >= 5 && buf.toString('latin1', 0, 5) === 'HTTP/';
}

export type DialFailureKind = 'no-agent' | 'dial-timeout' | 'dial-failed' | 'unexpected';

/**
 * Classifies a non-2xx CONNECT reply (or an in-band error) from its status and body. Era C maps agent
 * dial errors itself (timeout -> 504, others -> 502) and answers 500 "No agent available" when no
 * agent matches; eras A/B send 503 for every dial error, so the body text decides there.
 */
export function classifyConnectFailure(statusCode: number, body: string): DialFailureKind {
  const kind = agentErrorKind(body);
  if (kind !== undefined) return kind;
  if (statusCode === 504) return 'dial-timeout';
  if (statusCode === 502 || statusCode === 503) return 'dial-failed';
  if (statusCode === 500 && body.trim() === '') return 'no-agent';
  return 'unexpected';
}
