# TLS handshakes to three names trusting CA file argv[1]; prints if that CA's cert came.
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for name, ip in [("denied.test", "10.200.0.3"), ("unlisted.test", "10.200.0.4"),
                 ("pinned.test", "10.200.0.2")]:
    try:
        with socket.create_connection((ip, 443), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                print(name, "HANDSHAKE-WITH-EGRET-CA", t.getpeercert()["subject"])
    except ssl.SSLCertVerificationError as e: print(name, "not egret's cert:", e.verify_message)
    except OSError as e: print(name, "refused:", type(e).__name__)
