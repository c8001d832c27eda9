//! GitHub sign-in (OAuth2; GitHub issues no ID token): the user from the API, the primary
//! verified email from `/user/emails`, and org and team membership as groups (`acme`,
//! `acme/platform`) for the access policy. GitHub Enterprise Server via `base_url`.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ProviderError;
use super::http::IdpClient;
use super::oidc::Authorization;
use crate::config::GitHubProviderConfig;
use crate::secret::Secret;
use crate::session::{Session, Tokens, now};

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Most organizations and teams read (GitHub pages them 100 at a time).
const PAGE: &str = "per_page=100";

/// The GitHub provider.
pub struct GitHubProvider {
    config: GitHubProviderConfig,
    client: Client,
    api: String,
    http: IdpClient,
}

impl std::fmt::Debug for GitHubProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubProvider")
            .field("id", &self.config.id)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

impl GitHubProvider {
    /// A provider that sends browsers back to `callback_url`.
    pub fn new(
        config: GitHubProviderConfig,
        secret: Option<Secret>,
        callback_url: &str,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Self, String> {
        let base = config.base_url.trim_end_matches('/');
        let api = match &config.api_url {
            Some(api) => api.trim_end_matches('/').to_string(),
            None if base == "https://github.com" => "https://api.github.com".to_string(),
            None => format!("{base}/api/v3"),
        };
        let mut client = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(format!("{base}/login/oauth/authorize")).map_err(|e| e.to_string())?,
            )
            .set_token_uri(
                TokenUrl::new(format!("{base}/login/oauth/access_token"))
                    .map_err(|e| e.to_string())?,
            )
            .set_redirect_uri(
                RedirectUrl::new(callback_url.to_string()).map_err(|e| e.to_string())?,
            );
        if let Some(secret) = secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_string()));
        }
        let http = IdpClient::new(config.ca_file.as_deref(), metrics)?;
        Ok(Self {
            config,
            client,
            api,
            http,
        })
    }

    /// The provider's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The label on the chooser.
    pub fn display_name(&self) -> &str {
        &self.config.display_name
    }

    /// The URL to send the browser to, bound to `state`.
    pub fn authorize(&self, state: &str) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_string();
        let mut request = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _) = request.url();
        Authorization {
            url: url.to_string(),
            nonce: String::new(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Redeems the code and reads the user, emails, orgs and teams from the API.
    pub async fn redeem(
        &self,
        code: &str,
        pkce_verifier: &str,
        lifetime: Duration,
    ) -> Result<Session, ProviderError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| ProviderError::Token(crate::error::DisplayChain(&e).to_string()))?;
        let token = response.access_token().secret();
        let user: User = self.get(token, "/user").await?;
        let emails: Vec<Email> = self.get(token, "/user/emails").await?;
        let orgs: Vec<Org> = self.get(token, &format!("/user/orgs?{PAGE}")).await?;
        let teams: Vec<Team> = self.get(token, &format!("/user/teams?{PAGE}")).await?;

        // The primary address if it is verified, else any verified one; an unverified address
        // is kept only as a last resort and marked so.
        let verified = emails
            .iter()
            .filter(|e| e.verified)
            .max_by_key(|e| e.primary);
        let (email, email_verified) = match verified {
            Some(e) => (e.email.clone(), true),
            None => (
                emails
                    .iter()
                    .find(|e| e.primary)
                    .map(|e| e.email.clone())
                    .unwrap_or_default(),
                false,
            ),
        };
        let mut groups: Vec<String> = orgs.into_iter().map(|o| o.login).collect();
        groups.extend(
            teams
                .into_iter()
                .map(|t| format!("{}/{}", t.organization.login, t.slug)),
        );
        let created = now();
        Ok(Session {
            subject: user.id.to_string(),
            email,
            email_verified,
            username: Some(user.login),
            name: user.name,
            groups,
            provider: self.config.id.clone(),
            created_at: created,
            refreshed_at: created,
            expires_at: created + lifetime.as_secs(),
            tokens: Some(Tokens {
                access_token: Some(token.clone()),
                refresh_token: response.refresh_token().map(|t| t.secret().clone()),
                id_token: None,
                access_expires_at: None,
            }),
            sid: None,
            memo: Default::default(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, ProviderError> {
        let request = http::Request::get(format!("{}{path}", self.api))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header(http::header::USER_AGENT, "stagedoor")
            .header("x-github-api-version", "2022-11-28")
            .body(Vec::new())
            .map_err(|e| ProviderError::Token(e.to_string()))?;
        let response = self
            .http
            .call(request)
            .await
            .map_err(|e| ProviderError::Token(e.to_string()))?;
        if !response.status().is_success() {
            let path = path.split('?').next().unwrap_or(path);
            return Err(ProviderError::Token(format!(
                "GitHub API {path} answered {}",
                response.status()
            )));
        }
        serde_json::from_slice(response.body()).map_err(|e| ProviderError::Token(e.to_string()))
    }
}
