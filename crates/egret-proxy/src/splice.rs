//! Copying a tunnel both ways with `splice(2)`: socket → pipe → socket, the kernel moves the
//! pages and no byte passes through egret's memory. For connections egret forwards without
//! looking at them (opaque TCP, TLS pass-through); one pipe per direction, 1 MiB each when the
//! kernel allows, so a wake-up moves up to that much instead of one 8 KiB buffer.
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe size asked for (`/proc/sys/fs/pipe-max-size` is 1 MiB by default).
const PIPE_BYTES: i32 = 1 << 20;
/// What a pipe holds when the kernel refuses to grow it.
const DEFAULT_PIPE_BYTES: usize = 64 << 10;

/// A pipe: its ends and how much it holds.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let cap = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES))
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_PIPE_BYTES);
        Ok(Pipe { r, w, cap })
    }
}

/// The two pipes of one tunnel.
pub(crate) struct Pipes {
    to_up: Pipe,
    to_down: Pipe,
}

/// Bytes moved so far each way; they stay right when the copy fails or is cancelled half-way
/// (a policy swap revoking the destination), so the audit event counts what went through.
#[derive(Default)]
pub(crate) struct Counts {
    /// Client → upstream.
    sent: AtomicU64,
    /// Upstream → client.
    received: AtomicU64,
}

impl Counts {
    pub(crate) fn add(&self, sent: u64, received: u64) {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.received.fetch_add(received, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

impl Pipes {
    pub(crate) fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            to_up: Pipe::new()?,
            to_down: Pipe::new()?,
        })
    }

    /// Copy both ways until both directions ended: an end of stream from one side becomes a
    /// write shutdown toward the other, whose direction goes on (as
    /// `tokio::io::copy_bidirectional`). The first error ends both.
    pub(crate) async fn copy(
        &self,
        down: &TcpStream,
        up: &TcpStream,
        counts: &Counts,
    ) -> io::Result<()> {
        tokio::try_join!(
            one_way(down, up, &self.to_up, &counts.sent),
            one_way(up, down, &self.to_down, &counts.received),
        )?;
        Ok(())
    }
}

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    count: &AtomicU64,
) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, &pipe.w, None, pipe.cap, flags).map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            // The peer may be gone already; its direction ends on its own then.
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            // The pipe holds `left` bytes, so EAGAIN can only mean the socket is full.
            let m = to
                .async_io(Interest::WRITABLE, || {
                    splice(&pipe.r, None, to, None, left, flags).map_err(io::Error::from)
                })
                .await?;
            left -= m;
            count.fetch_add(m as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of sockets: (the side the test drives, the side the tunnel gets).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_counted_and_eof_is_passed_on() {
        let (mut client, down) = pair().await;
        let (mut server, up) = pair().await;
        let counts = Counts::default();
        let pipes = Pipes::new().unwrap();
        let request: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let reply: Vec<u8> = (0..5 << 20).map(|i| (i % 241) as u8).collect();
        let tunnel = pipes.copy(&down, &up, &counts);
        let client_side = async {
            client.write_all(&request).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let server_side = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&reply).await.unwrap();
            server.shutdown().await.unwrap();
            got
        };
        let (copied, at_client, at_server) = tokio::join!(tunnel, client_side, server_side);
        copied.unwrap();
        assert!(at_server == request, "request corrupted");
        assert!(at_client == reply, "reply corrupted");
        assert_eq!(counts.get(), (request.len() as u64, reply.len() as u64));
    }

    #[tokio::test]
    async fn a_reset_ends_the_copy_with_the_bytes_so_far_counted() {
        let (mut client, down) = pair().await;
        let (server, up) = pair().await;
        let counts = Counts::default();
        let pipes = Pipes::new().unwrap();
        client.write_all(b"hello").await.unwrap();
        let tunnel = pipes.copy(&down, &up, &counts);
        let reset = async {
            let mut server = server;
            let mut buf = [0u8; 5];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            // SO_LINGER 0: close sends a reset, not a FIN.
            socket2::SockRef::from(&server)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
            drop(server);
            // The client end stays open: only the upstream side failed.
            client
        };
        let (copied, _client) = tokio::join!(tunnel, reset);
        assert!(copied.is_err(), "a reset is an error");
        assert_eq!(counts.get().0, 5);
    }
}
