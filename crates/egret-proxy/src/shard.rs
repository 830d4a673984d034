//! Extra connection threads ("shards", `--workers` above 1). Each shard is a thread with a
//! current-thread tokio runtime and upstream connection pools of its own, and the accept loop
//! hands it every n-th connection, so a connection — and each request on it, upstream
//! connection included — lives on one thread from accept to close. A work-stealing runtime
//! with several workers moves tasks between threads instead, and pays a cross-thread wake-up
//! for most hand-offs inside a request (measured on 2 cores: more CPU per request, not more
//! throughput). Shared state (policy, leaf cache, handler engine, counters) is read-mostly.
use crate::{upstream, Proxy};
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
pub(crate) fn current() -> usize {
    SHARD.with(Cell::get)
}

/// A connection handed from the accept loop to a shard.
pub(crate) struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// The running shard threads of one [`Proxy`]. [`Shards::stop`] (or dropping it) ends them:
/// connections still open on them are closed.
pub struct Shards {
    senders: Vec<mpsc::UnboundedSender<Accepted>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Shards {
    /// Number of connection threads, the accept loop's own included.
    pub fn workers(&self) -> usize {
        self.senders.len() + 1
    }

    /// The shard for the next connection, round robin: 0 is the accept loop's own runtime.
    pub(crate) fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.workers()
    }

    /// Hands an accepted connection to shard `i` (1..). If that shard has gone (it only
    /// stops with the process), the connection is dropped, which closes it.
    pub(crate) fn hand_over(
        &self,
        i: usize,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        match stream.into_std() {
            Ok(stream) => {
                let _ = self.senders[i - 1].send(Accepted {
                    stream,
                    peer,
                    permit,
                });
            }
            Err(e) => tracing::debug!(error = %e, "cannot hand a connection to a worker thread"),
        }
    }

    /// Stops the shard threads and waits for them.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.senders.clear();
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
    /// Starts `workers - 1` shard threads (none for 1), each with its own upstream pools;
    /// pass the result to [`Proxy::serve_sharded`]. Call once per proxy.
    pub fn start_shards(self: &Arc<Self>, workers: usize) -> std::io::Result<Arc<Shards>> {
        let extra = workers.max(1) - 1;
        let clients: Vec<upstream::Clients> = (0..extra).map(|_| self.new_clients()).collect();
        if self.shard_clients.set(clients).is_err() {
            return Err(std::io::Error::other("start_shards called twice"));
        }
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
            next: AtomicUsize::new(0),
        }))
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
    mut rx: mpsc::UnboundedReceiver<Accepted>,
) {
    SHARD.with(|s| s.set(i));
    rt.block_on(async {
        while let Some(Accepted {
            stream,
            peer,
            permit,
        }) = rx.recv().await
        {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "worker thread cannot take a connection");
                    continue;
                }
            };
            let proxy = proxy.clone();
            tokio::spawn(async move {
                proxy.handle_connection(stream, peer).await;
                drop(permit);
            });
        }
    });
    // Same grace as the main runtime gets at exit.
    rt.shutdown_timeout(Duration::from_millis(200));
}
