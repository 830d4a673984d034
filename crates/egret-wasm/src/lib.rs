//! egret-wasm
mod bindings;
