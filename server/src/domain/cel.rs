//! CEL expressions (cel-rust) for declared event types: compiled and checked once, when a type
//! declares them, then evaluated as pure values over JSON (no I/O, no clock).
//!
//! A compiled [`Expression`] is safe by construction:
//! - its source is at most [`MAX_SOURCE_BYTES`] bytes, parsed with a recursion limit of
//!   [`MAX_NESTING`], and its syntax tree has at most [`MAX_NODES`] nodes;
//! - comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`) are refused: they are
//!   the only way CEL loops, and nested ones cost the product of their lists' sizes. Without them
//!   every node is evaluated at most once, so evaluation time is linear in the tree and the data;
//! - it names at most [`MAX_REFERENCES`] variables, only `state`, `payload`, `metadata` and
//!   `event`, and calls only the functions of [`FUNCTIONS`]. Memory is then bounded too: a value
//!   an expression builds is made of at most [`MAX_REFERENCES`] copies of its inputs (a
//!   concatenation cannot feed itself without a loop), and the result is measured against the
//!   state limits before it is used.
//!
//! cel-rust has no type checker, so the declare-time checks stop at what the syntax tree proves:
//! beside the names above, a field of `payload` that its payload schema closes
//! ([`Fields::Closed`], from `additionalProperties: false`) and does not list is refused, since
//! reading it would fail on every payload the schema accepts. Nothing else about types is
//! inferred, so no expression that can evaluate is refused.
//!
//! Errors name the position (line and column) of what is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::{Number, Value};

use super::State;

/// Longest source of one expression.
pub const MAX_SOURCE_BYTES: usize = 2048;
/// Deepest nesting the parser accepts (parentheses, calls, operators).
pub const MAX_NESTING: u16 = 24;
/// Most syntax tree nodes of one expression.
pub const MAX_NODES: usize = 256;
/// Most references to the variables of one expression.
pub const MAX_REFERENCES: usize = 16;

/// The variables an expression may name.
pub const VARIABLES: [&str; 4] = ["state", "payload", "metadata", "event"];

/// The functions an expression may call: CEL's operators and standard functions that run in
/// time linear in their arguments. The comprehension macros are not among them.
pub const FUNCTIONS: &[&str] = &[
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::SUBSTRACT,
    operators::ADD,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::GREATER_EQUALS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::LESS,
    operators::NEGATE,
    operators::INDEX,
    operators::IN,
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "dyn",
];

const COMPREHENSIONS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];

/// The one environment every expression runs in: the standard library, built once.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// What an expression must yield.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yields {
    /// A guard: a boolean.
    Bool,
    /// A transform: a map literal of the fields to set (its keys string literals).
    Fields,
}

/// What an expression may read of a value's fields, as far as a schema tells at declare time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fields {
    /// Any field may be there (or the schema does not say).
    #[default]
    Open,
    /// Only these fields can be there (`additionalProperties: false`), each with what is known
    /// of its own fields.
    Closed(BTreeMap<String, Fields>),
}

/// An expression refused when declared: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// 1-based line and column, when known.
    pub position: Option<(u32, u32)>,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "line {line}, column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A compiled, checked expression: a pure value, shared between threads.
pub struct Expression {
    source: String,
    program: Program,
    /// Which of [`VARIABLES`] it names, so evaluation converts only those.
    uses: [bool; 4],
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

/// The values an expression is evaluated over.
pub struct Inputs<'a> {
    pub state: &'a State,
    pub payload: &'a State,
    pub metadata: &'a State,
    pub event: &'a State,
}

impl Expression {
    /// Parses and checks `source`; see the module's documentation for what is refused.
    pub fn compile(source: &str, yields: Yields) -> Result<Self, CompileError> {
        Self::compile_for(source, yields, &Fields::Open)
    }

