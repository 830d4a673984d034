# Resolver stand-in: prints READY, then a line per packet or connection on port 53. No args.
import socket, threading, sys
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind(addr)
    while True:
        d, a = s.recvfrom(4096); print("UDP", a, len(d), flush=True)
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr); s.listen(16)
    while True:
        c, a = s.accept(); print("TCP", a, flush=True); c.close()
for fam, addr in [(socket.AF_INET, ("0.0.0.0", 53)), (socket.AF_INET6, ("::", 53))]:
    for f in (udp, tcp):
        if fam == socket.AF_INET6:
            pass
        threading.Thread(target=f, args=(fam, addr), daemon=True).start()
print("READY", flush=True)
threading.Event().wait()
