//! Integration tests for egret-tls, in one binary to keep link time down on small machines.

mod ca;
mod cache;
mod common;
mod handshake;
mod peek;
mod upstream;
