//! Who may pass the gate, and where. Deny unless a rule allows.
//!
//! Routes are tried in order on the normalized path (see `path.rs`), the host and the method;
//! the first that matches decides: `public` (no sign-in), its client networks, or its own
//! who-rules. A request no route matches is judged by the global rules. Who-rules admit a
//! signed-in user by verified email domain or address (inline or from a file that is re-read
//! when it changes), by group (GitHub `org` and `org/team` too), or any signed-in user.
//! Users of the development provider are listed by hand and pass the global rules.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use globset::GlobMatcher;
use http::Method;
use ipnet::IpNet;
use regex::Regex;

use crate::config::{ConfigError, Issue, PolicyConfig, PolicyRouteConfig};
use crate::routes::HostMatch;
use crate::session::Session;

/// How often an emails file is checked for changes.
const EMAILS_FILE_RECHECK: Duration = Duration::from_secs(1);

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
    /// No sign-in needed from this client's network (the route's `allow_cidrs`).
    Network {
        /// The deciding route.
        rule: &'a str,
    },
    /// A signed-in user is needed, and `rule` decides who.
    SignedIn {
        /// The deciding rule: a route, or `policy` for the global rules.
        rule: &'a str,
    },
}

/// Who-rules: any one of them admits.
#[derive(Debug, Default)]
struct Who {
    any_user: bool,
    /// Lowercase; `*.example.com` kept as `.example.com`.
    domains: Vec<String>,
    /// Lowercase.
    emails: Vec<String>,
    emails_file: Option<EmailsFile>,
    groups: Vec<String>,
}

impl Who {
    fn new(
        key: &str,
        any_user: bool,
        domains: &[String],
        emails: &[String],
        emails_file: Option<&Path>,
        groups: &[String],
    ) -> Result<Self, ConfigError> {
        let emails_file = emails_file
            .map(|path| {
                EmailsFile::open(path)
                    .map_err(|e| ConfigError::single(format!("{key}.emails_file"), e))
            })
            .transpose()?;
        Ok(Self {
            any_user,
            domains: domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase().replacen("*.", ".", 1))
                .collect(),
            emails: emails
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .collect(),
            emails_file,
            groups: groups.to_vec(),
        })
    }

    fn is_empty(&self) -> bool {
        !self.any_user
            && self.domains.is_empty()
            && self.emails.is_empty()
            && self.emails_file.is_none()
            && self.groups.is_empty()
    }

    fn admits(&self, session: &Session) -> bool {
        if self.any_user
            || email_domain_allowed(&session.email, &self.domains)
            || session.groups.iter().any(|g| self.groups.contains(g))
        {
            return true;
        }
        if self.emails.is_empty() && self.emails_file.is_none() {
            return false;
        }
        let email = session.email.to_ascii_lowercase();
        self.emails.contains(&email)
            || self
                .emails_file
                .as_ref()
                .is_some_and(|file| file.contains(&email))
    }
}

/// Email addresses read from a file and read again when the file changes. A version that
/// cannot be read or has a line that is not an address is refused, and the last good list
/// stays in force.
#[derive(Debug)]
struct EmailsFile {
    path: PathBuf,
    state: RwLock<EmailsFileState>,
}

#[derive(Debug)]
struct EmailsFileState {
    checked: Instant,
    /// Modification time and length of the version loaded.
    stamp: Option<(SystemTime, u64)>,
    emails: Arc<HashSet<String>>,
}

impl EmailsFile {
    fn open(path: &Path) -> Result<Self, String> {
        let stamp = crate::file_stamp(path);
        let emails = read_emails(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new(EmailsFileState {
                checked: Instant::now(),
                stamp,
                emails: Arc::new(emails),
            }),
        })
    }

    /// `email` must be lowercase.
    fn contains(&self, email: &str) -> bool {
        self.reload_if_changed();
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .emails
            .contains(email)
    }

    fn reload_if_changed(&self) {
        let due = |state: &EmailsFileState| state.checked.elapsed() >= EMAILS_FILE_RECHECK;
        if !due(&self.state.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        // One request checks; the others go on with the list they have.
        let Ok(mut state) = self.state.try_write() else {
            return;
        };
        if !due(&state) {
            return;
        }
        state.checked = Instant::now();
        let stamp = crate::file_stamp(&self.path);
        if stamp == state.stamp {
            return;
        }
        match read_emails(&self.path) {
            Ok(emails) => {
                tracing::info!(path = %self.path.display(), count = emails.len(), "emails file reloaded");
                state.emails = Arc::new(emails);
                state.stamp = stamp;
            }
            Err(error) => {
                // Remembered, so the warning is not repeated every second.
                state.stamp = stamp;
                tracing::warn!(path = %self.path.display(), %error, "emails file not reloaded; the previous list stays in force");
            }
        }
    }
}

