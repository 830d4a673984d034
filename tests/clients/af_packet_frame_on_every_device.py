# Send one raw frame on every network device; prints sent or refused per device. No args.
import socket, os
out = []
for ifname in os.listdir("/sys/class/net"):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + b"\x45" + b"\0" * 40
        s.send(frame)
        out.append("sent %s" % ifname)
    except OSError as e:
        out.append("refused %s %s" % (ifname, e))
print("\n".join(out))
