# Print the banner of github.test:2222, wait for a stdin line, poke, print if closed. No args.
import socket, sys, time
s = socket.create_connection(("github.test", 2222), timeout=10)
print(s.recv(100).decode().strip()); sys.stdout.flush()
input()
t = time.time()
try:
    s.sendall(b"still there?\n")
    d = s.recv(100)
    print("after:", "closed" if not d else d.decode().strip())
except OSError as e:
    print("after: closed", type(e).__name__)
