# argv[1] TLS handshakes, one SNI name each, CA file argv[2]; prints HANDSHAKES and the count.
import socket, ssl, sys, threading
n = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=sys.argv[2])
ok = [0] * 8
def worker(k):
    for i in range(k, n, 8):
        try:
            with socket.create_connection(("10.200.0.9", 443), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="n%d.many.test" % i):
                    ok[k] += 1
        except OSError as e:
            print("ERR", i, e, flush=True)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print("HANDSHAKES", sum(ok))
