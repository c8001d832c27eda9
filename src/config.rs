//! Configuration: where it comes from and what makes it valid.
//!
//! The pipeline, in order:
//!
//! ```text
//! defaults  <  config.toml  <  STAGEDOOR_* environment   (figment, later wins)
//!    -> Config (serde, deny_unknown_fields)               shape and types
//!    -> Config::validate()                                cross-field rules, every error collected
//!    -> App::build() (see `app.rs`)                       files read: certificates, CA bundles
//! ```
//!
//! Environment variables use `__` for nesting: `STAGEDOOR_SERVER__LISTEN=0.0.0.0:4180` sets
//! `server.listen`, `STAGEDOOR_UPSTREAMS__BACKSTAGE__URL=...` sets `upstreams.backstage.url`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "STAGEDOOR_";

/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["config"];

/// The whole configuration, as read from the file and the environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The public listener that clients connect to.
    pub server: ServerConfig,
    /// The admin listener (`/ping`, `/ready`).
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Upstreams by name. Names are lowercase (`[a-z0-9_-]`), so they can be set from the environment.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Which upstream serves which host and path. With a single upstream and no routes,
    /// everything goes to that upstream.
    pub routes: Vec<RouteConfig>,
    /// Sign-in endpoints and how unauthenticated requests are answered.
    pub auth: AuthConfig,
    /// The session cookie.
    pub session: SessionConfig,
    /// Identity providers users sign in with. With none, Stagedoor forwards without sign-in.
    pub providers: Vec<ProviderConfig>,
    /// Who may pass the gate once signed in.
    pub policy: PolicyConfig,
    /// What the upstream learns about the user: headers and the signed identity token.
    pub identity: IdentityConfig,
    /// Genuine Backstage user tokens, minted with Backstage's own static signing key.
    pub backstage: BackstageConfig,
}

/// Backstage user tokens minted by Stagedoor with the key of Backstage's static key store
/// (`auth.keyStore.provider: static`) and injected as `Authorization: Bearer`, so every backend
/// plugin accepts the user with no Backstage code. Off unless `key_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackstageConfig {
    /// The ES256 private key (PKCS#8 PEM) that Backstage's static key store signs with. It can
    /// impersonate any Backstage user: keep it in a Secret, readable by Stagedoor only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The `keyId` of that key in Backstage's `auth.keyStore.static.keys`.
    pub key_id: String,
    /// Backstage's auth base URL, the tokens' `iss`: `https://backstage.example.com/api/auth`.
    pub issuer: String,
    /// Token lifetime; Backstage accepts 10 minutes to 24 hours. Default 1 hour.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Path prefixes whose requests get a token (when they carry no `Authorization` of their
    /// own). Default `["/api/"]`.
    pub paths: Vec<String>,
    /// Accept a key file that others than its owner can read. Default false.
    pub allow_readable_key: bool,
}

impl Default for BackstageConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            key_id: String::new(),
            issuer: String::new(),
            token_lifetime: Duration::from_secs(3600),
            paths: vec!["/api/".into()],
            allow_readable_key: false,
        }
    }
}

/// The identity sent upstream: the headers Backstage's `oauth2Proxy` provider reads, and a
/// signed token (ES256 JWT) whose keys Stagedoor publishes at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Header carrying the signed identity token. Empty: no token is minted.
    /// Default `X-Stagedoor-Jwt-Assertion`.
    pub jwt_header: String,
    /// The token's `aud`. Default `backstage`.
    pub audience: String,
    /// How long a token is valid; it is re-minted when less than half of this is left.
    /// Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// PEM file with the ES256 (P-256) private key that signs, in PKCS#8 form
    /// (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`). Created with a fresh
    /// key on first start if it does not exist. Absent: a key is generated in memory at each
    /// start (fine for one instance; replicas must share a file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// Keys that no longer sign but are still published, so tokens they signed keep verifying
    /// during a rotation (private or public key PEM files).
    pub previous_key_files: Vec<PathBuf>,
    /// Also send the signed token as `X-OAUTH2-PROXY-ID-TOKEN: Bearer <token>`, which
    /// Backstage's `oauth2Proxy` provider decodes into the user's profile. Default true.
    pub oauth2_proxy_id_token: bool,
    /// Path prefixes whose requests get `X-OAUTH2-PROXY-ID-TOKEN`. Only Backstage's auth
    /// backend reads it (at `/api/auth/oauth2Proxy/refresh`, which hands it on to the
    /// browser), so by default no other route sees a second copy of the token.
    /// Default `["/api/auth/"]`.
    pub oauth2_proxy_id_token_paths: Vec<String>,
    /// Send the provider's access token as `X-Forwarded-Access-Token` (for Backstage plugins
    /// that call other APIs as the user). Default false.
    pub pass_access_token: bool,
    /// The user's Backstage entity name, from a template: `{email_local}` (the default),
    /// `{username}` (preferred username; the login for GitHub), `{subject}`, `{email}`,
    /// `{provider}`. The result is normalized to Backstage's entity-name rules.
    pub user_name: String,
    /// The namespace of user and group entity refs. Default `default`.
    pub namespace: String,
    /// Groups to entity refs for `ent`, replacing the default `group:<namespace>/<name>`:
    /// `{ "acme/platform" = "group:default/platform" }`.
    pub group_refs: BTreeMap<String, String>,
    /// Only groups matching this regular expression (whole name) become ownership refs.
    /// Default: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_filter: Option<String>,
    /// More request headers to remove before forwarding, besides the identity headers.
    pub strip_headers: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            jwt_header: "X-Stagedoor-Jwt-Assertion".into(),
            audience: "backstage".into(),
            token_lifetime: Duration::from_secs(300),
            signing_key_file: None,
            previous_key_files: Vec::new(),
            oauth2_proxy_id_token: true,
            oauth2_proxy_id_token_paths: vec!["/api/auth/".into()],
            pass_access_token: false,
            user_name: "{email_local}".into(),
            namespace: "default".into(),
            group_refs: BTreeMap::new(),
            group_filter: None,
            strip_headers: Vec::new(),
        }
    }
}

/// Who may pass the gate. Deny unless a rule allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Email domains whose users may pass: `example.com` (exactly that domain) or
    /// `*.example.com` (its subdomains only). Only verified addresses count. Default: none.
    pub email_domains: Vec<String>,
    /// Email addresses that may pass (case-insensitive; verified only). Default: none.
    pub emails: Vec<String>,
    /// A file of email addresses that may pass, one per line (`#` starts a comment). Re-read
    /// within seconds when it changes; if a new version cannot be read, the last good one
    /// stays in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emails_file: Option<PathBuf>,
    /// Groups whose members may pass: provider groups, or GitHub `org` and `org/team`.
    /// Default: none.
    pub groups: Vec<String>,
    /// Let every user the provider signs in pass (for a provider that only has your own
    /// people, such as a company Keycloak realm). Default false.
    pub allow_any_user: bool,
    /// Say yes to a policy that lets anyone at all in: a public route covering every request,
    /// or any user of a provider where anyone can open an account (GitHub, Google without
    /// `hosted_domain`, gitlab.com). Refused without this. Default false.
    pub acknowledge_open_access: bool,
    /// Accept users whose provider does not say their email is verified. Default false:
    /// an unverified address could be anyone's.
    pub allow_unverified_email: bool,
    /// Name the rule that refused a user on the 403 page and in 403 JSON (`rule`). Default
    /// false: the answer says why in plain words, not which rule.
    pub explain_rule: bool,
    /// Rules for particular routes, tried in order; the first that matches decides, and a
    /// request no route matches is judged by the rules above.
    pub routes: Vec<PolicyRouteConfig>,
}

