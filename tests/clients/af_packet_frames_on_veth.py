# Send raw frames on v-wan, with and without PACKET_QDISC_BYPASS; prints the result. No args.
import socket
out = []
for qdisc_bypass in (False, True):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("v-wan", 0))
    if qdisc_bypass:
        s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"exfil" * 10
    try:
        for _ in range(20):
            s.send(frame)
        out.append("sent bypass=%s" % qdisc_bypass)
    except OSError as e:
        out.append("refused bypass=%s %s" % (qdisc_bypass, e.errno))
print(" | ".join(out))
