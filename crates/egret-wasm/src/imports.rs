//! The `egret:handler/host` imports, per WIT version: 0.1.0's five functions, 0.2.0's full
//! set, and 0.3.0's (the same functions as 0.2.0, forwarded to them), all over the same
//! [`StoreState`].
use std::time::Duration;

use http::{HeaderMap, Method, Uri};

use crate::action::{Filled, Resolver};
use crate::bindings::{v1, v2, v3};
use crate::services::FetchCall;
use crate::state::{Level, StoreState};

use v2::egret::handler::types as t2;

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl v1::egret::handler::types::Host for StoreState {}

impl v1::egret::handler::host::Host for StoreState {
    fn log(&mut self, level: v1::egret::handler::host::LogLevel, msg: String) {
        use v1::egret::handler::host::LogLevel as L;
        let level = match level {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        StoreState::log(self, level, msg)
    }

    fn has_secret(&mut self, name: String) -> bool {
        StoreState::has_secret(self, &name)
    }

    fn reveal_secret(&mut self, name: String) -> Result<String, String> {
        StoreState::reveal_secret(self, &name)
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv.get(self.sandbox(), &key).map(|b| b.to_vec())
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.kv
            .set(self.sandbox(), &key, value)
            .map_err(|e| e.to_string())
    }
}

impl t2::Host for StoreState {}

impl v2::egret::handler::host::Host for StoreState {
    fn log(&mut self, level: v2::egret::handler::host::LogLevel, msg: String) {
        use v2::egret::handler::host::LogLevel as L;
        let level = match level {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        StoreState::log(self, level, msg)
    }

    fn audit_field(&mut self, key: String, value: String) -> Result<(), String> {
        StoreState::audit_field(self, &key, &value)
    }

    fn has_secret(&mut self, name: String) -> bool {
        StoreState::has_secret(self, &name)
    }

    fn reveal_secret(&mut self, name: String) -> Result<String, String> {
        StoreState::reveal_secret(self, &name)
    }

    fn set_secret(
        &mut self,
        name: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        self.mint(&name, value, ttl(ttl_ms))
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.kv.get(self.sandbox(), &key).map(|b| b.to_vec())
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), String> {
        self.kv
            .set_with_ttl(self.sandbox(), &key, value, ttl_ms)
            .map_err(|e| e.to_string())
    }

    fn kv_delete(&mut self, key: String) -> bool {
        self.kv.remove(self.sandbox(), &key)
    }

    fn kv_incr(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, String> {
        self.kv
            .incr(self.sandbox(), &key, delta, ttl_ms)
            .map_err(|e| e.to_string())
    }

    fn kv_compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, String> {
        self.kv
            .compare_and_set(self.sandbox(), &key, expected.as_deref(), new, ttl_ms)
            .map_err(|e| e.to_string())
    }

    fn hmac_sha256(
        &mut self,
        key: t2::SecretKey,
        messages: Vec<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        use hmac::Mac;
        let granted = self.granted();
        let source: &dyn crate::secrets::SecretSource = &granted;
        let Some(value) = source.get(&key.name) else {
            return Err(format!(
                "hmac-sha256: secret `{}` is not granted to this handler or not set",
                key.name.escape_debug()
            ));
        };
        let key_bytes = match &key.template {
            Some(t) if t.contains("{}") => crate::secrets::fill_template(t, &value),
            Some(_) => return Err("hmac-sha256: the key template has no `{}` placeholder".into()),
            None => value,
        };
        if messages.is_empty() {
            return Err("hmac-sha256: no message".into());
        }
        // Each output keys the next HMAC: AWS SigV4 derives its signing key this way, and only
        // the last output (the signature) ever reaches the guest.
        let mut k = zeroize::Zeroizing::new(key_bytes.expose().to_vec());
        for m in &messages {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&k)
                .map_err(|e| format!("hmac-sha256: {e}"))?;
            mac.update(m);
            k = zeroize::Zeroizing::new(mac.finalize().into_bytes().to_vec());
        }
        Ok(k.to_vec())
    }

    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(&data).to_vec()
    }