/// A route of the access policy: which requests it covers, and who may make them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyRouteConfig {
    /// A name for audit events and lint messages, e.g. `admin-api`. Default: `policy.routes[i]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host (`backstage.example.com`, or `*.example.com` for subdomains); absent: any host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix on whole segments (`/api` covers `/api` and `/api/x`, not `/apix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Glob on the path: `*` within a segment, `**` across segments (`/static/**`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_glob: Option<String>,
    /// Regular expression on the whole path (always anchored at both ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Methods covered (`GET`, `POST`, ...); empty: all.
    pub methods: Vec<String>,
    /// No sign-in at all: health checks, static assets, webhooks.
    pub public: bool,
    /// Any signed-in user with a verified email.
    pub allow_any_user: bool,
    /// Email domains allowed on this route (replacing the global rules).
    pub email_domains: Vec<String>,
    /// Email addresses allowed on this route.
    pub emails: Vec<String>,
    /// A file of email addresses allowed on this route (as `policy.emails_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emails_file: Option<PathBuf>,
    /// Groups allowed on this route.
    pub groups: Vec<String>,
    /// Client networks (`10.0.0.0/8`, `2001:db8::/32`) whose requests pass this route without
    /// sign-in, e.g. a monitoring system or a CI runner. The client address is the TCP peer,
    /// or the address a trusted proxy (`server.trusted_proxies`) reports. Default: none.
    pub allow_cidrs: Vec<IpNet>,
}

impl PolicyRouteConfig {
    /// True if the route names who may pass once signed in.
    pub fn has_who_rules(&self) -> bool {
        self.allow_any_user
            || !self.email_domains.is_empty()
            || !self.emails.is_empty()
            || self.emails_file.is_some()
            || !self.groups.is_empty()
    }

    /// True if the route covers every request: any host, method and path.
    pub fn covers_everything(&self) -> bool {
        let any_path = match (&self.path_prefix, &self.path_glob, &self.path_regex) {
            (None, None, None) => true,
            (Some(prefix), None, None) => prefix.trim_end_matches('/').is_empty(),
            (None, Some(glob), None) => glob == "/**" || glob == "**",
            (None, None, Some(re)) => matches!(re.as_str(), ".*" | "/.*" | ".+"),
            _ => false,
        };
        self.host.is_none() && self.methods.is_empty() && any_path
    }
}

/// Sign-in endpoints and answers to requests without a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Path prefix of Stagedoor's own endpoints (`/start`, `/callback`, `/sign_out`,
    /// `/userinfo`). Default `/oauth2`.
    pub prefix: String,
    /// Requests under these path prefixes are API calls: without a session they get 401 JSON,
    /// never a redirect. Requests asking for JSON, sending `X-Requested-With`, or using a method
    /// other than GET/HEAD are API calls too. Default `["/api/"]`.
    pub api_paths: Vec<String>,
    /// Hosts that `rd` (the return address after sign-in or sign-out) may name besides relative
    /// paths: `backstage.example.com`, or `.example.com` for a domain and its subdomains.
    /// Default: none.
    pub allowed_redirect_hosts: Vec<String>,
    /// The address users reach Stagedoor at, e.g. `https://backstage.example.com`. The callback
    /// URL registered at identity providers is this plus `{prefix}/callback`; it never comes
    /// from a request's Host header. Required with any provider other than `dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            prefix: "/oauth2".into(),
            api_paths: vec!["/api/".into()],
            allowed_redirect_hosts: Vec::new(),
        }
    }
}

/// The session cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Secret that encrypts and authenticates cookies: base64 of at least 32 random bytes
    /// (`stagedoor keygen`). Required with any provider other than `dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_secret: Option<Secret>,
    /// File holding `cookie_secret` (a mounted Kubernetes Secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_secret_file: Option<PathBuf>,
    /// Earlier secrets, still accepted for reading so a rotation signs no one out.
    pub previous_cookie_secrets: Vec<Secret>,
    /// Cookie name; chunks of a large session add `_0`, `_1`, ... Default `_stagedoor`.
    pub cookie_name: String,
    /// `Domain` attribute, to share the session across subdomains. Default: none (host only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<String>,
    /// `Path` attribute. Default `/`.
    pub cookie_path: String,
    /// `Secure` attribute. Default true; false is accepted only on a plain-HTTP loopback listener.
    pub cookie_secure: bool,
    /// How long a sign-in lasts. Default 12h.
    #[serde(with = "humantime_serde")]
    pub expire: Duration,
    /// Refresh the session at the provider this often, even while the access token is valid,
    /// so group changes and disabled accounts take effect (needs a refresh token). Default: off;
    /// sessions are refreshed only when the access token is about to expire.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_interval: Option<Duration>,
    /// Where sessions live: `cookie` (the default: the whole session, encrypted, in the cookie;
    /// nothing shared between replicas but the secret) or `redis` (the cookie holds a random
    /// ticket and the session is in Redis, so it can be revoked everywhere and may be large).
    pub store: SessionStore,
    /// With `store = "redis"`: `redis://[:password@]host:6379[/db]` (`rediss://` is not
    /// supported yet). Or `redis_url_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<Secret>,
    /// File holding `redis_url` (it may carry a password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url_file: Option<PathBuf>,
    /// Prefix of every Redis key. Default `stagedoor:`.
    pub redis_prefix: String,
}

/// Where sessions are kept.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionStore {
    /// In the cookie itself.
    #[default]
    Cookie,
    /// In Redis; the cookie holds a ticket.
    Redis,
}

impl SessionConfig {
    /// The Redis URL, from `redis_url` or `redis_url_file`.
    pub fn redis_url(&self) -> Result<Option<Secret>, (String, String)> {
        crate::secret::resolve(
            "session.redis_url",
            self.redis_url.as_ref(),
            self.redis_url_file.as_deref(),
        )
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_secret: None,
            cookie_secret_file: None,
            previous_cookie_secrets: Vec::new(),
            cookie_name: "_stagedoor".into(),
            cookie_domain: None,
            cookie_path: "/".into(),
            cookie_secure: true,
            expire: Duration::from_secs(12 * 3600),
            refresh_interval: None,
            store: SessionStore::Cookie,
            redis_url: None,
            redis_url_file: None,
            redis_prefix: "stagedoor:".into(),
        }
    }
}

/// One identity provider, by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// Signs in as one of a fixed list of users from a form. For trying Stagedoor and for local
    /// development only: refused unless `server.listen` is a loopback address.
    Dev(DevProviderConfig),
    /// Any OpenID Connect provider, found by discovery from its issuer URL.
    Oidc(Box<OidcProviderConfig>),
    /// Google (Workspace): `hosted_domain` is requested and enforced from the `hd` claim.
    Google(Box<PresetConfig>),
    /// Microsoft Entra ID, one tenant; groups from the `groups` claim.
    Entra(Box<PresetConfig>),
    /// GitLab.com or a self-hosted GitLab (`base_url`); groups from the `groups` claim.
    Gitlab(Box<PresetConfig>),
    /// Okta (`domain`, optional `authorization_server`); groups from the `groups` claim.
    Okta(Box<PresetConfig>),
    /// Keycloak (`base_url` and `realm`); groups from the `groups` claim (a group mapper).
    Keycloak(Box<PresetConfig>),
    /// Auth0 (`domain`).
    Auth0(Box<PresetConfig>),
    /// GitHub or GitHub Enterprise Server (OAuth2 and the REST API; orgs and teams as groups).
    Github(Box<GitHubProviderConfig>),
}

/// GitHub sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GitHubProviderConfig {
    /// Id. Default `github`.
    #[serde(default = "default_github_id")]
    pub id: String,
    /// Label on the sign-in chooser. Default "GitHub".
    #[serde(default = "default_github_label")]
    pub display_name: String,
    /// OAuth app (or GitHub App) client id.
    pub client_id: String,
    /// Client secret (or `client_secret_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// File holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// `https://github.com` (the default) or a GitHub Enterprise Server address.
    #[serde(default = "default_github_base")]
    pub base_url: String,
    /// REST API address. Default `https://api.github.com`, or `<base_url>/api/v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Scopes. Default `["read:user", "user:email", "read:org"]` (orgs and teams need
    /// `read:org`).
    #[serde(default = "default_github_scopes")]
    pub scopes: Vec<String>,
    /// PEM bundle of CAs for a GitHub Enterprise Server, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_github_id() -> String {
    "github".into()
}
fn default_github_label() -> String {
    "GitHub".into()
}
fn default_github_base() -> String {
    "https://github.com".into()
}
fn default_github_scopes() -> Vec<String> {
    vec!["read:user".into(), "user:email".into(), "read:org".into()]
}

