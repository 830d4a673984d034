# Run argv[2:] on a new pseudo-terminal and type argv[1] (unless it is empty) followed by a
# newline each time egret asks ("[d]eny?"); print everything written and then "exit=N" (its
# exit status). Used by tests/tests/e2e/exec.rs for egret exec --ask.
import os, pty, select, sys, time

reply = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out = b""
answered = 0
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
    if reply and out.count(b"[d]eny?") > answered:
        os.write(fd, reply + b"\n")
        answered += 1
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print(f"\nexit={os.waitstatus_to_exitcode(status)}")
