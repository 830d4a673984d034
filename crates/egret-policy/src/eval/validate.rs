//! Validation of the `[handlers]` and `[secrets]` tables: names, limits, grants and the
//! capabilities a handler opts into. Problems stop the policy; warnings are kept with it.

use crate::config::{
    HandlerConfig, ResponseMode, SecretSource, MAX_BUFFER_BYTES, MEMORY_MB_RANGE, TIMEOUT_MS_RANGE,
};
use crate::error::Problem;
use crate::pattern::is_valid_name;

use super::compile::Compiler;

const NAME_RULE: &str = "names use only A-Z a-z 0-9 `_` `.` `-`, 1 to 64 characters";

/// The path of entry `name` of `table` in problems: quoted when the name is not valid.
fn entry_path(table: &str, name: &str) -> String {
    if is_valid_name(name) {
        format!("{table}.{name}")
    } else {
        format!("{table}.{name:?}")
    }
}

impl Compiler<'_> {
    /// Every handler of `[handlers]` and every source of `[secrets]`.
    pub(super) fn check_handlers(&mut self) {
        let cfg = self.cfg;
        for (name, h) in &cfg.handlers {
            let path = entry_path("handlers", name);
            self.check_handler(name, &path, h);
            self.check_grants(&path, h);
            self.check_capabilities(&path, h);
        }
        for (name, src) in &cfg.secrets {
            self.check_secret_source(name, src);
        }
    }

    /// The handler's name, module and limits.
    fn check_handler(&mut self, name: &str, path: &str, h: &HandlerConfig) {
        if !is_valid_name(name) {
            self.problems
                .push(Problem::new(path, name, "invalid handler name").hint(NAME_RULE.to_owned()));
        }
        if h.module.trim().is_empty() {
            self.problems.push(
                Problem::new(
                    format!("{path}.module"),
                    h.module.as_str(),
                    "module is empty",
                )
                .hint("set the path of the handler's .wasm component"),
            );
        }
        if !TIMEOUT_MS_RANGE.contains(&h.timeout_ms) {
            self.problems.push(
                Problem::new(
                    format!("{path}.timeout_ms"),
                    h.timeout_ms.to_string(),
                    "timeout_ms is out of range",
                )
                .hint("use 1..=10000 milliseconds (default 50)"),
            );
        }
        if !MEMORY_MB_RANGE.contains(&h.memory_mb) {
            self.problems.push(
                Problem::new(
                    format!("{path}.memory_mb"),
                    h.memory_mb.to_string(),
                    "memory_mb is out of range",
                )
                .hint("use 1..=1024 MiB (default 16)"),
            );
        }
    }

    /// The secrets the handler may use (`secrets`) and read in clear (`reveal`).
    fn check_grants(&mut self, path: &str, h: &HandlerConfig) {
        for (i, s) in h.secrets.iter().enumerate() {
            let p = format!("{path}.secrets[{i}]");
            if !is_valid_name(s) {
                self.problems
                    .push(Problem::new(p, s.as_str(), "invalid secret name").hint(NAME_RULE));
            } else if !self.cfg.secrets.contains_key(s) {
                // Secrets may be provided at runtime, so this is not fatal.
                self.warnings.push(
                    Problem::new(p, s.as_str(), "the secret is not defined in [secrets]").hint(
                        format!(
                            "add `{s} = {{ env = \"...\" }}` to [secrets], or set it at \
                             runtime before the handler uses it"
                        ),
                    ),
                );
            }
        }
        for (i, r) in h.reveal.iter().enumerate() {
            if !h.secrets.contains(r) {
                self.problems.push(
                    Problem::new(
                        format!("{path}.reveal[{i}]"),
                        r.as_str(),
                        "a revealed secret must also be granted",
                    )
                    .hint(format!(
                        "add {r:?} to {path}.secrets, or remove it from {path}.reveal"
                    )),
                );
            }
        }
    }

    /// One entry of `[secrets]`: its name and where its value is read from.
    fn check_secret_source(&mut self, name: &str, src: &SecretSource) {
        let path = entry_path("secrets", name);
        if !is_valid_name(name) {
            self.problems
                .push(Problem::new(&path, name, "invalid secret name").hint(NAME_RULE));
        }
        let (field, value) = match src {
            SecretSource::Env(v) => ("env", v),
            SecretSource::File(v) => ("file", v),
        };
        if value.trim().is_empty() {
            self.problems.push(
                Problem::new(
                    format!("{path}.{field}"),
                    value.as_str(),
                    "the source is empty",
                )
                .hint(format!("name the {field} the secret is read from")),
            );
        }
    }

    /// The opt-ins of handler `h` at `path`: body and response buffering, fetch, minted
    /// secrets.
    fn check_capabilities(&mut self, path: &str, h: &HandlerConfig) {
        self.check_buffers(path, h);
        self.check_fetch(path, h);
        self.check_mint(path, h);
    }

    /// A problem unless `lo <= v <= hi`.
    fn in_range(&mut self, field: String, v: u64, lo: u64, hi: u64, unit: &str) {
        if !(lo..=hi).contains(&v) {
            self.problems.push(
                Problem::new(field, v.to_string(), "out of range")
                    .hint(format!("use {lo}..={hi} {unit}")),
            );
        }
    }

    /// The request body and response buffers, and bounds the response mode ignores.
    fn check_buffers(&mut self, path: &str, h: &HandlerConfig) {
        if let Some(b) = h.body {
            let field = format!("{path}.body.max_bytes");
            self.in_range(field, b.max_bytes, 1, MAX_BUFFER_BYTES, "bytes");
        }
        let Some(r) = h.response else {
            return;
        };
        if let Some(m) = r.max_bytes {
            let field = format!("{path}.response.max_bytes");
            self.in_range(field, m, 1, MAX_BUFFER_BYTES, "bytes");
        }
        if let Some(m) = r.max_event_bytes {
            let field = format!("{path}.response.max_event_bytes");
            self.in_range(field, m, 1, MAX_BUFFER_BYTES, "bytes");
        }
        if r.max_bytes.is_some() && r.mode != ResponseMode::Buffer {
            self.warnings.push(
                Problem::new(
                    format!("{path}.response.max_bytes"),
                    "",
                    "only a buffered response phase buffers the body",
                )
                .hint("remove max_bytes, or use mode = \"buffer\""),
            );
        }
        if r.max_event_bytes.is_some() && r.mode != ResponseMode::Stream {
            self.warnings.push(
                Problem::new(
                    format!("{path}.response.max_event_bytes"),
                    "",
                    "only a streamed response phase splits the body into events",
                )
                .hint("remove max_event_bytes, or use mode = \"stream\""),
            );
        }
    }

    /// The `fetch` limits and the hosts the handler may fetch from.
    fn check_fetch(&mut self, path: &str, h: &HandlerConfig) {
        if let Some(f) = h.fetch {
            let calls = format!("{path}.fetch.max_calls");
            self.in_range(calls, f.max_calls.into(), 1, 64, "calls");
            let bytes = format!("{path}.fetch.max_response_bytes");
            self.in_range(bytes, f.max_response_bytes, 1, MAX_BUFFER_BYTES, "bytes");
            let timeout = format!("{path}.fetch.timeout_ms");
            self.in_range(timeout, f.timeout_ms, 1, 60_000, "milliseconds");
        }
        self.patterns(&format!("{path}.fetch_hosts"), &h.fetch_hosts);
        if h.fetch.is_some() && h.fetch_hosts.is_empty() {
            self.warnings.push(
                Problem::new(
                    format!("{path}.fetch"),
                    "",
                    "fetch limits without fetch_hosts",
                )
                .hint("list the hosts the handler may call in fetch_hosts"),
            );
        }
    }

    /// The secrets the handler may set (`mint_secrets`): never one of `[secrets]`.
    fn check_mint(&mut self, path: &str, h: &HandlerConfig) {
        for (i, m) in h.mint_secrets.iter().enumerate() {
            let field = format!("{path}.mint_secrets[{i}]");
            if !is_valid_name(m) {
                self.problems
                    .push(Problem::new(field, m.as_str(), "invalid secret name").hint(NAME_RULE));
            } else if self.cfg.secrets.contains_key(m) {
                self.problems.push(
                    Problem::new(
                        field,
                        m.as_str(),
                        "a minted secret must not be one of [secrets]",
                    )
                    .hint("choose another name: the handler would overwrite the admin's value"),
                );
            }
        }
    }
}
