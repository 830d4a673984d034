# Connect to argv[1]:443, wait argv[2] s, then TLS (CA file argv[3]) and GET /echo; prints JSON.
import socket, ssl, sys, time, json
host, delay, ca = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, 443), timeout=30)
time.sleep(delay)
out = {}
try:
    ctx = ssl.create_default_context(cafile=ca)
    t = ctx.wrap_socket(s, server_hostname=host)
    out["issuer"] = dict(x[0] for x in t.getpeercert()["issuer"]).get("commonName")
    t.sendall(b"GET /echo HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = t.recv(65536)
        if not d: break
        data += d
    head, _, body = data.decode("latin-1").partition("\r\n\r\n")
    out["status"] = head.split("\r\n")[0]
    out["body"] = body
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
