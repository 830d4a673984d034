//! Compiling a policy's handler modules into a handler set, at start-up and at every swap.
use crate::glue::HandlerSet;
use crate::modules::HandlerModule;

/// A module the handler host refused.
#[derive(Debug)]
pub struct Refused {
    /// The handler.
    pub handler: String,
    /// The module as the policy names it.
    pub module: String,
    /// Why.
    pub error: egret_wasm::WasmError,
}

/// Compile (or fetch from the artifact cache) and pre-instantiate every module. Every refusal
/// is returned, so an operator fixes them all in one round.
pub async fn load(
    host: &egret_wasm::HandlerHost,
    modules: Vec<HandlerModule>,
) -> Result<HandlerSet, Vec<Refused>> {
    let compiled_before = host.stats().compiled;
    let mut set = HandlerSet::new();
    let mut refused = Vec::new();
    for m in modules {
        let loaded = host.load(&m.handler, &m.bytes).await.and_then(|h| {
            let version = h.wit_version();
            if m.streams && version != egret_wasm::WitVersion::V0_3 {
                return Err(egret_wasm::WasmError::PhaseUnsupported {
                    handler: m.handler.clone(),
                    mode: "stream",
                    world: version.world(),
                });
            }
            Ok(h)
        });
        match loaded {
            Ok(h) => {
                set.insert(m.handler, h);
            }
            Err(error) => refused.push(Refused {
                handler: m.handler,
                module: m.module,
                error,
            }),
        }
    }
    if host.stats().compiled != compiled_before {
        release_free_heap();
    }
    if refused.is_empty() {
        Ok(set)
    } else {
        Err(refused)
    }
}

/// Compiling handlers leaves megabytes of freed memory in the allocator's per-thread arenas
/// (the compiler threads'); give it back so the idle process stays small.
#[allow(unsafe_code)]
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages to the OS; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
