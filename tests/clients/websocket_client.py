# WebSocket client to api.test, stdlib only; argv: CA file, client-close|server-close|close-frame.
import base64, os, socket, ssl, struct, sys, time
ca, mode = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("api.test", 443), timeout=10), server_hostname="api.test")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: api.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d: sys.exit("EOF during handshake: %r" % buf)
    buf += d
head, buf = buf.split(b"\r\n\r\n", 1)
print("STATUS", head.split(b"\r\n")[0].decode())
if b" 101 " not in head.split(b"\r\n")[0]:
    print("HEAD", head.decode(errors="replace").replace("\r\n", " | "))
    print("BODY", buf.decode(errors="replace"))
    sys.exit(0)
import hashlib
want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
print("ACCEPT-OK", want.encode() in head)
def recvn(n):
    global buf
    while len(buf) < n:
        d = s.recv(65536)
        if not d: raise EOFError()
        buf += d
    out, buf = buf[:n], buf[n:]
    return out
def send(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    h = bytes([0x80 | op])
    if n < 126: h += bytes([0x80 | n])
    elif n < 65536: h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    s.sendall(h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
def recv():
    b0, b1 = recvn(2)
    n = b1 & 0x7f
    if n == 126: n = struct.unpack(">H", recvn(2))[0]
    elif n == 127: n = struct.unpack(">Q", recvn(8))[0]
    return b0 & 0x0f, recvn(n)
op, p = recv()
print("FIRST", op, p.decode())
# ping-pong: each message must come back before the next is sent (no buffering either way)
rtts = []
for i in range(20):
    t = time.time()
    send(1, b"msg %d" % i)
    op, p = recv()
    rtts.append(time.time() - t)
    assert (op, p) == (1, b"msg %d" % i), (op, p)
print("PINGPONG-OK max_rtt_ms=%.1f" % (max(rtts) * 1000))
big = os.urandom(300000)
send(2, big)
op, p = recv()
print("BIG-OK", op == 2 and p == big)
send(9, b"are you there")
op, p = recv()
print("PONG", op, p.decode())
if mode == "client-close":
    s.close()   # abrupt: no close frame; the upstream must see its connection end
    print("CLIENT-CLOSED")
elif mode == "close-frame":
    send(8, struct.pack(">H", 1000))
    op, p = recv()
    print("CLOSE-ECHO", op, struct.unpack(">H", p)[0])
    print("EOF-AFTER-CLOSE", s.recv(10) == b"")
else:
    send(1, b"close-from-server")
    op, p = recv()
    print("SERVER-CLOSE", op, struct.unpack(">H", p)[0])
    try:
        print("EOF-AFTER-CLOSE", s.recv(10) == b"")
    except socket.timeout:
        print("EOF-AFTER-CLOSE timeout: egret kept the client side open")