    /// As [`Expression::compile`], also refusing a read of a field `payload` cannot have.
    pub fn compile_for(
        source: &str,
        yields: Yields,
        payload: &Fields,
    ) -> Result<Self, CompileError> {
        let refuse = |position, message: String| CompileError { position, message };
        if source.trim().is_empty() {
            return Err(refuse(None, "is empty".into()));
        }
        if source.len() > MAX_SOURCE_BYTES {
            return Err(refuse(
                None,
                format!(
                    "is {} bytes, over the limit of {MAX_SOURCE_BYTES}",
                    source.len()
                ),
            ));
        }
        if source.contains('\0') {
            return Err(refuse(None, "contains a NUL character".into()));
        }
        let parsed = ENV
            .parser()
            .max_recursion_depth(MAX_NESTING)
            .parse_with_source_info(source);
        let (expr, info) = match parsed {
            Ok(parsed) => parsed,
            Err(errors) => {
                let first = errors.errors.first();
                let position = first.and_then(|e| {
                    let (line, column) = e.pos;
                    (line > 0 && column >= 0).then(|| (line as u32, column as u32 + 1))
                });
                let message = first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| "does not parse".into());
                return Err(refuse(position, message));
            }
        };
        let mut check = Check {
            nodes: 0,
            references: 0,
            uses: [false; 4],
            payload,
            refused: None,
        };
        check.walk(&expr);
        // The parser keeps each node's offsets (in characters): turned into a line and column
        // here, never slicing the source (an offset is no byte boundary).
        let at = |id: u64| {
            info.offset_for(id).map(|(start, _)| {
                let before: String = source.chars().take(start as usize).collect();
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                (line as u32, column as u32)
            })
        };
        if let Some((id, message)) = check.refused {
            return Err(refuse(at(id), message));
        }
        if check.nodes > MAX_NODES {
            return Err(refuse(
                None,
                format!(
                    "has {} syntax nodes, over the limit of {MAX_NODES}",
                    check.nodes
                ),
            ));
        }
        if check.references > MAX_REFERENCES {
            return Err(refuse(
                None,
                format!(
                    "names variables {} times, over the limit of {MAX_REFERENCES}",
                    check.references
                ),
            ));
        }
        match yields {
            Yields::Bool => {
                if let Some(what) = not_boolean(&expr.expr) {
                    return Err(refuse(
                        at(expr.id),
                        format!("a guard must yield a boolean, this yields {what}"),
                    ));
                }
            }
            Yields::Fields => {
                let Expr::Map(map) = &expr.expr else {
                    return Err(refuse(
                        at(expr.id),
                        "a transform must be a map literal of the fields to set, such as \
                         {\"score\": state.score + payload.points}"
                            .into(),
                    ));
                };
                for entry in &map.entries {
                    let EntryExpr::MapEntry(e) = &entry.expr else {
                        return Err(refuse(at(entry.id), "expected a map entry".into()));
                    };
                    if !matches!(&e.key.expr, Expr::Literal(LiteralValue::String(_))) {
                        return Err(refuse(
                            at(e.key.id),
                            "a transform's keys must be string literals (field names)".into(),
                        ));
                    }
                }
            }
        }
        let program = ENV.compile(source).map_err(|e| {
            refuse(
                None,
                e.errors.first().map(|e| e.msg.clone()).unwrap_or_default(),
            )
        })?;
        Ok(Self {
            source: source.to_string(),
            program,
            uses: check.uses,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression as a guard.
    pub fn eval_bool(&self, inputs: &Inputs<'_>) -> Result<bool, String> {
        match self.eval(inputs)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(format!("yielded {}, not a boolean", type_name(&other))),
        }
    }

    /// Evaluates the expression as a transform: the fields to set, as a JSON object.
    pub fn eval_fields(&self, inputs: &Inputs<'_>) -> Result<State, String> {
        match to_json(&self.eval(inputs)?)? {
            Value::Object(fields) => Ok(fields),
            _ => Err("did not yield a map".into()),
        }
    }

    fn eval(&self, inputs: &Inputs<'_>) -> Result<CelValue, String> {
        let mut context = Context::with_env(ENV.clone());
        let values = [inputs.state, inputs.payload, inputs.metadata, inputs.event];
        for ((name, used), value) in VARIABLES.iter().zip(self.uses).zip(values) {
            if used {
                context.add_variable_from_value(*name, object_to_cel(value));
            }
        }
        // A defect of the interpreter on some value must refuse one event, not take down the
        // task deciding it (and the instance's lock with it).
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.program.execute(&context)
        }))
        .map_err(|_| "the expression could not be evaluated".to_string())?
        .map_err(|e| e.to_string())
    }
}

