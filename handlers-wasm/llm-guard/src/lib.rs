//! `llm-guard`: polices an OpenAI-style chat completions API (`POST /v1/chat/completions`)
//! for a sandbox: which models it may call, how many tokens one answer may have, a token
//! budget per sandbox, no secrets in prompts, and the API key injected by reference.
//!
//! Params (all optional):
//!
//! ```json
//! {"models": ["gpt-4o-mini", "local-*"], "max_tokens_cap": 1024,
//!  "budget_tokens": 200000, "budget_window_s": 86400,
//!  "watch_secrets": ["DB_PASSWORD"], "api_key_secret": "OPENAI_KEY"}
//! ```
//!
//! * `models`: the allowed models (an entry ending in `*` allows a prefix). Another model (or
//!   none) gets `403` with an OpenAI-style JSON error naming the model and the allowed list.
//! * `max_tokens_cap`: a request asking for more tokens, or not saying (the model's maximum),
//!   is **capped**, not refused: `max_tokens` (and `max_completion_tokens` when present) is
//!   rewritten to the cap with `Action::set_body` (egret sets `content-length`); when neither is
//!   present, `max_tokens` is added. Capping keeps agents working whose SDKs send a large
//!   default or none (they get `finish_reason: "length"` when the answer is cut), while the cost
//!   of one answer stays bounded. A body within the cap is passed on byte for byte; a rewritten
//!   one is re-serialized (same members, keys in sorted order). A non-integer limit is `400`.
//! * `budget_tokens` (with optional `budget_window_s`): the sandbox's token budget. Usage is
//!   counted from each response's `usage.total_tokens` — from a JSON answer and from a
//!   server-sent event stream's usage chunk — into the sandbox's kv counter
//!   `llm-guard/<binding name>/tokens` with `kv::incr` (the window is the counter's ttl, set
//!   when it is created: a fixed window, not a sliding one). The check is at request time:
//!   once `used >= budget_tokens`, requests get `429` with a JSON error holding `budget`,
//!   `used` and `window_s`. Usage is only known after an answer, so requests admitted while
//!   under budget (including concurrent ones) may take it over; the budget bounds spending to
//!   roughly one answer's worth beyond it. Streaming requests are rewritten to ask for
//!   `stream_options.include_usage` (OpenAI sends a stream's usage only then; the client sees
//!   one more chunk, with empty `choices`).
//! * `watch_secrets`: secrets that must never be sent in a prompt (e.g. a database password
//!   the agent legitimately holds). A body containing one's value — as it is, escaped in a JSON
//!   string, in base64 or percent-encoded — gets `403` naming the secret, never its value, and
//!   never reaches upstream.
//! * `api_key_secret`: injected as `authorization: Bearer <value>` on the chat requests, by
//!   reference: egret fills it in after the guest returns and masks it if it echoes back.
//!
//! Non-chat requests (any other method or path) are forwarded unchanged (only
//! `x-egret-handler: llm-guard` is added, as on every request it forwards): in particular they
//! get no API key, so the sandbox cannot use the key on endpoints this guard does not police.
//!
//! Policy it needs:
//!
//! ```toml
//! [secrets]
//! OPENAI_KEY = { env = "OPENAI_KEY" }
//! DB_PASSWORD = { env = "DB_PASSWORD" }
//!
//! [handlers.llm]
//! module = "handlers-wasm/dist/llm-guard.wasm"
//! secrets = ["OPENAI_KEY", "DB_PASSWORD"]
//! reveal = ["DB_PASSWORD"]           # exactly the watch list, never the API key
//! body = { max_bytes = 1048576 }     # the guard reads and rewrites the request body
//! response = { mode = "observe" }    # counts usage as the answer streams past
//!
//! [handlers.llm.params]
//! models = ["gpt-4o-mini"]
//! max_tokens_cap = 1024
//! budget_tokens = 200000
//! budget_window_s = 86400
//! watch_secrets = ["DB_PASSWORD"]
//! api_key_secret = "OPENAI_KEY"
//!
//! [[routes]]
//! host = "api.openai.com"
//! handler = "llm"
//! ```
//!
//! Secrets and the trade-off of `reveal`: a guest holds no secret value by default, so to look
//! for one in a body it must be granted `reveal` for it. Only the watch list is revealed, and
//! only for the request being checked (each request runs in a fresh instance that is dropped
//! afterwards); the value is compared in guest memory, never logged or returned (egret would
//! redact it in a log line anyway). The API key stays injected by reference and is *not*
//! revealed: the sandbox never holds it, so it cannot put it in a prompt, and egret's echo
//! guard masks it where a response reflects it. Watching the key too would need `reveal` for
//! it and put it in guest memory for every request — possible, but it weakens the one
//! property that matters most for it, so the example does not. Without `body`, the guard
//! fails closed (`500`): it cannot police what it cannot read.
//!
//! Misconfiguration (unknown or ill-typed params, a watched secret not granted with `reveal`)
//! answers `500` with the reason: the guard fails closed rather than letting requests pass
//! unchecked.

pub mod check;
pub mod usage;

use std::sync::Mutex;

use egret_handler::{kv, Action, Context, Request, Response, ResponseAction};

