//! The response side: the server's answer to a request whose answer must be checked —
//! `tools/list` results filtered to the tools the sandbox may call, `initialize` results
//! checked against `pin_server` — in a JSON body or an event stream. Pure: unit-tested on
//! the host.

use serde_json::{json, Value};

use crate::jsonrpc::{error, Expect, GUARD};
use crate::rules::{Rules, POLICY_DENIED};

/// What the edit did, for the log.
#[derive(Debug, Default, PartialEq)]
pub struct Edited {
    /// Tools removed from `tools/list` results.
    pub hidden: Vec<String>,
    /// The server name an `initialize` result carried, when it was refused.
    pub wrong_server: Option<String>,
}

/// Edit one JSON-RPC message (or batch) in place; whether it changed.
fn edit_value(v: &mut Value, expect: &Expect, rules: &Rules, edited: &mut Edited) -> bool {
    if let Value::Array(items) = v {
        let mut changed = false;
        for m in items {
            changed |= edit_value(m, expect, rules, edited);
        }
        return changed;
    }
    let Some(id) = v.get("id").cloned() else {
        return false;
    };
    let shaped = |ptr: &str| expect.by_shape && v.pointer(ptr).is_some();
    let (list_shaped, init_shaped) = (shaped("/result/tools"), shaped("/result/serverInfo"));
    if (list_shaped && rules.filter_lists) || expect.lists.contains(&id) {
        if let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
            let before = tools.len();
            tools.retain(|t| {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                let keep = rules.tool_allowed(name).is_ok();
                if !keep {
                    edited.hidden.push(name.to_owned());
                }
                keep
            });
            return tools.len() != before;
        }
    }
    let init = init_shaped || expect.inits.contains(&id);
    if let (true, Some(pin)) = (init, &rules.pin_server) {
        if v.get("result").is_none() {
            return false;
        }
        let name = v.pointer("/result/serverInfo/name").and_then(Value::as_str);
        if name != Some(pin.as_str()) {
            let shown = name.map_or_else(|| "(none)".to_owned(), |n| json!(n).to_string());
            let msg = format!(
                "{GUARD}: the MCP server says it is {shown}, not the pinned server {} (pin_server)",
                json!(pin)
            );
            edited.wrong_server = Some(name.unwrap_or("").to_owned());
            let data = json!({"guard": GUARD, "rule": "pin_server", "method": "initialize"});
            *v = error(id, POLICY_DENIED, &msg, data);
            return true;
        }
    }
    false
}

