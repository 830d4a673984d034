//! egret-wasm
