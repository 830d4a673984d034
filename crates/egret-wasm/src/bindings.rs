//! Host-side bindings generated from the WIT contracts, the single source of truth shared with
//! the guest SDK: `handlers-wasm/wit/handler.wit` (`egret:handler@0.3.0`, current),
//! `handlers-wasm/wit-0.2.0` and `handlers-wasm/wit-0.1.0` (earlier versions, still loaded:
//! components built against them keep working unchanged). The WIT documents the generated
//! types.
#![allow(missing_docs)]

/// `egret:handler@0.3.0`: 0.2.0 plus the stream phase. Its `types` interface is 0.2.0's,
/// field for field, so the host model and its conversions are shared: the component model
/// checks records and variants by structure, not by package.
pub(crate) mod v3 {
    wasmtime::component::bindgen!({
        path: "../../handlers-wasm/wit",
        world: "handler",
        exports: { default: async },
        imports: { "egret:handler/host.fetch": async },
        with: { "egret:handler/types": super::v2::egret::handler::types },
    });
}

/// `egret:handler@0.2.0`.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        path: "../../handlers-wasm/wit-0.2.0",
        world: "handler",
        // Exports are called with `call_async` so epoch-deadline callbacks can yield to tokio;
        // `fetch` waits on the network and must not block a connection thread. The other host
        // imports are cheap and stay synchronous.
        exports: { default: async },
        imports: { "egret:handler/host.fetch": async },
    });
}

/// `egret:handler@0.1.0`.
pub(crate) mod v1 {
    wasmtime::component::bindgen!({
        path: "../../handlers-wasm/wit-0.1.0",
        world: "handler",
        exports: { default: async },
    });
}
