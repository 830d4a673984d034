//! Test-only hostile handler: allocates (and touches) 1 MiB chunks until
//! 1 GiB or failure. egret's memory cap must stop it (OutOfMemory).

use egret_handler::{Action, Context, Request};

fn handle(_ctx: Context, _req: Request) -> Action {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 0..1024u32 {
        chunks.push(vec![(i % 251) as u8; 1 << 20]);
    }
    let total: usize = std::hint::black_box(&chunks).iter().map(Vec::len).sum();
    Action::forward().set_header("x-allocated", total.to_string())
}

egret_handler::export!(handle);