/// One address per line; blank lines and lines starting with `#` are skipped.
fn read_emails(path: &Path) -> Result<HashSet<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_emails(&text)
}

fn parse_emails(text: &str) -> Result<HashSet<String>, String> {
    let mut emails = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let valid = line
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !line.contains(char::is_whitespace);
        if !valid {
            return Err(format!(
                "line {}: {:?} is not an email address",
                n + 1,
                line
            ));
        }
        emails.insert(line.to_ascii_lowercase());
    }
    Ok(emails)
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
    fn from_config(config: &PolicyRouteConfig) -> Self {
        if let Some(prefix) = &config.path_prefix {
            return Self::Prefix(prefix.trim_end_matches('/').to_string());
        }
        if let Some(glob) = config.path_glob.as_deref().and_then(|g| {
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .ok()
        }) {
            return Self::Glob(glob.compile_matcher());
        }
        if let Some(re) = config.path_regex.as_deref().and_then(anchored) {
            return Self::Regex(re);
        }
        Self::Any
    }

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

/// A path regex as matched: anchored at both ends, whatever the operator wrote.
fn anchored(re: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{re})$")).ok()
}

#[derive(Debug)]
struct Route {
    name: String,
    host: HostMatch,
    path: PathMatch,
    methods: Vec<Method>,
    networks: Vec<IpNet>,
    /// `None`: public.
    who: Option<Who>,
}

impl Route {
    fn build(i: usize, config: &PolicyRouteConfig) -> Result<Self, ConfigError> {
        let key = format!("policy.routes[{i}]");
        let who = if config.public {
            None
        } else {
            Some(Who::new(
                &key,
                config.allow_any_user,
                &config.email_domains,
                &config.emails,
                config.emails_file.as_deref(),
                &config.groups,
            )?)
        };
        Ok(Self {
            name: config.name.clone().unwrap_or(key),
            host: config
                .host
                .as_deref()
                .map_or(HostMatch::Any, HostMatch::parse),
            path: PathMatch::from_config(config),
            methods: methods(config),
            networks: config.allow_cidrs.iter().map(IpNet::trunc).collect(),
            who,
        })
    }

    fn matches(&self, host: &str, method: &Method, path: &str) -> bool {
        self.host.matches(host)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path)
    }
}

