/**
 * Requests the apiserver keeps open: watches (`?watch=true`, or the legacy `/watch/` path) and followed
 * logs (`?follow=true`). They get tunnels of their own so they never occupy the pool short requests use.
 */
export function isLongRunning(method: string, upstreamPath: string): boolean {
  if (method !== 'GET') return false;
  const q = upstreamPath.indexOf('?');
  if (q !== -1 && (hasTrueParam(upstreamPath, q, 'watch') || hasTrueParam(upstreamPath, q, 'follow'))) return true;
  // /api/v1/watch/... and /apis/<group>/<version>/watch/...
  const path = q === -1 ? upstreamPath : upstreamPath.slice(0, q);
  return path.startsWith('/api/v1/watch/') || /^\/apis\/[^/]+\/[^/]+\/watch\//.test(path);
}

/** The apiserver accepts true/1 (and other ParseBool spellings) for these flags. */
const TRUE_VALUES = new Set(['true', '1', 't', 'True', 'TRUE', 'T']);

function hasTrueParam(target: string, queryStart: number, name: string): boolean {
  let pos = queryStart + 1;
  while (pos < target.length) {
    let end = target.indexOf('&', pos);
    if (end === -1) end = target.length;
    if (target.startsWith(name, pos) && target.charCodeAt(pos + name.length) === 0x3d) {
      if (TRUE_VALUES.has(target.slice(pos + name.length + 1, end))) return true;
    }
    pos = end + 1;
  }
  return false;
}
