//! `mcp-guard`: governs Model Context Protocol (MCP) traffic on the wire, per tool call. It
//! reads each JSON-RPC message (or batch) an agent POSTs to an MCP server and lets through
//! only the methods and tool calls the binding's params allow; a refused call is answered
//! the way MCP clients understand, with a JSON-RPC error carrying the request's `id`, in the
//! format the client accepts (JSON, or a server-sent event). It can filter `tools/list`
//! results to the tools the sandbox may call and pin the server's name.
//!
//! Params (all optional):
//!
//! ```toml
//! [handlers.mcp.params]
//! allow_tools = ["search_*", "get_issue", "create_issue"]   # globs; default deny when given
//! deny_tools = ["delete_*"]                                 # globs; deny wins
//! allow_methods = ["resources/*", "prompts/get"]            # other methods; absent: all pass
//! filter_lists = true                                       # hide tools the sandbox cannot call
//! pin_server = "github-mcp"                                 # initialize must name this server
//!
//! [handlers.mcp.params.args.create_issue]                   # per tool (a glob)
//! repo = "sandbox-*"            # a string is a glob (exact without * or ?)
//! priority = 3                  # a number must be equal
//! label = ["bug", "question"]   # a list is one-of
//! title = { equals = "a*b" }    # or say which: equals / glob / one_of
//! ```
//!
//! * `initialize`, `ping`, `notifications/*` and `tools/list` always pass; a client's answer to
//!   a server request (no `method`) passes.
//! * `tools/call`: refused when its `params.name` matches `deny_tools`, or `allow_tools` is
//!   given and it matches none of them, or an argument rule of a matching `args` entry fails
//!   (rules apply to top-level string and number arguments; a missing or other-typed argument
//!   fails). Error code `-32003`, the message names the tool and the rule, `data` holds
//!   `guard`, `rule`, `method` and `tool`.
//! * Any other method: refused unless it matches `allow_methods` (when given).
//! * A batch (a JSON array) is refused whole when any element is; each request of it gets an
//!   error, the refused ones their own reason, the others a message naming every refused
//!   element.
//! * A body that is not JSON-RPC is refused with HTTP 400 and a JSON-RPC error (`-32700` not
//!   JSON, `-32600` not a valid message) saying what is wrong.
//! * `filter_lists` and `pin_server` edit the server's answer: the binding must see responses,
//!   buffered (`response = { mode = "buffer", max_bytes = N }`) or streamed
//!   (`response = { mode = "stream" }`); without either the guard fails closed (`502`).
//!   Answers sent as an event stream are edited event by event; a JSON answer streamed is
//!   held until it is whole.
//! * Server-push streams (`GET` asking for `text/event-stream`: the standalone stream of
//!   streamable HTTP, the `GET /sse` of the older HTTP+SSE transport) are carried only with
//!   `response = { mode = "stream" }`: each event is checked before it is sent (a `tools/list`
//!   or `initialize` result is recognised by its shape, since its request went to another
//!   instance). Without it they are answered `405` naming that setting (streamable HTTP
//!   clients carry on without the standalone stream; the MCP spec lets a server answer 405).
//! * On the HTTP+SSE transport (a `POST` whose query names the session: `session_id` or
//!   `sessionId`) the answer to a call comes on the `GET /sse` stream, not on the `POST`: a
//!   refused call is forwarded as a `ping` with the same `id`, and the stream's instance
//!   swaps the server's answer to it for the JSON-RPC error (handed over in the sandbox's kv
//!   store for a minute), so the client gets the error where it waits for the answer.
//!
//! Every message checked is logged (`mcp.method=... mcp.tool=... decision=allow|deny`), and
//! the request's audit event carries it under `handler_fields` (`mcp.method`, `mcp.tool`,
//! `decision`, `rule`; `mcp.hidden` for the tools a listing hid, `mcp.server` for a refused
//! server name; a batch's methods and tools comma-separated).
//!
//! The binding needs the request body: `body = { max_bytes = N }`. Misconfiguration (unknown
//! or ill-typed params, no buffered body) answers `500` with the reason: the guard fails
//! closed rather than letting calls pass unchecked.

pub mod answer;
pub mod jsonrpc;
pub mod rules;
pub mod sse;

use std::sync::Mutex;

use egret_handler::{Action, Context, EventAction, Request, Response, ResponseAction};
use serde_json::{json, Value};

use jsonrpc::{Call, Expect, Format, Verdict, GUARD};
use rules::{Params, Rules};

/// What the response phase of this request checks. The same instance serves every phase of
/// one request, so this is per request.
struct Pending {
    rules: Rules,
    expect: Expect,
    /// The HTTP+SSE session of a `GET /sse` stream (from its `endpoint` event).
    session: Option<String>,
    /// A JSON (not event-stream) answer streamed in pieces, held until it is whole.
    held: Option<Vec<u8>>,
}

/// The largest streamed JSON answer held to be checked whole.
const MAX_HELD: usize = 8 << 20;
/// How long a refused call's error waits for its stream (kv TTL).
const DENIAL_TTL_MS: u64 = 60_000;

