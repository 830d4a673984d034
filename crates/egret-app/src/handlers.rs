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

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, streams: bool) -> HandlerModule {
        let path = format!(
            "{}/../../handlers-wasm/dist/{name}.wasm",
            env!("CARGO_MANIFEST_DIR")
        );
        HandlerModule {
            handler: format!("h-{name}"),
            module: path.clone(),
            bytes: std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{path}: {e} (scripts/build-handlers.sh builds it)"))
                .into(),
            streams,
        }
    }

    /// `response = { mode = "stream" }` on a component without the stream phase is refused
    /// when the set is loaded, naming the handler, both versions and the fix; the same
    /// component without it, and a 0.3.0 one with it, load.
    #[tokio::test]
    async fn a_stream_binding_needs_a_component_of_wit_0_3_0() {
        let host = egret_wasm::HandlerHost::new(egret_wasm::HostConfig {
            max_instances: 4,
            ..egret_wasm::HostConfig::default()
        })
        .unwrap();
        let refused = load(
            &host,
            vec![module("v2-observe", true), module("mcp-guard", true)],
        )
        .await
        .unwrap_err();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].handler, "h-v2-observe");
        let msg = refused[0].error.to_string();
        for want in [
            "h-v2-observe",
            "mode = \"stream\"",
            "egret:handler/handler@0.3.0",
            "egret:handler/handler@0.2.0",
            "rebuild it",
        ] {
            assert!(msg.contains(want), "{want:?} not in {msg}");
        }
        let set = load(
            &host,
            vec![module("v2-observe", false), module("mcp-guard", true)],
        )
        .await
        .unwrap();
        assert_eq!(set.len(), 2);
    }
}
