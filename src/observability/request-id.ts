import { randomBytes } from 'node:crypto';

const MAX_ID_LENGTH = 128;
/** Letters, digits and the punctuation of UUIDs, trace ids and base64: nothing that could break a log line or a header. */
const SANE_ID = /^[A-Za-z0-9._~:+/=-]+$/;

/** The client's X-Request-Id when it is one short printable token; undefined otherwise. */
export function saneRequestId(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_ID_LENGTH) return undefined;
  return SANE_ID.test(value) ? value : undefined;
}

/** Ids unique per process start: a random prefix and a counter, cheaper than a UUID per request. */
export function requestIdGenerator(): () => string {
  const prefix = randomBytes(6).toString('hex');
  let next = 0;
  return () => `${prefix}-${(next++).toString(36)}`;
}