/// The walk of a syntax tree that counts and refuses.
struct Check<'a> {
    nodes: usize,
    references: usize,
    uses: [bool; 4],
    /// What the payload schema says of `payload`'s fields.
    payload: &'a Fields,
    /// The first refused node and why.
    refused: Option<(u64, String)>,
}

impl<'a> Check<'a> {
    fn refuse(&mut self, id: u64, message: String) {
        if self.refused.is_none() {
            self.refused = Some((id, message));
        }
    }

    /// What is known of the fields of the value `e` yields, and its path, when `e` is `payload`
    /// or a chain of field reads (`.f` or `["f"]`) from it.
    fn shape(&self, e: &IdedExpr) -> Option<(&'a Fields, String)> {
        let (operand, field) = match &e.expr {
            Expr::Ident(name) if name == "payload" => {
                return Some((self.payload, "payload".into()));
            }
            Expr::Select(s) if !s.test => (&*s.operand, s.field.as_str()),
            Expr::Call(call) => (call.args.first()?, string_index(call)?),
            _ => return None,
        };
        let (Fields::Closed(fields), path) = self.shape(operand)? else {
            return None;
        };
        Some((fields.get(field)?, format!("{path}.{field}")))
    }

    /// Refuses reading `field` of `operand` when its schema closes it without that field: the
    /// read would fail on every payload the schema accepts.
    fn check_field(&mut self, id: u64, operand: &IdedExpr, field: &str) {
        if let Some((Fields::Closed(fields), path)) = self.shape(operand)
            && !fields.contains_key(field)
        {
            let known = if fields.is_empty() {
                "no fields".to_string()
            } else {
                fields
                    .keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            self.refuse(
                id,
                format!(
                    "{path} has no field {field:?}: the payload schema allows only {known} there \
                     (additionalProperties: false)"
                ),
            );
        }
    }

    fn walk(&mut self, e: &IdedExpr) {
        self.nodes += 1;
        if self.refused.is_some() || self.nodes > MAX_NODES {
            return;
        }
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => match VARIABLES.iter().position(|v| v == name) {
                Some(i) => {
                    self.uses[i] = true;
                    self.references += 1;
                }
                None => self.refuse(
                    e.id,
                    format!(
                        "unknown name {name:?}: an expression names only {}",
                        VARIABLES.join(", ")
                    ),
                ),
            },
            Expr::Select(s) => {
                // `has(payload.x)` is only a test, false on every payload: not refused.
                if !s.test {
                    self.check_field(e.id, &s.operand, &s.field);
                }
                self.walk(&s.operand)
            }
            Expr::Call(call) => {
                if COMPREHENSIONS.contains(&call.func_name.as_str()) {
                    self.refuse(
                        e.id,
                        format!(
                            "{}() is a loop and is refused: its cost grows with the data",
                            call.func_name
                        ),
                    );
                    return;
                }
                if !FUNCTIONS.contains(&call.func_name.as_str()) {
                    self.refuse(
                        e.id,
                        format!("unknown or refused function {:?}", call.func_name),
                    );
                    return;
                }
                if let (Some(field), Some(operand)) = (string_index(call), call.args.first()) {
                    self.check_field(e.id, operand, field);
                }
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                for arg in &call.args {
                    self.walk(arg);
                }
            }
            Expr::Comprehension(_) => self.refuse(
                e.id,
                "loops (all, exists, exists_one, map, filter) are refused: their cost grows \
                 with the data"
                    .into(),
            ),
            Expr::List(list) => {
                for element in &list.elements {
                    self.walk(element);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.walk(&m.key);
                            self.walk(&m.value);
                        }
                        EntryExpr::StructField(f) => self.walk(&f.value),
                    }
                }
            }
            Expr::Struct(_) => self.refuse(e.id, "message literals are not supported".into()),
        }
    }
}

