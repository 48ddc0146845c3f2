//! JSON Schema handling: an entity type's schema is checked against its meta-schema once, compiled
//! once, and then every resulting state is validated against the compiled form.

use serde_json::Value;

use super::{DomainError, State, Violation};

/// An entity type's schema, compiled and ready to validate states. Cheap to share behind an `Arc`.
pub struct CompiledSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledSchema")
    }
}

impl CompiledSchema {
    /// Checks `schema` against the JSON Schema meta-schema (draft from `$schema`, 2020-12 by default)
    /// and compiles it. `format` keywords are asserted, as users of an `email` field expect.
    pub fn compile(schema: &State) -> Result<Self, DomainError> {
        let doc = Value::Object(schema.clone());
        let meta = jsonschema::meta::validator_for(&doc).map_err(|e| {
            DomainError::InvalidSchema(vec![Violation {
                path: "/$schema".into(),
                message: e.to_string(),
            }])
        })?;
        let problems: Vec<Violation> = meta
            .iter_errors(&doc)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if !problems.is_empty() {
            return Err(DomainError::InvalidSchema(problems));
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&doc)
            .map_err(|e| {
                DomainError::InvalidSchema(vec![Violation {
                    path: e.instance_path().to_string(),
                    message: e.to_string(),
                }])
            })?;
        Ok(Self { validator })
    }

    /// Validates a state, returning one violation per failing location.
    pub fn validate(&self, entity_type: &str, state: &State) -> Result<(), DomainError> {
        // The validator reads a `Value`, so the state is cloned once. `is_valid` stops at the
        // first failure; only a failing state pays for collecting every violation.
        let doc = Value::Object(state.clone());
        if self.validator.is_valid(&doc) {
            return Ok(());
        }
        let violations = self
            .validator
            .iter_errors(&doc)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        Err(DomainError::SchemaViolation {
            entity_type: entity_type.to_string(),
            violations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    fn player() -> State {
        obj(json!({
            "type": "object",
            "properties": {
                "username": {"type": "string", "minLength": 3},
                "email": {"type": "string", "format": "email"},
                "score": {"type": "integer", "minimum": 0},
                "level": {"type": "integer", "minimum": 1}
            },
            "required": ["username"]
        }))
    }

    #[test]
    fn a_valid_state_passes() {
        let schema = CompiledSchema::compile(&player()).unwrap();
        let state = obj(json!({"username": "alice", "email": "a@example.com", "score": 150}));
        schema.validate("player_profile", &state).unwrap();
    }

    #[test]
    fn every_violating_path_is_named() {
        let schema = CompiledSchema::compile(&player()).unwrap();
        let state = obj(json!({"username": "al", "email": "not-an-email", "score": -1}));
        let err = schema.validate("player_profile", &state).unwrap_err();
        let paths: Vec<String> = err.violations().into_iter().map(|v| v.path).collect();
        for expected in ["/username", "/email", "/score"] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} missing in {paths:?}"
            );
        }
    }

    #[test]
    fn a_schema_that_breaks_the_meta_schema_is_rejected() {
        let err = CompiledSchema::compile(&obj(json!({"type": "bogus"}))).unwrap_err();
        assert!(matches!(err, DomainError::InvalidSchema(_)), "{err}");
        let err = CompiledSchema::compile(&obj(json!({"properties": {"a": {"minimum": "x"}}})))
            .unwrap_err();
        assert!(err.to_string().contains("minimum"), "{err}");
    }

    #[test]
    fn an_unknown_meta_schema_is_rejected_not_a_panic() {
        let err = CompiledSchema::compile(&obj(json!({"$schema": "https://example.com/nope"})))
            .unwrap_err();
        assert!(matches!(err, DomainError::InvalidSchema(_)), "{err}");
    }

    #[test]
    fn an_unresolvable_reference_is_rejected() {
        let err = CompiledSchema::compile(&obj(json!({"$ref": "https://example.com/s.json"})))
            .unwrap_err();
        assert!(matches!(err, DomainError::InvalidSchema(_)), "{err}");
    }
}
