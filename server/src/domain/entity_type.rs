//! Validated identifiers of the domain: entity type names, external ids and event types.

use super::DomainError;

/// Name of an entity type: `[a-z][a-z0-9_]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTypeName(String);

impl EntityTypeName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !first_ok || !rest_ok || raw.len() > 63 {
            return Err(DomainError::invalid(
                "name",
                format!(
                    "{} is not a valid entity type name: expected [a-z][a-z0-9_]{{0,62}}",
                    quoted(raw)
                ),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters of a rejected value quoted back in an error: enough to recognise it, never the
/// megabyte a hostile request may hold.
const QUOTED_CHARS: usize = 64;

/// `raw` quoted for an error message, cut after `QUOTED_CHARS` characters.
pub fn quoted(raw: &str) -> String {
    let mut chars = raw.chars();
    let head: String = chars.by_ref().take(QUOTED_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}... ({} bytes)", raw.len())
    } else {
        format!("{head:?}")
    }
}

/// The caller's identifier of an instance: 1 to 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        check_label("external_id", raw, 256)?;
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event's type, such as `ScoreIncreased`: 1 to 128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(String);

impl EventType {
    /// The type of every instance's version 1.
    pub const INSTANCE_CREATED: &'static str = "InstanceCreated";
    /// Recorded by ArchiveInstance; reserved, like the other lifecycle events.
    pub const INSTANCE_ARCHIVED: &'static str = "InstanceArchived";
    /// Recorded by RestoreInstance.
    pub const INSTANCE_RESTORED: &'static str = "InstanceRestored";
    /// Recorded by EraseInstance: the last event of an erased instance.
    pub const INSTANCE_ERASED: &'static str = "InstanceErased";
    /// Event types only the server records, never a client's ApplyEvent.
    pub const LIFECYCLE: [&'static str; 3] = [
        Self::INSTANCE_ARCHIVED,
        Self::INSTANCE_RESTORED,
        Self::INSTANCE_ERASED,
    ];

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        check_label("event_type", raw, 128)?;
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a client-supplied idempotency key: 1 to 128 characters, no control characters.
pub fn check_event_id(raw: &str) -> Result<(), DomainError> {
    check_label("event_id", raw, 128)
}

fn check_label(field: &str, raw: &str, max_chars: usize) -> Result<(), DomainError> {
    if raw.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if raw.chars().count() > max_chars {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_type_names_follow_the_pattern() {
        for ok in ["a", "player_profile", "x9", &"a".repeat(63)] {
            EntityTypeName::parse(ok).unwrap();
        }
        for bad in ["", "Player", "9a", "_a", "a-b", "a b", &"a".repeat(64), "é"] {
            assert!(EntityTypeName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejected_values_are_quoted_short() {
        assert_eq!(quoted("Player"), "\"Player\"");
        let long = quoted(&"X".repeat(1 << 20));
        assert!(
            long.len() < 100 && long.ends_with("(1048576 bytes)"),
            "{long}"
        );
        let err = EntityTypeName::parse(&"X".repeat(1 << 20)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn labels_reject_empty_long_and_control_characters() {
        ExternalId::parse("player-001").unwrap();
        assert!(ExternalId::parse("").is_err());
        assert!(ExternalId::parse(&"x".repeat(257)).is_err());
        assert!(EventType::parse("Score\nIncreased").is_err());
        assert!(check_event_id(&"e".repeat(129)).is_err());
        check_event_id("retry-1").unwrap();
    }
}
