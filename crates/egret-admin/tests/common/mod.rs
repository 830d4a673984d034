//! Shared test fixtures: a mock `Control` that records every call and can be told to fail,
//! and a server on a real Unix socket in a temporary directory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use egret_admin::*;
use egret_policy::{PolicyConfig, RuntimeLayer};
use tokio::sync::broadcast;

/// The secret value used throughout; it must never come back out.
pub(crate) const SECRET: &str = "s3cr3t-VALUE-8c1f";

#[derive(Debug)]
pub(crate) struct Mock {
    pub generation: Mutex<u64>,
    pub calls: Mutex<Vec<(Change, Option<u64>)>>,
    pub uploads: Mutex<Vec<(String, usize)>>,
    pub fail_next: Mutex<Option<ControlError>>,
    pub secrets: Mutex<Vec<String>>,
    pub audit: broadcast::Sender<Arc<str>>,
    pub audit_enabled: bool,
    /// The shadow candidate loaded, if any.
    pub shadow: Mutex<Option<PolicyConfig>>,
}

impl Mock {
    pub(crate) fn new() -> Arc<Mock> {
        Arc::new(Mock {
            generation: Mutex::new(1),
            calls: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
            fail_next: Mutex::new(None),
            secrets: Mutex::new(vec!["FILE_TOKEN".into()]),
            audit: broadcast::channel(64).0,
            audit_enabled: true,
            shadow: Mutex::new(None),
        })
    }

    pub(crate) fn fail_with(&self, e: ControlError) {
        *self.fail_next.lock().unwrap() = Some(e);
    }

    pub(crate) fn last_call(&self) -> (Change, Option<u64>) {
        self.calls
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no call recorded")
    }

    pub(crate) fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Control for Mock {
    fn status(&self) -> Status {
        Status {
            sandbox_id: "agent-47".into(),
            generation: *self.generation.lock().unwrap(),
            uptime_secs: 3723,
            counters: BTreeMap::from([("requests".into(), 10), ("denied".into(), 2)]),
        }
    }

    fn policy(&self) -> PolicyView {
        let policy = PolicyConfig::from_toml(
            r#"
            allowed_hosts = ["a.test"]
            [secrets]
            FILE_TOKEN = { env = "FILE_TOKEN" }
            [handlers.inject]
            module = "inject.wasm"
            secrets = ["FILE_TOKEN"]
            "#,
            "mock",
        )
        .unwrap();
        PolicyView {
            generation: *self.generation.lock().unwrap(),
            policy,
            runtime: RuntimeLayer::default(),
            secrets: self.secrets.lock().unwrap().clone(),
        }
    }

    fn apply(
        &self,
        change: Change,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        Box::pin(async move {
            if let Some(e) = self.fail_next.lock().unwrap().take() {
                return Err(e);
            }
            let mut g = self.generation.lock().unwrap();
            if let Some(expected) = if_generation {
                if expected != *g {
                    return Err(ControlError::Conflict {
                        expected,
                        current: *g,
                    });
                }
            }
            let mut warnings = Vec::new();
            match &change {
                Change::SetSecret { name, .. } => self.secrets.lock().unwrap().push(name.clone()),
                Change::SetInternet(true) => warnings.push("internet is on".to_owned()),
                _ => {}
            }
            self.calls.lock().unwrap().push((change, if_generation));
            *g += 1;
            Ok(Applied {
                generation: *g,
                warnings,
            })
        })
    }

    fn upload_module(
        &self,
        name: String,
        bytes: Bytes,
    ) -> BoxFuture<'_, Result<ModuleInfo, ControlError>> {
        Box::pin(async move {
            if let Some(e) = self.fail_next.lock().unwrap().take() {
                return Err(e);
            }
            self.uploads
                .lock()
                .unwrap()
                .push((name.clone(), bytes.len()));
            Ok(ModuleInfo {
                name,
                sha256: "ab".repeat(32),
                size: bytes.len() as u64,
                loaded_at: 1_700_000_000,
            })
        })
    }

