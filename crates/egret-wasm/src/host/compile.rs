//! Compiling: from component bytes to a linked, pre-instantiated [`Compiled`], once per
//! distinct module (an in-memory cache by sha256, and the on-disk [`ArtifactCache`] across
//! restarts), with precise errors for what is not a usable handler component.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::Engine;

use crate::artifact_cache::ArtifactCache;
use crate::bindings::{v1, v2, v3};
use crate::state::StoreState;
use crate::WasmError;

use super::{Pre, WitVersion};

/// What `egret handler check` reports about a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerInfo {
    /// Lower-case hex sha256 of the component bytes.
    pub sha256_hex: String,
    /// Size of the component in bytes.
    pub size_bytes: usize,
    /// Names of the component's imports (interfaces), sorted.
    pub imports: Vec<String>,
    /// Names of the component's exports, sorted.
    pub exports: Vec<String>,
    /// The WIT version it was built against.
    pub wit_version: WitVersion,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Components compiled from source bytes.
    pub compiled: u64,
    /// Components loaded from the on-disk artifact cache.
    pub loaded_from_disk: u64,
    /// Loads answered by the in-memory cache (same bytes already compiled).
    pub memory_cache_hits: u64,
}

/// A compiled, linked and pre-instantiated component, shared by every
/// [`LoadedHandler`](super::LoadedHandler) with the same bytes.
pub(super) struct Compiled {
    pub(super) pre: Pre,
    pub(super) info: HandlerInfo,
}

/// One cached compilation; shared while in flight so waiters reuse it.
type CompileCell = Arc<OnceCell<Arc<Compiled>>>;

/// The engine, the linker (WASI p2 and the egret host imports of every WIT version) and the
/// caches of compiled components.
pub(super) struct Compiler {
    pub(super) engine: Engine,
    linker: Linker<StoreState>,
    /// Compiled components by sha256. A cell is shared while a compile is in
    /// flight so concurrent loads of the same bytes compile once.
    cache: Mutex<HashMap<[u8; 32], CompileCell>>,
    /// Compiled artifacts on disk, when [`HostConfig::cache_dir`](crate::HostConfig::cache_dir)
    /// is set.
    artifacts: Option<ArtifactCache>,
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    memory_cache_hits: AtomicU64,
}