static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

/// An answer of this guard: a JSON-RPC message in the client's format.
fn answer(status: u16, format: Format, msg: &Value) -> Action {
    Action::respond(status)
        .header("content-type", format.content_type())
        .header("x-egret-handler", GUARD)
        .body(format.body(msg))
}

/// The guard is misconfigured: fail closed, saying why.
fn misconfigured(format: Format, msg: &str) -> Action {
    egret_handler::log::error!("{GUARD}: {msg}");
    let msg = format!("{GUARD}: {msg}");
    let err = jsonrpc::error(Value::Null, -32603, &msg, json!({"guard": GUARD}));
    answer(500, format, &err)
}

/// The request's audit event says what was called and what was decided
/// (`handler_fields`: `mcp.method`, `mcp.tool`, `decision`, `rule`); a batch lists each.
fn audit_calls(calls: &[Call]) {
    let join = |f: &dyn Fn(&Call) -> Option<&str>| -> String {
        let parts: Vec<&str> = calls.iter().filter_map(f).collect();
        parts.join(",")
    };
    let methods = join(&|c| Some(c.method.as_str()));
    let tools = join(&|c| c.tool.as_deref());
    let rules = join(&|c| c.refused.as_ref().map(|r| r.rule.as_str()));
    let denied = calls.iter().any(|c| c.refused.is_some());
    audit("mcp.method", &methods);
    if !tools.is_empty() {
        audit("mcp.tool", &tools);
    }
    audit("decision", if denied { "deny" } else { "allow" });
    if denied {
        audit("rule", &rules);
    }
}

fn audit(key: &str, value: &str) {
    if let Err(e) = egret_handler::audit_field(key, value) {
        egret_handler::log::debug!("{GUARD}: audit field {key}: {e}");
    }
}

/// One log line per message: what the guard's log reads.
fn log_calls(calls: &[Call]) {
    for c in calls {
        let tool = c.tool.as_deref().unwrap_or("-");
        match &c.refused {
            None => egret_handler::log::info!(
                "{GUARD}: mcp.method={} mcp.tool={tool} decision=allow",
                c.method
            ),
            Some(r) => egret_handler::log::warn!(
                "{GUARD}: mcp.method={} mcp.tool={tool} decision=deny rule={}",
                c.method,
                r.rule
            ),
        }
    }
}

fn handle(ctx: Context, req: Request) -> Action {
    let format = Format::for_accept(req.header_str("accept"));
    let rules = match ctx.params::<Params>() {
        Ok(p) => match Rules::compile(p) {
            Ok(r) => r,
            Err(e) => return misconfigured(format, &format!("bad params: {e}")),
        },
        Err(e) => return misconfigured(format, &format!("bad params: {e}")),
    };
    match req.method() {
        "POST" => {}
        "GET" if accepts_event_stream(&req) && egret_handler::response_streams() => {
            *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
                expect: Expect::by_shape(&rules),
                rules,
                session: None,
                held: None,
            });
            return Action::forward().set_header("x-egret-handler", GUARD);
        }
        "GET" if accepts_event_stream(&req) => {
            let msg = format!(
                "{GUARD}: server-push event streams (GET) are carried only when the guard \
                 checks each event before it is sent: set response = {{ mode = \"stream\" }} \
                 on the handler (or use streamable HTTP, whose answers come on the POST)"
            );
            return Action::respond(405)
                .header("content-type", "text/plain; charset=utf-8")
                .header("allow", "POST, DELETE")
                .header("x-egret-handler", GUARD)
                .body(msg);
        }
        _ => return Action::forward().set_header("x-egret-handler", GUARD),
    }
    let Some(body) = req.body() else {
        return misconfigured(
            format,
            "the binding must buffer request bodies: set body = { max_bytes = N }",
        );
    };
    match jsonrpc::check_body(body, &rules) {
        Verdict::Refuse {
            calls,
            status,
            answer: msg,
        } => {
            log_calls(&calls);
            audit_calls(&calls);
            match legacy_session(&req).filter(|_| egret_handler::response_streams()) {
                Some(session) => match deny_on_stream(&session, &msg) {
                    Some(ping) => Action::forward()
                        .set_header("x-egret-handler", GUARD)
                        .set_body(ping),
                    None => answer(status, format, &msg),
                },
                None => answer(status, format, &msg),
            }
        }
        Verdict::Pass { calls, expect } => {
            log_calls(&calls);
            audit_calls(&calls);
            if !expect.is_empty() {
                *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
                    rules,
                    expect,
                    session: None,
                    held: None,
                });
            }
            Action::forward().set_header("x-egret-handler", GUARD)
        }
    }
}

/// The session of an HTTP+SSE transport `POST` (`?session_id=` from Python's SDK,
/// `?sessionId=` from TypeScript's).
fn legacy_session(req: &Request) -> Option<String> {
    req.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        matches!(k, "session_id" | "sessionId")
            .then(|| v.to_owned())
            .filter(|v| !v.is_empty())
    })
}

