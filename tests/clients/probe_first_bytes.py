# Connect to argv[1]:argv[2], send hex argv[3], read for argv[4] s; prints DATA/EOF/ERR, echo.
import socket, sys, binascii
host, port, first, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.create_connection((host, port), timeout=secs)
if first:
    s.sendall(binascii.unhexlify(first))
try:
    d = s.recv(200)
    print("DATA" if d else "EOF", d.decode("latin-1").strip())
    if d:
        s.sendall(b"ping\n"); print("ECHO", s.recv(100).decode().strip())
except Exception as e:
    print("ERR", type(e).__name__)
