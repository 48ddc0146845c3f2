//! Naming one field inside a state: parsing what a caller typed (a JSON pointer such as
//! `/stats/level` or a dotted path such as `stats.level`) into one canonical RFC 6901 pointer, and
//! looking that pointer up in a state.
//!
//! Every query that is "about a field" (timelines, aggregations) goes through
//! [`parse_field_path`], so the rest of the engine only ever sees canonical pointers and the
//! same field is never known under two spellings.

use serde_json::Value;

use super::{DomainError, State};

/// Longest field path accepted, in characters. A field path travels in URLs and cache keys; no
/// real schema nests this deep, so anything longer is a mistake or an attack.
pub const MAX_FIELD_PATH_CHARS: usize = 1024;

/// How much of an over-long input is quoted back in the error, so the error itself stays small.
const QUOTED_PREFIX_CHARS: usize = 40;

/// Parses a field path into its canonical JSON pointer.
///
/// A path starting with `/` is a JSON pointer (RFC 6901, with `~0` for `~` and `~1` for `/`) and is
/// kept as written once its escapes are checked: a valid pointer has exactly one spelling, so it is
/// already canonical. Anything else is a dotted path whose segments are object keys or array
/// indices (`stats.level`, `achievements.0`); `~` and `/` inside a segment are literal characters
/// and get escaped. A dotted path cannot name a key containing `.` or an empty key — the pointer
/// form is the escape hatch for those.
///
/// The bare root (`""` or `"/"`) is rejected: a field must name something inside the state. Note
/// that RFC 6901 reads `"/"` as the key `""`; we deliberately treat it as the root instead, because
/// that is what a person typing it means.
pub fn parse_field_path(raw: &str) -> Result<String, DomainError> {
    // Checked first so a huge input costs no more than counting it.
    let chars = raw.chars().count();
    if chars > MAX_FIELD_PATH_CHARS {
        let prefix: String = raw.chars().take(QUOTED_PREFIX_CHARS).collect();
        return Err(invalid(format!(
            "\"{}...\" is {chars} characters long; a field path may have at most \
             {MAX_FIELD_PATH_CHARS}",
            prefix.escape_debug()
        )));
    }
    if raw.is_empty() {
        return Err(invalid(
            "\"\" is empty; name a field such as \"score\" or \"/stats/level\"",
        ));
    }
    if raw.contains('\0') {
        return Err(invalid(
            "contains a NUL character (\\u0000), which no stored state can hold",
        ));
    }
    if raw == "/" {
        return Err(invalid(
            "\"/\" is the whole state; a field path must name something inside it, \
             such as \"/score\" or \"stats.level\"",
        ));
    }
    if raw.starts_with('/') {
        check_escapes(raw)?;
        return Ok(raw.to_string());
    }
    let mut pointer = String::with_capacity(raw.len() + 1);
    for segment in raw.split('.') {
        if segment.is_empty() {
            return Err(invalid(format!(
                "{raw:?} has an empty segment; a dotted path is keys or indices separated by \
                 single dots, with no dot at the start or end (use a JSON pointer such as \
                 \"/a/b\" for keys containing dots)"
            )));
        }
        push_token(&mut pointer, segment);
    }
    Ok(pointer)
}

/// Most steps a listing's state field path may have: each is one `->` in the store's filter.
pub const MAX_PATH_STEPS: usize = 32;

/// One step of a state field path: an object key or an array index. A step that is all digits
/// (at most 9 of them) names an array index, on every backend alike (so `items.0` is the first
/// item of `items`); a key made of digits is out of reach of such a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(i32),
}

/// The steps of a canonical pointer ([`parse_field_path`]), at most [`MAX_PATH_STEPS`].
pub fn path_steps(pointer: &str) -> Result<Vec<PathStep>, DomainError> {
    let tokens: Vec<&str> = pointer
        .strip_prefix('/')
        .unwrap_or(pointer)
        .split('/')
        .collect();
    if tokens.len() > MAX_PATH_STEPS {
        return Err(invalid(format!(
            "{pointer:?} has {} steps; a filter path may have at most {MAX_PATH_STEPS}",
            tokens.len()
        )));
    }
    if let Some(bad) = tokens.iter().find(|t| t.contains('"') || t.contains('\\')) {
        return Err(invalid(format!(
            "step {bad:?} of {pointer:?} holds a quote or a backslash, which a filter path \
             cannot name"
        )));
    }
    Ok(tokens
        .into_iter()
        .map(|t| {
            let key = unescape_token(t);
            match key.parse::<i32>() {
                Ok(n)
                    if !key.is_empty()
                        && key.len() <= 9
                        && key.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    PathStep::Index(n)
                }
                _ => PathStep::Key(key),
            }
        })
        .collect())
}