    async fn fetch(&mut self, req: t2::FetchRequest) -> Result<t2::FetchResponse, String> {
        let handler = self.handler().to_owned();
        let Some(fetcher) = self.services.fetch.clone() else {
            return Err(format!(
                "fetch is not granted to handler `{handler}`: list the hosts it may call in the \
                 handler's fetch_hosts"
            ));
        };
        if self.fetches >= self.services.max_fetches {
            return Err(format!(
                "fetch limit reached: handler `{handler}` may make {} fetch calls per invocation",
                self.services.max_fetches
            ));
        }
        self.fetches += 1;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("fetch: invalid method {:?}", req.method))?;
        let url: Uri = req
            .url
            .parse()
            .map_err(|e| format!("fetch: invalid URL {:?}: {e}", req.url))?;
        if !matches!(url.scheme_str(), Some("https" | "http")) || url.host().is_none() {
            return Err(format!(
                "fetch: {:?} is not an absolute http(s) URL",
                req.url
            ));
        }
        let (headers, body) = {
            let granted = self.granted();
            let r = Resolver {
                handler: &handler,
                grants: self.grants(),
                secrets: &granted,
            };
            let mut unused = Filled::default();
            let mut headers = HeaderMap::new();
            for op in crate::convert::header_ops(req.headers) {
                let name = r
                    .fetch_header_name(&op.name)
                    .map_err(|e| format!("fetch: {e}"))?;
                let (value, _) = r
                    .header_value(&name, &op.value, &mut unused)
                    .map_err(|e| format!("fetch: {e}"))?;
                headers.append(name, value);
            }
            let body = r
                .parts(
                    "the fetch body",
                    &crate::convert::parts(req.body),
                    &mut unused,
                )
                .map_err(|e| format!("fetch: {e}"))?;
            (headers, bytes::Bytes::copy_from_slice(body.expose()))
        };
        let call = FetchCall {
            handler: handler.into(),
            sandbox: self.sandbox().into(),
            method,
            url,
            headers,
            body,
        };
        let reply = fetcher.fetch(call).await?;
        Ok(t2::FetchResponse {
            status: reply.status,
            headers: reply.headers,
            body: reply.body.to_vec(),
        })
    }
}

impl v3::egret::handler::streaming::Host for StoreState {}

/// 0.3.0 changed no host function: each one is 0.2.0's.
impl v3::egret::handler::host::Host for StoreState {
    fn log(&mut self, level: v3::egret::handler::host::LogLevel, msg: String) {
        use v2::egret::handler::host::LogLevel as L2;
        use v3::egret::handler::host::LogLevel as L;
        let level = match level {
            L::Debug => L2::Debug,
            L::Info => L2::Info,
            L::Warn => L2::Warn,
            L::Error => L2::Error,
        };
        v2::egret::handler::host::Host::log(self, level, msg)
    }

    fn audit_field(&mut self, key: String, value: String) -> Result<(), String> {
        v2::egret::handler::host::Host::audit_field(self, key, value)
    }

    fn has_secret(&mut self, name: String) -> bool {
        v2::egret::handler::host::Host::has_secret(self, name)
    }

    fn reveal_secret(&mut self, name: String) -> Result<String, String> {
        v2::egret::handler::host::Host::reveal_secret(self, name)
    }

    fn set_secret(
        &mut self,
        name: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        v2::egret::handler::host::Host::set_secret(self, name, value, ttl_ms)
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        v2::egret::handler::host::Host::kv_get(self, key)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), String> {
        v2::egret::handler::host::Host::kv_set(self, key, value, ttl_ms)
    }

    fn kv_delete(&mut self, key: String) -> bool {
        v2::egret::handler::host::Host::kv_delete(self, key)
    }

    fn kv_incr(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, String> {
        v2::egret::handler::host::Host::kv_incr(self, key, delta, ttl_ms)
    }

    fn kv_compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, String> {
        v2::egret::handler::host::Host::kv_compare_and_set(self, key, expected, new, ttl_ms)
    }

    fn hmac_sha256(
        &mut self,
        key: t2::SecretKey,
        messages: Vec<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        v2::egret::handler::host::Host::hmac_sha256(self, key, messages)
    }

    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        v2::egret::handler::host::Host::sha256(self, data)
    }

    async fn fetch(&mut self, req: t2::FetchRequest) -> Result<t2::FetchResponse, String> {
        v2::egret::handler::host::Host::fetch(self, req).await
    }

    fn response_streams(&mut self) -> bool {
        self.services.response_streams
    }
}
