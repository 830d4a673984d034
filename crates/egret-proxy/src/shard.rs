//! Extra connection threads ("shards", `--workers` above 1). Each shard is a thread with a
//! current-thread tokio runtime and upstream connection pools of its own. The accept loop gives
//! each new connection to the thread serving the fewest open connections (the main runtime on
//! a tie, which spares a lone connection the hand-off), and the connection — each request on
//! it, upstream connection included — then lives on that thread until it closes.
//!
//! Why not the alternatives (measured on 2 cores): a work-stealing runtime with several workers
//! moves tasks between threads and pays a cross-thread wake-up for most hand-offs inside a
//! request (more CPU per request, no more throughput); every thread accepting from the shared
//! listening socket lets whichever thread wakes first take a whole burst of connections (one
//! run: wrk's 64 connections ended up mostly on one thread, ratio 0.36 instead of ~0.5).
use crate::{upstream, Entry, Proxy};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

thread_local! {
    /// Which shard this thread runs: 0 for the main runtime, 1.. for the shard threads.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard the calling thread runs (0 outside shard threads).
fn current() -> usize {
    SHARD.with(Cell::get)
}

/// Counts a connection against its thread while alive.
struct Open {
    load: Arc<[AtomicUsize]>,
    shard: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.load[self.shard].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection handed from the accept loop to a shard thread.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    open: Open,
    entry: Entry,
}

/// The running shard threads of one [`Proxy`]. Dropping the last handle ends them (and waits
/// for them): connections still open on them are closed.
pub struct Shards {
    senders: Vec<mpsc::UnboundedSender<Accepted>>,
    threads: Vec<JoinHandle<()>>,
    /// Open connections per thread, the main runtime's at 0.
    load: Arc<[AtomicUsize]>,
}

impl Shards {
    /// Serves an accepted connection on the least busy thread.
    pub(crate) fn dispatch(
        &self,
        proxy: &Arc<Proxy>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        entry: Entry,
    ) {
        let shard = (0..self.load.len())
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[shard].fetch_add(1, Ordering::Relaxed);
        let open = Open {
            load: self.load.clone(),
            shard,
        };
        if shard == 0 {
            proxy
                .clone()
                .spawn_connection(stream, peer, (permit, open), entry);
            return;
        }
        match stream.into_std() {
            // A send fails only once the shard has stopped (egret is exiting): the connection
            // is dropped, which closes it.
            Ok(stream) => {
                let _ = self.senders[shard - 1].send(Accepted {
                    stream,
                    peer,
                    permit,
                    open,
                    entry,
                });
            }
            Err(e) => tracing::debug!(error = %e, "cannot hand a connection to a worker thread"),
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.senders.clear(); // a shard ends when its channel closes
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Proxy {
    /// Starts the `cfg.workers - 1` shard threads (none for 1), each using its own set of the
    /// proxy's upstream pools; pass the result to [`Proxy::serve_sharded`]. Call once per
    /// proxy.
    pub fn start_shards(self: &Arc<Self>) -> std::io::Result<Arc<Shards>> {
        let extra = self.clients.len() - 1;
        let mut senders = Vec::with_capacity(extra);
        let mut threads = Vec::with_capacity(extra);
        for i in 1..=extra {
            let (tx, rx) = mpsc::unbounded_channel();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let proxy = self.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("egret-worker-{i}"))
                    .spawn(move || run_shard(i, rt, proxy, rx))?,
            );
            senders.push(tx);
        }
        Ok(Arc::new(Shards {
            senders,
            threads,
            load: (0..=extra).map(|_| AtomicUsize::new(0)).collect(),
        }))
    }

    /// The upstream pools of the calling thread's shard (the main runtime's outside shard
    /// threads).
    pub(crate) fn clients(&self) -> &upstream::Clients {
        &self.clients[current().min(self.clients.len() - 1)]
    }
}

fn run_shard(
    i: usize,
    rt: tokio::runtime::Runtime,
    proxy: Arc<Proxy>,
    mut rx: mpsc::UnboundedReceiver<Accepted>,
) {
    SHARD.with(|s| s.set(i));
    rt.block_on(async {
        while let Some(Accepted {
            stream,
            peer,
            permit,
            open,
            entry,
        }) = rx.recv().await
        {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "worker thread cannot take a connection");
                    continue;
                }
            };
            proxy
                .clone()
                .spawn_connection(stream, peer, (permit, open), entry);
        }
    });
    // Same grace as the main runtime gets at exit.
    rt.shutdown_timeout(Duration::from_millis(200));
}
