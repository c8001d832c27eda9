import type { Config } from '@backstage/config';
import { parseEntityRef, stringifyEntityRef } from '@backstage/catalog-model';
import { AuthenticationError, ServiceUnavailableError } from '@backstage/errors';
import { createProxyAuthenticator } from '@backstage/plugin-auth-node';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';

/** Request header that carries Stagedoor's identity token by default. */
export const STAGEDOOR_DEFAULT_HEADER = 'x-stagedoor-jwt-assertion';
/** Expected `aud` claim by default. */
export const STAGEDOOR_DEFAULT_AUDIENCE = 'backstage';
/** Allowed clock skew when checking `exp` / `iat` / `nbf`, by default. */
export const STAGEDOOR_DEFAULT_CLOCK_TOLERANCE_SECONDS = 5;

/**
 * The verified claims of a Stagedoor identity token.
 *
 * `ent` and `groups` are always arrays here (empty when the token has none);
 * `sub` and every `ent` entry are canonical entity refs (`kind:namespace/name`).
 */
export interface StagedoorClaims extends JWTPayload {
  iss: string;
  sub: string;
  exp: number;
  /** Ownership entity refs, e.g. `user:default/alice`, `group:default/engineering`. */
  ent: string[];
  email?: string;
  name?: string;
  /** Group names as the identity provider reported them. */
  groups: string[];
  /** Id of the Stagedoor identity provider the user signed in with. */
  idp?: string;
}

/** What the authenticator hands to the profile transform and sign-in resolvers. */
export interface StagedoorAuthResult {
  claims: StagedoorClaims;
  /** The verified token as it was received. */
  token: string;
}

/** Settings read from `auth.providers.stagedoor`. */
export interface StagedoorAuthenticatorContext {
  issuer: string;
  audience: string;
  header: string;
  jwksUrl: string;
  clockTolerance: number;
  jwks: ReturnType<typeof createRemoteJWKSet>;
}

/** Reads and checks the provider config (`auth.providers.stagedoor`). */
export function readStagedoorConfig(config: Config): StagedoorAuthenticatorContext {
  const issuer = config.getString('issuer');
  let issuerUrl: URL;
  try {
    issuerUrl = new URL(issuer);
  } catch {
    throw new Error(`auth.providers.stagedoor.issuer must be a URL, got '${issuer}'`);
  }
  const audience = config.getOptionalString('audience') ?? STAGEDOOR_DEFAULT_AUDIENCE;
  const header = (config.getOptionalString('header') ?? STAGEDOOR_DEFAULT_HEADER).toLowerCase();
  const jwksUrl =
    config.getOptionalString('jwksUrl') ??
    `${issuerUrl.href.replace(/\/+$/, '')}/.well-known/jwks.json`;
  const clockTolerance =
    config.getOptionalNumber('clockToleranceSeconds') ?? STAGEDOOR_DEFAULT_CLOCK_TOLERANCE_SECONDS;
  if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(header)) {
    throw new Error(`auth.providers.stagedoor.header is not a valid header name: '${header}'`);
  }
  if (!(clockTolerance >= 0 && clockTolerance <= 300)) {
    throw new Error('auth.providers.stagedoor.clockToleranceSeconds must be between 0 and 300');
  }
  let jwksEndpoint: URL;
  try {
    jwksEndpoint = new URL(jwksUrl);
  } catch {
    throw new Error(`auth.providers.stagedoor.jwksUrl must be a URL, got '${jwksUrl}'`);
  }
  return {
    issuer,
    audience,
    header,
    jwksUrl: jwksEndpoint.href,
    clockTolerance,
    jwks: createRemoteJWKSet(jwksEndpoint),
  };
}

