//! The messages between egret and its sandbox helper, over a `SOCK_SEQPACKET` socket pair:
//! one JSON message per packet, descriptors passed alongside (`SCM_RIGHTS`).
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use std::io::{Error, ErrorKind, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What one side tells the other, in the order they are sent.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) enum Msg {
    /// Helper → egret: the sandbox's namespaces exist and are captured. The descriptors are
    /// the listeners: TCP v4, TCP v6 (when `ipv6`), DNS v4, DNS v6 (when `ipv6`).
    Ready {
        /// The namespace has IPv6.
        ipv6: bool,
    },
    /// egret → helper: egret serves the listeners; the descriptor is the trust bundle
    /// (system roots + sandbox CA) to bind over the system's.
    Serving {
        /// Variables egret reads secrets from: not passed on to the command.
        strip_env: Vec<String>,
    },
    /// Helper → egret: the command's init process runs (its pid in egret's pid namespace).
    Started {
        /// Where egret forwards the signals it is sent.
        init_pid: i32,
    },
}

/// Larger than any message (they are a few dozen bytes, errors a line).
const MAX: usize = 16 * 1024;
/// Most descriptors one message carries.
const MAX_FDS: usize = 4;

/// Send `msg` with `fds`.
pub(super) fn send(sock: &OwnedFd, msg: &Msg, fds: &[RawFd]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receive one message and its descriptors; the peer having closed its end is
/// `UnexpectedEof`.
pub(super) fn recv(sock: &OwnedFd) -> std::io::Result<(Msg, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let got = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in got.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us;
                // nothing else owns them.
                #[allow(unsafe_code)]
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (got.bytes, fds)
    };
    if len == 0 {
        return Err(Error::new(
            ErrorKind::UnexpectedEof,
            "the other side is gone",
        ));
    }
    let msg =
        serde_json::from_slice(&buf[..len]).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    Ok((msg, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn messages_and_descriptors_cross() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        send(&a, &Msg::Ready { ipv6: true }, &[file.as_raw_fd()]).unwrap();
        send(&a, &Msg::Started { init_pid: 7 }, &[]).unwrap();
        let (m, fds) = recv(&b).unwrap();
        assert_eq!(m, Msg::Ready { ipv6: true });
        assert_eq!(fds.len(), 1);
        let (m, fds) = recv(&b).unwrap();
        assert_eq!(m, Msg::Started { init_pid: 7 });
        assert!(fds.is_empty());
        drop(a);
        assert_eq!(recv(&b).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }
}
