//! Per-request store data: the WASI context (with nothing granted), the
//! memory limiter, captured guest output, and what the `egret:handler/host`
//! imports work on (log, secrets, kv, the services a binding is granted); the
//! imports themselves, per WIT version, are in `imports.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::kv::KvStore;
use crate::secrets::{Grants, SecretSource, SecretValue};
use crate::services::Services;

/// Longest log message kept from a guest, in bytes.
pub(crate) const MAX_LOG_BYTES: usize = 4 << 10;
/// Most log lines one invocation may emit; further lines are counted, not
/// logged, so a guest cannot flood the logs.
pub(crate) const MAX_LOG_LINES: u32 = 64;
/// How much guest stdout/stderr is kept (the rest is dropped silently).
pub(crate) const MAX_CAPTURED_OUTPUT: usize = 8 << 10;
/// Longest secret name echoed in an error string.
const MAX_NAME_ECHO: usize = 128;

/// Caps linear memory and table growth of one store. Denials are recorded so
/// a trap that follows (e.g. Rust's allocation-failure abort) is reported as
/// out-of-memory rather than a generic trap.
pub(crate) struct MemoryLimiter {
    pub(crate) memory_limit: usize,
    pub(crate) table_elements_limit: usize,
    pub(crate) memory_denied: bool,
    /// The largest linear memory size granted so far (a reused instance is recycled once
    /// this grew past its bound).
    pub(crate) memory_bytes: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_denied = true;
            return Ok(false);
        }
        self.memory_bytes = self.memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements_limit)
    }
}

/// Bounded in-memory sink for guest stdout/stderr. Unlike wasmtime-wasi's
/// `MemoryOutputPipe`, writing past the bound is not an error (which would
/// trap the guest): the excess is dropped.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl CapturedOutput {
    fn new() -> CapturedOutput {
        CapturedOutput {
            buf: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock();
        let room = MAX_CAPTURED_OUTPUT.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock())
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a full WASI chunk; excess is dropped in `push`.
        Ok(4096)
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Builds the WASI context of a request: clocks and random only.
///
/// No preopened directories, no environment variables, no arguments, stdin
/// closed, stdout/stderr captured (bounded), TCP/UDP disabled with every
/// socket address denied, and name lookup disabled. Guests still get the
/// host's wall and monotonic clocks and random numbers, which Rust's std
/// expects to exist.
fn wasi_ctx(output: &CapturedOutput) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(output.clone())
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Everything one request's store holds.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) output: CapturedOutput,
    handler: String,
    sandbox: String,
    grants: Grants,
    /// Granted secrets that exist, fetched once per request: used for
    /// `has-secret`, `reveal-secret` and log redaction.
    granted: Vec<(String, SecretValue)>,
    pub(crate) kv: KvStore,
    log_lines: u32,
    pub(crate) logs_dropped: u32,
    /// What the binding may call besides kv and secrets (fetch, set-secret).
    pub(crate) services: Services,
    /// `fetch` calls made so far in this invocation.
    pub(crate) fetches: u32,
    /// What the guest attached to the request's audit event.
    pub(crate) audit: crate::audit_fields::AuditFields,
}

/// Inputs for [`StoreState::new`].
pub(crate) struct StateInit<'a> {
    pub handler: &'a str,
    pub sandbox: &'a str,
    pub grants: &'a Grants,
    pub secrets: &'a dyn SecretSource,
    pub kv: &'a KvStore,
    pub memory_limit: usize,
    pub services: Services,
}

impl StateInit<'_> {
    /// The granted secrets that exist, read once per request.
    fn granted(&self) -> Vec<(String, SecretValue)> {
        self.grants
            .usable()
            .filter_map(|name| self.secrets.get(name).map(|v| (name.to_owned(), v)))
            .collect()
    }
}

