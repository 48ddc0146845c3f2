//! Declared event types: what a type's schema version says about each event type — a payload
//! schema, a default mode, a CEL transform and CEL guards — and a `strict` flag refusing
//! undeclared event types. Declarations are compiled once per schema version and are then pure
//! values; [`Declared::decide`] runs them on one event.
//!
//! Semantics, in order, for an event of a declared type:
//! 1. the payload is validated against `payload_schema` (INVALID_ARGUMENT naming each path);
//! 2. every guard is evaluated over the state *before* the event; any false one refuses the event
//!    (FAILED_PRECONDITION naming each failing guard by its message and expression);
//! 3. the transform, when declared, yields the fields to set: a JSON merge patch (RFC 7386,
//!    `null` removes a field) applied to the state. That patch is the change recorded with the
//!    event, beside the payload the client sent, and history folds the recorded change — so a
//!    later transform never rewrites a past state. Without a transform the payload is applied in
//!    the declared mode (or the request's);
//! 4. the resulting state is validated against the state's schema, as for every event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cel::{CompileError, Expression, Fields, Inputs, Yields};
use super::validate::CompiledSchema;
use super::{ApplyMode, DomainError, State, Violation};

/// Most event types one schema version declares.
pub const MAX_EVENT_TYPES: usize = 64;
/// Most guards per event type.
pub const MAX_GUARDS: usize = 16;
/// Longest guard message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 256;

/// The stored form of a schema version's declarations (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclarationsDoc {
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub event_types: Vec<EventTypeDoc>,
}

/// The stored form of one declared event type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeDoc {
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<State>,
    /// `merge_patch`, `replace` or `json_patch`; None: the request's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<GuardDoc>,
}

/// The stored form of one guard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardDoc {
    pub expression: String,
    #[serde(default)]
    pub message: String,
}

impl DeclarationsDoc {
    pub fn to_json(&self) -> State {
        match serde_json::to_value(self) {
            Ok(Value::Object(o)) => o,
            _ => State::new(),
        }
    }

    pub fn from_json(doc: &State) -> Result<Self, DomainError> {
        serde_json::from_value(Value::Object(doc.clone()))
            .map_err(|e| DomainError::invalid("declarations", e.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        !self.strict && self.event_types.is_empty()
    }
}

/// A schema version's declarations, compiled.
#[derive(Debug, Default)]
pub struct Declarations {
    pub strict: bool,
    pub types: BTreeMap<String, Declared>,
}

/// One declared event type, compiled.
#[derive(Debug)]
pub struct Declared {
    pub payload_schema: Option<CompiledSchema>,
    pub mode: Option<ApplyMode>,
    pub transform: Option<Expression>,
    pub guards: Vec<Guard>,
}

#[derive(Debug)]
pub struct Guard {
    pub expression: Expression,
    pub message: String,
}

/// A guard's outcome, as a dry run reports every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardOutcome {
    pub expression: String,
    pub message: String,
    pub passed: bool,
}

/// What a declared event type decided for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The mode to apply the payload in when there is no transform.
    pub mode: Option<ApplyMode>,
    /// The transform's fields to set: the change to record and apply as a merge patch.
    pub change: Option<State>,
    pub guards: Vec<GuardOutcome>,
}

fn at(field: String, e: CompileError) -> DomainError {
    DomainError::invalid(field, e.to_string())
}

