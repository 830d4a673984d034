# 100 parallel HTTPS GETs to allowed.test (CA file argv[1]); prints OK and how many got 200.
import ssl, socket, sys, threading
ctx = ssl.create_default_context(cafile=sys.argv[1])
ok = []
def one():
    try:
        s = ctx.wrap_socket(socket.create_connection(("allowed.test", 443), timeout=20), server_hostname="allowed.test")
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        ok.append(s.recv(20).startswith(b"HTTP/1.1 200"))
    except Exception as e:
        print("ERR", e)
ts = [threading.Thread(target=one) for _ in range(100)]
[t.start() for t in ts]; [t.join() for t in ts]
print("OK", sum(ok))
