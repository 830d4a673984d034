# Send a UDP datagram to three upstream destinations; prints SENT or FAILED for each. No args.
import socket, time, sys
for dst in [("10.200.0.2", 443), ("10.201.0.2", 443), ("10.201.0.2", 9999)]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = time.time()
    try:
        s.sendto(b"quic?", dst)
        print("SENT", dst)
    except OSError as e:
        print("FAILED", dst, e.errno, round(time.time() - t, 3))
