# Print the banner of allowed.test:2222 and the echo of "ping". No args.
import socket
s = socket.create_connection(("allowed.test", 2222), timeout=5)
print(s.recv(100).decode().strip()); s.sendall(b"ping\n"); print(s.recv(100).decode().strip())
