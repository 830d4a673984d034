//! Who owns the `inet egret` table, asked over netlink instead of through `nft list table`.
//!
//! Start-up asks this on every attach and detach. `nft` first fills its cache of every table,
//! chain, set, flowtable and object in the namespace before it answers: 10–20 ms on this VM,
//! the longest step of attaching before the ruleset load. One `NFT_MSG_GETTABLE` request is a
//! single round trip to the kernel.
//!
//! The message layouts are the kernel's (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nf_tables.h`) and libnftnl's for the table comment (`udata.h`).
use crate::nft::{parse_owner_comment, Owner, TABLE_NAME};
use crate::CaptureError;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::os::fd::AsRawFd;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
/// libnftnl's `NFTNL_UDATA_TABLE_COMMENT`: the `comment "..."` of a table.
const UDATA_TABLE_COMMENT: u8 = 0;
/// Attribute type bits that are flags (nested, network byte order), not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The `GETTABLE inet egret` request.
fn get_table_request(seq: u32) -> Vec<u8> {
    let name_len = TABLE_NAME.len() + 1; // NUL-terminated
    let attr_len = 4 + name_len;
    let total = NLMSG_HDRLEN + NFGENMSG_LEN + align4(attr_len);
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(&[NFPROTO_INET, 0]); // family, NFNETLINK_V0
    m.extend_from_slice(&0u16.to_be_bytes()); // res_id
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    m.extend_from_slice(TABLE_NAME.as_bytes());
    m.push(0);
    m.resize(total, 0);
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The attributes `(type, value)` in `b`.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// The table comment in libnftnl's userdata encoding: `(type u8, len u8, value)` records.
fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_TABLE_COMMENT {
            let text = value.split(|&c| c == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        udata = &udata[2 + len..];
    }
    None
}

/// What one read from the socket held.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Nothing for our request yet: read again.
    NotYet,
    /// The answer: the table's owner, or `None` when there is no such table.
    Table(Option<Owner>),
}

/// What the kernel answered (see [`Reply`]), or an error (errno or a malformed reply).
fn parse_reply(b: &[u8], seq: u32) -> Result<Reply, String> {
    let mut rest = b;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32_at(rest, 0).ok_or("short header")? as usize;
        let kind = u16_at(rest, 4).ok_or("short header")?;
        let msg_seq = u32_at(rest, 8).ok_or("short header")?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(format!("bad netlink message length {len}"));
        }
        let (msg, next) = (&rest[..len], &rest[align4(len).min(rest.len())..]);
        rest = next;
        if msg_seq != seq {
            continue;
        }
        if kind == NLMSG_ERROR {
            let errno = u32_at(msg, NLMSG_HDRLEN).ok_or("short error message")? as i32;
            return match -errno {
                0 => Err("an acknowledgement instead of the table".into()),
                libc::ENOENT => Ok(Reply::Table(None)),
                e => Err(std::io::Error::from_raw_os_error(e).to_string()),
            };
        }
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
            let attrs = msg.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or(&[]);
            let owner = attributes(attrs)
                .find(|(k, _)| *k == NFTA_TABLE_USERDATA)
                .and_then(|(_, v)| comment(v))
                .and_then(|c| parse_owner_comment(&c));
            // A table of that name that egret did not write: its owner is unknown.
            return Ok(Reply::Table(Some(owner.unwrap_or(Owner {
                pid: 0,
                sandbox_id: "unknown".into(),
            }))));
        }
    }
    Ok(Reply::NotYet)
}

