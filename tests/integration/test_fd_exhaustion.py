"""Out of file descriptors (issue 19): sb-s2s, its descriptor limit lowered
with prlimit while it runs, is flooded with connections until accept()
fails with EMFILE. It must pause accepting (one `accept_paused` line), not
spin on the still-readable listening socket: its CPU time over a 2 s
window stays under half the wall time. Once the connections close it
accepts again and answers a stream header."""

import os
import socket
import subprocess
import time

from xmpptest import wait_until

WINDOW = 2.0


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def s2s_pid(stack):
    with open(os.path.join(stack.env["SB_VAR"], "pid", "s2s1.pid")) as f:
        return int(f.read().strip())


def log_text(stack):
    with open(os.path.join(stack.env["SB_VAR"], "log", "s2s1.log"), errors="replace") as f:
        return f.read()


def nofile(pid):
    out = subprocess.run(["prlimit", "--pid", str(pid), "--nofile", "--raw", "--noheadings",
                          "--output", "SOFT,HARD"], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], out[1]


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setblocking(False)
    return s


def test_s2s_pauses_accepting_when_out_of_descriptors(stack):
    pid = s2s_pid(stack)
    port = int(stack.env["SB_S2S1_PORT"])
    soft, hard = nofile(pid)
    before = log_text(stack).count("event=accept_paused")
    socks = []
    try:
        nfds = len(os.listdir("/proc/%d/fd" % pid))
        limit = nfds + 4
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:%s" % (limit, hard)],
                       check=True)
        # more than the limit leaves: the rest waits in the listen backlog
        for _ in range(24):
            socks.append(connect(port))
        wait_until(lambda: len(os.listdir("/proc/%d/fd" % pid)) >= limit, 10,
                   "s2s1 holding %d descriptors" % limit)
        t0, c0 = time.monotonic(), proc_cpu_seconds(pid)
        time.sleep(WINDOW)                  # the measurement window itself
        t1, c1 = time.monotonic(), proc_cpu_seconds(pid)
        share = (c1 - c0) / (t1 - t0)
        assert share < 0.5, "s2s1 used %.0f%% of a CPU while out of descriptors" % (share * 100)
        logged = log_text(stack).count("event=accept_paused") - before
        assert logged == 1, "accept_paused logged %d times in one episode" % logged
    finally:
        for s in socks:
            s.close()
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%s:%s" % (soft, hard)],
                       check=True)
    # descriptors are free again: a new stream is answered
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
                  b"from='fd.example' version='1.0'>")
        got = b""
        deadline = time.monotonic() + 10
        while b"<stream:stream" not in got and time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = s.recv(4096)
            except socket.timeout:
                continue
            if not data:
                break
            got += data
        assert b"<stream:stream" in got, "no stream header after the pause: %r" % got
    finally:
        s.close()
    wait_until(lambda: "event=accept_resumed" in log_text(stack), 10, "accept_resumed")