fn methods(config: &PolicyRouteConfig) -> Vec<Method> {
    config
        .methods
        .iter()
        .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        .collect()
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
    /// rules). Reads the emails files; an unreadable one is a configuration error.
    pub fn new(config: &PolicyConfig, dev_providers: Vec<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            global: Who::new(
                GLOBAL,
                config.allow_any_user,
                &config.email_domains,
                &config.emails,
                config.emails_file.as_deref(),
                &config.groups,
            )?,
            routes: config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| Route::build(i, r))
                .collect::<Result<_, _>>()?,
            allow_unverified_email: config.allow_unverified_email,
            dev_providers,
        })
    }

    /// Which rule covers a request (normalized `path`, `host` without port) from `client`.
    pub fn access(&self, host: &str, method: &Method, path: &str, client: IpAddr) -> Access<'_> {
        match self.routes.iter().find(|r| r.matches(host, method, path)) {
            Some(route) if route.who.is_none() => Access::Public { rule: &route.name },
            Some(route)
                if !route.networks.is_empty() && {
                    let client = client.to_canonical();
                    route.networks.iter().any(|net| net.contains(&client))
                } =>
            {
                Access::Network { rule: &route.name }
            }
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

/// Mistakes in a valid policy that `check-config` points out: routes that an earlier route
/// shadows entirely, and path patterns that match no path.
pub fn lint(config: &PolicyConfig) -> Vec<Issue> {
    let mut found = Vec::new();
    let name = |i: usize| {
        config.routes[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("policy.routes[{i}]"))
    };
    for (j, later) in config.routes.iter().enumerate() {
        let key = format!("policy.routes[{j}]");
        if let Some(i) = (0..j).find(|&i| covers(&config.routes[i], later)) {
            found.push(Issue {
                key: key.clone(),
                message: format!(
                    "unreachable: {} comes first and matches every request this route would",
                    name(i)
                ),
            });
        }
        if let Some(re) = &later.path_regex
            && let Some(why) = regex_matches_no_path(re)
        {
            found.push(Issue {
                key: format!("{key}.path_regex"),
                message: why.to_string(),
            });
        }
        if let Some(glob) = &later.path_glob
            && !(glob.starts_with('/') || glob.starts_with('*') || glob.starts_with('{'))
        {
            found.push(Issue {
                key: format!("{key}.path_glob"),
                message: "matches no path: paths start with '/'".into(),
            });
        }
    }
    found
}

/// True if every request `later` matches is matched by `earlier` (judged conservatively:
/// only prefixes and catch-alls are compared).
fn covers(earlier: &PolicyRouteConfig, later: &PolicyRouteConfig) -> bool {
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => {
            let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
            a == b
                || a.strip_prefix("*.").is_some_and(|parent| {
                    b.strip_suffix(parent)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
                })
        }
    };
    let (earlier_methods, later_methods) = (methods(earlier), methods(later));
    let method = earlier_methods.is_empty()
        || (!later_methods.is_empty() && later_methods.iter().all(|m| earlier_methods.contains(m)));
    let earlier_path = PathMatch::from_config(earlier);
    let path = match (&earlier_path, PathMatch::from_config(later)) {
        (PathMatch::Any, _) => true,
        (PathMatch::Prefix(p), _) if p.is_empty() => true,
        (PathMatch::Prefix(_), PathMatch::Prefix(q)) => {
            earlier_path.matches(if q.is_empty() { "/" } else { &q })
        }
        _ => earlier.covers_everything(),
    };
    host && method && path
}