impl GitHubProviderConfig {
    /// The client secret, from `client_secret` or `client_secret_file`.
    pub fn secret(&self, key: &str) -> Result<Option<Secret>, (String, String)> {
        crate::secret::resolve(
            &format!("{key}.client_secret"),
            self.client_secret.as_ref(),
            self.client_secret_file.as_deref(),
        )
    }
}

impl ProviderConfig {
    /// The provider's id, used in `?provider=` and remembered in the session.
    pub fn id(&self) -> &str {
        match self {
            Self::Dev(dev) => &dev.id,
            Self::Oidc(oidc) => &oidc.id,
            Self::Github(github) => &github.id,
            _ => match self.preset() {
                Some((kind, preset)) => preset.id.as_deref().unwrap_or(kind.name()),
                None => "",
            },
        }
    }

    /// The preset and its kind, for the provider kinds that are OpenID Connect presets.
    pub fn preset(&self) -> Option<(Preset, &PresetConfig)> {
        let (kind, config) = match self {
            Self::Dev(_) | Self::Oidc(_) | Self::Github(_) => return None,
            Self::Google(c) => (Preset::Google, c),
            Self::Entra(c) => (Preset::Entra, c),
            Self::Gitlab(c) => (Preset::Gitlab, c),
            Self::Okta(c) => (Preset::Okta, c),
            Self::Keycloak(c) => (Preset::Keycloak, c),
            Self::Auth0(c) => (Preset::Auth0, c),
        };
        Some((kind, config.as_ref()))
    }

    /// The OpenID Connect settings of an `oidc` provider or a preset.
    pub fn oidc(&self) -> Option<OidcProviderConfig> {
        match self {
            Self::Oidc(oidc) => Some(oidc.as_ref().clone()),
            _ => self.preset().map(|(kind, preset)| preset.to_oidc(kind)),
        }
    }
}

/// The OpenID Connect providers with presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Google.
    Google,
    /// Microsoft Entra ID.
    Entra,
    /// GitLab.
    Gitlab,
    /// Okta.
    Okta,
    /// Keycloak.
    Keycloak,
    /// Auth0.
    Auth0,
}

impl Preset {
    /// The `kind` value, also the default id.
    pub fn name(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Entra => "entra",
            Self::Gitlab => "gitlab",
            Self::Okta => "okta",
            Self::Keycloak => "keycloak",
            Self::Auth0 => "auth0",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Google => "Google",
            Self::Entra => "Microsoft",
            Self::Gitlab => "GitLab",
            Self::Okta => "Okta",
            Self::Keycloak => "Keycloak",
            Self::Auth0 => "Auth0",
        }
    }

    /// Fields a preset needs (`true`) or does not use (`false`); unlisted ones are optional.
    fn fields(self) -> &'static [(&'static str, bool)] {
        match self {
            Self::Google => &[
                ("tenant", false),
                ("base_url", false),
                ("realm", false),
                ("domain", false),
                ("authorization_server", false),
            ],
            Self::Entra => &[
                ("tenant", true),
                ("hosted_domain", false),
                ("base_url", false),
                ("realm", false),
                ("domain", false),
                ("authorization_server", false),
            ],
            Self::Gitlab => &[
                ("tenant", false),
                ("hosted_domain", false),
                ("realm", false),
                ("domain", false),
                ("authorization_server", false),
            ],
            Self::Okta => &[
                ("domain", true),
                ("tenant", false),
                ("hosted_domain", false),
                ("base_url", false),
                ("realm", false),
            ],
            Self::Keycloak => &[
                ("base_url", true),
                ("realm", true),
                ("tenant", false),
                ("hosted_domain", false),
                ("domain", false),
                ("authorization_server", false),
            ],
            Self::Auth0 => &[
                ("domain", true),
                ("tenant", false),
                ("hosted_domain", false),
                ("base_url", false),
                ("realm", false),
                ("authorization_server", false),
            ],
        }
    }
}

/// A provider preset: a few settings that expand to a full OpenID Connect configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PresetConfig {
    /// Id. Default: the kind (`google`, `entra`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Label on the sign-in chooser. Default: the provider's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret (or `client_secret_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// File holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes, replacing the preset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Claim holding groups, replacing the preset's (dotted paths allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// google: the Workspace domain users must belong to (checked in the `hd` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_domain: Option<String>,
    /// entra: tenant id or domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// gitlab (default `https://gitlab.com`) and keycloak: the server's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// keycloak: the realm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// okta and auth0: the tenant's domain, e.g. `example.okta.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// okta: a custom authorization server (`default`, or its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<String>,
    /// PEM bundle of CAs for the provider, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Audiences of bearer JWTs accepted from scripts and CI (see the `oidc` kind).
    #[serde(default)]
    pub bearer_audiences: Vec<String>,
}

impl PresetConfig {
    fn field_set(&self, name: &str) -> bool {
        match name {
            "hosted_domain" => self.hosted_domain.is_some(),
            "tenant" => self.tenant.is_some(),
            "base_url" => self.base_url.is_some(),
            "realm" => self.realm.is_some(),
            "domain" => self.domain.is_some(),
            "authorization_server" => self.authorization_server.is_some(),
            _ => false,
        }
    }

    /// The full OpenID Connect configuration this preset stands for.
    pub fn to_oidc(&self, kind: Preset) -> OidcProviderConfig {
        let text = |v: &Option<String>| {
            v.as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string()
        };
        let issuer = match kind {
            Preset::Google => "https://accounts.google.com".to_string(),
            Preset::Entra => format!(
                "https://login.microsoftonline.com/{}/v2.0",
                text(&self.tenant)
            ),
            Preset::Gitlab => match &self.base_url {
                Some(_) => text(&self.base_url),
                None => "https://gitlab.com".to_string(),
            },
            Preset::Okta => match &self.authorization_server {
                Some(server) => format!("https://{}/oauth2/{server}", text(&self.domain)),
                None => format!("https://{}", text(&self.domain)),
            },
            Preset::Keycloak => format!("{}/realms/{}", text(&self.base_url), text(&self.realm)),
            // Auth0's issuer ends with a slash, and the check is exact.
            Preset::Auth0 => format!("https://{}/", text(&self.domain)),
        };
        let mut scopes = default_scopes();
        if matches!(kind, Preset::Okta) {
            scopes.push("groups".into());
        }
        let mut extra_auth_params = BTreeMap::new();
        let mut required_claims = BTreeMap::new();
        if let (Preset::Google, Some(domain)) = (kind, &self.hosted_domain) {
            extra_auth_params.insert("hd".to_string(), domain.clone());
            required_claims.insert("hd".to_string(), domain.clone());
        }
        OidcProviderConfig {
            id: self.id.clone().unwrap_or_else(|| kind.name().to_string()),
            display_name: self
                .display_name
                .clone()
                .unwrap_or_else(|| kind.label().to_string()),
            issuer,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_secret_file: self.client_secret_file.clone(),
            scopes: self.scopes.clone().unwrap_or(scopes),
            extra_auth_params,
            required_claims,
            email_claim: default_email_claim(),
            username_claim: default_username_claim(),
            groups_claim: self
                .groups_claim
                .clone()
                .unwrap_or_else(default_groups_claim),
            use_userinfo: true,
            sign_out_at_provider: false,
            ca_file: self.ca_file.clone(),
            bearer_audiences: self.bearer_audiences.clone(),
        }
    }
}

