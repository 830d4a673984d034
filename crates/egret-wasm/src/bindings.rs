//! Host-side bindings generated from `handlers-wasm/wit/handler.wit`, the
//! single source of truth shared with the guest SDK. The WIT documents the generated types.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../handlers-wasm/wit",
    world: "handler",
    // The export is called with `call_async` so epoch-deadline callbacks can
    // yield to tokio; host imports are cheap and stay synchronous.
    exports: { default: async },
});
