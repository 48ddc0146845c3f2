//! Who is calling and what they may do: a [`Principal`] with its [`Scope`]s, and the one rule
//! that says whether a scope covers an access to an entity type.
//!
//! Scopes are `read`, `write` and `admin`, each optionally narrowed to one entity type
//! (`write:player_profile`). Each level includes the ones below it: `write` includes `read`
//! (a write answers with the resulting state, so a writer reads anyway) and `admin` includes
//! both. Checking is pure; credentials are turned into principals by the gRPC layer.

use std::fmt;

/// What a call does to an entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Get/List, QueryService, AnalyticsService, Subscribe.
    Read,
    /// CreateInstance, ApplyEvent, ApplyEvents.
    Write,
    /// Entity-type changes (CreateEntityType) and, later, lifecycle.
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One granted scope: a level, over every entity type or over one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub access: Access,
    /// None: every entity type.
    pub entity_type: Option<String>,
}

impl Scope {
    /// `read`, `write`, `admin`, optionally followed by `:<entity type name>`. None for anything
    /// else (a JWT carries other scopes too, such as `openid`; the caller decides whether an
    /// unknown scope is an error).
    pub fn parse(text: &str) -> Option<Scope> {
        let (level, narrowed) = match text.split_once(':') {
            Some((level, name)) => (level, Some(name)),
            None => (text, None),
        };
        let access = match level {
            "read" => Access::Read,
            "write" => Access::Write,
            "admin" => Access::Admin,
            _ => return None,
        };
        let entity_type = match narrowed {
            None => None,
            Some(name) => Some(
                crate::domain::EntityTypeName::parse(name)
                    .ok()?
                    .as_str()
                    .to_string(),
            ),
        };
        Some(Scope {
            access,
            entity_type,
        })
    }

    /// Whether this scope allows `access` to the type named `entity_type`.
    pub fn allows(&self, access: Access, entity_type: &str) -> bool {
        self.access >= access && self.entity_type.as_deref().is_none_or(|t| t == entity_type)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entity_type {
            Some(t) => write!(f, "{}:{t}", self.access),
            None => write!(f, "{}", self.access),
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// Authentication is not configured: every caller is this one, allowed everything.
    Anonymous,
    /// A key of AUTH_API_KEYS_FILE.
    ApiKey,
    /// A JWT, by its subject.
    Jwt,
    /// A client certificate (mutual TLS) whose subject an entry of AUTH_API_KEYS_FILE names.
    ClientCertificate,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key's (or client certificate entry's) name or the JWT's subject; empty for the
    /// anonymous principal.
    pub name: String,
    pub kind: PrincipalKind,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// The caller of a server without authentication: allowed everything, recorded as nobody.
    pub fn anonymous() -> Self {
        Self {
            name: String::new(),
            kind: PrincipalKind::Anonymous,
            scopes: vec![Scope {
                access: Access::Admin,
                entity_type: None,
            }],
        }
    }

    /// Whether some scope allows `access` to the type named `entity_type`.
    pub fn allows(&self, access: Access, entity_type: &str) -> bool {
        self.scopes.iter().any(|s| s.allows(access, entity_type))
    }

    /// Whether `access` is allowed to every entity type (an unnarrowed scope of that level).
    pub fn allows_every(&self, access: Access) -> bool {
        self.scopes
            .iter()
            .any(|s| s.access >= access && s.entity_type.is_none())
    }

    /// Whether `access` is allowed to at least one entity type.
    pub fn allows_some(&self, access: Access) -> bool {
        self.scopes.iter().any(|s| s.access >= access)
    }

    /// The entity types `access` is allowed to, when it is not allowed to every one: sorted,
    /// without duplicates. None when [`Principal::allows_every`].
    pub fn narrowed_to(&self, access: Access) -> Option<Vec<String>> {
        if self.allows_every(access) {
            return None;
        }
        let mut names: Vec<String> = self
            .scopes
            .iter()
            .filter(|s| s.access >= access)
            .filter_map(|s| s.entity_type.clone())
            .collect();
        names.sort();
        names.dedup();
        Some(names)
    }

    /// What an event records as its writer: the name (empty for the anonymous principal).
    pub fn recorded_as(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            name: "p".into(),
            kind: PrincipalKind::ApiKey,
            scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
        }
    }

    #[test]
    fn scopes_parse_with_an_optional_entity_type() {
        assert_eq!(
            Scope::parse("write:player_profile"),
            Some(Scope {
                access: Access::Write,
                entity_type: Some("player_profile".into())
            })
        );
        assert_eq!(Scope::parse("read").unwrap().entity_type, None);
        for bad in [
            "",
            "openid",
            "read:",
            "read:Bad-Name",
            "delete",
            "write:a:b",
            "READ",
        ] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Scope::parse("admin:orders").unwrap().to_string(),
            "admin:orders"
        );
    }

    #[test]
    fn each_level_includes_the_ones_below_and_narrowing_holds() {
        let p = principal(&["write:orders", "read:players"]);
        assert!(p.allows(Access::Write, "orders"));
        assert!(p.allows(Access::Read, "orders"));
        assert!(!p.allows(Access::Admin, "orders"));
        assert!(!p.allows(Access::Write, "players"));
        assert!(p.allows(Access::Read, "players"));
        assert!(!p.allows(Access::Read, "player_profile"));
        assert!(!p.allows_every(Access::Read));
        assert!(p.allows_some(Access::Write));
        assert!(!p.allows_some(Access::Admin));
        assert_eq!(
            p.narrowed_to(Access::Read),
            Some(vec!["orders".to_string(), "players".to_string()])
        );
        assert_eq!(
            p.narrowed_to(Access::Write),
            Some(vec!["orders".to_string()])
        );

        let reader = principal(&["read"]);
        assert!(reader.allows(Access::Read, "anything"));
        assert!(!reader.allows(Access::Write, "anything"));
        assert_eq!(reader.narrowed_to(Access::Read), None);

        let anonymous = Principal::anonymous();
        assert!(anonymous.allows_every(Access::Admin));
        assert_eq!(anonymous.recorded_as(), "");
        assert!(!principal(&[]).allows_some(Access::Read));
    }
}