/// The key of `x["key"]`, a field read by index with a string literal.
fn string_index(call: &cel::common::ast::CallExpr) -> Option<&str> {
    if call.func_name != operators::INDEX || call.target.is_some() || call.args.len() != 2 {
        return None;
    }
    match &call.args[1].expr {
        Expr::Literal(LiteralValue::String(key)) => Some(key.inner()),
        _ => None,
    }
}

/// What a guard's top-level expression yields when it is certainly not a boolean.
fn not_boolean(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Literal(LiteralValue::Boolean(_)) => None,
        Expr::Literal(_) => Some("a non-boolean literal"),
        Expr::List(_) => Some("a list"),
        Expr::Map(_) => Some("a map"),
        Expr::Call(call)
            if [
                operators::ADD,
                operators::SUBSTRACT,
                operators::MULTIPLY,
                operators::DIVIDE,
                operators::MODULO,
                operators::NEGATE,
                "size",
                "int",
                "uint",
                "double",
                "string",
            ]
            .contains(&call.func_name.as_str()) =>
        {
            Some("a number or a string")
        }
        _ => None,
    }
}

fn type_name(v: &CelValue) -> &'static str {
    match v {
        CelValue::List(_) => "a list",
        CelValue::Map(_) => "a map",
        CelValue::Int(_) | CelValue::UInt(_) | CelValue::Float(_) => "a number",
        CelValue::String(_) => "a string",
        CelValue::Bool(_) => "a boolean",
        CelValue::Null => "null",
        _ => "a value JSON cannot hold",
    }
}

/// A JSON object as a CEL map. Integers become `int` (CEL's usual integer, so `state.n + 1`
/// type-checks), or `uint` past `i64::MAX`; other numbers `double`.
pub fn object_to_cel(object: &State) -> CelValue {
    let map: HashMap<Key, CelValue> = object
        .iter()
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
        .collect();
    CelValue::Map(Map { map: Arc::new(map) })
}

fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(o) => object_to_cel(o),
    }
}