impl Compiler {
    /// Links WASI p2 and the egret host imports into a linker for `engine`; keeps compiled
    /// artifacts in `cache_dir` when given (the directory is prepared by the caller).
    pub(super) fn new(engine: Engine, cache_dir: Option<PathBuf>) -> Result<Compiler, WasmError> {
        let mut linker: Linker<StoreState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| WasmError::Engine(format!("linking WASI: {e:#}")))?;
        let egret =
            |e: wasmtime::Error| WasmError::Engine(format!("linking egret host imports: {e:#}"));
        v1::Handler::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(egret)?;
        v2::Handler::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(egret)?;
        v3::Handler::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(egret)?;
        let artifacts = cache_dir.map(|dir| ArtifactCache::new(dir, &engine));
        Ok(Compiler {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            artifacts,
            compiled: AtomicU64::new(0),
            loaded_from_disk: AtomicU64::new(0),
            memory_cache_hits: AtomicU64::new(0),
        })
    }

    /// Compile / cache counters.
    pub(super) fn stats(&self) -> HostStats {
        HostStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            loaded_from_disk: self.loaded_from_disk.load(Ordering::Relaxed),
            memory_cache_hits: self.memory_cache_hits.load(Ordering::Relaxed),
        }
    }

    /// The compiled component for `bytes` and their sha256 hex: an already compiled copy of
    /// the same bytes, else one compiled (or loaded from disk) on the blocking thread pool.
    /// Compiled copies nobody uses any more are dropped.
    pub(super) async fn load(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Arc<Compiled>, String), WasmError> {
        let (hash, sha256_hex) = sha256(bytes);
        let cell = self.cache.lock().entry(hash).or_default().clone();
        let mut hit = true;
        let compiled = cell
            .get_or_try_init(|| {
                hit = false;
                let this = self.clone();
                let owned = bytes.to_vec();
                let handler = name.to_owned();
                let hex = sha256_hex.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        this.compile(&handler, &owned, &hex).map(Arc::new)
                    })
                    .await
                    .map_err(|e| WasmError::Task {
                        handler: name.to_owned(),
                        reason: e.to_string(),
                    })?
                }
            })
            .await?
            .clone();
        if hit {
            self.memory_cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        self.prune_cache(&hash);
        Ok((compiled, sha256_hex))
    }

    /// Drops cached compilations nobody uses any more (and failed ones).
    fn prune_cache(&self, keep: &[u8; 32]) {
        self.cache.lock().retain(|hash, cell| {
            if hash == keep || Arc::strong_count(cell) > 1 {
                return true; // current, or a load is in flight
            }
            cell.get().is_some_and(|c| Arc::strong_count(c) > 1)
        });
    }

    /// Validates a component without keeping it. Blocking.
    pub(super) fn check(&self, bytes: &[u8]) -> Result<HandlerInfo, WasmError> {
        let (_, sha256_hex) = sha256(bytes);
        self.compile("check", bytes, &sha256_hex).map(|c| c.info)
    }

    /// Validates, compiles (or loads from the disk cache), links and
    /// pre-instantiates one component. Blocking.
    fn compile(
        &self,
        handler: &str,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> Result<Compiled, WasmError> {
        check_header(handler, bytes)?;
        let component = self.component(handler, bytes, sha256_hex)?;
        let ty = component.component_type();
        let mut imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let mut exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        imports.sort();
        exports.sort();
        match ty.get_export(&self.engine, "handle").map(|e| e.ty) {
            None => {
                return Err(WasmError::MissingExport {
                    handler: handler.to_owned(),
                })
            }
            Some(ComponentItem::ComponentFunc(_)) => {}
            Some(_) => {
                return Err(WasmError::WrongExport {
                    handler: handler.to_owned(),
                    reason: "`handle` is not a function".into(),
                })
            }
        }
        let pre = pre_by_version(handler, self.link(handler, &component, &imports)?)?;
        Ok(Compiled {
            info: HandlerInfo {
                sha256_hex: sha256_hex.to_owned(),
                size_bytes: bytes.len(),
                imports,
                exports,
                wit_version: pre.version(),
            },
            pre,
        })
    }

    /// The component from the disk cache, or compiled from `bytes` (and stored there).
    fn component(
        &self,
        handler: &str,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> Result<Component, WasmError> {
        if let Some(c) = self
            .artifacts
            .as_ref()
            .and_then(|a| a.load(&self.engine, sha256_hex))
        {
            self.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
            return Ok(c);
        }
        let c = Component::new(&self.engine, bytes).map_err(|e| WasmError::Compile {
            handler: handler.to_owned(),
            reason: format!("{e:#}"),
        })?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = &self.artifacts {
            a.store(sha256_hex, &c);
        }
        Ok(c)
    }

    /// Links `component` against the host imports, naming the import at fault when that
    /// fails: one egret does not provide, else one the linker's reason mentions.
    fn link(
        &self,
        handler: &str,
        component: &Component,
        imports: &[String],
    ) -> Result<InstancePre<StoreState>, WasmError> {
        self.linker.instantiate_pre(component).map_err(|e| {
            let reason = format!("{e:#}");
            match imports.iter().find(|i| !is_provided_interface(i)) {
                Some(import) => WasmError::UnknownImport {
                    handler: handler.to_owned(),
                    import: import.clone(),
                },
                None => match imports.iter().find(|i| reason.contains(i.as_str())) {
                    Some(import) => WasmError::ImportMismatch {
                        handler: handler.to_owned(),
                        import: import.clone(),
                        reason,
                    },
                    None => WasmError::Link {
                        handler: handler.to_owned(),
                        reason,
                    },
                },
            }
        })
    }
}

/// The newest world the component's exports fit: a component of 0.3.0 exports the stream
/// phase too, one of 0.2.0 the response phase, one of 0.1.0 only `handle`.
fn pre_by_version(handler: &str, instance_pre: InstancePre<StoreState>) -> Result<Pre, WasmError> {
    let e3 = match v3::HandlerPre::new(instance_pre.clone()) {
        Ok(p) => return Ok(Pre::V3(p)),
        Err(e) => e,
    };
    let e2 = match v2::HandlerPre::new(instance_pre.clone()) {
        Ok(p) => return Ok(Pre::V2(p)),
        Err(e) => e,
    };
    match v1::HandlerPre::new(instance_pre) {
        Ok(p) => Ok(Pre::V1(p)),
        Err(e1) => Err(WasmError::WrongExport {
            handler: handler.to_owned(),
            reason: format!(
                "as egret:handler@0.3.0: {e3:#}; as egret:handler@0.2.0: {e2:#}; \
                 as egret:handler@0.1.0: {e1:#}"
            ),
        }),
    }
}

/// The sha256 of `bytes`: the key of the compiled-component caches, and as lower-case hex
/// what handlers are known by in audit events and `egret handler check`.
fn sha256(bytes: &[u8]) -> ([u8; 32], String) {
    let digest = Sha256::digest(bytes);
    (digest.into(), format!("{digest:x}"))
}

/// Interfaces egret's linker provides (versions `@0.2.x` for WASI, `@0.1.x` to `@0.3.x`
/// for egret); anything else is reported as an unknown import by name.
fn is_provided_interface(import: &str) -> bool {
    let (iface, version) = import.split_once('@').unwrap_or((import, ""));
    if iface == "egret:handler/host" || iface == "egret:handler/types" {
        return ["0.1.", "0.2.", "0.3."]
            .iter()
            .any(|v| version.starts_with(v));
    }
    if iface == "egret:handler/streaming" {
        return version.starts_with("0.3.");
    }
    let wasi = [
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:cli/",
        "wasi:filesystem/",
        "wasi:sockets/",
    ];
    wasi.iter().any(|p| iface.starts_with(p)) && version.starts_with("0.2.")
}

/// Distinguishes "not wasm", "core module" and "component" from the header
/// before handing the bytes to the compiler, for precise messages.
fn check_header(handler: &str, bytes: &[u8]) -> Result<(), WasmError> {
    let not_wasm = |reason: String| WasmError::NotWasm {
        handler: handler.to_owned(),
        reason,
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_wasm(format!(
            "the {} bytes do not start with the WebAssembly magic `\\0asm`",
            bytes.len()
        )));
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        [1, 0, 0, 0] => Err(WasmError::CoreModule {
            handler: handler.to_owned(),
        }),
        [_, _, 1, 0] => Ok(()),
        [a, b, c, d] => Err(not_wasm(format!(
            "unsupported WebAssembly version/layer bytes {a:02x} {b:02x} {c:02x} {d:02x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_64_lower_case_digits() {
        let (hash, hex) = sha256(b"abc");
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash[..4], [0xba, 0x78, 0x16, 0xbf]);
        let (_, hex) = sha256(&[0xff; 1000]);
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn provided_interfaces_are_wasi_0_2_and_egret_0_1_to_0_3() {
        for ok in [
            "wasi:io/streams@0.2.3",
            "wasi:cli/environment@0.2.0",
            "wasi:sockets/tcp@0.2.1",
            "egret:handler/host@0.1.0",
            "egret:handler/types@0.2.0",
            "egret:handler/host@0.3.0",
            "egret:handler/streaming@0.3.0",
        ] {
            assert!(is_provided_interface(ok), "{ok}");
        }
        for unknown in [
            "wasi:io/streams@0.3.0",
            "wasi:http/types@0.2.0",
            "egret:handler/host@0.4.0",
            "egret:handler/streaming@0.2.0",
            "egret:handler/host",
            "acme:thing/api@1.0.0",
        ] {
            assert!(!is_provided_interface(unknown), "{unknown}");
        }
    }

    #[test]
    fn the_header_tells_not_wasm_core_module_and_component_apart() {
        assert!(matches!(
            check_header("h", b"\0as"),
            Err(WasmError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header("h", b"ELF\x02\x01\x01\0\0"),
            Err(WasmError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header("h", b"\0asm\x01\0\0\0"),
            Err(WasmError::CoreModule { .. })
        ));
        assert!(check_header("h", b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_header("h", b"\0asm\x0d\0\x02\0"),
            Err(WasmError::NotWasm { .. })
        ));
    }
}
