//! Who may pass the gate. Deny unless a rule allows: a signed-in user gets through only with a
//! verified email in an allowed domain, or when the operator has said that any signed-in user
//! may (`policy.allow_any_user`). Users of the development provider are listed by hand and pass.
//! Per-route rules, allowed emails, groups and GitHub orgs build on this.

use crate::config::PolicyConfig;
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
            Self::NotAllowed => "Your account is not allowed to use this site.",
        }
    }
}

/// The admission rules, built once from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    allow_any_user: bool,
    allow_unverified_email: bool,
    /// Lowercase; `*.example.com` entries are kept as `.example.com`.
    domains: Vec<String>,
    dev_providers: Vec<String>,
}

impl Policy {
    /// Rules from `policy`, with the ids of development providers (whose users always pass).
    pub fn new(config: &PolicyConfig, dev_providers: Vec<String>) -> Self {
        Self {
            allow_any_user: config.allow_any_user,
            allow_unverified_email: config.allow_unverified_email,
            domains: config
                .email_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase().replacen("*.", ".", 1))
                .collect(),
            dev_providers,
        }
    }

    /// Whether `session` may pass.
    pub fn admits(&self, session: &Session) -> Result<(), Refusal> {
        if !session.email_verified && !self.allow_unverified_email {
            return Err(Refusal::UnverifiedEmail);
        }
        if self.allow_any_user || self.dev_providers.contains(&session.provider) {
            return Ok(());
        }
        if email_domain_allowed(&session.email, &self.domains) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed)
        }
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
}