/// Why a path regex can match no normalized path, if it cannot.
fn regex_matches_no_path(re: &str) -> Option<&'static str> {
    let hir = regex_syntax::parse(&format!("^(?:{re})$")).ok()?;
    if hir.properties().minimum_len().is_none() {
        return Some("matches nothing at all");
    }
    // Every path starts with '/': a pattern whose every match starts otherwise is dead.
    let prefixes = regex_syntax::hir::literal::Extractor::new().extract(&hir);
    let literals = prefixes.literals()?;
    let dead = !literals.is_empty()
        && literals
            .iter()
            .all(|lit| lit.as_bytes().first().is_some_and(|&b| b != b'/'));
    dead.then_some("matches no path: paths start with '/'")
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
            sid: None,
            memo: Default::default(),
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
        Policy::new(&config.policy, Vec::new()).expect("builds")
    }

    /// The rule deciding a raw request path, after normalization as the pipeline does it.
    fn decide(policy: &Policy, host: &str, method: &str, raw: &str) -> String {
        let path = normalize(raw).expect("normalizes");
        let client = IpAddr::from([192, 0, 2, 1]);
        match policy.access(
            host,
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &path,
            client,
        ) {
            Access::Public { rule } => format!("public {rule}"),
            Access::SignedIn { rule } => rule.to_string(),
            Access::Network { rule } => format!("network {rule}"),
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

    #[test]
    fn emails_files_are_parsed_strictly() {
        let list = parse_emails("# team\n\n  Alice@Example.com \nbob@example.org\n").unwrap();
        assert!(list.contains("alice@example.com") && list.contains("bob@example.org"));
        assert_eq!(list.len(), 2);
        for bad in [
            "alice",
            "@example.com",
            "alice@localhost",
            "a b@example.com",
        ] {
            let err = parse_emails(&format!("ok@example.com\n{bad}\n")).unwrap_err();
            assert!(err.starts_with("line 2:"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_emails_file_is_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emails");
        std::fs::write(&path, "alice@example.com\n").unwrap();
        let file = EmailsFile::open(&path).unwrap();
        assert!(file.contains("alice@example.com") && !file.contains("bob@example.com"));
        std::fs::write(&path, "bob@example.com\n# longer than before\n").unwrap();
        // Not before the recheck interval...
        assert!(file.contains("alice@example.com"));
        file.state.write().unwrap().checked -= EMAILS_FILE_RECHECK;
        assert!(file.contains("bob@example.com") && !file.contains("alice@example.com"));
        // A broken version keeps the last good list.
        std::fs::write(&path, "carol@example.com\nnot-an-address\n").unwrap();
        file.state.write().unwrap().checked -= EMAILS_FILE_RECHECK;
        assert!(file.contains("bob@example.com") && !file.contains("carol@example.com"));
        // So does a deleted file.
        std::fs::remove_file(&path).unwrap();
        file.state.write().unwrap().checked -= EMAILS_FILE_RECHECK;
        assert!(file.contains("bob@example.com"));
        assert!(EmailsFile::open(&path).is_err());
    }

    #[test]
    fn client_networks_decide_only_their_route() {
        let config = Config::from_toml(
            r#"
            [upstreams.web]
            url = "http://a"
            [policy]
            email_domains = ["example.com"]
            [[policy.routes]]
            name = "metrics"
            path_prefix = "/metrics"
            allow_cidrs = ["10.0.0.0/8", "2001:db8::/32"]
            "#,
        )
        .expect("valid");
        let p = Policy::new(&config.policy, Vec::new()).expect("builds");
        let get = Method::GET;
        let at = |ip: &str, path: &str| p.access("h", &get, path, ip.parse().unwrap());
        assert_eq!(
            at("10.9.8.7", "/metrics"),
            Access::Network { rule: "metrics" }
        );
        assert_eq!(
            at("::ffff:10.9.8.7", "/metrics"),
            Access::Network { rule: "metrics" }
        );
        assert_eq!(
            at("2001:db8::1", "/metrics/x"),
            Access::Network { rule: "metrics" }
        );
        assert_eq!(
            at("192.0.2.1", "/metrics"),
            Access::SignedIn { rule: "metrics" }
        );
        assert_eq!(
            at("10.9.8.7", "/admin"),
            Access::SignedIn { rule: "policy" }
        );
        // Out of the network, the route admits nobody.
        let alice = user("alice@example.com", true, &[]);
        assert_eq!(p.admits("metrics", &alice), Err(Refusal::NotAllowed));
    }

    fn lints(routes: &str) -> Vec<String> {
        let config = Config::from_toml(&format!(
            "[upstreams.web]\nurl = \"http://a\"\n[policy]\nallow_any_user = true\n{routes}"
        ))
        .expect("valid");
        lint(&config.policy)
            .into_iter()
            .map(|i| format!("{}: {}", i.key, i.message))
            .collect()
    }

    #[test]
    fn lint_finds_shadowed_routes_and_dead_patterns() {
        let route = |body: &str| format!("[[policy.routes]]\n{body}\nallow_any_user = true\n");
        let shadowed = lints(
            &[
                route("name = \"api\"\npath_prefix = \"/api\""),
                route("path_prefix = \"/api/admin\""),
                route("path_prefix = \"/apix\""),
                route("host = \"*.example.com\"\nmethods = [\"GET\"]\npath_prefix = \"/docs\""),
                route("host = \"a.example.com\"\nmethods = [\"GET\"]\npath_prefix = \"/docs/x\""),
                route("host = \"a.example.com\"\npath_prefix = \"/docs/y\""),
                route("path_regex = \"[^\\\\s\\\\S]\""),
                route("path_regex = \"api/.*\""),
                route("path_regex = \"/(api|docs)/.*\""),
                route("path_glob = \"static/**\""),
                route("path_prefix = \"/\""),
                route("path_prefix = \"/later\""),
            ]
            .concat(),
        );
        assert_eq!(
            shadowed,
            [
                "policy.routes[1]: unreachable: api comes first and matches every request this route would",
                "policy.routes[4]: unreachable: policy.routes[3] comes first and matches every request this route would",
                "policy.routes[6].path_regex: matches nothing at all",
                "policy.routes[7].path_regex: matches no path: paths start with '/'",
                "policy.routes[9].path_glob: matches no path: paths start with '/'",
                "policy.routes[11]: unreachable: policy.routes[10] comes first and matches every request this route would",
            ]
        );
    }
}
