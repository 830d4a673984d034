//! Policy files come from operators and, through the admin API, from the control plane: parsing
//! and compiling must never panic, whatever the input.
#![no_main]
use egret_policy::{CompiledPolicy, PolicyConfig, RuntimeLayer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = PolicyConfig::from_toml(src, "fuzz.toml") {
        let _ = CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1);
        // The runtime layer is JSON from the admin API; feed the same config through it too.
        if let Ok(json) = serde_json::to_string(&cfg) {
            let _ = serde_json::from_str::<PolicyConfig>(&json);
        }
    }
});
