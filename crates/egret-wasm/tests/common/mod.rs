//! Shared helpers for the integration tests: building the guest components
//! once (via scripts/build-handlers.sh), one shared host, log capture and
//! invocation shorthands.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use egret_wasm::{
    GuestAction, HandlerError, HandlerHost, HostConfig, Invocation, KvStore, Limits, LoadedHandler,
    RequestHead, ResolvedAction, SecretStore,
};

pub(crate) use egret_wasm::Grants;

/// Every component the build script produces.
pub(crate) const ALL: &[&str] = &[
    "inject-header",
    "allow-hosts",
    "get-only",
    "per-sandbox-token",
    "respond-from-kv",
    "no-http",
    "loop-forever",
    "alloc-1gib",
    "trap",
    "bad-header",
    "deep-recursion",
    "log-secret",
    "count-calls",
    "v1-inject-header",
];

static BUILD: Once = Once::new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Bytes of `handlers-wasm/dist/<name>.wasm`, building the guests first if
/// any component is missing.
pub(crate) fn wasm(name: &str) -> Vec<u8> {
    let dist = repo_root().join("handlers-wasm/dist");
    BUILD.call_once(|| {
        if ALL.iter().all(|n| dist.join(format!("{n}.wasm")).is_file()) {
            return;
        }
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/build-handlers.sh"))
            .status()
            .expect("running scripts/build-handlers.sh");
        assert!(status.success(), "scripts/build-handlers.sh failed");
    });
    let path = dist.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The host shared by the tests of one binary (one engine per process).
pub(crate) fn host() -> &'static HandlerHost {
    static HOST: OnceLock<HandlerHost> = OnceLock::new();
    HOST.get_or_init(|| {
        init_logs();
        HandlerHost::new(HostConfig {
            max_instances: 128,
            ..HostConfig::default()
        })
        .expect("creating the handler host")
    })
}

pub(crate) async fn load(name: &str) -> Arc<LoadedHandler> {
    host()
        .load(name, &wasm(name))
        .await
        .expect("loading handler")
}

/// Captured tracing output of the whole test binary.
pub(crate) fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

pub(crate) fn request(method: &str, authority: &str, path: &str) -> RequestHead {
    RequestHead {
        method: method.into(),
        scheme: "https".into(),
        authority: authority.into(),
        path_with_query: path.into(),
        headers: vec![("user-agent".into(), b"test".to_vec())],
    }
}

/// One invocation's inputs, with generous limits so a loaded CI machine does
/// not turn well-behaved handlers into timeouts.
pub(crate) struct Call<'a> {
    pub name: &'a str,
    pub sandbox: &'a str,
    pub params: &'a str,
    pub request: RequestHead,
    pub grants: Grants,
    pub secrets: &'a SecretStore,
    pub kv: &'a KvStore,
    pub limits: Limits,
}

impl<'a> Call<'a> {
    pub(crate) fn new(name: &'a str, secrets: &'a SecretStore, kv: &'a KvStore) -> Call<'a> {
        Call {
            name,
            sandbox: "sb-1",
            params: "{}",
            request: request("GET", "api.test", "/x"),
            grants: Grants::default(),
            secrets,
            kv,
            limits: Limits {
                timeout: Duration::from_secs(2),
                memory_bytes: 16 << 20,
            },
        }
    }

    pub(crate) fn invocation(&self) -> Invocation<'_> {
        Invocation {
            handler_name: self.name,
            sandbox_id: self.sandbox,
            params_json: self.params,
            request: &self.request,
            grants: &self.grants,
            secrets: self.secrets,
            kv: self.kv,
            limits: self.limits,
        }
    }

    pub(crate) async fn invoke(&self, h: &LoadedHandler) -> Result<GuestAction, HandlerError> {
        host().invoke(h, self.invocation()).await
    }

    pub(crate) async fn handle(&self, h: &LoadedHandler) -> Result<ResolvedAction, HandlerError> {
        host().handle(h, self.invocation()).await
    }

    /// The session spec of a binding with `instances = "reuse"`.
    pub(crate) fn spec_reusing(&self) -> egret_wasm::SessionSpec<'_> {
        egret_wasm::SessionSpec {
            handler_name: self.name,
            sandbox_id: self.sandbox,
            params_json: self.params,
            grants: &self.grants,
            secrets: self.secrets,
            kv: self.kv,
            limits: self.limits,
            services: Default::default(),
            reuse: true,
        }
    }

    /// [`Call::handle`] by a binding with `instances = "reuse"`.
    pub(crate) async fn handle_reusing(
        &self,
        h: &LoadedHandler,
    ) -> Result<ResolvedAction, HandlerError> {
        let mut session = host().session(h, self.spec_reusing()).await?;
        session.handle(self.request.clone(), None).await
    }
}

/// Header value of a resolved forward's `set` list.
pub(crate) fn set_value(action: &ResolvedAction, name: &str) -> Option<Vec<u8>> {
    match action {
        ResolvedAction::Forward { set, .. } => set
            .iter()
            .rev()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        ResolvedAction::Respond { .. } => None,
    }
}

/// Status and body of a resolved respond action.
pub(crate) fn response(action: &ResolvedAction) -> (u16, String) {
    match action {
        ResolvedAction::Respond { status, body, .. } => {
            (status.as_u16(), String::from_utf8_lossy(body).into_owned())
        }
        ResolvedAction::Forward { .. } => panic!("expected a local response, got {action:?}"),
    }
}