impl StoreState {
    pub(crate) fn new(init: StateInit<'_>) -> StoreState {
        let output = CapturedOutput::new();
        let granted = init.granted();
        StoreState {
            wasi: wasi_ctx(&output),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                memory_limit: init.memory_limit,
                table_elements_limit: 100_000,
                memory_denied: false,
                memory_bytes: 0,
            },
            output,
            handler: init.handler.to_owned(),
            sandbox: init.sandbox.to_owned(),
            grants: init.grants.clone(),
            granted,
            kv: init.kv.clone(),
            log_lines: 0,
            logs_dropped: 0,
            services: init.services,
            fetches: 0,
            audit: Default::default(),
        }
    }

    /// Makes a reused instance's state that of a new request: everything per request is
    /// read again (secrets, grants, services, limits, log budget); the WASI context and the
    /// resource table stay, since the guest holds handles into them.
    pub(crate) fn renew(&mut self, init: StateInit<'_>) {
        let granted = init.granted();
        self.limiter.memory_limit = init.memory_limit;
        self.limiter.memory_denied = false;
        self.output.take();
        self.handler.clear();
        self.handler.push_str(init.handler);
        self.sandbox.clear();
        self.sandbox.push_str(init.sandbox);
        self.grants = init.grants.clone();
        self.granted = granted;
        self.kv = init.kv.clone();
        self.log_lines = 0;
        self.logs_dropped = 0;
        self.services = init.services;
        self.fetches = 0;
        self.audit.clear();
    }

    pub(crate) fn sandbox(&self) -> &str {
        &self.sandbox
    }

    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The granted secrets that exist, as a source for filling them in.
    pub(crate) fn granted(&self) -> GrantedSecrets<'_> {
        GrantedSecrets(&self.granted)
    }

    /// A secret the guest obtained itself: stored for later requests (and this one) under a
    /// name the binding may mint.
    pub(crate) fn mint(
        &mut self,
        name: &str,
        value: Vec<u8>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        if !self.grants.may_mint(name) {
            return Err(format!(
                "handler `{h}` may not set secret `{n}`: the admin must list it in the handler's \
                 mint_secrets",
                h = self.handler,
                n = echo_name(name)
            ));
        }
        let Some(store) = &self.services.mint else {
            return Err("set-secret is not available here".into());
        };
        store.set_with_ttl(name, value.clone(), ttl);
        self.granted.retain(|(n, _)| n != name);
        self.granted
            .push((name.to_owned(), SecretValue::new(value)));
        Ok(())
    }

    pub(crate) fn handler(&self) -> &str {
        &self.handler
    }

    /// Replaces every occurrence of a granted secret's value with
    /// `[REDACTED]`. Handlers may reveal secrets, so anything they print
    /// passes through here before reaching a log.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact_with(text, self.granted.iter().map(|(_, v)| v))
    }
}

/// Redacts `values` (non-empty, UTF-8 ones) from `text`.
pub(crate) fn redact_with<'a>(text: &str, values: impl Iterator<Item = &'a SecretValue>) -> String {
    let mut out = text.to_owned();
    for v in values {
        if let Some(s) = v.expose_str() {
            if !s.is_empty() && out.contains(s) {
                out = out.replace(s, "[REDACTED]");
            }
        }
    }
    out
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("…[truncated]");
    }
    s
}

fn echo_name(name: &str) -> String {
    truncate(name.escape_debug().to_string(), MAX_NAME_ECHO)
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The granted secrets of one invocation as a [`SecretSource`].
pub(crate) struct GrantedSecrets<'a>(&'a [(String, SecretValue)]);

impl SecretSource for GrantedSecrets<'_> {
    fn get(&self, name: &str) -> Option<SecretValue> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Log levels of every WIT version.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl StoreState {
    pub(crate) fn log(&mut self, level: Level, msg: String) {
        if self.log_lines >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return;
        }
        self.log_lines += 1;
        // Redact before truncating so a cut can never leave part of a value.
        let msg = truncate(self.redact(&msg), MAX_LOG_BYTES);
        let (handler, sandbox) = (self.handler.as_str(), self.sandbox.as_str());
        match level {
            Level::Debug => {
                tracing::debug!(target: "egret_wasm::guest", handler, sandbox, "{msg}")
            }
            Level::Info => {
                tracing::info!(target: "egret_wasm::guest", handler, sandbox, "{msg}")
            }
            Level::Warn => {
                tracing::warn!(target: "egret_wasm::guest", handler, sandbox, "{msg}")
            }
            Level::Error => {
                tracing::error!(target: "egret_wasm::guest", handler, sandbox, "{msg}")
            }
        }
    }

    /// `audit-field`: redacted before it is cut, like a log line.
    pub(crate) fn audit_field(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = self.redact(value);
        self.audit.set(key, &value)
    }

    pub(crate) fn has_secret(&self, name: &str) -> bool {
        self.granted.iter().any(|(n, _)| *n == name)
    }

    pub(crate) fn reveal_secret(&self, name: &str) -> Result<String, String> {
        if !self.grants.may_reveal(name) {
            return Err(format!(
                "secret `{n}` may not be revealed to handler `{h}`: the admin must grant it with \
                 reveal (add `{n}` to the handler's reveal grants)",
                n = echo_name(name),
                h = self.handler,
            ));
        }
        let Some((_, value)) = self.granted.iter().find(|(n, _)| *n == name) else {
            return Err(format!("secret `{}` is not set", echo_name(name)));
        };
        match value.expose_str() {
            Some(s) => Ok(s.to_owned()),
            None => Err(format!(
                "secret `{}` is not valid UTF-8 and cannot be revealed as a string",
                echo_name(name)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_and_truncation() {
        let vals = [SecretValue::new("hunter2"), SecretValue::new("")];
        assert_eq!(redact_with("pw=hunter2!", vals.iter()), "pw=[REDACTED]!");
        let t = truncate("héllo".repeat(10), 6);
        assert!(t.starts_with("héllo") && t.ends_with("[truncated]"), "{t}");
    }
}
