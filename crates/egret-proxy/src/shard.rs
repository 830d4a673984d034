//! Extra connection threads ("shards", `--workers` above 1). Each shard is a thread with a
//! current-thread tokio runtime and upstream connection pools of its own, accepting from the
//! same listening sockets as the main runtime (duplicated descriptors, each registered with
//! its own thread's epoll): whichever thread is free takes the next connection, and the
//! connection — each request on it, upstream connection included — lives on that thread until
//! it closes. A work-stealing runtime with several workers moves tasks between threads
//! instead, and pays a cross-thread wake-up for most hand-offs inside a request (measured on 2
//! cores: more CPU per request, not more throughput). Shared state (policy, leaf cache,
//! handler engine, counters, the connection limit) is read-mostly.
use crate::{upstream, Proxy};
use std::cell::Cell;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

thread_local! {
    /// Which shard this thread runs: 0 for the main runtime, 1.. for the shard threads.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard the calling thread runs (0 outside shard threads).
fn current() -> usize {
    SHARD.with(Cell::get)
}

/// The running shard threads of one [`Proxy`]. [`Shards::stop`] (or dropping it) ends them:
/// connections still open on them are closed.
pub struct Shards {
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Number of connection threads, the main runtime's included.
    pub fn workers(&self) -> usize {
        self.threads.len() + 1
    }

    /// Stops the shard threads and waits for them.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stops.clear(); // dropping a sender wakes its shard
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl Proxy {
    /// Starts `workers - 1` shard threads (none for 1), each with its own upstream pools and
    /// accepting from (duplicates of) `listeners`, which the caller serves on its own runtime
    /// with [`Proxy::serve`] as well. Call once per proxy.
    pub fn start_shards(
        self: &Arc<Self>,
        workers: usize,
        listeners: &[&std::net::TcpListener],
    ) -> std::io::Result<Shards> {
        let extra = workers.max(1) - 1;
        let clients: Vec<upstream::Clients> = (0..extra).map(|_| self.new_clients()).collect();
        if self.shard_clients.set(clients).is_err() {
            return Err(std::io::Error::other("start_shards called twice"));
        }
        let mut shards = Shards {
            stops: Vec::with_capacity(extra),
            threads: Vec::with_capacity(extra),
        };
        for i in 1..=extra {
            let own = listeners
                .iter()
                .map(|l| l.try_clone())
                .collect::<std::io::Result<Vec<_>>>()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel();
            let proxy = self.clone();
            shards.threads.push(
                std::thread::Builder::new()
                    .name(format!("egret-worker-{i}"))
                    .spawn(move || run_shard(i, rt, proxy, own, stopped))?,
            );
            shards.stops.push(stop);
        }
        Ok(shards)
    }

    /// The upstream pools of the calling thread's shard.
    pub(crate) fn clients(&self) -> &upstream::Clients {
        match current() {
            0 => &self.clients,
            i => self
                .shard_clients
                .get()
                .and_then(|c| c.get(i - 1))
                .unwrap_or(&self.clients),
        }
    }
}

fn run_shard(
    i: usize,
    rt: tokio::runtime::Runtime,
    proxy: Arc<Proxy>,
    listeners: Vec<std::net::TcpListener>,
    stopped: oneshot::Receiver<()>,
) {
    SHARD.with(|s| s.set(i));
    rt.block_on(async {
        for l in listeners {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::spawn(proxy.clone().serve(l));
                }
                Err(e) => tracing::warn!(worker = i, error = %e, "worker thread cannot accept"),
            }
        }
        let _ = stopped.await;
    });
    // Same grace as the main runtime gets at exit.
    rt.shutdown_timeout(Duration::from_millis(200));
}