/// An OpenID Connect provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Id. Default `oidc`.
    #[serde(default = "default_oidc_id")]
    pub id: String,
    /// Label on the sign-in chooser. Default "OpenID Connect".
    #[serde(default = "default_oidc_label")]
    pub display_name: String,
    /// Issuer URL; `/.well-known/openid-configuration` is read from under it.
    pub issuer: String,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret (or `client_secret_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// File holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested. Default `["openid", "email", "profile"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Extra parameters for the authorization request, e.g. `{ prompt = "select_account" }`.
    #[serde(default)]
    pub extra_auth_params: BTreeMap<String, String>,
    /// Claims the ID token must carry with exactly these values, e.g. `{ hd = "example.com" }`;
    /// a sign-in without them is refused.
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// Claim holding the email address. Default `email`.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// Claim holding the username. Default `preferred_username`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Claim holding groups; dotted paths reach nested claims (`realm_access.roles`).
    /// Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Read the userinfo endpoint for claims the ID token lacks. Default true.
    #[serde(default = "default_true")]
    pub use_userinfo: bool,
    /// On sign-out, also end the session at the provider (its `end_session_endpoint`, with
    /// the ID token as hint); register `<auth.public_url>{prefix}/sign_out` as a post-logout
    /// redirect URI there. Default false.
    #[serde(default)]
    pub sign_out_at_provider: bool,
    /// PEM bundle of CAs for the provider, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Accept `Authorization: Bearer <JWT>` from scripts and CI in place of a session: a JWT
    /// signed with the provider's keys, issued by it, unexpired, whose `aud` names one of
    /// these. The token's claims are judged by the policy like a session's. Default: none
    /// (bearer tokens are not accepted, and `Authorization` is left to the upstream).
    #[serde(default)]
    pub bearer_audiences: Vec<String>,
}

fn default_oidc_id() -> String {
    "oidc".into()
}
fn default_oidc_label() -> String {
    "OpenID Connect".into()
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn default_email_claim() -> String {
    "email".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}

impl OidcProviderConfig {
    /// The client secret, from `client_secret` or `client_secret_file`.
    pub fn secret(&self, key: &str) -> Result<Option<Secret>, (String, String)> {
        crate::secret::resolve(
            &format!("{key}.client_secret"),
            self.client_secret.as_ref(),
            self.client_secret_file.as_deref(),
        )
    }
}

/// The development provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevProviderConfig {
    /// Id. Default `dev`.
    #[serde(default = "default_dev_id")]
    pub id: String,
    /// Label on the sign-in chooser. Default "Development sign-in".
    #[serde(default = "default_dev_label")]
    pub display_name: String,
    /// The users one can sign in as.
    pub users: Vec<DevUser>,
}

fn default_dev_id() -> String {
    "dev".into()
}
fn default_dev_label() -> String {
    "Development sign-in".into()
}

/// A user of the development provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    /// Email address; also the subject.
    pub email: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Login name. Default: the email's local part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the email counts as verified. Default true.
    #[serde(default = "default_true")]
    pub email_verified: bool,
}

/// The public listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:4180`.
    pub listen: SocketAddr,
    /// TLS termination. Absent: plain HTTP/1.1 and h2c (prior knowledge).
    pub tls: Option<TlsConfig>,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed (a load balancer or
    /// ingress in front of Stagedoor), as CIDRs. Default: none, so client-sent ones are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Most client connections open at once; further ones wait in the kernel's backlog.
    /// Default 10000.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    /// Default 32768, at least 8192.
    pub max_header_bytes: usize,
    /// Time a client has to complete the TLS handshake and send a request's headers. Default 10s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed. Default 60s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, time that in-flight requests get to finish. Default 30s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4180)),
            tls: None,
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// TLS termination from PEM files, re-read when they change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes. Default 10s.
    #[serde(with = "humantime_serde", default = "default_reload_interval")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// The admin listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve `/ping` and `/ready`. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:9180` (loopback: probes run on the node).
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (readable, the default) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,stagedoor=debug`. `RUST_LOG` wins if set.
    /// Default `info`.
    pub level: String,
    /// One line per request: method, host, path (no query), status, bytes, duration, upstream.
    /// Default true.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One upstream service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`, optionally with a base path that is put in
    /// front of every forwarded path.
    pub url: String,
    /// Time to open a TCP connection. Default 5s.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Time from sending a request to receiving the response headers; then 504. Bodies
    /// (downloads, server-sent events) are not limited by it. Default 60s.
    #[serde(with = "humantime_serde", default = "default_upstream_timeout")]
    pub timeout: Duration,
    /// Send the client's `Host` header (true, the default) or the upstream's own host.
    #[serde(default = "default_true")]
    pub pass_host_header: bool,
    /// PEM bundle of CAs trusted for an https upstream, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS to the upstream (with `client_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Name sent in SNI and checked against the upstream's certificate, if not the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Idle pooled connections are closed after this long. Default 90s.
    #[serde(with = "humantime_serde", default = "default_pool_idle")]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept to this upstream. Default 256.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(90)
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_true() -> bool {
    true
}

impl UpstreamConfig {
    /// An upstream at `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: default_connect_timeout(),
            timeout: default_upstream_timeout(),
            pass_host_header: true,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            tls_server_name: None,
            pool_idle_timeout: default_pool_idle(),
            pool_max_idle: default_pool_max_idle(),
        }
    }
}

/// A routing rule: requests for `host` (any, if absent) under `path_prefix` go to `upstream`.
/// The most specific rule wins: an exact host before a `*.` wildcard before any host, then the
/// longest prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `backstage.example.com`, `*.example.com` (subdomains only), or absent for any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix, matched on whole segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    /// Default `/`.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Name of an entry in `upstreams`.
    pub upstream: String,
}

fn default_prefix() -> String {
    "/".into()
}

// === errors ===

/// One thing wrong with the configuration, tied to the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key, e.g. `upstreams.backstage.url`.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a configuration; shown to the operator all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order they were found.
    pub issues: Vec<Issue>,
}

impl ConfigError {
    /// An error with one issue.
    pub fn single(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            issues: vec![Issue {
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "invalid configuration ({n} problem{})",
            if n == 1 { "" } else { "s" }
        )?;
        for issue in &self.issues {
            write!(f, "\n  - {issue}")?;
        }
        Ok(())
    }
}

/// Collects issues while a configuration is checked.
#[derive(Debug, Default)]
pub struct Issues(Vec<Issue>);

impl Issues {
    /// Records a problem with `key`.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Ok if nothing was recorded.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { issues: self.0 })
        }
    }

    /// The collected issues as an error, even if there are none.
    pub fn into_error(self) -> ConfigError {
        ConfigError { issues: self.0 }
    }

    /// Adds every issue of `err`.
    pub fn extend(&mut self, err: ConfigError) {
        self.0.extend(err.issues);
    }
}

fn from_figment(err: figment::Error) -> ConfigError {
    let issues = err
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(top level)".to_string()
            } else {
                dotted(&e.path)
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            Issue {
                key,
                message: format!("{}{source}", e.kind),
            }
        })
        .collect();
    ConfigError { issues }
}

/// `["routes", "0", "upstream"]` as `routes[0].upstream`, the style validation uses.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

// === loading ===

