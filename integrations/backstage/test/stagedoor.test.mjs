// Unit tests for the compiled module (dist/). Run with `npm test` (builds first).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

const require = createRequire(import.meta.url);
const { ConfigReader } = require('@backstage/config');
const { createProxyAuthProviderFactory, commonSignInResolvers } = require('@backstage/plugin-auth-node');
const mod = require('../dist/index.js');
const {
  stagedoorAuthenticator,
  stagedoorSignInResolvers,
  readStagedoorConfig,
  STAGEDOOR_DEFAULT_HEADER,
  STAGEDOOR_PROVIDER_ID,
} = mod;

const ISSUER = 'https://portal.example.com';
const KID = 'stagedoor-test-1';

let server;
let jwksUrl;
let goodKey;
let otherKey;
let jwksHits = 0;

before(async () => {
  goodKey = await generateKeyPair('ES256', { extractable: true });
  otherKey = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(goodKey.publicKey)), kid: KID, alg: 'ES256', use: 'sig' };
  server = createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json') {
      jwksHits++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  jwksUrl = `http://127.0.0.1:${server.address().port}/.well-known/jwks.json`;
});

after(() => new Promise(r => server.close(r)));

const now = () => Math.floor(Date.now() / 1000);

function aliceClaims(overrides = {}) {
  return {
    iss: ISSUER,
    aud: 'backstage',
    sub: 'user:default/alice',
    ent: ['user:default/alice', 'group:default/engineering', 'group:default/backstage-admins'],
    email: 'alice@example.com',
    name: 'Alice Example',
    groups: ['engineering', 'backstage-admins'],
    idp: 'dev',
    iat: now(),
    exp: now() + 120,
    ...overrides,
  };
}

async function sign(claims, { key = goodKey.privateKey, kid = KID, alg = 'ES256' } = {}) {
  const body = { ...claims };
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  return new SignJWT(body).setProtectedHeader({ alg, kid, typ: 'JWT' }).sign(key);
}

function fakeReq(headers) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const get = name => lower[name.toLowerCase()];
  return { headers: lower, header: get, get };
}

function fakeRes() {
  return {
    statusCode: undefined,
    body: undefined,
    status(code) {
      this.statusCode = code;
      return this;
    },
    json(body) {
      this.body = body;
      return this;
    },
  };
}

// Minimal stand-in for the auth backend's AuthResolverContext, backed by a
// tiny in-memory catalog.
const catalogUsers = {
  'user:default/alice': {
    kind: 'User',
    metadata: { name: 'alice', namespace: 'default' },
    spec: { profile: { email: 'alice@example.com' } },
    ownership: ['user:default/alice', 'group:default/engineering', 'group:default/backstage-admins'],
  },
  'user:default/bob': {
    kind: 'User',
    metadata: { name: 'bob', namespace: 'default' },
    spec: { profile: { email: 'bob@example.com' } },
    ownership: ['user:default/bob', 'group:default/contractors'],
  },
};

function notFound() {
  const e = new Error('User not found');
  e.name = 'NotFoundError';
  return e;
}

