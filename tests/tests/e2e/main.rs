//! End-to-end tests, in one binary to keep link time down on small machines: real network
//! namespaces, the real `egret` binary, real servers in the upstream namespace and real clients
//! (curl, dig, python3, node) in the sandbox, driven by the `egret_e2e` harness
//! (`tests/src/lib.rs`). The scripts the tests run in the namespaces are files in
//! `tests/clients/`, compiled in with `include_str!`. Every test needs root: it creates its own
//! namespaces.

mod admin;
mod capabilities;
mod capture;
mod classification;
mod demo;
mod examples;
mod exec;
mod handlers;
mod languages;
mod load;
mod mcp;
mod observability;
mod oci;
mod policy_rules;
mod pressure;
mod protocols;
mod runtime_shim;
mod security;
mod tls;
