# POST on one keep-alive HTTPS connection, sending each body only once the answer came (the
# upstream or a handler answered before reading it), then the next request on that connection.
# Prints "<i> <status> <connection header or ->" per exchange, or "<i> closed" when the
# connection was gone. Args: host, CA file, path, count.
import socket, ssl, sys

host, ca, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection((host, 443), timeout=10), server_hostname=host)
f = s.makefile("rb")
body = b"x" * 1000


def answer():
    status = f.readline()
    if not status:
        return None, {}
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    f.read(int(headers.get("content-length", 0)))
    return status.split()[1].decode(), headers


for i in range(n):
    try:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        status, headers = answer()
    except (OSError, ssl.SSLError):
        status = None
    if status is None:
        print(i, "closed", flush=True)
        break
    print(i, status, headers.get("connection", "-"), flush=True)
    s.sendall(body)
