//! The sockets egret owns inside the sandbox namespace: transparent TCP listeners (TPROXY
//! delivers every intercepted connection to them with the original destination as the local
//! address) and the plain DNS sockets that nft redirects udp/53 to.
use crate::{CaptureConfig, CaptureError};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Listening sockets created inside the sandbox namespace (std sockets, non-blocking, ready to
/// be converted with `tokio::net::TcpListener::from_std`).
#[derive(Debug)]
pub struct Listeners {
    /// Transparent TCP listener, IPv4.
    pub tcp4: std::net::TcpListener,
    /// Transparent TCP listener, IPv6 (None when the namespace has IPv6 disabled).
    pub tcp6: Option<std::net::TcpListener>,
    /// DNS on 127.0.0.1.
    pub dns4: std::net::UdpSocket,
    /// DNS on ::1.
    pub dns6: Option<std::net::UdpSocket>,
}

fn tcp_transparent(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    } else {
        s.set_ip_transparent_v4(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

fn udp_plain(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn map_err(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> CaptureError {
    move |source| {
        let hint = match source.raw_os_error() {
            Some(libc::EADDRINUSE) => " (the port is taken: another egret or service runs in this namespace; pick another with --listen-port/--dns-port)",
            Some(libc::EPERM) | Some(libc::EACCES) => " (IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW: run as root)",
            _ => "",
        };
        CaptureError::Listener {
            what,
            addr,
            source,
            hint,
        }
    }
}

fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    )
}

/// Create all listeners. Must run on a thread inside the sandbox namespace.
pub(crate) fn create(cfg: &CaptureConfig) -> Result<Listeners, CaptureError> {
    let a4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.tcp_port);
    let a6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.tcp_port);
    let d4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), cfg.dns_port);
    let d6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), cfg.dns_port);
    let tcp4 = tcp_transparent(a4).map_err(map_err("transparent TCP", a4))?;
    let tcp6 = match tcp_transparent(a6) {
        Ok(l) => Some(l),
        Err(e) if ipv6_unavailable(&e) => {
            tracing::warn!("IPv6 is unavailable in the sandbox namespace; capturing IPv4 only");
            None
        }
        Err(e) => return Err(map_err("transparent TCP", a6)(e)),
    };
    let dns4 = udp_plain(d4).map_err(map_err("DNS", d4))?;
    // `[::]` binds even where IPv6 is disabled on every device (Docker's containers), `::1`
    // does not: then there is no IPv6 DNS to answer either.
    let dns6 = if tcp6.is_some() {
        match udp_plain(d6) {
            Ok(s) => Some(s),
            Err(e) if ipv6_unavailable(&e) => {
                tracing::warn!("IPv6 is disabled in the sandbox namespace; DNS on IPv4 only");
                None
            }
            Err(e) => return Err(map_err("DNS", d6)(e)),
        }
    } else {
        None
    };
    Ok(Listeners {
        tcp4,
        tcp6,
        dns4,
        dns6,
    })
}