impl Config {
    /// Loads defaults, then `file` (if given), then `STAGEDOOR_*` variables from the process
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX))
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError {
                    issues: vec![Issue {
                        key: "--config".into(),
                        message: format!("{} is not a readable file", path.display()),
                    }],
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = env.split("__").ignore(ENV_NOT_CONFIG);
        let config: Config = figment.merge(env).extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (no environment) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Why the policy lets anyone at all in, if it does: a public route ahead of every other
    /// rule that covers every request, or any user of a provider anyone can join.
    fn open_access(&self) -> Option<String> {
        let policy = &self.policy;
        if let Some(i) = policy
            .routes
            .iter()
            .position(PolicyRouteConfig::covers_everything)
            && policy.routes[i].public
        {
            return Some(format!(
                "policy.routes[{i}] makes every request public, so no one needs to sign in"
            ));
        }
        let any_user = policy.allow_any_user
            || policy
                .routes
                .iter()
                .find(|r| r.covers_everything())
                .is_some_and(|r| r.allow_any_user);
        if !any_user {
            return None;
        }
        self.providers.iter().find_map(|p| {
            let open = match p {
                ProviderConfig::Github(_) => true,
                ProviderConfig::Google(g) => g.hosted_domain.is_none(),
                ProviderConfig::Gitlab(g) => g
                    .base_url
                    .as_deref()
                    .is_none_or(|u| u.trim_end_matches('/') == "https://gitlab.com"),
                _ => false,
            };
            open.then(|| {
                format!(
                    "allow_any_user lets anyone with an account at provider {:?} in, and anyone can open one",
                    p.id()
                )
            })
        })
    }

    fn validate_backstage(&self, issues: &mut Issues) {
        let backstage = &self.backstage;
        if backstage.key_file.is_none() {
            return;
        }
        if backstage.key_id.trim().is_empty() {
            issues.add(
                "backstage.key_id",
                "required with backstage.key_file: the keyId of the key in Backstage's static key store",
            );
        }
        if let Err(e) = url_with_scheme(&backstage.issuer) {
            issues.add(
                "backstage.issuer",
                format!(
                    "{e}; Backstage's auth base URL, e.g. https://backstage.example.com/api/auth"
                ),
            );
        }
        if !(600..=86_400).contains(&backstage.token_lifetime.as_secs()) {
            issues.add(
                "backstage.token_lifetime",
                "must be between 10m and 24h, as Backstage requires",
            );
        }
        for (i, path) in backstage.paths.iter().enumerate() {
            if !path.starts_with('/') {
                issues.add(format!("backstage.paths[{i}]"), "must start with '/'");
            }
        }
    }

    fn validate_identity(&self, issues: &mut Issues) {
        let identity = &self.identity;
        for (i, path) in identity.oauth2_proxy_id_token_paths.iter().enumerate() {
            if !path.starts_with('/') {
                issues.add(
                    format!("identity.oauth2_proxy_id_token_paths[{i}]"),
                    "must start with '/'",
                );
            }
        }
        for (key, name) in
            std::iter::once(("identity.jwt_header".to_string(), &identity.jwt_header))
                .filter(|(_, n)| !n.is_empty())
                .chain(
                    identity
                        .strip_headers
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("identity.strip_headers[{i}]"), n)),
                )
        {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.add(key, format!("{name:?} is not a header name"));
            }
        }
        // The token's header must be its own: not an identity header of any convention (they
        // are stripped or set by Stagedoor), nor one Stagedoor sets or manages for forwarding.
        const MANAGED: &[&str] = &[
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "forwarded",
            "authorization",
            "proxy-authorization",
            "host",
            "cookie",
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
            "keep-alive",
            "te",
        ];
        let jwt_header = identity.jwt_header.to_ascii_lowercase().replace('_', "-");
        let identity_header = jwt_header != "x-stagedoor-jwt-assertion"
            && crate::identity::IDENTITY_HEADERS.contains(&jwt_header.as_str());
        if identity_header || MANAGED.contains(&jwt_header.as_str()) {
            issues.add(
                "identity.jwt_header",
                format!("{:?} is a header Stagedoor sets or manages itself; pick a name of its own (default X-Stagedoor-Jwt-Assertion)", identity.jwt_header),
            );
        }
        if !(30..=3600).contains(&identity.token_lifetime.as_secs()) {
            issues.add(
                "identity.token_lifetime",
                "must be between 30s and 1h (e.g. \"5m\")",
            );
        }
        if identity.audience.trim().is_empty() {
            issues.add("identity.audience", "must not be empty");
        }
        if let Err(e) = crate::backstage::NameTemplate::parse(&identity.user_name) {
            issues.add("identity.user_name", e);
        }
        if !crate::backstage::valid_namespace(&identity.namespace) {
            issues.add(
                "identity.namespace",
                "must be a Backstage namespace: lowercase letters, digits and inner '-', at most 63",
            );
        }
        for (group, target) in &identity.group_refs {
            if crate::backstage::EntityRef::parse(target, "group", &identity.namespace).is_none() {
                issues.add(
                    format!("identity.group_refs.{group}"),
                    format!("{target:?} is not an entity ref (\"group:default/name\" or a name)"),
                );
            }
        }
        if let Some(re) = &identity.group_filter
            && let Err(e) = regex::Regex::new(re)
        {
            issues.add("identity.group_filter", e.to_string());
        }
    }

    /// Checks the rules that span fields. Reports every problem, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Issues::default();
        let server = &self.server;
        if server.max_connections == 0 {
            issues.add("server.max_connections", "must be at least 1");
        }
        if !(8192..=1 << 20).contains(&server.max_header_bytes) {
            issues.add(
                "server.max_header_bytes",
                format!(
                    "must be between 8192 and 1048576 (got {})",
                    server.max_header_bytes
                ),
            );
        }
        for (key, value) in [
            ("server.header_read_timeout", server.header_read_timeout),
            ("server.idle_timeout", server.idle_timeout),
        ] {
            if value.is_zero() {
                issues.add(key, "must be greater than 0 (e.g. \"10s\")");
            }
        }
        if let Some(tls) = &server.tls
            && tls.reload_interval.is_zero()
        {
            issues.add(
                "server.tls.reload_interval",
                "must be greater than 0 (e.g. \"10s\")",
            );
        }
        if self.admin.enabled && self.admin.listen == server.listen && server.listen.port() != 0 {
            issues.add(
                "admin.listen",
                format!("{} is also server.listen; use another port", server.listen),
            );
        }

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            issues.add(
                "log.level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            );
        }

        if self.upstreams.is_empty() {
            issues.add(
                "upstreams",
                "at least one upstream is required, e.g. [upstreams.backstage] url = \"http://127.0.0.1:7007\"",
            );
        }
        for (name, upstream) in &self.upstreams {
            let key = format!("upstreams.{name}");
            if !valid_name(name) {
                issues.add(
                    &key,
                    "names may only contain lowercase letters, digits, '-' and '_'",
                );
            }
            if let Err(msg) = parse_upstream_url(&upstream.url) {
                issues.add(format!("{key}.url"), msg);
            }
            for (field, value) in [
                ("connect_timeout", upstream.connect_timeout),
                ("timeout", upstream.timeout),
            ] {
                if value.is_zero() {
                    issues.add(format!("{key}.{field}"), "must be greater than 0");
                }
            }
            if upstream.client_cert_file.is_some() != upstream.client_key_file.is_some() {
                issues.add(
                    format!("{key}.client_cert_file"),
                    "client_cert_file and client_key_file must be given together",
                );
            }
            let is_https = upstream.url.starts_with("https://");
            if !is_https {
                for (field, set) in [
                    ("ca_file", upstream.ca_file.is_some()),
                    ("client_cert_file", upstream.client_cert_file.is_some()),
                    ("tls_server_name", upstream.tls_server_name.is_some()),
                ] {
                    if set {
                        issues.add(
                            format!("{key}.{field}"),
                            "only applies to an https:// upstream",
                        );
                    }
                }
            }
        }

        if self.routes.is_empty() && self.upstreams.len() > 1 {
            issues.add(
                "routes",
                "with several upstreams, [[routes]] must say which serves what",
            );
        }
        let mut seen = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !self.upstreams.contains_key(&route.upstream) {
                let known: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
                issues.add(
                    format!("{key}.upstream"),
                    format!(
                        "no upstream named {:?} (known: {})",
                        route.upstream,
                        known.join(", ")
                    ),
                );
            }
            if !route.path_prefix.starts_with('/') {
                issues.add(format!("{key}.path_prefix"), "must start with '/'");
            }
            if let Some(host) = &route.host
                && let Err(msg) = check_host_pattern(host)
            {
                issues.add(format!("{key}.host"), msg);
            }
            let id = (
                route.host.as_deref().map(str::to_ascii_lowercase),
                route.path_prefix.trim_end_matches('/').to_string(),
            );
            if let Some(j) = seen.iter().position(|s| *s == id) {
                issues.add(
                    &key,
                    format!("same host and path_prefix as routes[{j}]; one of them is never used"),
                );
            }
            seen.push(id);
        }
        self.validate_auth(&mut issues);
        issues.finish()
    }

    fn validate_auth(&self, issues: &mut Issues) {
        let auth = &self.auth;
        if !auth.prefix.starts_with('/') || auth.prefix.len() < 2 || auth.prefix.ends_with('/') {
            issues.add(
                "auth.prefix",
                "must start with '/' and not end with '/', e.g. \"/oauth2\"",
            );
        }
        for (i, p) in auth.api_paths.iter().enumerate() {
            if !p.starts_with('/') {
                issues.add(format!("auth.api_paths[{i}]"), "must start with '/'");
            }
        }
        let loopback = self.server.listen.ip().is_loopback();
        let mut ids = Vec::new();
        for (i, provider) in self.providers.iter().enumerate() {
            let key = format!("providers[{i}]");
            let id = provider.id();
            if !valid_name(id) {
                issues.add(
                    format!("{key}.id"),
                    "may only contain lowercase letters, digits, '-' and '_'",
                );
            }
            if ids.contains(&id) {
                issues.add(
                    format!("{key}.id"),
                    format!("{id:?} is used by another provider"),
                );
            }
            ids.push(id);
            match provider {
                ProviderConfig::Dev(dev) => {
                    let public_loopback =
                        self.auth.public_url.as_deref().is_none_or(is_loopback_url);
                    if !self.server.trusted_proxies.is_empty() || !public_loopback {
                        issues.add(
                            &key,
                            "the dev provider only runs where nothing relays other people's requests: remove server.trusted_proxies and any non-loopback auth.public_url",
                        );
                    }
                    if !loopback {
                        issues.add(
                            &key,
                            format!(
                                "the dev provider lets anyone sign in as anyone; it only runs on a loopback server.listen (got {})",
                                self.server.listen
                            ),
                        );
                    }
                    if dev.users.is_empty() {
                        issues.add(format!("{key}.users"), "list at least one user");
                    }
                    for (j, user) in dev.users.iter().enumerate() {
                        if !user.email.contains('@') {
                            issues.add(
                                format!("{key}.users[{j}].email"),
                                format!("{:?} is not an email address", user.email),
                            );
                        }
                    }
                }
                ProviderConfig::Oidc(oidc) => self.validate_oidc(issues, &key, oidc.as_ref()),
                ProviderConfig::Github(github) => {
                    for (field, url) in [
                        ("base_url", Some(&github.base_url)),
                        ("api_url", github.api_url.as_ref()),
                    ] {
                        let Some(url) = url else { continue };
                        match url_with_scheme(url) {
                            Ok(false) if !is_loopback_url(url) => issues.add(
                                format!("{key}.{field}"),
                                "must be https:// (plain http is accepted only on loopback)",
                            ),
                            Ok(_) => {}
                            Err(e) => issues.add(format!("{key}.{field}"), e),
                        }
                    }
                    if github.client_id.is_empty() {
                        issues.add(format!("{key}.client_id"), "must not be empty");
                    }
                    if let Err((k, msg)) = github.secret(&key) {
                        issues.add(k, msg);
                    }
                    self.require_public_url(issues, &key, &github.id);
                }
                other => {
                    if let Some((kind, preset)) = other.preset() {
                        let mut complete = true;
                        for (field, required) in kind.fields() {
                            match (required, preset.field_set(field)) {
                                (true, false) => {
                                    complete = false;
                                    issues.add(
                                        format!("{key}.{field}"),
                                        format!("required for kind = \"{}\"", kind.name()),
                                    );
                                }
                                (false, true) => issues.add(
                                    format!("{key}.{field}"),
                                    format!("not used by kind = \"{}\"", kind.name()),
                                ),
                                _ => {}
                            }
                        }
                        // The derived issuer is only worth checking once its parts are there.
                        if complete {
                            self.validate_oidc(issues, &key, &preset.to_oidc(kind));
                        }
                    }
                }
            }
        }

        let real_providers = self
            .providers
            .iter()
            .any(|p| !matches!(p, ProviderConfig::Dev(_)));
        let policy = &self.policy;
        let any_rule = policy.allow_any_user
            || !policy.email_domains.is_empty()
            || !policy.emails.is_empty()
            || policy.emails_file.is_some()
            || !policy.groups.is_empty()
            || policy.routes.iter().any(|r| !r.public && r.has_who_rules());
        if real_providers && !any_rule {
            issues.add(
                "policy",
                "no one could pass the gate: set policy.email_domains = [\"example.com\"] (or emails, groups), or policy.allow_any_user = true if every account at your providers may",
            );
        }
        check_domains(issues, "policy", &policy.email_domains);
        if !policy.acknowledge_open_access
            && let Some(why) = self.open_access()
        {
            issues.add(
                "policy",
                format!(
                    "{why}; set policy.acknowledge_open_access = true if that is what you want"
                ),
            );
        }
        for (i, route) in policy.routes.iter().enumerate() {
            let key = format!("policy.routes[{i}]");
            let paths = [&route.path_prefix, &route.path_glob, &route.path_regex]
                .iter()
                .filter(|p| p.is_some())
                .count();
            if paths > 1 {
                issues.add(
                    &key,
                    "give at most one of path_prefix, path_glob and path_regex",
                );
            }
            if let Some(prefix) = &route.path_prefix
                && !prefix.starts_with('/')
            {
                issues.add(format!("{key}.path_prefix"), "must start with '/'");
            }
            if let Some(glob) = &route.path_glob
                && let Err(e) = globset::Glob::new(glob)
            {
                issues.add(format!("{key}.path_glob"), e.to_string());
            }
            if let Some(re) = &route.path_regex
                && let Err(e) = regex::Regex::new(re)
            {
                issues.add(format!("{key}.path_regex"), e.to_string());
            }
            if let Some(host) = &route.host
                && let Err(msg) = check_host_pattern(host)
            {
                issues.add(format!("{key}.host"), msg);
            }
            for (j, method) in route.methods.iter().enumerate() {
                if http::Method::from_bytes(method.as_bytes()).is_err() {
                    issues.add(
                        format!("{key}.methods[{j}]"),
                        format!("{method:?} is not a method"),
                    );
                }
            }
            let who = route.has_who_rules();
            if route.public && (who || !route.allow_cidrs.is_empty()) {
                issues.add(
                    &key,
                    "a public route needs no sign-in, so it takes no who-rules or allow_cidrs",
                );
            }
            if !route.public && !who && route.allow_cidrs.is_empty() {
                issues.add(&key, "say who may pass (allow_any_user, email_domains, emails, emails_file, groups, allow_cidrs), or public = true");
            }
            if let Some(name) = &route.name {
                if name.trim().is_empty() || name.starts_with("policy") {
                    issues.add(
                        format!("{key}.name"),
                        "must not be empty or start with \"policy\"",
                    );
                } else if policy.routes[..i]
                    .iter()
                    .any(|r| r.name.as_deref() == Some(name))
                {
                    issues.add(
                        format!("{key}.name"),
                        format!("{name:?} names an earlier route too"),
                    );
                }
            }
            check_domains(issues, &key, &route.email_domains);
        }

        self.validate_identity(issues);
        self.validate_backstage(issues);

        let session = &self.session;
        if session.cookie_name.is_empty()
            || !session
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            issues.add(
                "session.cookie_name",
                "use letters, digits, '_' and '-' only",
            );
        }
        if !session.cookie_path.starts_with('/') {
            issues.add("session.cookie_path", "must start with '/'");
        }
        if session.store == SessionStore::Redis {
            match session.redis_url() {
                Ok(Some(url)) => {
                    if let Err(e) = redis::Client::open(url.expose()) {
                        issues.add("session.redis_url", format!("not a Redis URL: {e}"));
                    }
                }
                Ok(None) => issues.add(
                    "session.redis_url",
                    "required with session.store = \"redis\" (redis://host:6379)",
                ),
                Err((key, msg)) => issues.add(key, msg),
            }
        } else if session.redis_url.is_some() || session.redis_url_file.is_some() {
            issues.add(
                "session.redis_url",
                "set, but session.store is \"cookie\"; set session.store = \"redis\" to use it",
            );
        }
        if session.expire.is_zero() {
            issues.add("session.expire", "must be greater than 0 (e.g. \"12h\")");
        }
        let plain_loopback = loopback && self.server.tls.is_none();
        if !(session.cookie_secure || plain_loopback) {
            issues.add(
                "session.cookie_secure",
                "may be false only on a plain-HTTP loopback listener; browsers would send the session in clear text",
            );
        }
        match self.cookie_secret() {
            Err((key, msg)) => issues.add(key, msg),
            Ok(Some(secret)) => {
                if let Err(msg) = decode_cookie_secret(secret.expose()) {
                    issues.add("session.cookie_secret", msg);
                }
            }
            Ok(None) => {
                let only_dev = self
                    .providers
                    .iter()
                    .all(|p| matches!(p, ProviderConfig::Dev(_)));
                if !only_dev {
                    issues.add(
                        "session.cookie_secret",
                        "required to sign people in; generate one with `stagedoor keygen` (or set cookie_secret_file)",
                    );
                }
            }
        }
        for (i, old) in session.previous_cookie_secrets.iter().enumerate() {
            if let Err(msg) = decode_cookie_secret(old.expose()) {
                issues.add(format!("session.previous_cookie_secrets[{i}]"), msg);
            }
        }
    }

    fn validate_oidc(&self, issues: &mut Issues, key: &str, oidc: &OidcProviderConfig) {
        match url_with_scheme(&oidc.issuer) {
            Ok(https) if !https && !is_loopback_url(&oidc.issuer) => issues.add(
                format!("{key}.issuer"),
                "must be https:// (plain http is accepted only for a loopback issuer)",
            ),
            Ok(_) => {}
            Err(e) => issues.add(format!("{key}.issuer"), e),
        }
        if oidc.client_id.is_empty() {
            issues.add(format!("{key}.client_id"), "must not be empty");
        }
        if let Err((k, msg)) = oidc.secret(key) {
            issues.add(k, msg);
        }
        if !oidc.scopes.iter().any(|s| s == "openid") {
            issues.add(format!("{key}.scopes"), "must include \"openid\"");
        }
        self.require_public_url(issues, key, &oidc.id);
    }

    fn require_public_url(&self, issues: &mut Issues, key: &str, id: &str) {
        match &self.auth.public_url {
            None => issues.add(
                "auth.public_url",
                format!(
                    "required by {key} ({id}): the address users reach Stagedoor at, e.g. \"https://backstage.example.com\""
                ),
            ),
            Some(url) => {
                if let Err(e) = url_with_scheme(url) {
                    issues.add("auth.public_url", e);
                }
            }
        }
    }

    /// The cookie secret, from `cookie_secret` or `cookie_secret_file`.
    pub fn cookie_secret(&self) -> Result<Option<Secret>, (String, String)> {
        crate::secret::resolve(
            "session.cookie_secret",
            self.session.cookie_secret.as_ref(),
            self.session.cookie_secret_file.as_deref(),
        )
    }

    /// The configuration as TOML, with secrets redacted, for `stagedoor check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# could not render configuration: {e}\n"))
    }
}

