// A real, certified OpenID provider (the oidc-provider package) for Stagedoor's end-to-end
// tests. Listens on 127.0.0.1 on a free port and prints `listening <issuer>` when ready.
//
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI   the one client (Stagedoor); its post-logout
//                                           redirect is REDIRECT_URI with /sign_out for /callback
//   ACCESS_TOKEN_TTL                         seconds (short values force refreshes)
//
// Accounts: alice (verified, groups engineering and backstage-admins), bob (unverified email).
// Client `ci` (secret `ci-secret`) gets JWT access tokens by client credentials for any
// `resource`, as ci-bot@example.com in group ci.
// Sign-in uses the provider's development interaction: any password is accepted.
import Provider from 'oidc-provider';
import http from 'node:http';

const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Liddell', preferred_username: 'alice', groups: ['engineering', 'backstage-admins'] },
  bob: { email: 'bob@example.com', email_verified: false, name: 'Bob Builder', preferred_username: 'bob', groups: ['contractors'] },
};

const redirectUri = process.env.REDIRECT_URI ?? 'http://127.0.0.1:4180/oauth2/callback';
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID ?? 'stagedoor',
    client_secret: process.env.CLIENT_SECRET ?? 'stagedoor-secret',
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [redirectUri.replace(/\/callback$/, '/sign_out')],
    // OpenID Connect back-channel logout: the provider posts a logout token here when the
    // user's session at the provider ends; ID tokens carry the session id (sid).
    backchannel_logout_uri: redirectUri.replace(/\/callback$/, '/backchannel_logout'),
    backchannel_logout_session_required: true,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  }, {
    // A machine client (CI, scripts): client credentials for JWT access tokens whose
    // audience is the `resource` it asks for.
    client_id: 'ci',
    client_secret: 'ci-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo: (_ctx, resource) => ({
        scope: 'api',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
      }),
    },
  },
  // Back-channel logout calls go to Stagedoor on 127.0.0.1, which oidc-provider's SSRF guard
  // (special-use addresses) would refuse: in this loopback-only fixture, let them through.
  fetch: (url, options) => {
    const { dispatcher: _guard, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  // The machine client's tokens carry an identity the policy can judge.
  extraTokenClaims: async (_ctx, token) => (token.clientId === 'ci'
    ? { email: 'ci-bot@example.com', email_verified: true, groups: ['ci'] }
    : undefined),
  pkce: { required: () => true },
  ttl: { AccessToken: Number(process.env.ACCESS_TOKEN_TTL ?? 3600), IdToken: 3600 },
  // Refresh tokens for every client that asks for offline_access, and without it too.
  issueRefreshToken: async () => true,
  rotateRefreshToken: true,
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  // Skip the consent screen: this is the operator's own client.
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (_ctx, err) => console.error('oidc-provider error:', err));
provider.on('backchannel.error', (_ctx, err, clientId) => console.error(`back-channel logout to ${clientId} failed:`, err, err?.cause));
server.on('request', provider.callback());
console.log(`listening ${issuer}`);
