// A real Backstage backend (auth + oauth2Proxy provider + catalog) used as an
// upstream test fixture for Stagedoor. See README.md in this folder.
//
// Env:
//   PORT              (required) port to listen on, host is always 127.0.0.1
//   BASE_URL          (optional) external URL of the backend (backend.baseUrl and
//                     app.baseUrl), default http://127.0.0.1:$PORT. Set it to
//                     Stagedoor's URL when the fixture sits behind Stagedoor.
//   SERVICE_TOKEN     (optional) static external-access token (>= 8 chars, no
//                     spaces) accepted by every plugin as service credentials;
//                     random per run when unset. Used for the readiness poll.
//   STATIC_KEY_DIR    (optional) directory with public.pem (SPKI) + private.pem
//                     (PKCS#8) ES256 keys: the auth plugin then signs user
//                     tokens with this key instead of generating one.
//   STATIC_KEY_ID     (optional) kid for that key, default "stagedoor-fixture".
//   STAGEDOOR_ISSUER  (optional) enable the `stagedoor` auth provider from
//                     ../../integrations/backstage/dist (build it first).
//   STAGEDOOR_JWKS_URL, STAGEDOOR_AUDIENCE, STAGEDOOR_HEADER (optional) its
//                     jwksUrl / audience / header settings.
//   STAGEDOOR_RESOLVERS (optional) comma-separated sign-in resolvers for it,
//                     default "subjectAsEntityRef".
//   LOG_LEVEL         Backstage log level, default "warn" here.
//   READY_TIMEOUT_MS  give up (exit 1) if not ready after this, default 60000.
//
// Stdout carries exactly one line, `listening http://127.0.0.1:<port>`, printed
// once the HTTP server is up AND the catalog has ingested and stitched the
// fixture users/groups. Everything else (Backstage logs) goes to stderr.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// Keep the real stdout for the readiness line; route everything else that
// writes to stdout (winston's Console transport, console.log) to stderr.
const realStdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

process.env.LOG_LEVEL ??= 'warn';

const here = dirname(fileURLToPath(import.meta.url));
// Backstage looks for the package root upwards from the working directory.
process.chdir(here);

function fail(msg) {
  process.stderr.write(`backstage fixture: ${msg}\n`);
  process.exit(1);
}

const port = Number(process.env.PORT);
if (!process.env.PORT || !Number.isInteger(port) || port <= 0 || port > 65535) {
  fail('PORT must be set to a valid port number');
}
const directUrl = `http://127.0.0.1:${port}`;
const baseUrl = (process.env.BASE_URL || directUrl).replace(/\/+$/, '');
const serviceToken = process.env.SERVICE_TOKEN || randomBytes(24).toString('hex');

const config = {
  app: { baseUrl },
  backend: {
    baseUrl,
    listen: { host: '127.0.0.1', port },
    database: { client: 'better-sqlite3', connection: ':memory:' },
    auth: {
      externalAccess: [
        {
          type: 'static',
          options: { token: serviceToken, subject: 'stagedoor-fixture' },
        },
      ],
    },
  },
  auth: {
    environment: 'development',
    providers: {
      oauth2Proxy: {
        signIn: {
          resolvers: [
            // X-Forwarded-User == User entity metadata.name
            { resolver: 'forwardedUserMatchingUserEntityName' },
            // fallback: X-Forwarded-Email == spec.profile.email
            { resolver: 'emailMatchingUserEntityProfileEmail' },
          ],
        },
      },
    },
  },
  catalog: {
    processingInterval: { seconds: 2 },
    stitchingStrategy: { pollingInterval: { milliseconds: 200 } },
    rules: [{ allow: ['Component', 'System', 'API', 'Resource', 'Location'] }],
    locations: [
      {
        type: 'file',
        target: join(here, 'catalog.yaml'),
        rules: [{ allow: ['User', 'Group'] }],
      },
    ],
  },
};

if (process.env.STATIC_KEY_DIR) {
  const dir = resolve(process.env.STATIC_KEY_DIR);
  for (const f of ['public.pem', 'private.pem']) {
    if (!existsSync(join(dir, f))) fail(`STATIC_KEY_DIR: missing ${join(dir, f)}`);
  }
  config.auth.keyStore = {
    provider: 'static',
    static: {
      keys: [
        {
          publicKeyFile: join(dir, 'public.pem'),
          privateKeyFile: join(dir, 'private.pem'),
          keyId: process.env.STATIC_KEY_ID || 'stagedoor-fixture',
          algorithm: 'ES256',
        },
      ],
    },
  };
}

