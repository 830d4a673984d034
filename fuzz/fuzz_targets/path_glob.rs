//! Path globs and request paths: parsing and matching never panic, canonical paths are
//! canonical (idempotent, no empty or dot segments), and a glob without wildcards matches
//! exactly its own text.
#![no_main]
use egret_policy::request::{canonical_path, PathGlob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (glob, path) = input;
    let canon = canonical_path(path);
    assert!(canon.starts_with('/'), "{path:?} -> {canon:?}");
    assert!(!canon.contains("//"), "{path:?} -> {canon:?}");
    assert_eq!(canonical_path(&canon), canon, "not idempotent for {path:?}");
    if let Ok(g) = PathGlob::parse(glob) {
        let _ = g.matches(&canon);
        let _ = g.matches(path);
        if !glob.contains('*') {
            assert!(g.matches(glob), "{glob:?} does not match itself");
        }
    }
});
