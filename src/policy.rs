//! Who may pass the gate, and where. Deny unless a rule allows.
//!
//! Routes are tried in order on the normalized path (see `path.rs`), the host and the method;
//! the first that matches decides: `public` (no sign-in) or its own who-rules. A request no
//! route matches is judged by the global rules. Who-rules admit a signed-in user by verified
//! email domain or address, by group (GitHub `org` and `org/team` too), or any signed-in user.
//! Users of the development provider are listed by hand and pass the global rules.

use globset::GlobMatcher;
use http::Method;
use regex::Regex;

use crate::config::{PolicyConfig, PolicyRouteConfig};
use crate::routes::HostMatch;
use crate::session::Session;

/// Why a signed-in user is refused, in words that can be shown to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The provider did not vouch for the email address.
    UnverifiedEmail,
    /// No rule admits this user.
    NotAllowed,
}

impl Refusal {
    /// A sentence for the 403 page.
    pub fn explain(self) -> &'static str {
        match self {
            Self::UnverifiedEmail => {
                "Your identity provider has not verified your email address, so it cannot be used to sign in here."
            }
            Self::NotAllowed => "Your account is not allowed to open this page.",
        }
    }
}

/// What the policy says about a request before anyone is asked to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// No sign-in needed; `rule` names the route that said so.
    Public {
        /// The deciding route, e.g. `policy.routes[0]`.
        rule: &'a str,
    },
    /// A signed-in user is needed, and `rule` decides who.
    SignedIn {
        /// The deciding rule: a route, or `policy` for the global rules.
        rule: &'a str,
    },
}

/// Who-rules: any one of them admits.
#[derive(Debug, Clone, Default)]
struct Who {
    any_user: bool,
    /// Lowercase; `*.example.com` kept as `.example.com`.
    domains: Vec<String>,
    /// Lowercase.
    emails: Vec<String>,
    groups: Vec<String>,
}

impl Who {
    fn new(any_user: bool, domains: &[String], emails: &[String], groups: &[String]) -> Self {
        Self {
            any_user,
            domains: domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase().replacen("*.", ".", 1))
                .collect(),
            emails: emails
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .collect(),
            groups: groups.to_vec(),
        }
    }

    fn is_empty(&self) -> bool {
        !self.any_user
            && self.domains.is_empty()
            && self.emails.is_empty()
            && self.groups.is_empty()
    }

    fn admits(&self, session: &Session) -> bool {
        self.any_user
            || email_domain_allowed(&session.email, &self.domains)
            || self.emails.contains(&session.email.to_ascii_lowercase())
            || session.groups.iter().any(|g| self.groups.contains(g))
    }
}

#[derive(Debug)]
enum PathMatch {
    Any,
    /// Without a trailing slash; empty for `/`.
    Prefix(String),
    Glob(GlobMatcher),
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Self::Glob(glob) => glob.is_match(path),
            Self::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Debug)]
struct Route {
    name: String,
    host: HostMatch,
    path: PathMatch,
    methods: Vec<Method>,
    /// `None`: public.
    who: Option<Who>,
}

impl Route {
    fn build(i: usize, config: &PolicyRouteConfig) -> Self {
        let path = if let Some(prefix) = &config.path_prefix {
            PathMatch::Prefix(prefix.trim_end_matches('/').to_string())
        } else if let Some(glob) = config.path_glob.as_deref().and_then(|g| {
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .ok()
        }) {
            PathMatch::Glob(glob.compile_matcher())
        } else if let Some(re) = config
            .path_regex
            .as_deref()
            .and_then(|r| Regex::new(&format!("^(?:{r})$")).ok())
        {
            PathMatch::Regex(re)
        } else {
            PathMatch::Any
        };
        Self {
            name: format!("policy.routes[{i}]"),
            host: config
                .host
                .as_deref()
                .map_or(HostMatch::Any, HostMatch::parse),
            path,
            methods: config
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect(),
            who: (!config.public).then(|| {
                Who::new(
                    config.allow_any_user,
                    &config.email_domains,
                    &config.emails,
                    &config.groups,
                )
            }),
        }
    }

