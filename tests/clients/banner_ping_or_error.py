# Print the banner of argv[1]:2222 and the echo of "ping", or ERR and the exception type.
import socket, sys
s = socket.create_connection((sys.argv[1], 2222), timeout=5)
try:
    print(s.recv(100).decode().strip())
    s.sendall(b"ping\n"); print(s.recv(100).decode().strip())
except Exception as e:
    print("ERR", type(e).__name__)
