//! Audit events: one per HTTP request and one per opaque connection, emitted as tracing
//! events on the `egret::audit` target with fields (never secret values: only names, paths
//! with the query masked, decisions and sizes).
use crate::authority::Target;
use crate::conn::ConnInfo;
use crate::http_engine::Outcome;
use crate::Proxy;
use egret_policy::CompiledPolicy;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;

/// Replace the query string with `?[masked]` (it often carries tokens).
pub fn mask_query(path: &str) -> std::borrow::Cow<'_, str> {
    match path.split_once('?') {
        Some((p, _)) => std::borrow::Cow::Owned(format!("{p}?[masked]")),
        None => std::borrow::Cow::Borrowed(path),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn request(
    proxy: &Proxy,
    info: &ConnInfo,
    policy: &CompiledPolicy,
    target: Option<&Target>,
    method: &Method,
    path: &str,
    status: StatusCode,
    outcome: &Outcome,
    elapsed: Duration,
) {
    let host = target.map(|t| t.host.as_str()).unwrap_or("-");
    tracing::info!(
        target: "egret::audit",
        sandbox = %proxy.cfg.sandbox_id,
        generation = policy.generation(),
        conn = info.id,
        client = %info.client,
        host,
        dst = %info.orig,
        proto = if info.tls { "https" } else { "http" },
        method = %method,
        path = %mask_query(path),
        rule = %outcome.rule,
        handler = outcome.handler.as_deref().unwrap_or("-"),
        decision = outcome.decision,
        status = status.as_u16(),
        duration_us = elapsed.as_micros() as u64,
        error = outcome.error.as_deref().unwrap_or(""),
        "request"
    );
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn connection(
    proxy: &Proxy,
    conn: u64,
    client: SocketAddr,
    orig: SocketAddr,
    name: Option<&str>,
    proto: &'static str,
    decision: &'static str,
    rule: &str,
    bytes_up: u64,
    bytes_down: u64,
) {
    tracing::info!(
        target: "egret::audit",
        sandbox = %proxy.cfg.sandbox_id,
        generation = proxy.policy.load().generation(),
        conn,
        client = %client,
        host = name.unwrap_or("-"),
        dst = %orig,
        proto,
        decision,
        rule,
        bytes_up,
        bytes_down,
        "connection"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_is_masked() {
        assert_eq!(super::mask_query("/a?token=x"), "/a?[masked]");
        assert_eq!(super::mask_query("/a"), "/a");
    }
}