fn denial_key(session: &str, id: &Value) -> String {
    format!("mcp-guard/denied/{session}/{id}")
}

/// A refused request of the HTTP+SSE transport: hand its error to the session's stream and
/// return the `ping` to forward in its place; `None` for what has no single answer (a
/// notification, a batch, no kv room): that is answered on the `POST` as usual.
fn deny_on_stream(session: &str, answer: &Value) -> Option<Vec<u8>> {
    let id = answer.get("id").filter(|id| !id.is_null())?;
    let key = denial_key(session, id);
    if let Err(e) = egret_handler::kv::set_with_ttl(&key, answer.to_string(), DENIAL_TTL_MS) {
        egret_handler::log::warn!("{GUARD}: cannot hand the refusal to the stream: {e}");
        return None;
    }
    Some(
        json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
            .to_string()
            .into_bytes(),
    )
}

fn accepts_event_stream(req: &Request) -> bool {
    req.header_str("accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"))
}

fn on_response(_ctx: Context, resp: Response) -> ResponseAction {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if pending.is_some() && resp.body().is_none() && egret_handler::response_streams() {
        // The body follows piece by piece (`on_event`), checked as it goes.
        if let Some(p) = pending.as_mut() {
            // A JSON answer is checked whole; anything else (an event stream, the `Accepted`
            // of an HTTP+SSE `POST`) piece by piece.
            let json = resp
                .header_str("content-type")
                .is_some_and(|c| c.to_ascii_lowercase().contains("json"));
            p.held = (json && !p.expect.by_shape).then(Vec::new);
        }
        return ResponseAction::pass();
    }
    let Some(p) = pending.take() else {
        return ResponseAction::pass();
    };
    drop(pending);
    let Some(body) = resp.body() else {
        let msg = format!(
            "{GUARD}: filter_lists and pin_server read the server's answer: the binding must \
             buffer responses (response = {{ mode = \"buffer\", max_bytes = N }})"
        );
        egret_handler::log::error!("{msg}");
        return ResponseAction::replace(502, &msg);
    };
    edit_answer(&p, resp.header_str("content-type"), body)
        .map_or_else(ResponseAction::pass, |b| ResponseAction::pass().body(b))
}

/// The answer edited for `p` (`None`: unchanged), logged and audited.
fn edit_answer(p: &Pending, content_type: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    let (edited_body, edited) = answer::edit_body(content_type, body, &p.expect, &p.rules);
    if !edited.hidden.is_empty() {
        let hidden = edited.hidden.join(",");
        egret_handler::log::info!("{GUARD}: mcp.method=tools/list hidden={hidden}");
        audit("mcp.hidden", &hidden);
    }
    if let Some(name) = &edited.wrong_server {
        egret_handler::log::warn!(
            "{GUARD}: mcp.method=initialize decision=deny rule=pin_server server={name:?}"
        );
        audit("decision", "deny");
        audit("rule", "pin_server");
        audit("mcp.server", name);
    }
    edited_body
}

/// The stream phase: each event (or, for a JSON answer, each chunk) before it is sent.
fn on_event(_ctx: Context, event: &[u8]) -> EventAction {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = pending.as_mut() else {
        return EventAction::Pass;
    };
    if let Some(held) = p.held.as_mut() {
        // A JSON answer: hold its pieces until they parse, then send it whole, edited.
        held.extend_from_slice(event);
        if held.len() > MAX_HELD {
            egret_handler::log::error!(
                "{GUARD}: a streamed JSON answer passed {MAX_HELD} bytes unchecked; dropped"
            );
            p.held = Some(Vec::new());
            return EventAction::Drop;
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(held).is_err() {
            return EventAction::Drop;
        }
        let whole = std::mem::take(held);
        let edited = edit_answer(p, Some("application/json"), &whole);
        return EventAction::Replace(edited.unwrap_or(whole));
    }
    let ev = egret_handler::sse::Event::parse(event);
    if ev.event_type() == "endpoint" {
        p.session = ev.data().and_then(|d| {
            let q = d.split_once('?')?.1.to_owned();
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                matches!(k, "session_id" | "sessionId").then(|| v.to_owned())
            })
        });
        return EventAction::Pass;
    }
    if let Some(denied) = p.session.as_deref().and_then(|s| refused_answer(s, &ev)) {
        return EventAction::Replace(ev.with_data(&denied).to_bytes());
    }
    match edit_answer(p, Some("text/event-stream"), event) {
        Some(b) => EventAction::Replace(b),
        None => EventAction::Pass,
    }
}

/// The error a `POST` of `session` left for the answer this event carries, if any.
fn refused_answer(session: &str, ev: &egret_handler::sse::Event) -> Option<String> {
    let msg: Value = serde_json::from_str(&ev.data()?).ok()?;
    let id = msg.get("id").filter(|_| msg.get("method").is_none())?;
    let key = denial_key(session, id);
    let answer = egret_handler::kv::get(&key)?;
    egret_handler::kv::delete(&key);
    String::from_utf8(answer).ok()
}

egret_handler::export!(handle, on_response = on_response, on_event = on_event);
