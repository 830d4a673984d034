# Try every way out of the sandbox that avoids egret; prints one line per attempt. No args.
import socket, struct, time, errno, select
R = []
def rec(*a): R.append(" ".join(str(x) for x in a))
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
def icmp_echo():
    h = struct.pack("!BBHHH", 8, 0, 0, 0x4567, 1) + b"egret-sec"
    return struct.pack("!BBHHH", 8, 0, csum(h), 0x4567, 1) + b"egret-sec"
# raw ICMP (ping) to upstream addresses, through the veth and through "the internet"
for dst in ["10.201.0.2", "10.200.0.2"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1)
    try:
        s.sendto(icmp_echo(), (dst, 0))
        while True:
            d, a = s.recvfrom(2048)
            if a[0] == dst: rec("REPLY icmp", dst); break
    except OSError as e: rec("blocked icmp", dst, type(e).__name__)
for dst in ["fd00:201::2", "fd00:200::2", "::ffff:10.201.0.2"]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); s.settimeout(1)
    try:
        s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x4567, 1) + b"egret-sec", (dst, 0))
        while True:
            d, a = s.recvfrom(2048)
            if d[0] == 129: rec("REPLY icmp6", dst); break
    except OSError as e: rec("blocked icmp6", dst, type(e).__name__)
# raw IP with our own header (IP_HDRINCL): a UDP datagram to the upstream
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
udp = struct.pack("!HHHH", 40000, 9999, 8 + 4, 0) + b"raw!"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton("10.201.0.1"), socket.inet_aton("10.201.0.2"))
try: s.sendto(ip + udp, ("10.201.0.2", 0)); rec("sent rawip")
except OSError as e: rec("blocked rawip", type(e).__name__)
# UDP to arbitrary ports, v4, v6 and IPv4-mapped v6
for fam, dst in [(socket.AF_INET, "10.201.0.2"), (socket.AF_INET, "10.200.0.2"),
                 (socket.AF_INET6, "fd00:201::2"), (socket.AF_INET6, "fd00:200::2"),
                 (socket.AF_INET6, "::ffff:10.201.0.2"), (socket.AF_INET6, "::ffff:10.200.0.2")]:
    for port in [9999, 123, 443, 5353]:
        u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(0.3)
        try:
            u.sendto(b"udp-escape", (dst, port)); u.recvfrom(100); rec("REPLY udp", dst, port)
        except OSError as e: rec("blocked udp", dst, port, type(e).__name__)
# TCP with forged socket marks (egret's own 0x1 and others), to the sandbox's own veth peer
# and to an upstream, plain and IPv4-mapped
def http(fam, dst, mark=None, transparent_src=None):
    t = socket.socket(fam, socket.SOCK_STREAM); t.settimeout(3)
    try:
        if mark is not None: t.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack("I", mark))
        if transparent_src:
            t.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
            t.bind((transparent_src, 0))
        t.connect((dst, 80))
        host = ("[%s]" % dst) if ":" in dst else dst
        t.sendall(b"GET /escaped HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        return (t.recv(100).split(b"\r\n")[0].decode() or "closed")
    except OSError as e: return type(e).__name__
for mark in [None, 0x0, 0x1, 0x2, 0xff, 0x100, 0x101, 0xffffffff]:
    rec("tcp mark", mark, http(socket.AF_INET, "10.201.0.2", mark))
    rec("tcp6 mark", mark, http(socket.AF_INET6, "fd00:201::2", mark))
rec("tcp mapped", http(socket.AF_INET6, "::ffff:10.201.0.2"))
rec("tcp mapped", http(socket.AF_INET6, "::ffff:10.200.0.4"))
# spoofing egret's upstream-side address as source (IP_TRANSPARENT + non-local bind)
rec("tcp transparent-src", http(socket.AF_INET, "10.201.0.2", 0x1, "10.200.0.1"))
# binding egret's listener / DNS ports, also with SO_REUSEPORT (would steal connections)
for fam, typ, addr in [(socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 15001)),
                       (socket.AF_INET6, socket.SOCK_STREAM, ("::", 15001)),
                       (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 15053)),
                       (socket.AF_INET6, socket.SOCK_DGRAM, ("::1", 15053))]:
    for reuse in [False, True]:
        b = socket.socket(fam, typ)
        try:
            if reuse:
                b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            b.bind(addr); rec("BOUND", addr, reuse)
            if typ == socket.SOCK_STREAM: b.listen(8)
        except OSError as e: rec("bind refused", addr, reuse, errno.errorcode.get(e.errno))
# connecting to egret's listener directly
for fam, dst in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "10.201.0.1"), (socket.AF_INET6, "::1")]:
    t = socket.socket(fam, socket.SOCK_STREAM); t.settimeout(2)
    try: t.connect((dst, 15001)); rec("CONNECTED listener", dst)
    except OSError as e: rec("listener refused", dst, type(e).__name__)
time.sleep(0.5)
print("\n".join(R))
