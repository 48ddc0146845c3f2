//! Limits on what a write produces: the size (serialized JSON bytes) and the nesting depth of a
//! state. A [`Meter`] follows the state while events apply, so a patch that would blow the state
//! up (20 `copy` ops doubling it, `add` nested 200 levels deep) is refused before it allocates,
//! not after: every operation's growth is known before the operation runs.
//!
//! Depth counts nested objects and arrays, the root object being 1: `{"a": 1}` is 1 deep,
//! `{"a": {"b": [1]}}` is 3. A bounded depth is what lets every accepted state travel through
//! protobuf `Struct` (three protobuf message levels per JSON object) to every generated client,
//! and be read back by serde_json (whose recursion limit is 128).

use serde_json::{Map, Value};

use super::DomainError;

/// How large and how deep a state may become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Largest state, as serialized JSON bytes (`MAX_STATE_BYTES`).
    pub max_bytes: usize,
    /// Deepest nesting of objects and arrays, the root counting as 1 (`MAX_STATE_DEPTH`).
    pub max_depth: usize,
}

impl StateLimits {
    /// 4 MiB: four times the default payload limit, room for states that grow over many events,
    /// while a request's peak memory stays a small multiple of it.
    pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;
    /// 32 levels: each JSON object costs three protobuf message levels (Struct, map entry,
    /// Value) and decoders (prost, Python protobuf) stop at 100, with a few levels for the
    /// response messages around the state. Checked end to end by `tests/hostile_writes.rs`.
    pub const DEFAULT_MAX_DEPTH: usize = 32;

    /// Extra work a batch may spend beyond reading its payloads, as a multiple of `max_bytes`:
    /// bytes duplicated by JSON Patch `copy` operations plus bytes re-measured to confirm an
    /// estimate. Bounds the CPU a patch can burn by copying and removing the same large value.
    pub const WORK_FACTOR: usize = 4;

    /// Refuses a document over the limits; `what` names it in the message.
    pub fn check(&self, what: &str, m: Measure) -> Result<(), DomainError> {
        if m.depth > self.max_depth {
            return Err(self.too_deep(what, m.depth));
        }
        if m.bytes > self.max_bytes {
            return Err(self.too_large(what, m.bytes));
        }
        Ok(())
    }

    fn too_large(&self, what: &str, bytes: usize) -> DomainError {
        DomainError::TooLarge(format!(
            "{what} would be {bytes} bytes of JSON, over MAX_STATE_BYTES ({} bytes)",
            self.max_bytes
        ))
    }

    fn too_deep(&self, what: &str, depth: usize) -> DomainError {
        DomainError::invalid(
            what,
            format!(
                "would nest objects and arrays {depth} levels deep, over MAX_STATE_DEPTH ({})",
                self.max_depth
            ),
        )
    }
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

/// Serialized size and nesting depth of a JSON value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Bytes of its compact JSON serialization (as `serde_json::to_vec` writes it).
    pub bytes: usize,
    /// Nested objects and arrays: 0 for a scalar, 1 for `{}` or `[1]`.
    pub depth: usize,
}

/// Counts bytes instead of storing them.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of a string as a JSON string literal (quotes and escapes included).
pub fn json_str_len(s: &str) -> usize {
    let mut c = Counter(0);
    // Writing a string to a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, s);
    c.0
}

/// Size and depth of `v`, in one walk and without allocating.
pub fn measure(v: &Value) -> Measure {
    match v {
        Value::Object(map) => measure_object(map),
        Value::Array(items) => {
            let mut m = Measure {
                bytes: 2 + items.len().saturating_sub(1),
                depth: 0,
            };
            for item in items {
                let inner = measure(item);
                m.bytes += inner.bytes;
                m.depth = m.depth.max(inner.depth);
            }
            m.depth += 1;
            m
        }
        scalar => {
            let mut c = Counter(0);
            let _ = serde_json::to_writer(&mut c, scalar);
            Measure {
                bytes: c.0,
                depth: 0,
            }
        }
    }
}

/// Size and depth of an object (a state, a payload).
pub fn measure_object(map: &Map<String, Value>) -> Measure {
    let mut m = Measure {
        bytes: 2 + map.len().saturating_sub(1),
        depth: 0,
    };
    for (k, v) in map {
        let inner = measure(v);
        m.bytes += json_str_len(k) + 1 + inner.bytes;
        m.depth = m.depth.max(inner.depth);
    }
    m.depth += 1;
    m
}

/// Follows one state through the events of a batch: its size exactly (except after a JSON
/// Patch `move`, which makes it an upper bound), its depth as an upper bound, and the extra
/// work spent. Whenever an estimate goes over a limit the state is measured exactly before
/// anything is refused, so an estimate never refuses a state that fits.
#[derive(Debug, Clone)]
pub struct Meter {
    limits: StateLimits,
    bytes: usize,
    depth: usize,
    /// Whether `bytes` may overestimate (a `move` happened since the last exact measure).
    approximate: bool,
    work_left: usize,
}