impl Declarations {
    /// Compiles and checks every declaration; the first refusal names the event type, the
    /// expression and its position.
    pub fn compile(doc: &DeclarationsDoc) -> Result<Self, DomainError> {
        if doc.event_types.len() > MAX_EVENT_TYPES {
            return Err(DomainError::invalid(
                "event_types",
                format!(
                    "{} event types declared, over the limit of {MAX_EVENT_TYPES}",
                    doc.event_types.len()
                ),
            ));
        }
        let mut types = BTreeMap::new();
        for d in &doc.event_types {
            super::EventType::parse(&d.event_type)?;
            let name = &d.event_type;
            if super::EventType::LIFECYCLE.contains(&name.as_str())
                || name == super::EventType::INSTANCE_CREATED
            {
                return Err(DomainError::invalid(
                    "event_types",
                    format!("{name:?} is recorded by the server and cannot be declared"),
                ));
            }
            let payload_schema = match &d.payload_schema {
                Some(schema) => Some(CompiledSchema::compile(schema).map_err(|e| {
                    DomainError::invalid(
                        format!("event_types[{name}].payload_schema"),
                        e.to_string(),
                    )
                })?),
                None => None,
            };
            let mode = match d.mode.as_deref() {
                None | Some("") => None,
                Some(m) => Some(
                    ApplyMode::parse(m)
                        .filter(|m| *m != ApplyMode::Transformed)
                        .ok_or_else(|| {
                            DomainError::invalid(
                                format!("event_types[{name}].mode"),
                                format!("{m:?} is not merge_patch, replace or json_patch"),
                            )
                        })?,
                ),
            };
            let fields = d
                .payload_schema
                .as_ref()
                .map_or(Fields::Open, |schema| payload_fields(schema, 0));
            let transform = match d.transform.as_deref() {
                None | Some("") => None,
                Some(source) => Some(
                    Expression::compile_for(source, Yields::Fields, &fields)
                        .map_err(|e| at(format!("event_types[{name}].transform"), e))?,
                ),
            };
            if transform.is_some() && mode.is_some_and(|m| m != ApplyMode::MergePatch) {
                return Err(DomainError::invalid(
                    format!("event_types[{name}].mode"),
                    "a transform's fields are applied as a merge patch: declare no other mode",
                ));
            }
            if d.guards.len() > MAX_GUARDS {
                return Err(DomainError::invalid(
                    format!("event_types[{name}].guards"),
                    format!("{} guards, over the limit of {MAX_GUARDS}", d.guards.len()),
                ));
            }
            let mut guards = Vec::with_capacity(d.guards.len());
            for (i, g) in d.guards.iter().enumerate() {
                if g.message.chars().count() > MAX_MESSAGE_CHARS || g.message.contains('\0') {
                    return Err(DomainError::invalid(
                        format!("event_types[{name}].guards[{i}].message"),
                        format!("must be at most {MAX_MESSAGE_CHARS} characters, without NUL"),
                    ));
                }
                let expression = Expression::compile_for(&g.expression, Yields::Bool, &fields)
                    .map_err(|e| at(format!("event_types[{name}].guards[{i}].expression"), e))?;
                guards.push(Guard {
                    expression,
                    message: g.message.clone(),
                });
            }
            let declared = Declared {
                payload_schema,
                mode,
                transform,
                guards,
            };
            if types.insert(name.clone(), declared).is_some() {
                return Err(DomainError::invalid(
                    "event_types",
                    format!("{name:?} is declared twice"),
                ));
            }
        }
        Ok(Self {
            strict: doc.strict,
            types,
        })
    }