/// The value at `steps` in `state`, following [`PathStep`]'s rule (digits index arrays only).
pub fn lookup_steps<'a>(state: &'a State, steps: &[PathStep]) -> Option<&'a Value> {
    let (first, rest) = steps.split_first()?;
    let PathStep::Key(k) = first else {
        return None;
    };
    let mut at = state.get(k)?;
    for step in rest {
        at = match (step, at) {
            (PathStep::Key(k), Value::Object(o)) => o.get(k)?,
            (PathStep::Index(n), Value::Array(a)) => a.get(usize::try_from(*n).ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// The least string greater than every string starting with `prefix`, in code point (UTF-8
/// byte) order: the exclusive end of the prefix's range in an index. None when there is none
/// (an empty prefix, or one made only of U+10FFFF).
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The value at `pointer` in `state`, or `None` where nothing is there: a missing key, an index
/// past the end of an array (or not a plain decimal index, like `01` or `-`), or a path that runs
/// into a scalar. The root pointer `""` and strings that are not pointers also give `None`: a
/// field always lives inside the state, and the state itself is not a field.
pub fn lookup<'a>(state: &'a State, pointer: &str) -> Option<&'a Value> {
    let rest = pointer.strip_prefix('/')?;
    // The state is a map, not a `Value`, so the first token is resolved here and serde_json's
    // pointer walk (which handles escapes and array indices) takes the remainder.
    let (first, rest) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    state.get(&unescape_token(first))?.pointer(rest)
}

/// Appends one reference token to a pointer, escaped per RFC 6901. Shared with the diff so both
/// spell paths identically.
pub(super) fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

fn unescape_token(token: &str) -> String {
    // `~1` first: the other order would turn `~01` (a literal `~1`) into `/`.
    token.replace("~1", "/").replace("~0", "~")
}

/// Rejects a `~` that does not start `~0` or `~1`. serde_json's pointer lookup would silently
/// treat such a token literally, so the same field could be asked for under different spellings.
fn check_escapes(pointer: &str) -> Result<(), DomainError> {
    let mut chars = pointer.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '~' && !matches!(chars.peek(), Some((_, '0' | '1'))) {
            return Err(invalid(format!(
                "{pointer:?} has an invalid escape at byte {at}: in a JSON pointer \"~\" must be \
                 followed by 0 (for \"~\") or 1 (for \"/\")"
            )));
        }
    }
    Ok(())
}

