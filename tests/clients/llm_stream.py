# POST a streaming chat completion through curl and print each server-sent event as it
# arrives: "EVENT <ms since the request> <data>"; argv: CA file, URL, JSON body.
import os, subprocess, sys, time
ca, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.time()
p = subprocess.Popen(["curl", "-sS", "-N", "--http1.1", "--max-time", "30", "--cacert", ca,
                      "-H", "content-type: application/json", "--data-binary", body, url],
                     stdout=subprocess.PIPE)
fd = p.stdout.fileno()
buf = b""
while True:
    d = os.read(fd, 65536)
    if not d:
        break
    now = (time.time() - start) * 1000
    buf += d
    # an event ends in a blank line; one cut by the reads waits for the rest
    while b"\n\n" in buf:
        event, buf = buf.split(b"\n\n", 1)
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                print("EVENT %.1f %s" % (now, line[6:].decode()), flush=True)
if buf.strip():
    print("REST %s" % buf.decode(errors="replace"), flush=True)
sys.exit(p.wait())
