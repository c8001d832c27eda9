import { parseEntityRef, stringifyEntityRef } from '@backstage/catalog-model';
import { NotAllowedError } from '@backstage/errors';
import {
  commonSignInResolvers,
  createSignInResolverFactory,
  type SignInResolverFactory,
} from '@backstage/plugin-auth-node';
import { z } from 'zod/v3';
import type { StagedoorAuthResult } from './authenticator';

function userRefOf(sub: string): { kind: string; namespace: string; name: string } {
  const ref = parseEntityRef(sub, { defaultKind: 'user', defaultNamespace: 'default' });
  if (ref.kind.toLocaleLowerCase('en-US') !== 'user') {
    throw new NotAllowedError(`Stagedoor token subject '${sub}' is not a User entity ref`);
  }
  return ref;
}

const catalogFallbackOptions = z
  .object({
    dangerouslyAllowSignInWithoutUserInCatalog: z.boolean().optional(),
  })
  .optional();

/**
 * Sign-in resolvers for the `stagedoor` provider. All of them act on a token
 * whose signature, issuer, audience and expiry were already verified.
 */
export const stagedoorSignInResolvers: {
  subjectAsEntityRef: SignInResolverFactory<
    StagedoorAuthResult,
    { dangerouslyAllowSignInWithoutUserInCatalog?: boolean } | undefined
  >;
  subjectNameMatchingUserEntityName: SignInResolverFactory<
    StagedoorAuthResult,
    { dangerouslyAllowSignInWithoutUserInCatalog?: boolean } | undefined
  >;
  emailMatchingUserEntityProfileEmail: typeof commonSignInResolvers.emailMatchingUserEntityProfileEmail;
} = Object.freeze({
  /**
   * Signs in as the token's `sub` (a User entity ref) with the token's `ent`
   * (plus `sub` itself) as ownership refs: Stagedoor is the source of truth
   * for identity and group membership.
   *
   * By default the User entity must exist in the catalog (the catalog acts as
   * an allow-list, and the sub is canonicalised to the catalog's spelling);
   * ownership still comes from the token. With
   * `dangerouslyAllowSignInWithoutUserInCatalog: true` the catalog is not
   * consulted at all.
   */
  subjectAsEntityRef: createSignInResolverFactory({
    optionsSchema: catalogFallbackOptions,
    create(options = {}) {
      return async (info, ctx) => {
        const { claims } = info.result;
        let sub = stringifyEntityRef(userRefOf(claims.sub));
        if (!options.dangerouslyAllowSignInWithoutUserInCatalog) {
          // Throws NotFoundError when missing, which lets the next resolver run.
          const { entity } = await ctx.findCatalogUser({ entityRef: sub });
          sub = stringifyEntityRef(entity);
        }
        const ent = Array.from(new Set([sub, ...claims.ent]));
        return ctx.issueToken({ claims: { sub, ent } });
      };
    },
  }),

  /**
   * Matches the name part of the token's `sub` (`user:default/alice` ->
   * `alice`) against the `metadata.name` of a User entity in the default
   * namespace; ownership refs come from the catalog (the user's memberOf
   * relations, or the installed ownership resolver), not from the token.
   */
  subjectNameMatchingUserEntityName: createSignInResolverFactory({
    optionsSchema: catalogFallbackOptions,
    create(options = {}) {
      return async (info, ctx) => {
        const { name } = userRefOf(info.result.claims.sub);
        return ctx.signInWithCatalogUser(
          { entityRef: { name } },
          {
            dangerousEntityRefFallback: options.dangerouslyAllowSignInWithoutUserInCatalog
              ? { entityRef: { name } }
              : undefined,
          },
        );
      };
    },
  }),

  /**
   * The token's `email` claim matched against `spec.profile.email` of a User
   * entity (Backstage's common resolver; options `allowedDomains`,
   * `dangerouslyAllowSignInWithoutUserInCatalog`).
   */
  emailMatchingUserEntityProfileEmail: commonSignInResolvers.emailMatchingUserEntityProfileEmail,
});