fn check_domains(issues: &mut Issues, key: &str, domains: &[String]) {
    for (i, domain) in domains.iter().enumerate() {
        let name = domain.strip_prefix("*.").unwrap_or(domain);
        if name.is_empty() || name.contains(['@', '*', '/', ' ']) || !name.contains('.') {
            issues.add(
                format!("{key}.email_domains[{i}]"),
                format!(
                    "{domain:?} is not a domain (\"example.com\", or \"*.example.com\" for subdomains)"
                ),
            );
        }
    }
}

/// Checks an absolute http(s) URL; `Ok(true)` for https.
fn url_with_scheme(url: &str) -> Result<bool, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(true),
        (Some("http"), Some(_)) => Ok(false),
        _ => Err(format!("{url:?} must be an http:// or https:// URL")),
    }
}

fn is_loopback_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

/// Decodes a cookie secret (base64 or base64url, padded or not) into its bytes.
pub fn decode_cookie_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or("must be base64; generate one with `stagedoor keygen`")?;
    if bytes.len() < 32 {
        return Err(format!(
            "must decode to at least 32 bytes (got {}); generate one with `stagedoor keygen`",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses an upstream URL into its parts, or says what is wrong with it.
pub fn parse_upstream_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{url:?} must not have a query string"));
    }
    Ok(uri)
}

fn check_host_pattern(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host name or a \"*.example.com\" pattern (no port, no scheme)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        match Config::from_toml(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.issues.into_iter().map(|i| i.key).collect(),
        }
    }

    #[test]
    fn minimal_config_is_valid() {
        let cfg = Config::from_toml("[upstreams.backstage]\nurl = \"http://127.0.0.1:7007\"\n")
            .expect("valid");
        assert_eq!(cfg.server.listen.port(), 4180);
        assert_eq!(cfg.upstreams["backstage"].timeout, Duration::from_secs(60));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [server]
            max_connections = 0
            max_header_bytes = 10
            [upstreams.web]
            url = "ftp://x"
            [upstreams.api]
            url = "http://x:1"
            client_cert_file = "/c.pem"
            [[routes]]
            path_prefix = "api"
            upstream = "nope"
        "#;
        assert_eq!(
            keys(text),
            [
                "server.max_connections",
                "server.max_header_bytes",
                "upstreams.api.client_cert_file",
                "upstreams.api.client_cert_file",
                "upstreams.web.url",
                "routes[0].upstream",
                "routes[0].path_prefix",
            ]
        );
    }

    #[test]
    fn unknown_and_mistyped_keys_name_the_key() {
        assert_eq!(
            keys("[server]\nlisten_addr = \"x\"\n"),
            ["server.listen_addr"]
        );
        let err = Config::from_toml("[server]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        assert_eq!(
            keys("[server]\nidle_timeout = \"soon\"\n"),
            ["server.idle_timeout"]
        );
    }

    #[test]
    fn routes_are_checked() {
        let base = "[upstreams.a]\nurl = \"http://a\"\n[upstreams.b]\nurl = \"http://b\"\n";
        assert_eq!(keys(base), ["routes"]);
        let dup = format!(
            "{base}[[routes]]\npath_prefix = \"/api\"\nupstream = \"a\"\n[[routes]]\npath_prefix = \"/api/\"\nupstream = \"b\"\n"
        );
        assert_eq!(keys(&dup), ["routes[1]"]);
        let bad_host = format!("{base}[[routes]]\nhost = \"http://x.com\"\nupstream = \"a\"\n");
        assert_eq!(keys(&bad_host), ["routes[0].host"]);
    }

    #[test]
    fn sign_in_settings_are_checked() {
        let base = "[upstreams.web]\nurl = \"http://a\"\n";
        let dev = "[[providers]]\nkind = \"dev\"\nusers = [{ email = \"a@example.com\" }]\n";
        assert_eq!(keys(&format!("{base}{dev}")), Vec::<String>::new());
        assert_eq!(
            keys(&format!("{base}[server]\nlisten = \"0.0.0.0:4180\"\n{dev}")),
            ["providers[0]"]
        );
        assert_eq!(
            keys(&format!(
                "{base}[server]\nlisten = \"0.0.0.0:4180\"\n[session]\ncookie_secure = false\n"
            )),
            ["session.cookie_secure"]
        );
        assert_eq!(
            keys(&format!("{base}[session]\ncookie_secret = \"c2hvcnQ=\"\n")),
            ["session.cookie_secret"]
        );
        let err = Config::from_toml(&format!("{base}[session]\ncookie_secret = \"c2hvcnQ=\"\n"))
            .unwrap_err();
        assert!(err.to_string().contains("got 5"), "{err}");
        assert_eq!(
            keys(&format!(
                "{base}[session]\ncookie_secret = \"x\"\ncookie_secret_file = \"/s\"\n"
            )),
            ["session.cookie_secret"]
        );
        assert_eq!(
            keys(&format!(
                "{base}[[providers]]\nkind = \"dev\"\nusers = []\n[[providers]]\nkind = \"dev\"\nusers = [{{ email = \"nope\" }}]\n"
            )),
            [
                "providers[0].users",
                "providers[1].id",
                "providers[1].users[0].email"
            ]
        );
        assert_eq!(
            keys(&format!("{base}[[providers]]\nkind = \"saml\"\n")),
            ["providers[0].kind"]
        );
    }

    #[test]
    fn presets_expand_to_openid_connect() {
        let base = "[upstreams.web]\nurl = \"http://a\"\n[auth]\npublic_url = \"https://portal.example.com\"\n[policy]\nallow_any_user = true\nacknowledge_open_access = true\n[session]\ncookie_secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
        let cfg = Config::from_toml(&format!(
            "{base}[[providers]]\nkind = \"google\"\nclient_id = \"c\"\nclient_secret = \"s\"\nhosted_domain = \"example.com\"\n\
             [[providers]]\nkind = \"keycloak\"\nclient_id = \"c\"\nbase_url = \"https://sso.example.com/\"\nrealm = \"corp\"\n\
             [[providers]]\nkind = \"entra\"\nclient_id = \"c\"\ntenant = \"contoso.onmicrosoft.com\"\n\
             [[providers]]\nkind = \"okta\"\nclient_id = \"c\"\ndomain = \"example.okta.com\"\nauthorization_server = \"default\"\n\
             [[providers]]\nkind = \"auth0\"\nclient_id = \"c\"\ndomain = \"example.eu.auth0.com\"\n\
             [[providers]]\nkind = \"gitlab\"\nid = \"gl\"\nclient_id = \"c\"\n"
        ))
        .expect("valid");
        let oidc: Vec<OidcProviderConfig> = cfg
            .providers
            .iter()
            .filter_map(ProviderConfig::oidc)
            .collect();
        let table = [
            ("google", "https://accounts.google.com"),
            ("keycloak", "https://sso.example.com/realms/corp"),
            (
                "entra",
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0",
            ),
            ("okta", "https://example.okta.com/oauth2/default"),
            ("auth0", "https://example.eu.auth0.com/"),
            ("gl", "https://gitlab.com"),
        ];
        for (o, (id, issuer)) in oidc.iter().zip(table) {
            assert_eq!((o.id.as_str(), o.issuer.as_str()), (id, issuer));
        }
        assert_eq!(oidc[0].extra_auth_params["hd"], "example.com");
        assert_eq!(oidc[0].required_claims["hd"], "example.com");
        assert!(oidc[3].scopes.contains(&"groups".to_string()));

        assert_eq!(
            keys(&format!(
                "{base}[[providers]]\nkind = \"entra\"\nclient_id = \"c\"\nrealm = \"x\"\n"
            )),
            ["providers[0].tenant", "providers[0].realm"]
        );
        // Inside a tagged list entry the key is the entry; the message names the field.
        let typo = format!(
            "{base}[[providers]]\nkind = \"google\"\nclient_id = \"c\"\nclient_secret = \"s\"\nclient_id_typo = 1\n"
        );
        let err = Config::from_toml(&typo).unwrap_err();
        assert_eq!(err.issues[0].key, "providers[0]");
        assert!(err.issues[0].message.contains("client_id_typo"), "{err}");
    }

    #[test]
    fn identity_paths_and_token_header_are_checked() {
        let base = "[upstreams.web]\nurl = \"http://a\"\n[identity]\n";
        assert_eq!(
            keys(&format!(
                "{base}oauth2_proxy_id_token_paths = [\"/api/auth/\", \"api/x\"]\n"
            )),
            ["identity.oauth2_proxy_id_token_paths[1]"]
        );
        for taken in [
            "X-OAUTH2-PROXY-ID-TOKEN",
            "authorization",
            "X_Forwarded_User",
            "Host",
        ] {
            assert_eq!(
                keys(&format!("{base}jwt_header = \"{taken}\"\n")),
                ["identity.jwt_header"],
                "{taken}"
            );
        }
        assert!(keys(&format!("{base}jwt_header = \"X-Identity\"\n")).is_empty());
    }

    #[test]
    fn real_providers_need_an_admission_rule() {
        let base = "[upstreams.web]\nurl = \"http://a\"\n[auth]\npublic_url = \"https://p.example.com\"\n[session]\ncookie_secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n[[providers]]\nkind = \"github\"\nclient_id = \"c\"\n";
        assert_eq!(keys(base), ["policy"]);
        assert_eq!(
            keys(&format!(
                "{base}[policy]\nemail_domains = [\"example.com\"]\n"
            )),
            Vec::<String>::new()
        );
        // Any GitHub user at all: refused unless acknowledged.
        assert_eq!(
            keys(&format!("{base}[policy]\nallow_any_user = true\n")),
            ["policy"]
        );
        assert_eq!(
            keys(&format!(
                "{base}[policy]\nallow_any_user = true\nacknowledge_open_access = true\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&format!(
                "{base}[policy]\nemail_domains = [\"@example.com\", \"*.\"]\n"
            )),
            ["policy.email_domains[0]", "policy.email_domains[1]"]
        );
        // The dev provider's users are listed by hand, so it needs no rule.
        let dev = "[upstreams.web]\nurl = \"http://a\"\n[[providers]]\nkind = \"dev\"\nusers = [{ email = \"a@example.com\" }]\n";
        assert_eq!(keys(dev), Vec::<String>::new());
        assert_eq!(
            keys(&format!(
                "{dev}[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n"
            )),
            ["providers[0]"]
        );
    }

    #[test]
    fn open_access_and_route_shapes_are_checked() {
        let base = "[upstreams.web]\nurl = \"http://a\"\n[auth]\npublic_url = \"https://p.example.com\"\n[session]\ncookie_secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n[[providers]]\nkind = \"oidc\"\nissuer = \"https://sso.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[policy]\nemail_domains = [\"example.com\"]\n";
        // A public catch-all ahead of everything: everyone, signed in or not.
        let everyone = format!("{base}[[policy.routes]]\npath_prefix = \"/\"\npublic = true\n");
        let err = Config::from_toml(&everyone).unwrap_err();
        assert_eq!(err.issues[0].key, "policy");
        assert!(
            err.issues[0].message.contains("acknowledge_open_access"),
            "{err}"
        );
        assert!(
            Config::from_toml(
                &everyone.replace("[policy]\n", "[policy]\nacknowledge_open_access = true\n")
            )
            .is_ok()
        );
        // A company provider with any user is not open to the world.
        assert_eq!(
            keys(&format!("{base}allow_any_user = true\n")),
            Vec::<String>::new()
        );
        let google = base.replace(
            "kind = \"oidc\"\nissuer = \"https://sso.example.com\"",
            "kind = \"google\"",
        );
        assert_eq!(
            keys(&format!("{google}allow_any_user = true\n")),
            ["policy"]
        );
        assert_eq!(
            keys(&format!(
                "{}allow_any_user = true\n",
                google.replace(
                    "kind = \"google\"",
                    "kind = \"google\"\nhosted_domain = \"example.com\""
                )
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&format!(
                "{base}[[policy.routes]]\nname = \"a\"\npath_prefix = \"/a\"\nallow_cidrs = [\"10.0.0.0/8\"]\n\
                 [[policy.routes]]\nname = \"a\"\npath_prefix = \"/b\"\npublic = true\nallow_cidrs = [\"10.0.0.0/8\"]\n\
                 [[policy.routes]]\nname = \"policy\"\npath_prefix = \"/c\"\npublic = true\n"
            )),
            [
                "policy.routes[1]",
                "policy.routes[1].name",
                "policy.routes[2].name"
            ]
        );
        let err = Config::from_toml(&format!(
            "{base}[[policy.routes]]\npath_prefix = \"/a\"\nallow_cidrs = [\"10.0.0.300/8\"]\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("allow_cidrs"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_the_printed_config() {
        let cfg = Config::from_toml(
            "[upstreams.web]\nurl = \"http://a\"\n[session]\ncookie_secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
        )
        .unwrap();
        let printed = cfg.to_toml();
        assert!(
            printed.contains("cookie_secret = \"[redacted]\""),
            "{printed}"
        );
        assert!(!printed.contains("MDEy"));
        assert!(!format!("{cfg:?}").contains("MDEy"));
    }

    #[test]
    fn upstream_urls() {
        assert!(parse_upstream_url("http://127.0.0.1:7007").is_ok());
        assert!(parse_upstream_url("https://backstage.internal/base").is_ok());
        for bad in ["127.0.0.1:7007", "ws://x", "http://", "http://x/?a=b", ""] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature, not ours
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[server]\nlisten = \"127.0.0.1:1\"\n[upstreams.web]\nurl = \"http://a\"\n",
            )?;
            jail.set_env("STAGEDOOR_SERVER__LISTEN", "127.0.0.1:2");
            jail.set_env("STAGEDOOR_UPSTREAMS__WEB__TIMEOUT", "5s");
            jail.set_env("STAGEDOOR_CONFIG", "ignored.toml");
            let cfg = Config::load(Some(Path::new("c.toml"))).expect("valid");
            assert_eq!(cfg.server.listen.port(), 2);
            assert_eq!(cfg.upstreams["web"].timeout, Duration::from_secs(5));
            assert_eq!(cfg.upstreams["web"].url, "http://a");
            jail.set_env("STAGEDOOR_SERVER__LISTEN_ADDR", "x");
            let err = Config::load(Some(Path::new("c.toml"))).unwrap_err();
            assert!(err.to_string().contains("listen_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load_from(Some(Path::new("/nonexistent/c.toml")), Env::prefixed("X_"))
            .unwrap_err();
        assert_eq!(err.issues[0].key, "--config");
    }
}
