import { describe, expect, test } from 'vitest';
import { isLongRunning } from '../../src/routing/long-running.ts';

describe('isLongRunning', () => {
  test.each([
    '/api/v1/pods?watch=true',
    '/api/v1/pods?watch=1',
    '/api/v1/pods?watch=True',
    '/api/v1/pods?watch=t',
    '/api/v1/pods?labelSelector=a%3Db&watch=true&resourceVersion=10',
    '/api/v1/namespaces/default/pods/p/log?follow=true',
    '/api/v1/namespaces/default/pods/p/log?container=c&follow=1',
    '/api/v1/watch/pods',
    '/api/v1/watch/namespaces/default/pods?resourceVersion=1',
    '/apis/apps/v1/watch/deployments',
    '/apis/apps/v1/watch/namespaces/x/deployments/d',
  ])('GET %s is long-running', (path) => {
    expect(isLongRunning('GET', path)).toBe(true);
  });

  test.each([
    '/api/v1/pods',
    '/api/v1/pods?watch=false',
    '/api/v1/pods?watch=0',
    '/api/v1/pods?watch=',
    '/api/v1/pods?watch',
    '/api/v1/pods?xwatch=true',
    '/api/v1/pods?watchx=true',
    '/api/v1/pods?watch_1',
    '/api/v1/pods?followXtrue',
    '/api/v1/pods?a=watch=true',
    '/api/v1/pods?follow=false',
    '/api/v1/pods?watch=true2',
    '/api/v1/watch',
    '/api/v1/watchers/pods',
    '/apis/apps/watch/deployments',
    '/apis/apps/v1/x/watch/deployments',
    '/api/v1/namespaces/watch/pods',
    '/api/v1/pods?path=/api/v1/watch/pods',
  ])('GET %s is not long-running', (path) => {
    expect(isLongRunning('GET', path)).toBe(false);
  });

  test.each(['POST', 'PUT', 'DELETE', 'HEAD', 'get'])('a %s request is never long-running', (method) => {
    expect(isLongRunning(method, '/api/v1/pods?watch=true')).toBe(false);
    expect(isLongRunning(method, '/api/v1/watch/pods')).toBe(false);
  });
});
