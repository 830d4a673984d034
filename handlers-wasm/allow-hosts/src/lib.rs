//! `allow-hosts`: only requests to listed hosts are forwarded; others get a
//! `403` whose body names the host.
//!
//! Params: `{"hosts": ["api.github.com", "*.googleapis.com"]}`. An entry is an
//! exact host (case-insensitive, port ignored) or `*.suffix`, which matches any
//! subdomain of `suffix` but not `suffix` itself.

use egret_handler::{Action, Context, Request};

const NAME: &str = "allow-hosts";

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default)]
    hosts: Vec<String>,
}

fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

fn handle(ctx: Context, req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => {
            return Action::deny(500, &format!("{NAME}: bad params: {e}"))
                .header("x-egret-handler", NAME)
        }
    };
    let host = req.host().trim_end_matches('.').to_ascii_lowercase();
    if p.hosts
        .iter()
        .any(|pat| matches(&pat.to_ascii_lowercase(), &host))
    {
        Action::forward().set_header("x-egret-handler", NAME)
    } else {
        Action::deny(
            403,
            &format!("egret: host {host} is not allowed by handler {NAME}"),
        )
        .header("x-egret-handler", NAME)
    }
}

egret_handler::export!(handle);
