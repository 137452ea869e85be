import { createHash } from 'node:crypto';

/** 64 KiB of a fixed pattern; bodies of any size repeat it, so the client can check what it got. */
export const PATTERN = Buffer.alloc(64 * 1024);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = (i * 131 + 17) & 0xff;

export function expectedSha256(bytes: number): string {
  const h = createHash('sha256');
  for (let left = bytes; left > 0; left -= PATTERN.length) h.update(PATTERN.subarray(0, Math.min(left, PATTERN.length)));
  return h.digest('hex');
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable between processes of one machine. */
export const wallMs = (): number => performance.timeOrigin + performance.now();
