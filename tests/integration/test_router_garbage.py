"""A rogue ZeroMQ peer sending garbage envelopes to the router (wrong frame
counts, truncated or unknown headers, huge frames, bodies that are not XML
routed to the sms and front-ends) crashes nothing and stalls nothing: every
process keeps its pid and a chat started afterwards is delivered. The peer
holds a member key (the bus admits only members: test_bus_auth.py), as a
compromised or buggy component would."""

import asyncio
import os
import random
import struct

import pytest

from xmpptest import bus_dealer, close, env_header, login, next_message, run, wait_until

zmq = pytest.importorskip("zmq")     # python3-zmq (deploy/dev/packages.txt)

STANZA, CONTROL, HELLO, ADMIN, BOUNCE = 1, 2, 3, 4, 5
R_JID, R_INSTANCE, R_KIND, R_ROUTER = 1, 2, 3, 4
hdr = env_header


def garbage_messages(user):
    rnd = random.Random(7)
    good = hdr(STANZA, R_JID, user.encode())
    msgs = [
        [b""],                                            # one empty frame
        [b"x"],                                           # one frame
        [good],                                           # header without body
        [good, b"<message/>", b"extra", b"frames"],       # too many frames
        [b"", b""],                                       # empty header and body
        [b"\x01", b"<message/>"],                         # truncated header
        [good[:7], b"<message/>"],                        # cut inside a length
        [hdr(STANZA, R_JID, user.encode(), version=9), b"<message/>"],   # unknown version
        [hdr(77, R_JID, user.encode()), b"<message/>"],   # unknown kind
        [hdr(STANZA, 99, user.encode()), b"<message/>"],  # unknown route
        [struct.pack("!BBBBH", 1, 1, 1, 0, 65535) + b"a" * 10, b"<message/>"],  # length lies
        [hdr(STANZA, R_JID, b"a" * 5000), b"<message/>"],  # key over ENV_STR_MAX
        [hdr(HELLO, R_ROUTER), b"\xff\xfe garbage = = ="],  # HELLO with a garbage body
        [hdr(HELLO, R_ROUTER), b"kind=" + b"k" * 4000],
        [hdr(ADMIN, R_ROUTER, op=b"nonsense"), b""],
        [hdr(BOUNCE, R_INSTANCE, b"c2s1"), b"<message/>"],
        [hdr(CONTROL, R_INSTANCE, b"c2s1", sid=b"nosuchsid", op=b"bound", aux=b"x@y/z"), b""],
        [hdr(CONTROL, R_INSTANCE, b"sm1", op=b"instance-down", aux=b"\xff\xfe"), b"kind=\xff"],
        [hdr(CONTROL, R_JID, user.encode(), sid=b"s" * 63, op=b"bind", aux=b"r" * 3000), b""],
        [hdr(CONTROL, R_JID, user.encode(), op=b"\x00\x01weird"), b"<<<<"],
        # Bodies that are not XML, to an account's sm, to every sm, to a front-end:
        [hdr(STANZA, R_JID, user.encode(), aux=user.encode() + b"/x"), b"<message to='"],
        [hdr(STANZA, R_JID, user.encode(), aux=b"not a jid"), b"\x00\xff<iq>"],
        [hdr(STANZA, R_KIND, b"sm", aux=b"a@b/c"), b"<presence><x></presence>"],
        [hdr(STANZA, R_JID, b"localhost", aux=b"a@localhost/c"), b"<iq type='get' id='1'>"],
        [hdr(STANZA, R_INSTANCE, b"c2s1", sid=b"nosuchsid"), b"<message to='\xff'/>"],
        [hdr(STANZA, R_INSTANCE, b"no-such-instance"), b"<message/>"],
        [hdr(STANZA, R_JID, user.encode()), b"x" * (2 * 1024 * 1024)],   # 2 MiB body
    ]
    for _ in range(200):   # random bytes in random frame counts
        msgs.append([bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64)))
                     for _ in range(rnd.randint(1, 5))])
    for _ in range(200):   # a valid prefix with random tails
        msgs.append([good[:4] + bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 40))),
                     bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 40)))])
    return msgs


def pids(stack):
    out = {}
    pid_dir = os.path.join(stack.env.get("SB_VAR", os.path.join(stack.root, "var/test")), "pid")
    for name in ("router1", "sm1", "sm2", "c2s1", "c2s2"):
        with open(os.path.join(pid_dir, name + ".pid")) as f:
            out[name] = int(f.read().strip())
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def test_garbage_envelopes_crash_and_stall_nothing(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    before = pids(stack)
    ctx = zmq.Context.instance()
    # A member gone bad: it joins properly (key and HELLO of c2s8, a spare
    # name), so what it sends is routed into the sms and front-ends.
    sock = bus_dealer(stack, ctx, "c2s8", b"c2s8")
    sock.setsockopt(zmq.SNDHWM, 100000)
    sock.connect("tcp://127.0.0.1:%s" % stack.env["SB_ROUTER_PORT"])
    try:
        sock.send_multipart([hdr(HELLO, R_ROUTER, sender=b"c2s8"),
                             b"kind=c2s pid=1 inc=0123456789abcdef seq=1 domains="])
        assert sock.poll(5000), "no hello-ack for the member's HELLO"
        sock.recv_multipart()
        msgs = garbage_messages(b_jid)
        for _ in range(3):
            for m in msgs:
                sock.send_multipart(m)
        # Whatever comes back (bounces) is read and ignored.
        deadline_polls = 20
        while deadline_polls and sock.poll(100):
            sock.recv_multipart()
            deadline_polls -= 1
    finally:
        sock.close()

    # Nothing crashed, and the cluster still routes.
    stack.wait_instances(present=["sm1", "sm2", "c2s1", "c2s2"], timeout=10)
    for name, pid in before.items():
        assert alive(pid), "%s (pid %d) died after garbage envelopes" % (name, pid)

    async def go():
        a = b = None
        try:
            b = await login(stack, b_jid, b_pw, instance="c2s2")
            a = await login(stack, a_jid, a_pw)
            a.send_message(mto=b_jid, mbody="still routing", mtype="chat")
            await next_message(b, timeout=10, body="still routing")
        finally:
            await close(a)
            await close(b)
    run(go())
    wait_until(lambda: all(alive(p) for p in before.values()), 1, "processes alive")