/// Who owns `inet egret` in the calling thread's network namespace; `None` when there is no
/// such table.
pub(crate) fn table_owner() -> Result<Option<Owner>, CaptureError> {
    let err = |e: String| CaptureError::Command {
        command: format!("netlink: get table inet {TABLE_NAME}"),
        stderr: e,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| err(format!("cannot open a netfilter netlink socket: {e}")))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| err(format!("bind: {e}")))?;
    // The kernel answers at once; the timeout only guards against a reply that never comes.
    let timeout = nix::sys::time::TimeVal::new(5, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| err(format!("setsockopt: {e}")))?;
    let seq = std::process::id();
    send(fd.as_raw_fd(), &get_table_request(seq), MsgFlags::empty())
        .map_err(|e| err(format!("send: {e}")))?;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| err(format!("recv: {e}")))?;
        match parse_reply(&buf[..n], seq).map_err(err)? {
            Reply::NotYet => continue,
            Reply::Table(owner) => return Ok(owner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(len), 0);
        m
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn table_reply(seq: u32, udata: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![NFPROTO_INET, 0, 0, 0];
        p.extend(attr(NFTA_TABLE_NAME, b"egret\0"));
        p.extend(attr(2, &0u32.to_be_bytes())); // flags
        if let Some(u) = udata {
            p.extend(attr(NFTA_TABLE_USERDATA, u));
        }
        nlmsg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE, seq, &p)
    }

    fn error_reply(seq: u32, errno: i32) -> Vec<u8> {
        let mut p = (-errno).to_ne_bytes().to_vec();
        p.extend(nlmsg(0, seq, &[])); // the request's header, echoed
        nlmsg(NLMSG_ERROR, seq, &p)
    }

    fn udata_comment(text: &str) -> Vec<u8> {
        let mut u = vec![UDATA_TABLE_COMMENT, (text.len() + 1) as u8];
        u.extend_from_slice(text.as_bytes());
        u.push(0);
        u
    }

    #[test]
    fn request_is_a_gettable_for_inet_egret() {
        let r = get_table_request(7);
        assert_eq!(r.len() % 4, 0);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(u16_at(&r, 4), Some(0x0a01));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(r[16], NFPROTO_INET);
        let attrs: Vec<_> = attributes(&r[20..]).collect();
        assert_eq!(attrs, vec![(NFTA_TABLE_NAME, &b"egret\0"[..])]);
    }

    #[test]
    fn owner_comes_from_the_table_comment() {
        let u = udata_comment("egret pid=4242 sandbox=agent-47");
        assert_eq!(
            parse_reply(&table_reply(9, Some(&u)), 9),
            Ok(Reply::Table(Some(Owner {
                pid: 4242,
                sandbox_id: "agent-47".into()
            })))
        );
        // Another record before the comment is skipped.
        let mut u2 = vec![5, 2, 0xaa, 0xbb];
        u2.extend(udata_comment("egret pid=1 sandbox=s"));
        assert_eq!(
            parse_reply(&table_reply(9, Some(&u2)), 9),
            Ok(Reply::Table(Some(Owner {
                pid: 1,
                sandbox_id: "s".into()
            })))
        );
    }

    #[test]
    fn a_table_egret_did_not_write_has_an_unknown_owner() {
        let unknown = Ok(Reply::Table(Some(Owner {
            pid: 0,
            sandbox_id: "unknown".into(),
        })));
        assert_eq!(parse_reply(&table_reply(3, None), 3), unknown);
        let u = udata_comment("hand-made");
        assert_eq!(parse_reply(&table_reply(3, Some(&u)), 3), unknown);
        // A truncated userdata record is no owner either, not a panic.
        assert_eq!(
            parse_reply(&table_reply(3, Some(&[0, 200, b'e'])), 3),
            unknown
        );
    }

    #[test]
    fn enoent_means_no_table_and_other_errors_are_errors() {
        assert_eq!(
            parse_reply(&error_reply(4, libc::ENOENT), 4),
            Ok(Reply::Table(None))
        );
        let e = parse_reply(&error_reply(4, libc::EPERM), 4).unwrap_err();
        assert!(e.contains("not permitted"), "{e}");
    }

    #[test]
    fn messages_for_other_requests_and_garbage_are_not_taken_for_the_answer() {
        let mut b = error_reply(1, libc::EPERM);
        b.extend(error_reply(2, libc::ENOENT));
        assert_eq!(parse_reply(&b, 2), Ok(Reply::Table(None)));
        assert_eq!(
            parse_reply(&error_reply(1, libc::EPERM), 2),
            Ok(Reply::NotYet)
        );
        assert_eq!(parse_reply(&[1, 2, 3], 2), Ok(Reply::NotYet));
        let mut bad = error_reply(2, libc::ENOENT);
        bad[0] = 0xff; // length beyond the buffer
        assert!(parse_reply(&bad, 2).is_err());
    }
}
