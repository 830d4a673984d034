# argv[1] idle conns, slowloris, trickled hello, huge headers; prints results, holds until stdin.
import socket, sys, time, threading, resource, ssl
n_idle = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n_idle + 1000, n_idle + 1000))
idle = []
for i in range(n_idle):
    s = socket.socket(); s.settimeout(5)
    try:
        # silent, a partial request line, a partial TLS record header
        s.connect(("10.200.0.2", 443 if i % 3 == 2 else 80)); idle.append(s)
        if i % 3 == 1: s.sendall(b"GET /idle HTTP/1.1\r\n")
        if i % 3 == 2: s.sendall(b"\x16\x03\x01")
    except OSError as e:
        print("idle connect failed", i, e, flush=True); break
print("IDLE", len(idle), flush=True)
# slowloris: 50 connections sending a header byte now and then
slow = []
for i in range(50):
    s = socket.create_connection(("10.200.0.2", 80), timeout=5)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: allowed.test\r\n"); slow.append(s)
# a ClientHello trickled byte by byte
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
i_, o_ = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(i_, o_, server_hostname="allowed.test")
try: obj.do_handshake()
except ssl.SSLWantReadError: pass
hello = o_.read()
tr = socket.create_connection(("10.200.0.2", 443), timeout=10)
t0 = time.time(); closed_after = None
for b in hello:
    try:
        tr.sendall(bytes([b]))
        for s in slow[:10]: s.sendall(b"X")
    except OSError:
        closed_after = time.time() - t0; break
    time.sleep(0.1)
    if time.time() - t0 > 8: break
if closed_after is None:
    tr.settimeout(3)
    try:
        d = tr.recv(10); closed_after = time.time() - t0 if not d else None
    except OSError: closed_after = time.time() - t0
print("TRICKLE closed after", closed_after, flush=True)
# huge headers
for size in [64 * 1024, 1024 * 1024]:
    h = socket.create_connection(("10.200.0.2", 80), timeout=10)
    try:
        h.sendall(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        print("HUGE", size, h.recv(40).split(b"\r\n")[0], flush=True)
    except OSError as e: print("HUGE", size, type(e).__name__, flush=True)
many = socket.create_connection(("10.200.0.2", 80), timeout=10)
try:
    many.sendall(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
    print("MANY", many.recv(40).split(b"\r\n")[0], flush=True)
except OSError as e: print("MANY", type(e).__name__, flush=True)
print("HOLDING", flush=True)
input()
print("alive idle", sum(1 for s in idle if s.fileno() >= 0))