/// The edited body, or `None` when it stays as it is. An event stream is edited event by
/// event (the others are kept byte for byte); anything else is read as JSON.
pub fn edit_body(
    content_type: Option<&str>,
    body: &[u8],
    expect: &Expect,
    rules: &Rules,
) -> (Option<Vec<u8>>, Edited) {
    let mut edited = Edited::default();
    if expect.is_empty() {
        return (None, edited);
    }
    let sse = content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
    });
    if !sse {
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return (None, edited);
        };
        let changed = edit_value(&mut v, expect, rules, &mut edited);
        return (changed.then(|| v.to_string().into_bytes()), edited);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut at = 0;
    for ev in crate::sse::events(body) {
        out.extend_from_slice(&body[at..ev.span.start]);
        at = ev.span.end;
        let mut rewritten = None;
        if let Some(mut v) = ev
            .data(body)
            .and_then(|d| serde_json::from_slice::<Value>(&d).ok())
        {
            if edit_value(&mut v, expect, rules, &mut edited) {
                rewritten = Some(v.to_string());
            }
        }
        match rewritten {
            Some(data) => {
                out.extend_from_slice(&ev.with_data(body, data.as_bytes()));
                changed = true;
            }
            None => out.extend_from_slice(&body[ev.span.clone()]),
        }
    }
    out.extend_from_slice(&body[at..]);
    (changed.then_some(out), edited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Params;

    fn rules(v: Value) -> Rules {
        Rules::compile(serde_json::from_value::<Params>(v).unwrap()).unwrap()
    }

    fn listing(id: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "echo", "inputSchema": {}},
            {"name": "delete_repo", "inputSchema": {}},
            {"name": "search", "description": "d"},
        ]}})
    }

    #[test]
    fn tools_list_results_keep_only_callable_tools() {
        let r = rules(json!({"allow_tools": ["echo", "search", "delete_*"],
                             "deny_tools": ["delete_*"], "filter_lists": true}));
        let expect = Expect {
            lists: vec![json!(2)],
            ..Expect::default()
        };
        let body = listing(json!(2)).to_string();
        let (out, edited) = edit_body(Some("application/json"), body.as_bytes(), &expect, &r);
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "search"]);
        assert_eq!(edited.hidden, ["delete_repo"]);
        // Another id's answer is not touched.
        let other = listing(json!(3)).to_string();
        let (out, _) = edit_body(Some("application/json"), other.as_bytes(), &expect, &r);
        assert!(out.is_none());
    }

    #[test]
    fn in_an_event_stream_only_the_listing_event_is_rewritten() {
        let r = rules(json!({"deny_tools": ["delete_repo"], "filter_lists": true}));
        let expect = Expect {
            lists: vec![json!("L")],
            inits: vec![],
            ..Expect::default()
        };
        let note = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        let body = format!(
            "event: message\r\ndata: {note}\r\n\r\nevent: message\r\nid: 5\r\ndata: {}\r\n\r\n",
            listing(json!("L"))
        );
        let (out, edited) = edit_body(
            Some("text/event-stream; charset=utf-8"),
            body.as_bytes(),
            &expect,
            &r,
        );
        let out = String::from_utf8(out.unwrap()).unwrap();
        let first = format!("event: message\r\ndata: {note}\r\n\r\n");
        assert!(out.starts_with(&first), "{out}");
        let rest = &out[first.len()..];
        assert!(rest.starts_with("event: message\nid: 5\ndata: {"), "{rest}");
        assert!(!rest.contains("delete_repo"));
        assert!(rest.contains("\"echo\""));
        assert_eq!(edited.hidden, ["delete_repo"]);
    }

    #[test]
    fn a_server_with_another_name_is_refused_when_pinned() {
        let r = rules(json!({"pin_server": "github"}));
        let expect = Expect {
            lists: vec![],
            inits: vec![json!(0)],
            ..Expect::default()
        };
        let good = json!({"jsonrpc": "2.0", "id": 0,
                          "result": {"serverInfo": {"name": "github", "version": "1"}}});
        let (out, _) = edit_body(None, good.to_string().as_bytes(), &expect, &r);
        assert!(out.is_none());
        let bad = json!({"jsonrpc": "2.0", "id": 0,
                         "result": {"serverInfo": {"name": "evil", "version": "1"}}});
        let (out, edited) = edit_body(None, bad.to_string().as_bytes(), &expect, &r);
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(v["id"], 0);
        assert_eq!(v["error"]["data"]["rule"], "pin_server");
        assert_eq!(
            v["error"]["message"],
            "mcp-guard: the MCP server says it is \"evil\", not the pinned server \"github\" (pin_server)"
        );
        assert_eq!(edited.wrong_server.as_deref(), Some("evil"));
        // An error answer to initialize is left as it is.
        let err = error(json!(0), -1, "nope", json!(null));
        assert!(edit_body(None, err.to_string().as_bytes(), &expect, &r)
            .0
            .is_none());
    }

    #[test]
    fn by_shape_any_listing_or_init_result_is_checked() {
        let r = rules(
            json!({"allow_tools": ["echo", "search"], "filter_lists": true,
                             "pin_server": "good"}),
        );
        let expect = Expect::by_shape(&r);
        let ev = format!("event: message\ndata: {}\n\n", listing(json!(41)));
        let (out, edited) = edit_body(Some("text/event-stream"), ev.as_bytes(), &expect, &r);
        let out = String::from_utf8(out.unwrap()).unwrap();
        assert!(!out.contains("delete_repo"), "{out}");
        assert_eq!(edited.hidden, ["delete_repo"]);
        let init = json!({"jsonrpc": "2.0", "id": 0,
                          "result": {"serverInfo": {"name": "evil"}}});
        let ev = format!("data: {init}\n\n");
        let (out, edited) = edit_body(Some("text/event-stream"), ev.as_bytes(), &expect, &r);
        assert!(String::from_utf8(out.unwrap())
            .unwrap()
            .contains("pin_server"));
        assert_eq!(edited.wrong_server.as_deref(), Some("evil"));
        // A tool's result is neither.
        let call = json!({"jsonrpc": "2.0", "id": 3, "result": {"content": []}});
        let ev = format!("data: {call}\n\n");
        assert!(
            edit_body(Some("text/event-stream"), ev.as_bytes(), &expect, &r)
                .0
                .is_none()
        );
        // Nothing asked: nothing checked.
        assert!(Expect::by_shape(&rules(json!({}))).is_empty());
    }

    #[test]
    fn batches_are_edited_element_by_element() {
        let r = rules(json!({"deny_tools": ["search"], "filter_lists": true}));
        let expect = Expect {
            lists: vec![json!(1)],
            inits: vec![],
            ..Expect::default()
        };
        let body = json!([listing(json!(1)), {"jsonrpc": "2.0", "id": 2, "result": {}}]);
        let (out, _) = edit_body(None, body.to_string().as_bytes(), &expect, &r);
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(v[0]["result"]["tools"].as_array().unwrap().len(), 2);
        assert_eq!(v[1]["id"], 2);
    }
}