// jose error codes that mean "this token is not acceptable"; anything else
// (JWKS unreachable, timed out, malformed) is our side's problem, not the
// caller's, and maps to 503.
const TOKEN_ERROR_CODES = new Set([
  'ERR_JWT_EXPIRED',
  'ERR_JWT_CLAIM_VALIDATION_FAILED',
  'ERR_JWT_INVALID',
  'ERR_JWS_INVALID',
  'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
  'ERR_JWKS_NO_MATCHING_KEY',
  'ERR_JWKS_MULTIPLE_MATCHING_KEYS',
  'ERR_JOSE_ALG_NOT_ALLOWED',
  'ERR_JOSE_NOT_SUPPORTED',
]);

function canonicalRef(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new AuthenticationError(`Stagedoor token claim ${what} must be a non-empty string`);
  }
  try {
    return stringifyEntityRef(
      parseEntityRef(value, { defaultKind: 'user', defaultNamespace: 'default' }),
    );
  } catch {
    throw new AuthenticationError(`Stagedoor token claim ${what} is not an entity ref: '${value}'`);
  }
}

function stringArray(value: unknown, what: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.some(v => typeof v !== 'string')) {
    throw new AuthenticationError(`Stagedoor token claim ${what} must be an array of strings`);
  }
  return value as string[];
}

function optionalString(value: unknown, what: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    throw new AuthenticationError(`Stagedoor token claim ${what} must be a string`);
  }
  return value;
}

/**
 * Verifies a Stagedoor identity token: ES256 signature against the JWKS,
 * `iss`, `aud`, `exp` (required), `iat`/`nbf` if present, then the shape of
 * the Stagedoor claims.
 */
export async function verifyStagedoorToken(
  token: string,
  ctx: Pick<StagedoorAuthenticatorContext, 'issuer' | 'audience' | 'clockTolerance' | 'jwks'>,
): Promise<StagedoorClaims> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, ctx.jwks, {
      algorithms: ['ES256'],
      issuer: ctx.issuer,
      audience: ctx.audience,
      requiredClaims: ['exp', 'sub'],
      clockTolerance: ctx.clockTolerance,
    }));
  } catch (error) {
    const code = (error as { code?: unknown })?.code;
    if (typeof code === 'string' && TOKEN_ERROR_CODES.has(code)) {
      throw new AuthenticationError('Invalid Stagedoor identity token', error);
    }
    throw new ServiceUnavailableError(
      'Could not verify the Stagedoor identity token: JWKS unavailable',
      error,
    );
  }
  const sub = canonicalRef(payload.sub, 'sub');
  const ent = stringArray(payload.ent, 'ent').map((r, i) => canonicalRef(r, `ent[${i}]`));
  return {
    ...payload,
    iss: payload.iss as string,
    exp: payload.exp as number,
    sub,
    ent: Array.from(new Set(ent)),
    email: optionalString(payload.email, 'email'),
    name: optionalString(payload.name, 'name'),
    groups: stringArray(payload.groups, 'groups'),
    idp: optionalString(payload.idp, 'idp'),
  };
}

/**
 * Proxy authenticator for Stagedoor: reads the identity token from the
 * configured header (default `x-stagedoor-jwt-assertion`; a `Bearer ` prefix
 * is tolerated) and verifies it. A missing or invalid token is a 401
 * (AuthenticationError); an unreachable JWKS is a 503.
 */
export const stagedoorAuthenticator = createProxyAuthenticator<
  StagedoorAuthenticatorContext,
  StagedoorAuthResult,
  Record<string, never>
>({
  async defaultProfileTransform(result: StagedoorAuthResult) {
    const { claims } = result;
    return {
      profile: {
        email: claims.email,
        displayName: claims.name ?? claims.email ?? parseEntityRef(claims.sub).name,
      },
    };
  },
  initialize({ config }) {
    return readStagedoorConfig(config);
  },
  async authenticate({ req }, ctx) {
    const raw = req.header(ctx.header);
    if (!raw) {
      throw new AuthenticationError(`Missing Stagedoor identity token (header '${ctx.header}')`);
    }
    const token = raw.replace(/^Bearer\s+/i, '').trim();
    const claims = await verifyStagedoorToken(token, ctx);
    return { result: { claims, token }, providerInfo: {} };
  },
});
