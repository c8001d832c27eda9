//! Backstage's naming rules: entity names, namespaces and entity refs (`user:default/alice`),
//! and the template that turns a signed-in user into their entity name.
//!
//! An entity name is 1 to 63 characters of letters, digits, `-`, `_` and `.`, starting and
//! ending with a letter or digit (`@backstage/catalog-model`'s `isValidObjectName`); a
//! namespace is a DNS label (lowercase letters, digits and inner `-`).

use crate::session::Session;

const MAX_NAME: usize = 63;

/// Turns arbitrary text into a valid entity name: lowercase, other characters as `-`, runs
/// of separators collapsed, trimmed to letters or digits at both ends, at most 63 characters.
/// `None` if nothing is left.
pub fn normalize_name(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len().min(MAX_NAME));
    let mut pending: Option<char> = None;
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            if let Some(sep) = pending.take()
                && !out.is_empty()
            {
                out.push(sep);
            }
            out.push(c);
        } else {
            let sep = if matches!(c, '-' | '_' | '.') { c } else { '-' };
            // A run of separators keeps its first.
            pending.get_or_insert(sep);
        }
    }
    if out.len() > MAX_NAME {
        out.truncate(MAX_NAME);
        while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
            out.pop();
        }
    }
    (!out.is_empty()).then_some(out)
}

/// True if `name` is a valid entity name as it stands.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_NAME).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// True if `namespace` is a valid namespace (a DNS label).
pub fn valid_namespace(namespace: &str) -> bool {
    let bytes = namespace.as_bytes();
    (1..=MAX_NAME).contains(&bytes.len())
        && bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A full entity ref, `kind:namespace/name`.
pub struct EntityRef;

impl EntityRef {
    /// Reads `kind:namespace/name`, `namespace/name` or `name`, filling in `kind` and
    /// `namespace`; `None` unless every part is valid.
    pub fn parse(text: &str, kind: &str, namespace: &str) -> Option<String> {
        let (kind, rest) = match text.split_once(':') {
            Some((k, rest)) => (k, rest),
            None => (kind, text),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (namespace, rest),
        };
        let kind = kind.to_ascii_lowercase();
        let namespace = namespace.to_ascii_lowercase();
        let ok = !kind.is_empty()
            && kind.bytes().all(|b| b.is_ascii_alphabetic())
            && valid_namespace(&namespace)
            && valid_name(name);
        ok.then(|| format!("{kind}:{namespace}/{name}"))
    }
}

/// What a user name template is made of.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    EmailLocal,
    EmailDomain,
    Email,
    Username,
    Subject,
    Provider,
}

/// `identity.user_name`: text with `{email_local}`, `{email_domain}`, `{email}`,
/// `{username}`, `{subject}` and `{provider}`.
#[derive(Debug, Clone, PartialEq)]
pub struct NameTemplate(Vec<Part>);

impl NameTemplate {
    /// Parses a template; an unknown or unclosed placeholder is an error.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{template:?}: a '{{' is not closed"))?;
            parts.push(match &after[..close] {
                "email_local" => Part::EmailLocal,
                "email_domain" => Part::EmailDomain,
                "email" => Part::Email,
                "username" => Part::Username,
                "subject" => Part::Subject,
                "provider" => Part::Provider,
                other => {
                    return Err(format!(
                        "{{{other}}} is not a placeholder (email_local, email_domain, email, username, subject, provider)"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.iter().all(|p| matches!(p, Part::Text(_))) {
            return Err("names every user alike: use a placeholder such as {email_local}".into());
        }
        Ok(Self(parts))
    }

    /// The user's entity name; `None` when the parts it needs are missing.
    pub fn render(&self, session: &Session) -> Option<String> {
        let (local, domain) = session.email.rsplit_once('@').unwrap_or(("", ""));
        let mut out = String::new();
        for part in &self.0 {
            let value = match part {
                Part::Text(text) => text.as_str(),
                Part::EmailLocal => local,
                Part::EmailDomain => domain,
                Part::Email => session.email.as_str(),
                Part::Username => session.username.as_deref().unwrap_or_default(),
                Part::Subject => session.subject.as_str(),
                Part::Provider => session.provider.as_str(),
            };
            if value.is_empty() && !matches!(part, Part::Text(_)) {
                return None;
            }
            out.push_str(value);
        }
        normalize_name(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_to_backstage_rules() {
        let table = [
            ("alice", Some("alice")),
            ("Alice.Liddell", Some("alice.liddell")),
            ("jean-luc picard", Some("jean-luc-picard")),
            ("__x__", Some("x")),
            ("a..b--c", Some("a.b-c")),
            ("o'brien+tag", Some("o-brien-tag")),
            ("acme/platform", Some("acme-platform")),
            ("Zoë", Some("zo")),
            ("...", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(normalize_name(text).as_deref(), want, "{text}");
            if let Some(name) = want {
                assert!(valid_name(name), "{name}");
            }
        }
        let long = normalize_name(&format!("{}-x", "a".repeat(62))).unwrap();
        assert_eq!(long, "a".repeat(62));
        assert!(!valid_name("-a") && !valid_name("a-") && !valid_name(&"a".repeat(64)));
    }

    #[test]
    fn entity_refs_are_parsed_and_completed() {
        assert_eq!(
            EntityRef::parse("platform", "group", "default").as_deref(),
            Some("group:default/platform")
        );
        assert_eq!(
            EntityRef::parse("Group:Infra/sre-team", "group", "default").as_deref(),
            Some("group:infra/sre-team")
        );
        for bad in [
            "group:default/",
            "group:Def ault/x",
            ":default/x",
            "a/b/c",
            "x y",
        ] {
            assert_eq!(EntityRef::parse(bad, "group", "default"), None, "{bad}");
        }
    }

    #[test]
    fn templates_name_users() {
        let session = Session {
            sid: None,
            memo: Default::default(),
            subject: "12345".into(),
            email: "Alice.Liddell@Example.com".into(),
            email_verified: true,
            username: Some("aliddell".into()),
            name: None,
            groups: Vec::new(),
            provider: "github".into(),
            created_at: 0,
            refreshed_at: 0,
            expires_at: 0,
            tokens: None,
        };
        let render = |t: &str| NameTemplate::parse(t).unwrap().render(&session);
        assert_eq!(render("{email_local}").as_deref(), Some("alice.liddell"));
        assert_eq!(render("{username}").as_deref(), Some("aliddell"));
        assert_eq!(
            render("{provider}-{subject}").as_deref(),
            Some("github-12345")
        );
        assert_eq!(
            render("{email}").as_deref(),
            Some("alice.liddell-example.com")
        );
        let no_username = Session {
            username: None,
            ..session
        };
        assert_eq!(
            NameTemplate::parse("{username}")
                .unwrap()
                .render(&no_username),
            None
        );
        for bad in ["{nope}", "{email_local", "fixed"] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
