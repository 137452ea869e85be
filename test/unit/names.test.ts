import { describe, expect, test } from 'vitest';
import { isDns1123Label, isDns1123Subdomain, isPortNumber } from '../../src/routing/names.ts';

describe('isDns1123Label', () => {
  test.each(['a', '0', 'abc', 'a-b', 'a--b', '1-cluster', 'x'.repeat(63)])('%s is a valid label', (s) => {
    expect(isDns1123Label(s)).toBe(true);
  });

  test.each(['', '-a', 'a-', 'A', 'aB', 'a_b', 'a.b', 'a b', 'é', '%41', 'x'.repeat(64)])('%j is not a valid label', (s) => {
    expect(isDns1123Label(s)).toBe(false);
  });
});

describe('isDns1123Subdomain', () => {
  test.each(['a', 'a.b', 'local-cluster', '1.2.3', 'a-1.b-2', `${'a'.repeat(63)}.${'b'.repeat(63)}`])('%s is a valid subdomain', (s) => {
    expect(isDns1123Subdomain(s)).toBe(true);
  });

  test.each(['', '.', '.a', 'a.', 'a..b', '-a.b', 'a.-b', 'A.b', 'a_b.c'])('%j is not a valid subdomain', (s) => {
    expect(isDns1123Subdomain(s)).toBe(false);
  });

  test('253 characters are allowed and 254 are not', () => {
    const at253 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    expect(at253.length).toBe(253);
    expect(isDns1123Subdomain(at253)).toBe(true);
    expect(isDns1123Subdomain(`${at253}d`)).toBe(false);
  });
});

describe('isPortNumber', () => {
  test.each(['1', '80', '443', '9091', '65535'])('%s is a valid port', (s) => {
    expect(isPortNumber(s)).toBe(true);
  });

  test.each(['', '0', '00', '080', '65536', '99999', '100000', '-1', '+80', '8 0', '8a', '1e3', '0x10', ' 80'])(
    '%j is not a valid port',
    (s) => {
      expect(isPortNumber(s)).toBe(false);
    },
  );
});

describe('subdomain labels follow apimachinery', () => {
  test('a label longer than 63 characters is fine inside a subdomain (only the 253-character total counts)', () => {
    expect(isDns1123Subdomain('a'.repeat(64))).toBe(true);
    expect(isDns1123Label('a'.repeat(64))).toBe(false);
  });
});
