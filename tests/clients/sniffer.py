# Print READY, then a FRAME line per frame arriving on v-sbx. No args; runs until killed.
import socket, sys, binascii
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind(("v-sbx", 0))
print("READY", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    print("FRAME", addr[2], binascii.hexlify(data[:64]).decode(), flush=True)
