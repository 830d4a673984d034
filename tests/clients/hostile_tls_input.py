# Cut-short, garbage and stalled TLS handshakes to 10.200.0.2:443; prints how each ended. No args.
import socket, time, sys
def conn():
    return socket.create_connection(("10.200.0.2", 443), timeout=15)
# 1. a ClientHello cut short, then close
s = conn(); s.sendall(bytes.fromhex("160301020001")); s.close()
# 2. garbage that starts like TLS
s = conn(); s.sendall(b"\x16\x03\x01" + b"\xff" * 50)
try:
    print("garbage:", s.recv(10))
except Exception as e:
    print("garbage:", type(e).__name__)
# 3. a client that never finishes: egret must close it after its handshake timeout
s = conn(); s.sendall(bytes.fromhex("16030100c8"))
t = time.time()
try:
    d = s.recv(10)
    print("stall: closed after", round(time.time() - t), "data", d)
except Exception as e:
    print("stall:", type(e).__name__, round(time.time() - t))
