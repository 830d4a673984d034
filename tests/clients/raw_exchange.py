# Send hex argv[3] to argv[1]:argv[2]; print what comes back until EOF or argv[4] s of silence.
import socket, sys, binascii, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
s.sendall(binascii.unhexlify(sys.argv[3]))
buf = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        buf += d
except socket.timeout: pass
except OSError as e: buf += ("<%s>" % type(e).__name__).encode()
sys.stdout.write(buf.decode("latin-1"))
