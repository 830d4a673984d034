# Connect to argv[1]:80, wait argv[2] s, send an argv[3] request; prints status line and body.
import socket, sys, time
host, delay, method = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, 80), timeout=30)
time.sleep(delay)
s.sendall(("%s /echo HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (method, host)).encode())
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
text = data.decode("latin-1")
print(text.split("\r\n")[0])
print(text.partition("\r\n\r\n")[2])
