# Write 1 GiB of numbered 1 MiB blocks to stdout, then "SHA256 LEN" to stderr. No args.
import hashlib, sys
n, blk = 1 << 30, 1 << 20
base = bytes(range(256)) * (blk // 256)
h, out = hashlib.sha256(), sys.stdout.buffer
for i in range(n // blk):
    b = i.to_bytes(8, "big") + base[8:]
    h.update(b)
    out.write(b)
out.flush()
sys.stderr.write("%s %d\n" % (h.hexdigest(), n))