    fn modules(&self) -> Vec<ModuleInfo> {
        self.uploads
            .lock()
            .unwrap()
            .iter()
            .map(|(n, s)| ModuleInfo {
                name: n.clone(),
                sha256: "ab".repeat(32),
                size: *s as u64,
                loaded_at: 1_700_000_000,
            })
            .collect()
    }

    fn ca_pem(&self) -> String {
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()
    }

    fn metrics(&self) -> String {
        "# TYPE egret_requests_total counter\negret_requests_total 10\n".into()
    }

    fn subscribe_audit(&self) -> Option<broadcast::Receiver<Arc<str>>> {
        self.audit_enabled.then(|| self.audit.subscribe())
    }

    fn shadow_load(
        &self,
        policy: PolicyConfig,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        Box::pin(async move {
            let generation = *self.generation.lock().unwrap();
            if let Some(expected) = if_generation.filter(|e| *e != generation) {
                return Err(ControlError::Conflict {
                    expected,
                    current: generation,
                });
            }
            *self.shadow.lock().unwrap() = Some(policy);
            Ok(Applied {
                generation,
                warnings: vec![],
            })
        })
    }

    fn shadow_report(&self) -> Result<ShadowView, ControlError> {
        self.shadow
            .lock()
            .unwrap()
            .as_ref()
            .map(|_| self.shadow_view())
            .ok_or_else(shadow::no_shadow)
    }

    fn shadow_promote(
        &self,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        Box::pin(async move {
            let cfg = self
                .shadow
                .lock()
                .unwrap()
                .take()
                .ok_or_else(shadow::no_shadow)?;
            self.apply(Change::ReplacePolicy(Box::new(cfg)), if_generation)
                .await
        })
    }

    fn shadow_drop(&self) -> BoxFuture<'_, Result<ShadowView, ControlError>> {
        Box::pin(async move {
            let view = self.shadow_report()?;
            *self.shadow.lock().unwrap() = None;
            Ok(view)
        })
    }
}

impl Mock {
    /// The report of a loaded candidate: one difference.
    pub(crate) fn shadow_view(&self) -> ShadowView {
        ShadowView {
            generation: *self.generation.lock().unwrap(),
            loaded_at: 1_700_000_000,
            requests: 3,
            summary: egret_policy::ShadowSummary {
                differences: 1,
                overflow: 0,
                max_rows: 1000,
                rows: vec![egret_policy::ShadowRow {
                    host: "git.test".into(),
                    method: "POST".into(),
                    path: "/repo.git/**".into(),
                    live: "allow".into(),
                    live_rule: "allowed_hosts \"git.test\"".into(),
                    live_handler: None,
                    shadow: "deny".into(),
                    shadow_rule: "no route".into(),
                    shadow_handler: None,
                    shadow_status: Some(403),
                    count: 1,
                    first_seen: 1_700_000_010,
                    last_seen: 1_700_000_010,
                }],
            },
        }
    }
}

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub socket: std::path::PathBuf,
    pub mock: Arc<Mock>,
    pub server: ServerHandle,
    pub client: AdminClient,
}

pub(crate) async fn start() -> Fixture {
    start_with(Mock::new(), ServerOptions::default()).await
}

pub(crate) async fn start_with(mock: Arc<Mock>, opts: ServerOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sbx.sock");
    let server = serve(&socket, mock.clone(), opts).await.unwrap();
    let client = AdminClient::new(&socket);
    Fixture {
        dir,
        socket,
        mock,
        server,
        client,
    }
}

/// Sends raw bytes on a fresh connection and returns everything the server sends back until it
/// closes (or `timeout`).
pub(crate) async fn raw_exchange(socket: &std::path::Path, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    // The server may answer and close before taking everything (that is what 413 does).
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status and parsed error body of a raw answer.
pub(crate) async fn raw_call(
    client: &AdminClient,
    method: http::Method,
    path: &str,
    body: &str,
    if_generation: Option<u64>,
) -> (u16, serde_json::Value) {
    let r = client
        .raw(
            method,
            path,
            Some("application/json"),
            Bytes::from(body.to_owned()),
            if_generation,
        )
        .await
        .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}
