# Run argv[3:] on a new pseudo-terminal and type argv[2] each time another argv[1] appears in
# what it wrote (never when argv[2] is empty); print everything it wrote and then "exit=N" (its
# exit status). Used by tests/tests/e2e/exec.rs: Ctrl-C at the terminal, answers to --ask.
import os, pty, select, sys, time

trigger, text = sys.argv[1].encode(), sys.argv[2].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[3], sys.argv[3:])
out = b""
typed = 0
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
    if text and out.count(trigger) > typed:
        os.write(fd, text)
        typed += 1
else:
    # It did not end: end it (and with it, through egret, the command) instead of hanging.
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print(f"\nexit={os.waitstatus_to_exitcode(status)}")
