import { describe, expect, test } from 'vitest';
import { kubeRequestInfo } from '../../src/observability/request-info.ts';

type Row = [method: string, target: string, expected: Partial<ReturnType<typeof kubeRequestInfo>>];

// Expectations follow the apiserver's own RequestInfoFactory table tests and rules.
describe('kubeRequestInfo: resource requests', () => {
  test.each<Row>([
    ['GET', '/api/v1/namespaces', { verb: 'list', resource: 'namespaces', namespace: '', name: '' }],
    ['GET', '/api/v1/namespaces/other', { verb: 'get', resource: 'namespaces', namespace: 'other', name: 'other' }],
    ['GET', '/api/v1/namespaces/other/pods', { verb: 'list', resource: 'pods', namespace: 'other' }],
    ['GET', '/api/v1/namespaces/other/pods/foo', { verb: 'get', resource: 'pods', namespace: 'other', name: 'foo' }],
    ['HEAD', '/api/v1/namespaces/other/pods/foo', { verb: 'get', resource: 'pods', name: 'foo' }],
    ['GET', '/api/v1/pods', { verb: 'list', resource: 'pods', namespace: '' }],
    ['GET', '/api/v1/namespaces/other/pods/foo/log', { verb: 'get', resource: 'pods', subresource: 'log', name: 'foo' }],
    ['GET', '/api/v1/namespaces/other/pods/foo/log?follow=true', { verb: 'get', resource: 'pods', subresource: 'log', name: 'foo' }],
    ['POST', '/api/v1/namespaces/other/pods', { verb: 'create', resource: 'pods', namespace: 'other', name: '' }],
    ['PUT', '/api/v1/namespaces/other/pods/foo', { verb: 'update', resource: 'pods', name: 'foo' }],
    ['PATCH', '/api/v1/namespaces/other/pods/foo', { verb: 'patch', resource: 'pods', name: 'foo' }],
    ['DELETE', '/api/v1/namespaces/other/pods/foo', { verb: 'delete', resource: 'pods', name: 'foo' }],
    ['DELETE', '/api/v1/namespaces/other/pods', { verb: 'deletecollection', resource: 'pods', name: '' }],
    ['OPTIONS', '/api/v1/namespaces/other/pods/foo', { verb: '', resource: 'pods', name: 'foo' }],
    ['POST', '/api/v1/namespaces/other/pods/foo/exec?command=ls', { verb: 'create', resource: 'pods', subresource: 'exec', name: 'foo' }],
    ['GET', '/api/v1/namespaces/other/pods/foo/exec?command=ls', { verb: 'get', resource: 'pods', subresource: 'exec' }],
    ['POST', '/api/v1/namespaces/other/pods/foo/portforward', { verb: 'create', subresource: 'portforward' }],
    ['GET', '/api/v1/namespaces/other/pods/foo/proxy/metrics', { verb: 'get', resource: 'pods', subresource: 'proxy', name: 'foo' }],
    ['GET', '/api/v1/namespaces/other/services/s:80/proxy/a/b', { verb: 'get', resource: 'services', subresource: 'proxy', name: 's:80' }],
    ['PUT', '/api/v1/namespaces/other/finalize', { verb: 'update', resource: 'namespaces', subresource: 'finalize', namespace: 'other', name: 'other' }],
    ['PUT', '/api/v1/namespaces/other/status', { verb: 'update', resource: 'namespaces', subresource: 'status', name: 'other' }],
    ['PUT', '/api/v1/namespaces/other/pods/foo/status', { verb: 'update', resource: 'pods', subresource: 'status' }],
    ['GET', '/apis/apps/v1/namespaces/other/deployments', { verb: 'list', apiGroup: 'apps', resource: 'deployments', namespace: 'other' }],
    ['GET', '/apis/apps/v1/deployments', { verb: 'list', apiGroup: 'apps', resource: 'deployments', namespace: '' }],
    ['PATCH', '/apis/apps/v1/namespaces/o/deployments/d/scale', { verb: 'patch', apiGroup: 'apps', resource: 'deployments', subresource: 'scale', name: 'd' }],
    ['GET', '/apis/extensions/v1beta1/namespaces/other/extensions/foo/a/b/c', { verb: 'get', apiGroup: 'extensions', resource: 'extensions', subresource: 'a', name: 'foo' }],
  ])('%s %s', (method, target, expected) => {
    expect(kubeRequestInfo(method, target)).toMatchObject({ isResourceRequest: true, ...expected });
  });
});

