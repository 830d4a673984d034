# Print the delay (ms) of each api.test SSE event; argv: CA file, count, ms, h1|curl-h2.
import re, socket, ssl, sys, time, os
ca, count, ms, src = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if src == "h1":
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(socket.create_connection(("api.test", 443), timeout=10), server_hostname="api.test")
    s.sendall(("GET /sse/%d/%s HTTP/1.1\r\nHost: api.test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n" % (count, ms)).encode())
    read = lambda: s.recv(65536)
else:
    # started from here, once this interpreter is up, so its start-up is not measured
    import subprocess
    p = subprocess.Popen(["curl", "-sS", "-N", "--http2", "--max-time", "600", "--cacert", ca,
                          "-H", "accept: text/event-stream", "https://api.test/sse/%d/%s" % (count, ms)],
                         stdout=subprocess.PIPE)
    fd = p.stdout.fileno()
    read = lambda: os.read(fd, 65536)
buf, seen = b"", 0
while seen < count:
    d = read()
    if not d: break
    now = time.time()
    buf += d
    for m in re.finditer(rb"data: (\d+)\n", buf):
        print("EVENT %.3f" % ((now - int(m.group(1)) / 1e6) * 1000), flush=True)
        seen += 1
    # never count one event twice; an event cut in two stays for the next read
    buf = buf[-64:] if not re.search(rb"data: \d+\n", buf) else re.sub(rb"^.*data: \d+\n", b"", buf, flags=re.S)
print("SEEN", seen)
