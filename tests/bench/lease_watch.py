#!/usr/bin/env python3
"""lease_watch.py — how close instances came to losing their lease.

    lease_watch.py REDIS_PORT PASSWORD_FILE NAME[,NAME…] SECS

Polls `PTTL lease:NAME` (and the lease's inc=) in the profile's Redis
every 20 ms for SECS and prints, per instance, the least time its lease had
left, the longest gap between two renewals (the PTTL going up: a HELLO
reached a router) and how many incarnations it had (2 or more: it lost its
lease and came back as new). Used for the join-storm figures in
tests/bench/README.md; talks RESP itself (no Python Redis package)."""
import socket
import sys
import time


def main():
    port, pwfile, names, secs = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")

    def cmd(*args):
        parts = [a.encode() for a in args]
        s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        line = f.readline()
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2]
        return line.strip()

    with open(pwfile) as pw:
        cmd("AUTH", "switchboard", pw.read().strip())
    st = {n: {"min": 10 ** 9, "renewed": time.time(), "gap": 0.0, "prev": None, "incs": set()}
          for n in names}
    end = time.time() + secs
    while time.time() < end:
        for n in names:
            d = st[n]
            left = int(cmd("PTTL", "lease:" + n)[1:])
            for kv in (cmd("GET", "lease:" + n) or b"").split():
                if kv.startswith(b"inc="):
                    d["incs"].add(kv[4:])
            now = time.time()
            if d["prev"] is not None and left > d["prev"]:
                d["gap"] = max(d["gap"], now - d["renewed"])
                d["renewed"] = now
            d["prev"] = left
            d["min"] = min(d["min"], left)
        time.sleep(0.02)
    for n in names:
        d = st[n]
        print("lease_watch name=%s min_left_ms=%d max_renewal_gap_ms=%d incarnations=%d"
              % (n, d["min"], d["gap"] * 1000, len(d["incs"])))


if __name__ == "__main__":
    main()