    fn matches(&self, host: &str, method: &Method, path: &str) -> bool {
        self.host.matches(host)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path)
    }
}

/// The access policy, built once from configuration.
#[derive(Debug)]
pub struct Policy {
    global: Who,
    routes: Vec<Route>,
    allow_unverified_email: bool,
    dev_providers: Vec<String>,
}

const GLOBAL: &str = "policy";

impl Policy {
    /// Rules from `policy`, with the ids of development providers (whose users pass the global
    /// rules).
    pub fn new(config: &PolicyConfig, dev_providers: Vec<String>) -> Self {
        Self {
            global: Who::new(
                config.allow_any_user,
                &config.email_domains,
                &config.emails,
                &config.groups,
            ),
            routes: config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| Route::build(i, r))
                .collect(),
            allow_unverified_email: config.allow_unverified_email,
            dev_providers,
        }
    }

    /// Which rule covers a request (normalized `path`, `host` without port).
    pub fn access(&self, host: &str, method: &Method, path: &str) -> Access<'_> {
        match self.routes.iter().find(|r| r.matches(host, method, path)) {
            Some(route) if route.who.is_none() => Access::Public { rule: &route.name },
            Some(route) => Access::SignedIn { rule: &route.name },
            None => Access::SignedIn { rule: GLOBAL },
        }
    }

    /// Whether `session` may make a request that `rule` (from [`Policy::access`]) decides.
    pub fn admits(&self, rule: &str, session: &Session) -> Result<(), Refusal> {
        if !session.email_verified && !self.allow_unverified_email {
            return Err(Refusal::UnverifiedEmail);
        }
        let who = match self.routes.iter().find(|r| r.name == rule) {
            Some(route) => match &route.who {
                Some(who) => who,
                None => return Ok(()),
            },
            None => {
                // Development users are listed by hand in the configuration.
                if self.dev_providers.contains(&session.provider) && self.global.is_empty() {
                    return Ok(());
                }
                &self.global
            }
        };
        if who.admits(session) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed)
        }
    }
}

impl Policy {
    /// Whether any rule could admit `session`: the global rules, or a route's own rules.
    /// Used at sign-in, so a user no rule admits anywhere is refused there and then.
    pub fn admits_anywhere(&self, session: &Session) -> Result<(), Refusal> {
        let global = self.admits(GLOBAL, session);
        if global.is_ok() {
            return global;
        }
        let by_route = self
            .routes
            .iter()
            .any(|r| r.who.as_ref().is_some_and(|w| w.admits(session)));
        if by_route { Ok(()) } else { global }
    }
}