let stagedoorModule;
if (process.env.STAGEDOOR_ISSUER) {
  const dist = join(here, '..', '..', 'integrations', 'backstage', 'dist', 'index.js');
  if (!existsSync(dist)) {
    fail(`STAGEDOOR_ISSUER set but ${dist} is missing; run "npm ci && npm run build" in integrations/backstage`);
  }
  config.auth.providers.stagedoor = {
    issuer: process.env.STAGEDOOR_ISSUER,
    ...(process.env.STAGEDOOR_JWKS_URL && { jwksUrl: process.env.STAGEDOOR_JWKS_URL }),
    ...(process.env.STAGEDOOR_AUDIENCE && { audience: process.env.STAGEDOOR_AUDIENCE }),
    ...(process.env.STAGEDOOR_HEADER && { header: process.env.STAGEDOOR_HEADER }),
    signIn: {
      resolvers: (process.env.STAGEDOOR_RESOLVERS || 'subjectAsEntityRef')
        .split(',')
        .map((r) => r.trim())
        .filter(Boolean)
        .map((resolver) => ({ resolver })),
    },
  };
  stagedoorModule = await import(pathToFileURL(dist).href);
}

const { createBackend } = await import('@backstage/backend-defaults');
const { createServiceFactory, createBackendPlugin, coreServices } = await import(
  '@backstage/backend-plugin-api'
);
const { ConfigReader } = await import('@backstage/config');

// CJS packages seen from ESM: namespace.default is module.exports, whose
// .default is the feature.
const feature = (ns) => {
  let m = ns;
  while (m && typeof m === 'object' && 'default' in m && !m.$$type) m = m.default;
  return m;
};

const backend = createBackend();
// Config comes only from this object: no app-config.yaml lookup, no APP_CONFIG_* env.
backend.add(
  createServiceFactory({
    service: coreServices.rootConfig,
    deps: {},
    factory: () => new ConfigReader(config, 'stagedoor-fixture'),
  }),
);
backend.add(feature(await import('@backstage/plugin-auth-backend')));
backend.add(feature(await import('@backstage/plugin-auth-backend-module-oauth2-proxy-provider')));
backend.add(feature(await import('@backstage/plugin-catalog-backend')));
if (stagedoorModule) backend.add(feature(stagedoorModule));

// GET /api/whoami: a user-only endpoint answering with the caller's principal as every backend
// plugin sees it (coreServices.userInfo: the user entity ref and ownership refs, read from the
// token's `ent` claim when it has one).
backend.add(
  createBackendPlugin({
    pluginId: 'whoami',
    register(env) {
      env.registerInit({
        deps: {
          http: coreServices.httpRouter,
          httpAuth: coreServices.httpAuth,
          userInfo: coreServices.userInfo,
        },
        async init({ http, httpAuth, userInfo }) {
          http.use(async (req, res, next) => {
            if (req.method !== 'GET' || req.path !== '/') return next();
            try {
              const credentials = await httpAuth.credentials(req, { allow: ['user'] });
              res.json(await userInfo.getUserInfo(credentials));
            } catch (e) {
              next(e);
            }
          });
        },
      });
    },
  }),
);

let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  const timer = setTimeout(() => process.exit(code), 5000);
  timer.unref();
  try {
    await backend.stop();
  } catch (e) {
    process.stderr.write(`backstage fixture: stop failed: ${e}\n`);
  }
  process.exit(code);
}
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));

const started = Date.now();
await backend.start();

// Ready = catalog serves all fixture users/groups, with alice's and bob's
// memberOf relations stitched (the oauth2Proxy sign-in derives ownership refs
// from those relations).
const expected = {
  'user:default/alice': ['group:default/backstage-admins', 'group:default/engineering'],
  'user:default/bob': ['group:default/contractors'],
  'group:default/engineering': null,
  'group:default/backstage-admins': null,
  'group:default/contractors': null,
};

async function catalogReady() {
  const res = await fetch(`${directUrl}/api/catalog/entities?filter=kind=user&filter=kind=group`, {
    headers: { authorization: `Bearer ${serviceToken}` },
  });
  if (!res.ok) return false;
  const entities = await res.json();
  const byRef = new Map(
    entities.map((e) => [`${e.kind}:${e.metadata.namespace ?? 'default'}/${e.metadata.name}`.toLowerCase(), e]),
  );
  for (const [ref, groups] of Object.entries(expected)) {
    const e = byRef.get(ref);
    if (!e) return false;
    if (groups) {
      const got = (e.relations ?? [])
        .filter((r) => r.type === 'memberOf')
        .map((r) => r.targetRef)
        .sort();
      if (got.join() !== groups.join()) return false;
    }
  }
  return true;
}

const deadline = started + Number(process.env.READY_TIMEOUT_MS || 60000);
for (;;) {
  let ok = false;
  try {
    ok = await catalogReady();
  } catch {
    ok = false;
  }
  if (ok) break;
  if (Date.now() > deadline) {
    process.stderr.write('backstage fixture: catalog not ready before READY_TIMEOUT_MS\n');
    await shutdown(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}

process.stderr.write(`backstage fixture: ready after ${Date.now() - started} ms\n`);
realStdoutWrite(`listening ${directUrl}\n`);
