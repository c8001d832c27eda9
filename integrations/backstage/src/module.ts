import { createBackendModule } from '@backstage/backend-plugin-api';
import {
  authProvidersExtensionPoint,
  commonSignInResolvers,
  createProxyAuthProviderFactory,
} from '@backstage/plugin-auth-node';
import { stagedoorAuthenticator } from './authenticator';
import { stagedoorSignInResolvers } from './resolvers';

/** Provider id: the frontend uses `/api/auth/stagedoor/refresh`. */
export const STAGEDOOR_PROVIDER_ID = 'stagedoor';

/**
 * Auth-backend module that registers the `stagedoor` proxy sign-in provider,
 * configured under `auth.providers.stagedoor`.
 */
export const authModuleStagedoorProvider = createBackendModule({
  pluginId: 'auth',
  moduleId: 'stagedoor-provider',
  register(reg) {
    reg.registerInit({
      deps: { providers: authProvidersExtensionPoint },
      async init({ providers }) {
        providers.registerProvider({
          providerId: STAGEDOOR_PROVIDER_ID,
          factory: createProxyAuthProviderFactory({
            authenticator: stagedoorAuthenticator,
            signInResolverFactories: {
              ...commonSignInResolvers,
              ...stagedoorSignInResolvers,
            },
          }),
        });
      },
    });
  },
});
