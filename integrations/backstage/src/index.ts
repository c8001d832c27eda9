/**
 * Backstage auth-backend module for Stagedoor: the `stagedoor` proxy sign-in
 * provider, which verifies Stagedoor's signed identity token.
 *
 * @packageDocumentation
 */
export { authModuleStagedoorProvider as default, STAGEDOOR_PROVIDER_ID } from './module';
export {
  stagedoorAuthenticator,
  readStagedoorConfig,
  verifyStagedoorToken,
  STAGEDOOR_DEFAULT_AUDIENCE,
  STAGEDOOR_DEFAULT_CLOCK_TOLERANCE_SECONDS,
  STAGEDOOR_DEFAULT_HEADER,
} from './authenticator';
export type {
  StagedoorAuthResult,
  StagedoorAuthenticatorContext,
  StagedoorClaims,
} from './authenticator';
export { stagedoorSignInResolvers } from './resolvers';