function fakeBackstageToken(claims) {
  const b64 = o => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64({ sub: claims.sub, exp: now() + 3600 })}.x`;
}

function stubResolverContext() {
  const ctx = {
    issued: [],
    lookups: [],
    async issueToken({ claims }) {
      ctx.issued.push(claims);
      return {
        token: fakeBackstageToken(claims),
        identity: { type: 'user', userEntityRef: claims.sub, ownershipEntityRefs: claims.ent },
      };
    },
    async findCatalogUser(query) {
      ctx.lookups.push(query);
      let entity;
      if ('entityRef' in query) {
        const r = query.entityRef;
        const ref =
          typeof r === 'string'
            ? r.toLowerCase()
            : `${(r.kind ?? 'user').toLowerCase()}:${r.namespace ?? 'default'}/${r.name}`;
        entity = catalogUsers[ref];
      } else if ('filter' in query) {
        const email = query.filter['spec.profile.email'];
        entity = Object.values(catalogUsers).find(u => u.spec.profile.email === email);
      }
      if (!entity) throw notFound();
      return { entity };
    },
    async resolveOwnershipEntityRefs(entity) {
      return { ownershipEntityRefs: entity.ownership };
    },
    async signInWithCatalogUser(query, options) {
      try {
        const { entity } = await ctx.findCatalogUser(query);
        return ctx.issueToken({
          claims: { sub: `user:default/${entity.metadata.name}`, ent: entity.ownership },
        });
      } catch (e) {
        if (e.name !== 'NotFoundError' || !options?.dangerousEntityRefFallback) throw e;
        const ref = `user:default/${options.dangerousEntityRefFallback.entityRef.name}`;
        return ctx.issueToken({ claims: { sub: ref, ent: [ref] } });
      }
    },
  };
  return ctx;
}

function providerConfig(extra = {}) {
  return new ConfigReader({ issuer: ISSUER, jwksUrl, ...extra });
}

// The same factory the module registers.
function makeProvider(resolvers, extraConfig = {}) {
  const resolverContext = stubResolverContext();
  const handlers = createProxyAuthProviderFactory({
    authenticator: stagedoorAuthenticator,
    signInResolverFactories: { ...commonSignInResolvers, ...stagedoorSignInResolvers },
  })({
    providerId: STAGEDOOR_PROVIDER_ID,
    appUrl: 'http://127.0.0.1:3000',
    baseUrl: 'http://127.0.0.1:7007/api/auth',
    isOriginAllowed: () => true,
    globalConfig: {},
    config: providerConfig({ signIn: { resolvers }, ...extraConfig }),
    logger: console,
    resolverContext,
  });
  return { handlers, resolverContext };
}

async function refresh(provider, headers) {
  const res = fakeRes();
  await provider.handlers.refresh(fakeReq(headers), res);
  return res;
}

async function authenticate(headers, extraConfig = {}) {
  const ctx = stagedoorAuthenticator.initialize({ config: providerConfig(extraConfig) });
  return stagedoorAuthenticator.authenticate({ req: fakeReq(headers) }, ctx);
}

async function assertRefused(promise, name = 'AuthenticationError', code) {
  await assert.rejects(promise, err => {
    assert.equal(err.name, name, `expected ${name}, got ${err.name}: ${err.message}`);
    if (code) assert.equal(err.cause?.code, code);
    return true;
  });
}

describe('module', () => {
  test('default export is a backend feature (auth module)', () => {
    assert.equal(mod.default.$$type, '@backstage/BackendFeature');
    assert.equal(STAGEDOOR_PROVIDER_ID, 'stagedoor');
    assert.equal(STAGEDOOR_DEFAULT_HEADER, 'x-stagedoor-jwt-assertion');
  });

  test('config: defaults and derived JWKS URL; issuer required', () => {
    const ctx = readStagedoorConfig(new ConfigReader({ issuer: 'https://portal.example.com' }));
    assert.equal(ctx.audience, 'backstage');
    assert.equal(ctx.header, 'x-stagedoor-jwt-assertion');
    assert.equal(ctx.jwksUrl, 'https://portal.example.com/.well-known/jwks.json');
    assert.equal(ctx.clockTolerance, 5);
    const sub = readStagedoorConfig(new ConfigReader({ issuer: 'https://x.example/sd/' }));
    assert.equal(sub.jwksUrl, 'https://x.example/sd/.well-known/jwks.json');
    assert.throws(() => readStagedoorConfig(new ConfigReader({})), /issuer/);
    assert.throws(() => readStagedoorConfig(new ConfigReader({ issuer: 'not a url' })), /URL/);
  });
});

describe('authenticator', () => {
  test('a valid token authenticates with the verified claims', async () => {
    const token = await sign(aliceClaims());
    const { result } = await authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token });
    assert.equal(result.token, token);
    assert.equal(result.claims.sub, 'user:default/alice');
    assert.deepEqual(result.claims.ent, [
      'user:default/alice',
      'group:default/engineering',
      'group:default/backstage-admins',
    ]);
    assert.deepEqual(result.claims.groups, ['engineering', 'backstage-admins']);
    assert.equal(result.claims.email, 'alice@example.com');
    assert.equal(result.claims.idp, 'dev');
    const { profile } = await stagedoorAuthenticator.defaultProfileTransform(result);
    assert.deepEqual(profile, { email: 'alice@example.com', displayName: 'Alice Example' });
  });

  test('refresh returns a Backstage identity for the token subject', async () => {
    const provider = makeProvider([{ resolver: 'subjectAsEntityRef' }]);
    const res = await refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: await sign(aliceClaims()) });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.body.profile, { email: 'alice@example.com', displayName: 'Alice Example' });
    assert.deepEqual(res.body.backstageIdentity.identity, {
      type: 'user',
      userEntityRef: 'user:default/alice',
      ownershipEntityRefs: [
        'user:default/alice',
        'group:default/engineering',
        'group:default/backstage-admins',
      ],
    });
    assert.ok(res.body.backstageIdentity.token);
    assert.ok(!JSON.stringify(res.body).includes('eyJhbGciOiJFUzI1NiI'), 'upstream token not echoed');
  });

  test('a missing header is refused', async () => {
    await assertRefused(authenticate({}));
    const provider = makeProvider([{ resolver: 'subjectAsEntityRef' }]);
    await assertRefused(refresh(provider, { 'x-forwarded-user': 'alice' }));
    assert.equal(provider.resolverContext.issued.length, 0);
  });

  test('a token signed by another key is refused (same kid)', async () => {
    const token = await sign(aliceClaims(), { key: otherKey.privateKey });
    await assertRefused(
      authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }),
      'AuthenticationError',
      'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    );
  });

  test('a token signed by another key is refused (unknown kid)', async () => {
    const token = await sign(aliceClaims(), { key: otherKey.privateKey, kid: 'mallory' });
    await assertRefused(
      authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }),
      'AuthenticationError',
      'ERR_JWKS_NO_MATCHING_KEY',
    );
  });

  test('an expired token is refused', async () => {
    const token = await sign(aliceClaims({ iat: now() - 600, exp: now() - 60 }));
    await assertRefused(
      authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }),
      'AuthenticationError',
      'ERR_JWT_EXPIRED',
    );
  });

  test('a token expired by less than the clock tolerance is accepted', async () => {
    const token = await sign(aliceClaims({ exp: now() - 2 }));
    const { result } = await authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token });
    assert.equal(result.claims.sub, 'user:default/alice');
  });

  test('a token without exp is refused', async () => {
    const token = await sign(aliceClaims({ exp: undefined }));
    await assertRefused(
      authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }),
      'AuthenticationError',
      'ERR_JWT_CLAIM_VALIDATION_FAILED',
    );
  });

  test('a token for another audience is refused', async () => {
    const token = await sign(aliceClaims({ aud: 'grafana' }));
    await assertRefused(
      authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }),
      'AuthenticationError',
      'ERR_JWT_CLAIM_VALIDATION_FAILED',
    );
  });

  test('a token from another issuer is refused', async () => {
    const token = await sign(aliceClaims({ iss: 'https://evil.example.com' }));
    await assertRefused(
      authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }),
      'AuthenticationError',
      'ERR_JWT_CLAIM_VALIDATION_FAILED',
    );
  });

  test('non-ES256 and unsigned tokens are refused', async () => {
    const hs = await new SignJWT(aliceClaims())
      .setProtectedHeader({ alg: 'HS256', kid: KID })
      .sign(new TextEncoder().encode('0123456789abcdef0123456789abcdef'));
    await assertRefused(authenticate({ [STAGEDOOR_DEFAULT_HEADER]: hs }));
    const b64 = o => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(aliceClaims())}.`;
    await assertRefused(authenticate({ [STAGEDOOR_DEFAULT_HEADER]: none }));
    await assertRefused(authenticate({ [STAGEDOOR_DEFAULT_HEADER]: 'garbage' }));
  });

  test('malformed Stagedoor claims are refused', async () => {
    for (const bad of [{ ent: 'group:default/x' }, { ent: [42] }, { groups: 'admins' }, { email: 7 }]) {
      const token = await sign(aliceClaims(bad));
      await assertRefused(authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }));
    }
  });

  test('custom header name, Bearer prefix tolerated, other headers ignored', async () => {
    const token = await sign(aliceClaims());
    const { result } = await authenticate(
      { 'X-Identity': `Bearer ${token}` },
      { header: 'X-Identity' },
    );
    assert.equal(result.claims.sub, 'user:default/alice');
    await assertRefused(authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }, { header: 'X-Identity' }));
  });

  test('custom audience', async () => {
    const token = await sign(aliceClaims({ aud: 'portal' }));
    const { result } = await authenticate({ [STAGEDOOR_DEFAULT_HEADER]: token }, { audience: 'portal' });
    assert.equal(result.claims.aud, 'portal');
  });

  test('an unreachable JWKS is a 503, not a 401', async () => {
    const token = await sign(aliceClaims());
    const dead = createServer();
    await new Promise(r => dead.listen(0, '127.0.0.1', r));
    const port = dead.address().port;
    await new Promise(r => dead.close(r));
    await assertRefused(
      authenticate(
        { [STAGEDOOR_DEFAULT_HEADER]: token },
        { jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json` },
      ),
      'ServiceUnavailableError',
    );
  });

  test('the JWKS is cached between requests', async () => {
    const ctx = stagedoorAuthenticator.initialize({ config: providerConfig() });
    const before = jwksHits;
    for (let i = 0; i < 3; i++) {
      const token = await sign(aliceClaims());
      await stagedoorAuthenticator.authenticate({ req: fakeReq({ [STAGEDOOR_DEFAULT_HEADER]: token }) }, ctx);
    }
    assert.equal(jwksHits - before, 1);
  });
});

describe('sign-in resolvers', () => {
  test('subjectAsEntityRef: user must be in the catalog by default; ownership from the token', async () => {
    const provider = makeProvider([{ resolver: 'subjectAsEntityRef' }]);
    const res = await refresh(provider, {
      [STAGEDOOR_DEFAULT_HEADER]: await sign(
        aliceClaims({ ent: ['group:default/from-token'] }),
      ),
    });
    assert.deepEqual(provider.resolverContext.issued, [
      { sub: 'user:default/alice', ent: ['user:default/alice', 'group:default/from-token'] },
    ]);
    assert.equal(res.body.backstageIdentity.identity.userEntityRef, 'user:default/alice');

    const carol = aliceClaims({ sub: 'user:default/carol', ent: ['user:default/carol'], email: 'carol@example.com' });
    await assert.rejects(refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: await sign(carol) }), /unable to resolve user identity/);
  });

  test('subjectAsEntityRef with dangerouslyAllowSignInWithoutUserInCatalog skips the catalog', async () => {
    const provider = makeProvider([
      { resolver: 'subjectAsEntityRef', dangerouslyAllowSignInWithoutUserInCatalog: true },
    ]);
    const carol = aliceClaims({
      sub: 'user:default/carol',
      ent: ['user:default/carol', 'group:default/visitors'],
      email: 'carol@example.com',
    });
    const res = await refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: await sign(carol) });
    assert.equal(provider.resolverContext.lookups.length, 0);
    assert.deepEqual(res.body.backstageIdentity.identity.ownershipEntityRefs, [
      'user:default/carol',
      'group:default/visitors',
    ]);
  });

  test('subjectAsEntityRef refuses a non-User subject', async () => {
    const provider = makeProvider([
      { resolver: 'subjectAsEntityRef', dangerouslyAllowSignInWithoutUserInCatalog: true },
    ]);
    const token = await sign(aliceClaims({ sub: 'group:default/backstage-admins' }));
    await assertRefused(refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: token }), 'NotAllowedError');
    assert.equal(provider.resolverContext.issued.length, 0);
  });

  test('subjectNameMatchingUserEntityName: catalog ownership, not the token', async () => {
    const provider = makeProvider([{ resolver: 'subjectNameMatchingUserEntityName' }]);
    const token = await sign(aliceClaims({ sub: 'user:default/bob', ent: ['group:default/from-token'] }));
    const res = await refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: token });
    assert.deepEqual(provider.resolverContext.lookups, [{ entityRef: { name: 'bob' } }]);
    assert.deepEqual(res.body.backstageIdentity.identity, {
      type: 'user',
      userEntityRef: 'user:default/bob',
      ownershipEntityRefs: ['user:default/bob', 'group:default/contractors'],
    });
  });

  test('emailMatchingUserEntityProfileEmail uses the email claim', async () => {
    const provider = makeProvider([{ resolver: 'emailMatchingUserEntityProfileEmail' }]);
    const token = await sign(aliceClaims({ sub: 'user:default/someone-else', email: 'bob@example.com' }));
    const res = await refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: token });
    assert.equal(res.body.backstageIdentity.identity.userEntityRef, 'user:default/bob');
  });

  test('resolvers chain: a NotFound falls through to the next resolver', async () => {
    const provider = makeProvider([
      { resolver: 'subjectNameMatchingUserEntityName' },
      { resolver: 'emailMatchingUserEntityProfileEmail' },
    ]);
    const token = await sign(aliceClaims({ sub: 'user:default/alice.example', email: 'alice@example.com' }));
    const res = await refresh(provider, { [STAGEDOOR_DEFAULT_HEADER]: token });
    assert.equal(res.body.backstageIdentity.identity.userEntityRef, 'user:default/alice');
  });

  test('a provider without sign-in resolvers fails to start', () => {
    assert.throws(
      () =>
        createProxyAuthProviderFactory({
          authenticator: stagedoorAuthenticator,
          signInResolverFactories: stagedoorSignInResolvers,
        })({ providerId: 'stagedoor', config: providerConfig(), resolverContext: stubResolverContext() }),
      /No sign-in resolver configured/,
    );
  });
});
