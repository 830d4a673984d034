//! The README's first command, `scripts/demo.sh`, run with this build's binaries: a credential
//! injected into the sandbox's HTTPS and HTTP requests (and masked in what comes back), a host
//! refused over both. The demo builds and removes its own namespaces.
use egret_e2e::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_demo_injects_a_credential_and_refuses_a_host() {
    require_root();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .current_dir(root)
        .env("EGRET_BIN_DIR", bin_dir())
        .output()
        .unwrap();
    let text = all_output(&out);
    assert!(out.status.success(), "scripts/demo.sh failed:\n{text}");
    let injected = "authorization: Bearer <the token egret injected: matches DEMO_API_TOKEN>";
    assert_eq!(text.matches(injected).count(), 2, "HTTPS and HTTP: {text}");
    assert_eq!(
        text.matches("the sandbox reads the echoed header as: Bearer ****")
            .count(),
        2,
        "the echoed token must reach the sandbox masked: {text}"
    );
    assert!(
        text.contains("issuer: CN=egret sandbox CA (demo-agent)"),
        "{text}"
    );
    assert!(text.contains("HTTP/1.1 403 Forbidden"), "{text}");
    assert!(
        text.contains("deny    tls        - exfil.demo.test"),
        "the HTTPS refusal is audited: {text}"
    );
}
