# Minimal h2c client: per [name, headers] case of JSON argv[1], prints the frames that came back.
import socket, struct, sys, json
def hp_str(b):
    assert len(b) < 127
    return bytes([len(b)]) + b
def headers_block(hs):
    return b"".join(b"\x00" + hp_str(n) + hp_str(v) for n, v in hs)
def frame(typ, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([typ, flags]) + struct.pack("!I", sid) + payload
cases = json.loads(sys.argv[1])
out = []
for name, hs in cases:
    s = socket.create_connection(("10.200.0.2", 80), timeout=3)
    hs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in hs]
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
              frame(1, 0x4 | 0x1, 1, headers_block(hs)))
    got = []
    try:
        buf = b""
        while True:
            d = s.recv(65536)
            if not d: break
            buf += d
            while len(buf) >= 9:
                ln = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + ln: break
                typ, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff
                got.append({0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 7: "GOAWAY", 8: "WINDOW_UPDATE", 6: "PING"}.get(typ, str(typ)))
                if typ == 4 and not flags & 1:
                    s.sendall(frame(4, 1, 0, b""))
                buf = buf[9 + ln:]
                if typ in (3, 7) or (typ in (0, 1) and flags & 1): raise StopIteration
    except (socket.timeout, StopIteration, OSError): pass
    out.append("%s: %s" % (name, " ".join(got)))
print("\n".join(out))
