# Reconnects to allowed.test (CA file argv[1]) with the session of the previous connection, on
# TLS 1.3 and on TLS 1.2, a GET on each; prints one JSON object: per version, the negotiated
# version of each connection and whether each reconnect resumed.
import json, socket, ssl, sys
out = {}
for name, version in (("1.3", ssl.TLSVersion.TLSv1_3), ("1.2", ssl.TLSVersion.TLSv1_2)):
    ctx = ssl.create_default_context(cafile=sys.argv[1])
    ctx.minimum_version = ctx.maximum_version = version
    session, versions, resumed = None, [], []
    for i in range(5):
        raw = socket.create_connection(("allowed.test", 443), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="allowed.test", session=session) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
            data = b""
            # Reading to the end also reads TLS 1.3's session tickets, sent after the handshake.
            while chunk := s.recv(65536):
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                sys.exit(f"TLS {name} connection {i}: {data[:200]!r}")
            versions.append(s.version())
            if i > 0:
                resumed.append(s.session_reused)
            session = s.session
    out[name] = {"versions": versions, "resumed": resumed}
print(json.dumps(out))