    /// The declaration of `event_type`: None when undeclared and the type is not strict;
    /// INVALID_ARGUMENT naming the declared ones when strict.
    pub fn lookup(&self, event_type: &str) -> Result<Option<&Declared>, DomainError> {
        match self.types.get(event_type) {
            Some(d) => Ok(Some(d)),
            None if self.strict => Err(DomainError::invalid(
                "event_type",
                format!(
                    "{} is not declared by this strict entity type; declared: {}",
                    super::entity_type::quoted(event_type),
                    self.types.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
            None => Ok(None),
        }
    }
}

impl Declared {
    /// Runs the declaration on one event: payload schema, then every guard over the state before
    /// it (all of them, so a refusal names every failing one), then the transform.
    pub fn decide(
        &self,
        entity_type: &str,
        event_type: &str,
        inputs: &Inputs<'_>,
    ) -> Result<Decided, DomainError> {
        if let Some(schema) = &self.payload_schema {
            schema.validate(entity_type, inputs.payload).map_err(|e| {
                DomainError::PayloadViolation {
                    event_type: event_type.to_string(),
                    violations: e
                        .violations()
                        .into_iter()
                        .map(|v| Violation {
                            path: format!("payload{}", v.path),
                            message: v.message,
                        })
                        .collect(),
                }
            })?;
        }
        let mut outcomes = Vec::with_capacity(self.guards.len());
        for g in &self.guards {
            let passed = g.expression.eval_bool(inputs).map_err(|e| {
                DomainError::NotNow(format!(
                    "guard {} of {event_type} could not be evaluated: {e}",
                    describe(g)
                ))
            })?;
            outcomes.push(GuardOutcome {
                expression: g.expression.source().to_string(),
                message: g.message.clone(),
                passed,
            });
        }
        let failed: Vec<String> = self
            .guards
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| !o.passed)
            .map(|(g, _)| describe(g))
            .collect();
        if !failed.is_empty() {
            return Err(DomainError::GuardFailed {
                event_type: event_type.to_string(),
                failed,
            });
        }
        let change = match &self.transform {
            Some(t) => Some(t.eval_fields(inputs).map_err(|e| {
                DomainError::NotNow(format!(
                    "the transform of {event_type} failed on this state and payload: {e}"
                ))
            })?),
            None => None,
        };
        Ok(Decided {
            mode: self.mode,
            change,
            guards: outcomes,
        })
    }
}

/// How deep [`payload_fields`] follows nested `properties`.
const MAX_FIELDS_DEPTH: usize = 8;

/// The fields a payload schema closes: an object schema with `additionalProperties: false` can
/// hold only its `properties`. Conservative: `$ref` (which in draft 7 overrides its siblings) or
/// `patternProperties` (which admit more names) leave the object open, and so does any other
/// spelling of "nothing more" (`additionalProperties: {"not": {}}`).
fn payload_fields(schema: &State, depth: usize) -> Fields {
    if depth > MAX_FIELDS_DEPTH
        || schema.get("additionalProperties") != Some(&Value::Bool(false))
        || schema.contains_key("$ref")
        || schema.contains_key("patternProperties")
    {
        return Fields::Open;
    }
    let none = State::new();
    let properties = match schema.get("properties") {
        None => &none,
        Some(Value::Object(p)) => p,
        Some(_) => return Fields::Open,
    };
    Fields::Closed(
        properties
            .iter()
            .map(|(name, sub)| {
                let sub = match sub {
                    Value::Object(sub) => payload_fields(sub, depth + 1),
                    _ => Fields::Open,
                };
                (name.clone(), sub)
            })
            .collect(),
    )
}

fn describe(g: &Guard) -> String {
    if g.message.is_empty() {
        format!("`{}`", g.expression.source())
    } else {
        format!("{:?} (`{}`)", g.message, g.expression.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    fn account() -> Declarations {
        let doc: DeclarationsDoc = serde_json::from_value(json!({
            "strict": true,
            "event_types": [
                {"event_type": "Deposited",
                 "payload_schema": {"type": "object", "required": ["amount"],
                                    "properties": {"amount": {"type": "integer", "minimum": 1}}},
                 "transform": "{\"balance\": state.balance + payload.amount}"},
                {"event_type": "Withdrawn",
                 "payload_schema": {"type": "object", "required": ["amount"],
                                    "properties": {"amount": {"type": "integer", "minimum": 1}}},
                 "transform": "{\"balance\": state.balance - payload.amount}",
                 "guards": [{"expression": "state.balance >= payload.amount",
                             "message": "insufficient funds"}]}
            ]
        }))
        .unwrap();
        Declarations::compile(&doc).unwrap()
    }

    fn decide(
        d: &Declarations,
        t: &str,
        state: Value,
        payload: Value,
    ) -> Result<Decided, DomainError> {
        let (state, payload, empty) = (obj(state), obj(payload), State::new());
        d.lookup(t)?.unwrap().decide(
            "account",
            t,
            &Inputs {
                state: &state,
                payload: &payload,
                metadata: &empty,
                event: &empty,
            },
        )
    }

    #[test]
    fn given_a_balance_when_withdrawing_then_the_guard_decides() {
        let d = account();
        let ok = decide(
            &d,
            "Withdrawn",
            json!({"balance": 10}),
            json!({"amount": 10}),
        )
        .unwrap();
        assert_eq!(ok.change, Some(obj(json!({"balance": 0}))));
        let err = decide(
            &d,
            "Withdrawn",
            json!({"balance": 10}),
            json!({"amount": 11}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("insufficient funds"), "{err}");
        let err = decide(
            &d,
            "Withdrawn",
            json!({"balance": 10}),
            json!({"amount": "x"}),
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::PayloadViolation { .. }), "{err}");
    }

    #[test]
    fn strict_refuses_undeclared_types_naming_the_known_ones() {
        let err = account().lookup("Closed").unwrap_err();
        assert!(err.to_string().contains("Deposited, Withdrawn"), "{err}");
    }

    #[test]
    fn counts_names_and_modes_are_bounded_when_declared() {
        let refused = |doc: Value, expect: &str| {
            let doc: DeclarationsDoc = serde_json::from_value(doc).unwrap();
            let err = Declarations::compile(&doc).unwrap_err();
            assert!(err.to_string().contains(expect), "{expect}: {err}");
        };
        let many: Vec<Value> = (0..=MAX_EVENT_TYPES)
            .map(|i| json!({"event_type": format!("E{i}")}))
            .collect();
        refused(json!({"event_types": many}), "over the limit");
        let guards: Vec<Value> = (0..=MAX_GUARDS)
            .map(|_| json!({"expression": "true"}))
            .collect();
        refused(
            json!({"event_types": [{"event_type": "E", "guards": guards}]}),
            "guards",
        );
        refused(
            json!({"event_types": [{"event_type": "E"}, {"event_type": "E"}]}),
            "twice",
        );
        refused(
            json!({"event_types": [{"event_type": "InstanceErased"}]}),
            "recorded by the server",
        );
        refused(
            json!({"event_types": [{"event_type": "E", "mode": "json_patch",
                                    "transform": "{\"a\": 1}"}]}),
            "merge patch",
        );
        refused(
            json!({"event_types": [{"event_type": "E", "mode": "transformed"}]}),
            "not merge_patch",
        );
        refused(
            json!({"event_types": [{"event_type": "E", "payload_schema": {"type": "bogus"}}]}),
            "payload_schema",
        );
        assert!(
            serde_json::from_value::<DeclarationsDoc>(json!({"strict": true, "x": 1})).is_err()
        );
    }

    #[test]
    fn only_additional_properties_false_closes_a_payload() {
        let fields = |schema: Value| payload_fields(&obj(schema), 0);
        let closed = fields(json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "amount": {"type": "integer"},
                "to": {"type": "object", "additionalProperties": false,
                       "properties": {"iban": {"type": "string"}}},
                "note": {"type": "object"}
            }
        }));
        let Fields::Closed(top) = &closed else {
            panic!("{closed:?}")
        };
        assert_eq!(
            top.keys().map(String::as_str).collect::<Vec<_>>(),
            ["amount", "note", "to"]
        );
        assert!(matches!(&top["to"], Fields::Closed(f) if f.contains_key("iban")));
        assert_eq!(top["note"], Fields::Open);
        for open in [
            json!({"properties": {"a": {}}}),
            json!({"additionalProperties": true, "properties": {"a": {}}}),
            json!({"additionalProperties": {"not": {}}, "properties": {"a": {}}}),
            json!({"additionalProperties": false, "patternProperties": {"^x": {}}}),
            json!({"additionalProperties": false, "$ref": "#/definitions/p"}),
            json!({"additionalProperties": false, "properties": true}),
        ] {
            assert_eq!(fields(open.clone()), Fields::Open, "{open}");
        }
    }

    #[test]
    fn a_read_of_an_undeclared_payload_field_is_refused_when_declared() {
        let doc: DeclarationsDoc = serde_json::from_value(json!({
            "event_types": [{"event_type": "Withdrawn",
                             "payload_schema": {"type": "object", "additionalProperties": false,
                                                "properties": {"amount": {"type": "integer"}}},
                             "guards": [{"expression": "state.balance >= payload.amout"}]}]
        }))
        .unwrap();
        let err = Declarations::compile(&doc).unwrap_err().to_string();
        assert!(
            err.contains("event_types[Withdrawn].guards[0].expression"),
            "{err}"
        );
        assert!(err.contains("line 1, column 25"), "{err}");
        assert!(err.contains("\"amout\""), "{err}");
    }

    #[test]
    fn a_bad_expression_names_its_event_type_and_position() {
        let doc: DeclarationsDoc = serde_json::from_value(json!({
            "event_types": [{"event_type": "X", "guards": [{"expression": "state.a >"}]}]
        }))
        .unwrap();
        let err = Declarations::compile(&doc).unwrap_err();
        assert!(
            err.to_string()
                .contains("event_types[X].guards[0].expression"),
            "{err}"
        );
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