/// Exact domain match, or a subdomain of a `.domain` entry; never a mere suffix match.
fn email_domain_allowed(email: &str, domains: &[String]) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() {
        return false;
    }
    let domain = domain.to_ascii_lowercase();
    domains
        .iter()
        .any(|allowed| match allowed.strip_prefix('.') {
            Some(parent) => domain
                .strip_suffix(parent)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => domain == *allowed,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::path::normalize;

    #[test]
    fn domains_match_exactly_or_as_declared_subdomains() {
        let domains = vec!["example.com".to_string(), ".corp.example.org".to_string()];
        let table = [
            ("alice@example.com", true),
            ("Alice@EXAMPLE.com", true),
            ("alice@evilexample.com", false),
            ("alice@example.com.evil.net", false),
            ("alice@sub.example.com", false),
            ("alice@eu.corp.example.org", true),
            ("alice@corp.example.org", false),
            ("alice@xcorp.example.org", false),
            ("@example.com", false),
            ("example.com", false),
            ("alice@example.com@evil.net", false),
        ];
        for (email, want) in table {
            assert_eq!(email_domain_allowed(email, &domains), want, "{email}");
        }
    }

    fn user(email: &str, verified: bool, groups: &[&str]) -> Session {
        Session {
            subject: email.into(),
            email: email.into(),
            email_verified: verified,
            username: None,
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            provider: "corp".into(),
            created_at: 0,
            refreshed_at: 0,
            expires_at: u64::MAX,
            tokens: None,
        }
    }

    fn policy() -> Policy {
        let config = Config::from_toml(
            r#"
            [upstreams.web]
            url = "http://a"
            [policy]
            email_domains = ["example.com"]
            emails = ["Contractor@Partner.example.net"]
            [[policy.routes]]
            path_prefix = "/public"
            public = true
            [[policy.routes]]
            path_glob = "/static/**/*.js"
            methods = ["GET", "HEAD"]
            public = true
            [[policy.routes]]
            path_regex = "/api/admin(/.*)?"
            groups = ["backstage-admins", "acme/platform"]
            [[policy.routes]]
            host = "docs.example.com"
            allow_any_user = true
            "#,
        )
        .expect("valid");
        Policy::new(&config.policy, Vec::new())
    }

    /// The rule deciding a raw request path, after normalization as the pipeline does it.
    fn decide(policy: &Policy, host: &str, method: &str, raw: &str) -> String {
        let path = normalize(raw).expect("normalizes");
        match policy.access(host, &Method::from_bytes(method.as_bytes()).unwrap(), &path) {
            Access::Public { rule } => format!("public {rule}"),
            Access::SignedIn { rule } => rule.to_string(),
        }
    }

    #[test]
    fn routes_decide_on_the_normalized_path_only() {
        let p = policy();
        let table = [
            ("GET", "/public/logo.png", "public policy.routes[0]"),
            ("GET", "/public", "public policy.routes[0]"),
            ("GET", "/publicity", "policy"),
            ("GET", "/public/../admin", "policy"),
            ("GET", "/public%2f..%2fadmin", "policy"),
            ("GET", "/public%2F..%2Fapi/admin", "policy"),
            ("GET", "//public/x", "public policy.routes[0]"),
            ("GET", "/static/app/main.js", "public policy.routes[1]"),
            ("POST", "/static/app/main.js", "policy"),
            ("GET", "/static/app/main.js.map", "policy"),
            ("GET", "/api/admin", "policy.routes[2]"),
            ("GET", "/api/admin/users", "policy.routes[2]"),
            ("GET", "/api/administrator", "policy"),
            ("GET", "/x/../api/admin", "policy.routes[2]"),
            ("GET", "/api/%61dmin", "policy.routes[2]"),
        ];
        for (method, path, want) in table {
            assert_eq!(
                decide(&p, "portal.example.com", method, path),
                want,
                "{method} {path}"
            );
        }
        assert_eq!(
            decide(&p, "docs.example.com", "GET", "/"),
            "policy.routes[3]"
        );
    }

    #[test]
    fn who_rules() {
        let p = policy();
        let alice = user("alice@example.com", true, &[]);
        let admin = user("root@elsewhere.example", true, &["backstage-admins"]);
        let contractor = user("contractor@partner.example.net", true, &[]);
        let unverified = user("mallory@example.com", false, &["backstage-admins"]);
        let stranger = user("eve@evilexample.com", true, &[]);
        let table = [
            ("policy", &alice, Ok(())),
            ("policy", &contractor, Ok(())),
            ("policy", &admin, Err(Refusal::NotAllowed)),
            ("policy", &stranger, Err(Refusal::NotAllowed)),
            ("policy", &unverified, Err(Refusal::UnverifiedEmail)),
            ("policy.routes[2]", &admin, Ok(())),
            ("policy.routes[2]", &alice, Err(Refusal::NotAllowed)),
            (
                "policy.routes[2]",
                &unverified,
                Err(Refusal::UnverifiedEmail),
            ),
            ("policy.routes[3]", &stranger, Ok(())),
        ];
        for (rule, session, want) in table {
            assert_eq!(p.admits(rule, session), want, "{rule} {}", session.email);
        }
        let github = user("octo@example.org", true, &["acme", "acme/platform"]);
        assert_eq!(p.admits("policy.routes[2]", &github), Ok(()));
    }
}
