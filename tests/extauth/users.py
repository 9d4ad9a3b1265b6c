#!/usr/bin/python3
"""A small ejabberd-style extauth program for the tests.

Usage: users.py USERS_FILE [STARTS_FILE]

USERS_FILE holds `user:password` lines (rewritten by setpass). Each start
appends the pid to STARTS_FILE, so a test can see a restart. Two users
misbehave on purpose: `hang` never gets an answer (the server must time
out and restart us), `die` makes the program exit (the server must restart
it with back-off)."""

import os
import struct
import sys
import time


def load(path):
    users = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if ":" in line:
                    u, p = line.split(":", 1)
                    users[u] = p
    except FileNotFoundError:
        pass
    return users


def save(path, users):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for u, p in users.items():
            f.write("%s:%s\n" % (u, p))
    os.replace(tmp, path)


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = sys.stdin.buffer.read(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data


def reply(ok):
    sys.stdout.buffer.write(struct.pack(">HH", 2, 1 if ok else 0))
    sys.stdout.buffer.flush()


def main():
    users_file = sys.argv[1]
    if len(sys.argv) > 2:
        with open(sys.argv[2], "a") as f:
            f.write("%d\n" % os.getpid())
    while True:
        (n,) = struct.unpack(">H", read_exact(2))
        line = read_exact(n).decode("utf-8", "replace")
        op, _, rest = line.partition(":")
        user, _, rest = rest.partition(":")
        server, _, password = rest.partition(":")
        if user == "hang":
            time.sleep(3600)
        if user == "die":
            sys.exit(3)
        users = load(users_file)
        if op == "auth":
            reply(users.get(user) == password)
        elif op == "isuser":
            reply(user in users)
        elif op == "setpass":
            users[user] = password
            save(users_file, users)
            reply(True)
        else:
            reply(False)


if __name__ == "__main__":
    main()
