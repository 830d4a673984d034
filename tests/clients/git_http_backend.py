"""An HTTPS server running `git http-backend` as CGI, for the request-rule tests: the upstream a
real `git clone/fetch/push` talks to through egret.

usage: git_http_backend.py LISTEN_ADDR PORT CERT KEY PROJECT_ROOT READY_FILE ACCESS_LOG

Each request is one `git http-backend` process (GIT_PROJECT_ROOT, every repository exported,
pushes allowed as user `tester`); its CGI headers become the response's. Request bodies sent
chunked are de-chunked (CGI wants a length). One access-log line per request:
`METHOD PATH?QUERY STATUS`.
"""

import http.server
import os
import ssl
import subprocess
import sys
import threading

ADDR, PORT, CERT, KEY, ROOT, READY, LOG = sys.argv[1:8]
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def run(self):
        data = self.body()
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "tester",
            "REMOTE_ADDR": self.client_address[0],
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(data)),
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": ROOT,
        }
        for h in ("Content-Encoding", "Git-Protocol"):
            if self.headers.get(h):
                env["HTTP_" + h.upper().replace("-", "_")] = self.headers[h]
        p = subprocess.run(
            ["git", "http-backend"], input=data, env=env, capture_output=True
        )
        head, _, payload = p.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = p.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            if not line.strip():
                continue
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            else:
                headers.append((k.strip(), v.strip()))
        if p.returncode != 0 and not head:
            status, payload = 500, p.stderr
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        with LOCK, open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {status}\n")

    do_GET = run
    do_POST = run


server = http.server.ThreadingHTTPServer((ADDR, int(PORT)), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(READY, "w") as f:
    f.write("ready\n")
server.serve_forever()
