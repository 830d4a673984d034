# Run argv[1:] on a new pseudo-terminal, type Ctrl-C once it printed "ready", print everything
# it wrote and then "exit=N" (its exit status). Used by tests/tests/e2e/exec.rs.
import os, pty, select, sys, time

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b""
sent = False
deadline = time.time() + 30
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent and b"ready" in out:
        os.write(fd, b"\x03")
        sent = True
else:
    # It did not end: end it (and with it, through egret, the command) instead of hanging.
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print(f"\nexit={os.waitstatus_to_exitcode(status)}")
