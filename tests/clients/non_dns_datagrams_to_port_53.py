# Send a datagram that is not DNS to port 53 of two upstream addresses. No args.
import socket
for d in ['10.201.0.2','10.200.0.2']:
 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b'exfil'*50,(d,53))