describe('kubeRequestInfo: watch, list and get', () => {
  test.each<Row>([
    ['GET', '/api/v1/pods?watch=true', { verb: 'watch', resource: 'pods' }],
    ['GET', '/api/v1/pods?watch=1', { verb: 'watch' }],
    ['GET', '/api/v1/pods?watch=TRUE', { verb: 'watch' }],
    // ListOptions' conversion makes every value but 0/false true, the empty one too.
    ['GET', '/api/v1/pods?watch=', { verb: 'watch' }],
    ['GET', '/api/v1/pods?watch=yes', { verb: 'watch' }],
    ['GET', '/api/v1/pods?watch=false', { verb: 'list' }],
    ['GET', '/api/v1/pods?watch=FALSE', { verb: 'list' }],
    ['GET', '/api/v1/pods?watch=0', { verb: 'list' }],
    ['GET', '/api/v1/pods?watch=false&watch=true', { verb: 'list' }],
    ['GET', '/api/v1/namespaces/other/pods?labelSelector=a%3Db&watch=true&resourceVersion=10', { verb: 'watch', namespace: 'other' }],
    // A named get stays a get whatever the query says.
    ['GET', '/api/v1/namespaces/other/pods/foo?watch=true', { verb: 'get', name: 'foo' }],
    ['GET', '/api/v1/watch/pods', { verb: 'watch', resource: 'pods', namespace: '' }],
    ['GET', '/api/v1/watch/namespaces/other/pods', { verb: 'watch', resource: 'pods', namespace: 'other' }],
    ['GET', '/api/v1/watch/namespaces/other/pods/foo', { verb: 'watch', resource: 'pods', name: 'foo' }],
    ['GET', '/apis/apps/v1/watch/namespaces/other/deployments', { verb: 'watch', apiGroup: 'apps', resource: 'deployments' }],
    ['GET', '/api/v1/proxy/namespaces/other/pods/foo/a/b', { verb: 'proxy', resource: 'pods', name: 'foo', subresource: '' }],
    // A single-name field selector names the object, as kubectl get --watch on one object does.
    ['GET', '/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3Dfoo&watch=true', { verb: 'watch', name: 'foo' }],
    ['GET', '/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3D%3Dfoo', { verb: 'list', name: 'foo' }],
    ['GET', '/api/v1/namespaces/other/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dbar', { verb: 'list', name: 'bar' }],
    ['GET', '/api/v1/namespaces/other/pods?fieldSelector=metadata.name!%3Dfoo', { verb: 'list', name: '' }],
    ['GET', '/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3D..', { verb: 'list', name: '' }],
    ['DELETE', '/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3Dfoo', { verb: 'deletecollection', name: '' }],
    // Keys are decoded as Go's url.ParseQuery decodes them; pairs with ';' or a bad escape are skipped.
    ['GET', '/api/v1/pods?w%61tch=true', { verb: 'watch' }],
    ['GET', '/api/v1/pods?field%53elector=metadata.name%3Dfoo', { verb: 'list', name: 'foo' }],
    ['GET', '/api/v1/pods?watch=true;x', { verb: 'list' }],
    ['GET', '/api/v1/pods?watch=%zz&watch=true', { verb: 'watch' }],
    ['GET', '/api/v1/pods?watch%zz=true', { verb: 'list' }],
    ['GET', '/api/v1/pods?&&watch=true&', { verb: 'watch' }],
    ['GET', '/api/v1/pods?fieldSelector=metadata.name+%3D+foo', { verb: 'list', name: 'foo' }],
  ])('%s %s', (method, target, expected) => {
    expect(kubeRequestInfo(method, target)).toMatchObject(expected);
  });
});

describe('kubeRequestInfo: non-resource requests', () => {
  test.each<[string, string]>([
    ['GET', '/'],
    ['GET', '/version'],
    ['GET', '/healthz'],
    ['GET', '/api'],
    ['GET', '/api/v1'],
    ['GET', '/apis'],
    ['GET', '/apis/apps'],
    ['GET', '/apis/apps/v1'],
    ['GET', '/openapi/v2'],
    ['POST', '/metrics/x/y'],
    ['GET', '/api/v1/watch'],
    ['GET', '/other/v1/pods'],
  ])('%s %s', (method, target) => {
    expect(kubeRequestInfo(method, target)).toEqual({
      isResourceRequest: false, verb: method.toLowerCase(), apiGroup: '', resource: '', subresource: '', namespace: '', name: '',
    });
  });
});

describe('kubeRequestInfo: the path as the apiserver sees it', () => {
  test('percent-escapes are decoded before splitting, so %2F separates segments', () => {
    expect(kubeRequestInfo('GET', '/api/v1/namespaces/a%2Fb/pods')).toMatchObject({ namespace: 'a', resource: 'b', name: 'pods' });
    expect(kubeRequestInfo('GET', '/api/v1/namespaces/d%65fault/pods')).toMatchObject({ namespace: 'default', resource: 'pods' });
  });

  test('extra slashes at either end are trimmed; a malformed escape is kept as it is', () => {
    expect(kubeRequestInfo('GET', '//api/v1/pods/')).toMatchObject({ verb: 'list', resource: 'pods' });
    expect(kubeRequestInfo('GET', '/api/v1/namespaces/x/pods/%zz')).toMatchObject({ name: '%zz', verb: 'get' });
  });

  test('a query with + and bad escapes does not throw', () => {
    expect(kubeRequestInfo('GET', '/api/v1/pods?a=%zz&watch=%74rue&b=c+d')).toMatchObject({ verb: 'watch' });
    expect(kubeRequestInfo('GET', '/api/v1/pods?%zz=1')).toMatchObject({ verb: 'list' });
  });
});
