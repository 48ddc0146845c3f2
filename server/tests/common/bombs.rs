//! The hostile JSON Patches of the hardening issue, shared by the tests that refuse them one by
//! one and by the fuzz harness that measures the server's memory under them.

use serde_json::{Value, json};
use temporal_state_proto::v1 as pb;

use super::st;

/// An ApplyEvent of `ops` in JSON_PATCH mode, for `instance_id`.
pub fn json_patch(instance_id: &str, event_type: &str, ops: Vec<Value>) -> pb::ApplyEventRequest {
    pb::ApplyEventRequest {
        instance_id: instance_id.into(),
        event_type: event_type.into(),
        payload: Some(st(json!({ "patch": ops }))),
        mode: pb::ApplyMode::JsonPatch as i32,
        ..Default::default()
    }
}

/// `n` operations each copying the whole state beside itself: the state doubles `n` times.
pub fn copy_bomb(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect()
}

/// `n` operations each adding an object inside the last: a state `n` levels deep.
pub fn nesting_bomb(n: usize) -> Vec<Value> {
    let mut path = String::new();
    (0..n)
        .map(|_| {
            path.push_str("/a");
            json!({"op": "add", "path": path, "value": {}})
        })
        .collect()
}