impl Meter {
    /// Starts from a state already stored (measured once, exactly).
    pub fn new(limits: StateLimits, state: &Map<String, Value>) -> Self {
        let m = measure_object(state);
        Self {
            limits,
            bytes: m.bytes,
            depth: m.depth,
            approximate: false,
            work_left: limits.max_bytes.saturating_mul(StateLimits::WORK_FACTOR),
        }
    }

    /// No limits, for folding stored events (checked when they were written): nothing is
    /// measured up front.
    pub fn unlimited() -> Self {
        Self {
            limits: StateLimits {
                max_bytes: usize::MAX,
                max_depth: usize::MAX,
            },
            bytes: 0,
            depth: 0,
            approximate: false,
            work_left: usize::MAX,
        }
    }

    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// The current estimate.
    pub fn estimate(&self) -> Measure {
        Measure {
            bytes: self.bytes,
            depth: self.depth,
        }
    }

    /// Spends `bytes` of extra work, or refuses once the batch's allowance is gone.
    pub(crate) fn spend(&mut self, bytes: usize) -> Result<(), DomainError> {
        if bytes > self.work_left {
            return Err(DomainError::TooLarge(format!(
                "the events copy or rewrite more than {} bytes in total \
                 ({} x MAX_STATE_BYTES of {} bytes)",
                self.limits
                    .max_bytes
                    .saturating_mul(StateLimits::WORK_FACTOR),
                StateLimits::WORK_FACTOR,
                self.limits.max_bytes
            )));
        }
        self.work_left -= bytes;
        Ok(())
    }

    /// The state was replaced by one of known measure.
    pub(crate) fn reset(&mut self, m: Measure) {
        self.bytes = m.bytes;
        self.depth = m.depth;
        self.approximate = false;
    }

    /// Size changes by `added - removed`; depth may reach `depth`.
    pub(crate) fn change(&mut self, added: usize, removed: usize, depth: usize) {
        self.bytes = self.bytes.saturating_add(added).saturating_sub(removed);
        self.depth = self.depth.max(depth);
    }

    /// After an operation whose effect is only bounded (a `move`): from here on the size is an
    /// upper bound until the next exact measure.
    pub(crate) fn loosen(&mut self, added: usize, depth: usize) {
        self.bytes = self.bytes.saturating_add(added);
        self.depth = self.depth.max(depth);
        self.approximate = true;
    }

    /// Would growing by `added` bytes, with something placed `depth` levels deep, stay within
    /// the limits? Answered before the operation runs, so nothing is allocated for a refused
    /// one. `doc` is the state as it is now: it is measured exactly (and paid for) only when a
    /// possibly stale estimate alone would refuse.
    pub(crate) fn admit(
        &mut self,
        doc: &Value,
        added: usize,
        depth: usize,
    ) -> Result<(), DomainError> {
        if depth > self.limits.max_depth {
            return Err(self.limits.too_deep("state", depth));
        }
        let fits = |m: &Self| {
            m.bytes.saturating_add(added) <= m.limits.max_bytes && m.depth <= m.limits.max_depth
        };
        if fits(self) {
            return Ok(());
        }
        if self.approximate || self.depth > self.limits.max_depth {
            // The estimate may be stale (after a move, or a removed deep branch): measure.
            self.spend(self.bytes)?;
            self.reset(measure(doc));
        }
        if self.bytes.saturating_add(added) > self.limits.max_bytes {
            return Err(self
                .limits
                .too_large("the resulting state", self.bytes.saturating_add(added)));
        }
        if self.depth > self.limits.max_depth {
            return Err(self.limits.too_deep("state", self.depth));
        }
        Ok(())
    }

    /// After an operation whose effect was only bounded: confirms the state is within limits.
    pub(crate) fn settle(&mut self, doc: &Value) -> Result<(), DomainError> {
        self.admit(doc, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn measure_matches_serde_json() {
        for v in [
            json!({}),
            json!([]),
            json!({"a": 1, "b": [1, 2.5, "x\"y\u{1}"], "c": {"d": null, "e": true}}),
            json!({"é": "日本", "n": -0.0, "big": 1e300, "neg": -12}),
            json!([[[]], {}, [{"a": []}]]),
        ] {
            let m = measure(&v);
            assert_eq!(m.bytes, serde_json::to_vec(&v).unwrap().len(), "{v}");
        }
        assert_eq!(measure(&json!({"a": 1})).depth, 1);
        assert_eq!(measure(&json!({"a": {"b": [1]}})).depth, 3);
        assert_eq!(measure(&json!(5)).depth, 0);
    }

    #[test]
    fn check_names_the_limit() {
        let limits = StateLimits {
            max_bytes: 10,
            max_depth: 2,
        };
        let e = limits
            .check("state", measure(&json!({"a": "0123456789"})))
            .unwrap_err();
        assert!(matches!(e, DomainError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("MAX_STATE_BYTES"), "{e}");
        let e = limits
            .check("state", measure(&json!({"a": {"b": {}}})))
            .unwrap_err();
        assert!(matches!(e, DomainError::InvalidField { .. }), "{e}");
        assert!(e.to_string().contains("MAX_STATE_DEPTH"), "{e}");
    }
}