fn invalid(reason: impl Into<String>) -> DomainError {
    DomainError::invalid("field", reason)
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn a_prefix_successor_bounds_exactly_the_strings_with_the_prefix() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        for s in ["ab", "ab\u{10FFFF}\u{10FFFF}", "abzzz", "ab\u{0}"] {
            assert!(s < prefix_successor("ab").unwrap().as_str());
        }
        assert!("ac" >= prefix_successor("ab").unwrap().as_str());
    }

    #[test]
    fn digit_steps_index_arrays_and_long_paths_are_refused() {
        let steps = path_steps(&parse_field_path("items.0.name").unwrap()).unwrap();
        assert_eq!(
            steps,
            vec![
                PathStep::Key("items".into()),
                PathStep::Index(0),
                PathStep::Key("name".into())
            ]
        );
        let state = serde_json::json!({"items": [{"name": "x"}], "m": {"0": 1}});
        let state = state.as_object().unwrap();
        assert_eq!(lookup_steps(state, &steps), Some(&serde_json::json!("x")));
        let m0 = path_steps("/m/0").unwrap();
        assert_eq!(lookup_steps(state, &m0), None);
        let deep = vec!["a"; MAX_PATH_STEPS + 1].join(".");
        assert!(path_steps(&parse_field_path(&deep).unwrap()).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> State {
        v.as_object().unwrap().clone()
    }

    fn reason(raw: &str) -> String {
        match parse_field_path(raw).unwrap_err() {
            DomainError::InvalidField { field, reason } => {
                assert_eq!(field, "field");
                reason
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn pointers_are_kept_as_written() {
        for p in [
            "/score",
            "/stats/level",
            "/achievements/0",
            "/a~1b",
            "/a~0b",
            "/~01",
            "/a/",
            "//a",
        ] {
            assert_eq!(parse_field_path(p).unwrap(), p);
        }
    }

    #[test]
    fn dotted_paths_become_pointers() {
        assert_eq!(parse_field_path("score").unwrap(), "/score");
        assert_eq!(parse_field_path("stats.level").unwrap(), "/stats/level");
        assert_eq!(
            parse_field_path("achievements.0").unwrap(),
            "/achievements/0"
        );
        assert_eq!(parse_field_path("a b.c-d").unwrap(), "/a b/c-d");
    }

    #[test]
    fn dotted_segments_escape_tilde_and_slash() {
        assert_eq!(parse_field_path("a/b").unwrap(), "/a~1b");
        assert_eq!(parse_field_path("a~b").unwrap(), "/a~0b");
        // A literal "~1" must not come out as an escaped "/".
        assert_eq!(parse_field_path("x.~1").unwrap(), "/x/~01");
        assert_eq!(parse_field_path("~/").unwrap(), "/~0~1");
    }

    #[test]
    fn rejects_nul() {
        for bad in ["\0", "/a\0", "a.\0.b"] {
            assert!(reason(bad).contains("NUL"), "{bad:?}");
        }
    }

    #[test]
    fn rejects_empty_and_root() {
        assert!(reason("").contains("empty"));
        assert!(reason("/").contains("whole state"));
    }

    #[test]
    fn rejects_bad_escapes() {
        for bad in ["/a~", "/a~2", "/~x/b", "/a/b~"] {
            let r = reason(bad);
            assert!(r.contains(&format!("{bad:?}")), "{r}");
            assert!(r.contains("must be followed by 0"), "{r}");
        }
    }

    #[test]
    fn rejects_empty_dotted_segments() {
        for bad in ["a..b", ".a", "a.", "."] {
            let r = reason(bad);
            assert!(r.contains(&format!("{bad:?}")), "{r}");
            assert!(r.contains("empty segment"), "{r}");
        }
    }

    #[test]
    fn rejects_paths_longer_than_the_limit() {
        let at_limit = "a".repeat(MAX_FIELD_PATH_CHARS);
        assert_eq!(parse_field_path(&at_limit).unwrap(), format!("/{at_limit}"));
        // Characters, not bytes: 1024 two-byte characters are still fine.
        let wide = "é".repeat(MAX_FIELD_PATH_CHARS);
        assert!(parse_field_path(&wide).is_ok());

        let r = reason(&"/a".repeat(600));
        assert!(r.contains("1200 characters"), "{r}");
        assert!(r.len() < 200, "the error quotes only a prefix: {r}");
    }

    #[test]
    fn error_message_names_the_field() {
        let err = parse_field_path("a..b").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid field: \"a..b\""),
            "{err}"
        );
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let state = obj(json!({
            "score": 150,
            "stats": {"level": 3, "tags": ["x", {"deep": true}]},
            "a/b": 1,
            "a~b": 2,
            "": "empty key",
            "n": null
        }));
        assert_eq!(lookup(&state, "/score"), Some(&json!(150)));
        assert_eq!(lookup(&state, "/stats/level"), Some(&json!(3)));
        assert_eq!(lookup(&state, "/stats/tags/0"), Some(&json!("x")));
        assert_eq!(lookup(&state, "/stats/tags/1/deep"), Some(&json!(true)));
        assert_eq!(lookup(&state, "/a~1b"), Some(&json!(1)));
        assert_eq!(lookup(&state, "/a~0b"), Some(&json!(2)));
        assert_eq!(lookup(&state, "/"), Some(&json!("empty key")));
        // Present with a null value is not the same as absent.
        assert_eq!(lookup(&state, "/n"), Some(&Value::Null));
    }

    #[test]
    fn lookup_is_none_where_absent() {
        let state = obj(json!({"score": 1, "list": [1, 2], "stats": {"level": 3}}));
        for absent in [
            "/missing",
            "/stats/xp",
            "/score/deeper",
            "/list/2",
            "/list/-",
            "/list/01",
            "/list/x",
            "",
            "score",
        ] {
            assert_eq!(lookup(&state, absent), None, "{absent}");
        }
    }

    #[test]
    fn parsed_paths_find_what_they_name() {
        let state = obj(json!({"a/b": {"c~d": [10, 20]}}));
        let pointer = parse_field_path("a/b.c~d.1").unwrap();
        assert_eq!(lookup(&state, &pointer), Some(&json!(20)));
    }
}