const NAME: &str = "llm-guard";

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    max_tokens_cap: Option<u64>,
    #[serde(default)]
    budget_tokens: Option<u64>,
    #[serde(default)]
    budget_window_s: Option<u64>,
    #[serde(default)]
    watch_secrets: Vec<String>,
    #[serde(default)]
    api_key_secret: Option<String>,
}

/// What the observe phase of this request counts into. The same instance serves every phase
/// of one request, so this is per request.
struct Counting {
    tracker: usage::UsageTracker,
    /// Tokens already added to the counter for this response.
    counted: u64,
    key: String,
    ttl_ms: Option<u64>,
}

static COUNTING: Mutex<Option<Counting>> = Mutex::new(None);

/// A local answer with a JSON body.
fn respond_json(status: u16, body: &serde_json::Value) -> Action {
    Action::respond(status)
        .header("content-type", "application/json")
        .header("x-egret-handler", NAME)
        .body(body.to_string())
}

/// The guard is misconfigured: fail closed, saying why.
fn misconfigured(msg: &str) -> Action {
    egret_handler::log::error!("{NAME}: {msg}");
    let body = serde_json::json!({
        "error": { "message": format!("{NAME}: {msg}"), "type": "llm_guard",
                   "code": "guard_misconfigured" }
    });
    respond_json(500, &body)
}

fn budget_key(ctx: &Context) -> String {
    format!("{NAME}/{}/tokens", ctx.handler_name())
}

fn handle(ctx: Context, req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => return misconfigured(&format!("bad params: {e}")),
    };
    if req.method() != "POST" || req.path() != "/v1/chat/completions" {
        return Action::forward().set_header("x-egret-handler", NAME);
    }
    let Some(body) = req.body() else {
        return misconfigured(
            "the binding must buffer request bodies: set body = { max_bytes = N }",
        );
    };
    let mut watched = Vec::with_capacity(p.watch_secrets.len());
    for name in &p.watch_secrets {
        match egret_handler::reveal_secret(name) {
            Ok(v) => watched.push((name.clone(), v)),
            Err(e) => return misconfigured(&format!("cannot read watched secret `{name}`: {e}")),
        }
    }
    let key = budget_key(&ctx);
    let used = match p.budget_tokens {
        Some(_) => kv::get_string(&key)
            .and_then(|s| s.parse::<i64>().ok())
            .map_or(0, |n| n.max(0) as u64),
        None => 0,
    };
    let rules = check::Rules {
        models: p.models.as_deref(),
        max_tokens_cap: p.max_tokens_cap,
        budget: p.budget_tokens.map(|b| (b, p.budget_window_s)),
    };
    let decision = check::decide(body, &rules, &watched, used);
    drop(watched);
    match decision {
        check::Decision::Refuse { status, error } => {
            let code = error["error"]["code"].as_str().unwrap_or("refused");
            egret_handler::log::warn!("{NAME}: refused ({status} {code})");
            respond_json(status, &error)
        }
        check::Decision::Forward { body } => {
            if p.budget_tokens.is_some() {
                *COUNTING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Counting {
                    tracker: usage::UsageTracker::new(),
                    counted: 0,
                    key,
                    ttl_ms: p.budget_window_s.map(|s| s.saturating_mul(1000)),
                });
            }
            let mut action = Action::forward().set_header("x-egret-handler", NAME);
            if let Some(b) = body {
                action = action.set_body(b);
            }
            if let Some(secret) = &p.api_key_secret {
                action = action.set_header_secret("authorization", "Bearer {}", secret);
            }
            action
        }
    }
}

/// Add what the tracker saw beyond what was counted to the sandbox's counter.
fn count(c: &mut Counting) {
    let Some(total) = c.tracker.total() else {
        return;
    };
    if total <= c.counted {
        return;
    }
    let delta = total - c.counted;
    match kv::incr(&c.key, i64::try_from(delta).unwrap_or(i64::MAX), c.ttl_ms) {
        Ok(used) => {
            c.counted = total;
            egret_handler::log::info!(
                "{NAME}: counted {delta} tokens; the sandbox has used {used}"
            );
        }
        Err(e) => egret_handler::log::error!("{NAME}: counting {delta} tokens failed: {e}"),
    }
}

/// The response head, before its chunks: its `content-type` says how to read the usage.
fn on_response(_ctx: Context, resp: Response) -> ResponseAction {
    if let Some(c) = COUNTING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        c.tracker = usage::UsageTracker::for_content_type(resp.header_str("content-type"));
    }
    ResponseAction::pass()
}

fn on_chunk(_ctx: Context, chunk: &[u8]) {
    if let Some(c) = COUNTING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        c.tracker.feed(chunk);
        count(c);
    }
}

fn on_end(_ctx: Context) {
    if let Some(mut c) = COUNTING.lock().unwrap_or_else(|e| e.into_inner()).take() {
        c.tracker.finish();
        count(&mut c);
        if c.counted == 0 {
            egret_handler::log::info!("{NAME}: the response reported no usage: nothing counted");
        }
    }
}

egret_handler::export!(
    handle,
    on_response = on_response,
    on_chunk = on_chunk,
    on_end = on_end
);