/// A CEL value back as JSON; bytes, durations, timestamps and non-finite numbers are refused.
fn to_json(v: &CelValue) -> Result<Value, String> {
    Ok(match v {
        CelValue::Null => Value::Null,
        CelValue::Bool(b) => Value::Bool(*b),
        CelValue::Int(i) => Value::Number((*i).into()),
        CelValue::UInt(u) => Value::Number((*u).into()),
        CelValue::Float(f) => Value::Number(
            Number::from_f64(*f).ok_or_else(|| format!("yielded {f}, which JSON cannot hold"))?,
        ),
        CelValue::String(s) => Value::String(s.as_ref().clone()),
        CelValue::List(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        CelValue::Map(map) => {
            let mut object = State::new();
            for (k, v) in map.map.iter() {
                let Key::String(k) = k else {
                    return Err("yielded a map with a key that is not a string".into());
                };
                object.insert(k.as_ref().clone(), to_json(v)?);
            }
            Value::Object(object)
        }
        other => return Err(format!("yielded {}", type_name(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    fn run(source: &str, state: Value, payload: Value) -> Result<State, String> {
        let e = Expression::compile(source, Yields::Fields).map_err(|e| e.to_string())?;
        e.eval_fields(&Inputs {
            state: &obj(state),
            payload: &obj(payload),
            metadata: &State::new(),
            event: &obj(json!({"type": "T"})),
        })
    }

    #[test]
    fn a_transform_computes_fields_with_json_integers() {
        let out = run(
            r#"{"score": state.score + payload.points, "level": (state.score + payload.points) / 100 + 1}"#,
            json!({"score": 150}),
            json!({"points": 70}),
        )
        .unwrap();
        assert_eq!(Value::Object(out), json!({"score": 220, "level": 3}));
    }

    #[test]
    fn guards_yield_booleans() {
        let g = Expression::compile("state.balance >= payload.amount", Yields::Bool).unwrap();
        let state = obj(json!({"balance": 10}));
        let event = State::new();
        let inputs = |p: &State| {
            g.eval_bool(&Inputs {
                state: &state,
                payload: p,
                metadata: &event,
                event: &event,
            })
        };
        assert_eq!(inputs(&obj(json!({"amount": 5}))), Ok(true));
        assert_eq!(inputs(&obj(json!({"amount": 11}))), Ok(false));
        for f in [
            "size(payload.s) < 3",
            "payload.s.contains('a')",
            "payload.s.startsWith('a') && payload.s.endsWith('c')",
            "int(payload.f) == 1 && string(1) == '1' && double(1) == 1.0",
            "has(payload.s) && 'x' in ['x']",
            "payload.s == 'abc' ? true : false",
        ] {
            let g = Expression::compile(f, Yields::Bool).unwrap();
            let r = g.eval_bool(&Inputs {
                state: &state,
                payload: &obj(json!({"s": "abc", "f": 1.5})),
                metadata: &event,
                event: &event,
            });
            assert!(r.is_ok(), "{f}: {r:?}");
        }
    }

    #[test]
    fn hostile_or_wrong_expressions_are_refused_with_a_position() {
        for (source, yields, expect) in [
            ("state.items.all(x, x > 0)", Yields::Bool, "loop"),
            (
                "state.items.map(x, state.items.map(y, y)).size() > 0",
                Yields::Bool,
                "loop",
            ),
            ("[1,2].exists(x, true)", Yields::Bool, "loop"),
            ("balance > 1", Yields::Bool, "unknown name"),
            ("state.a +", Yields::Bool, ""),
            ("1 + 2", Yields::Bool, "boolean"),
            ("state.score", Yields::Fields, "map literal"),
            ("{state.k: 1}", Yields::Fields, "string literals"),
            ("system('rm')", Yields::Bool, "unknown or refused function"),
        ] {
            let err = Expression::compile(source, yields).unwrap_err();
            assert!(err.to_string().contains(expect), "{source}: {err}");
        }
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(Expression::compile(&deep, Yields::Bool).is_err());
        let long = format!("true{}", " && true".repeat(400));
        assert!(Expression::compile(&long, Yields::Bool).is_err());
        let many = format!("state.a == 1{}", " || state.a == 1".repeat(20));
        let err = Expression::compile(&many, Yields::Bool).unwrap_err();
        assert!(err.to_string().contains("variables"), "{err}");
        let err = Expression::compile("state.a > 1 && nope", Yields::Bool).unwrap_err();
        assert_eq!(err.position, Some((1, 16)), "{err}");
    }

    #[test]
    fn a_field_the_payload_schema_closes_out_is_refused_and_nothing_valid_is() {
        let closed = |fields: &[(&str, Fields)]| {
            Fields::Closed(
                fields
                    .iter()
                    .map(|(k, f)| (k.to_string(), f.clone()))
                    .collect(),
            )
        };
        let payload = closed(&[
            ("points", Fields::Open),
            ("who", closed(&[("id", Fields::Open)])),
            ("tags", Fields::Open),
        ]);
        for (source, expect, at) in [
            (
                "payload.pionts <= 1000",
                "payload has no field \"pionts\"",
                (1, 8),
            ),
            (
                "payload.points > 0 && payload.who.name == 'x'",
                "payload.who has no field \"name\"",
                (1, 34),
            ),
            ("payload['extra'] == 1", "\"extra\"", (1, 8)),
            (
                "payload.who['nope'] == 1",
                "payload.who has no field",
                (1, 12),
            ),
        ] {
            let err = Expression::compile_for(source, Yields::Bool, &payload).unwrap_err();
            assert!(err.message.contains(expect), "{source}: {err}");
            assert!(err.message.contains("\"points\"") || err.message.contains("\"id\""));
            assert_eq!(err.position, Some(at), "{source}: {err}");
        }
        let err = Expression::compile_for(
            r#"{"score": state.score + payload.point}"#,
            Yields::Fields,
            &payload,
        )
        .unwrap_err();
        assert!(err.message.contains("\"point\""), "{err}");
        // Valid reads stay valid: declared fields, open sub-objects, tests with has(), other
        // variables' fields, dynamic keys, and any read when the schema leaves payload open.
        for source in [
            "payload.points <= 1000",
            "payload.who.id == 'a' && payload.tags.anything == 1",
            "has(payload.extra) || has(payload.who.other)",
            "state.extra == 1 && metadata.extra == 1 && event.type == 'T'",
            "payload[state.key] == 1",
            "size(payload) == 1 && 'extra' in payload",
            "dyn(payload).extra == 1",
        ] {
            Expression::compile_for(source, Yields::Bool, &payload)
                .unwrap_or_else(|e| panic!("{source}: {e}"));
        }
        Expression::compile_for("payload.anything == 1", Yields::Bool, &Fields::Open).unwrap();
        let err =
            Expression::compile_for("payload.a == 1", Yields::Bool, &closed(&[])).unwrap_err();
        assert!(err.message.contains("no fields"), "{err}");
    }

    #[test]
    fn hostile_values_at_run_time_are_errors_not_panics() {
        let payload = json!({"l": [1, 2], "s": "x", "n": 9223372036854775807_i64, "f": 1e308});
        for source in [
            "payload.l[-1] == 1",
            "payload.l[99999999999] == 1",
            "int('x') == 1",
            "-(-9223372036854775807 - 1) == 1",
            "payload.n * 2 == 1",
            "payload.n + 1 == 1",
            "payload.f * 10.0 == 1.0",
            "uint(-1) == 1u",
            "int(1e300) == 1",
            "payload.s.contains(1)",
            "payload.l + payload.s == []",
            "payload.missing.deeper == 1",
            "state == payload",
            "string(payload) == ''",
            "size(payload.n) == 1",
            "payload.s < 1",
        ] {
            let g = Expression::compile(source, Yields::Bool).unwrap();
            let empty = State::new();
            let _ = g.eval_bool(&Inputs {
                state: &empty,
                payload: &obj(payload.clone()),
                metadata: &empty,
                event: &empty,
            });
        }
        assert!(run(r#"{"a": 1.0 / 0.0}"#, json!({}), json!({})).is_err());
    }

    proptest::proptest! {
        #![proptest_config(crate::domain::proptest_config(256))]

        /// Whatever text a client declares, compiling it answers; it never panics.
        #[test]
        fn any_source_compiles_or_is_refused(source in "\\PC{0,120}") {
            let _ = Expression::compile(&source, Yields::Bool);
            let _ = Expression::compile(&source, Yields::Fields);
        }

        /// Sources made of CEL's own tokens reach deeper into the parser.
        #[test]
        fn token_soup_compiles_or_is_refused(tokens in proptest::collection::vec(
            proptest::sample::select(vec![
                "state", "payload", ".", "a", "(", ")", "[", "]", "{", "}", ",", ":", "+", "-",
                "*", "/", "%", "==", "!=", "<", ">=", "&&", "||", "!", "?", "1", "1u", "2.5",
                "'s'", "\"k\"", "true", "null", "size", "in", "has", "map", "x", "b'\\xff'",
            ]), 0..40)) {
            let source = tokens.join(" ");
            let _ = Expression::compile(&source, Yields::Bool);
            let _ = Expression::compile(&source, Yields::Fields);
        }
    }

    #[test]
    fn runtime_errors_are_messages_not_panics() {
        assert!(run(r#"{"a": payload.missing}"#, json!({}), json!({})).is_err());
        assert!(run(r#"{"a": 1 / 0}"#, json!({}), json!({})).is_err());
        assert!(run(r#"{"a": 9223372036854775807 + 1}"#, json!({}), json!({})).is_err());
        assert!(run(r#"{"a": b"x"}"#, json!({}), json!({})).is_err());
    }
}
