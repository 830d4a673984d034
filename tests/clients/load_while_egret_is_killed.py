# Six threads of GETs until a stdin line; prints STARTED, then ok/err counts. No args.
import socket, threading, sys, time
stop = False; counts = {"ok": 0, "err": 0}
def one(dst, host, keep):
    s = None
    while not stop:
        try:
            if s is None:
                s = socket.create_connection((dst, 80), timeout=2)
            s.sendall(("GET /load HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode())
            d = s.recv(4096)
            if not d: raise OSError("closed")
            counts["ok"] += 1
            if not keep: s.close(); s = None
        except OSError:
            counts["err"] += 1
            if s: s.close()
            s = None; time.sleep(0.005)
ts = [threading.Thread(target=one, args=a, daemon=True) for a in
      [("10.200.0.2", "vcs.test", True), ("10.200.0.2", "vcs.test", False),
       ("10.200.0.4", "vcs.test", False), ("10.201.0.2", "vcs.test", True),
       ("10.201.0.2", "extra.test", False), ("10.201.0.2", "10.201.0.2", False)]]
[t.start() for t in ts]
print("STARTED", flush=True)
input()
stop = True
print(counts)
