"""Who a bus envelope is from is the connection's, not the header's
(issue 19): a cluster member (a valid CURVE key: c2s9, a spare name) that
turns bad cannot

- speak for another instance: a forged `sender`, or a routing id naming
  another member, is dropped by the router and by an sm's direct socket
  (`bus_forged`);
- say what only a router says: `instance-down` / `members` through a
  router (its own name or a router's as sender, with or without the
  router flag) or straight to an sm's direct socket are refused, so the
  sessions of the instance it pretends dead stay;
- take over an instance's name: connecting to both routers and both sms'
  direct sockets with the routing id "c2s1" (what ZMQ_ROUTER_HANDOVER used
  to hand over) changes nothing for the real c2s1 — messages reach its user
  and an ADMIN kick through a router reaches its stream."""

import asyncio
import os

import pytest

from xmpptest import (ENV_CONTROL, ENV_F_ROUTER, ENV_HELLO, ENV_STANZA, ROUTE_INSTANCE,
                      ROUTE_JID, ROUTE_ROUTER, bus_dealer, close, env_header, login,
                      next_message, redis_cli, run, sm_for, wait_until)

zmq = pytest.importorskip("zmq")     # python3-zmq (deploy/dev/packages.txt)

ROGUE = "c2s9"


_START = {}


def _mark(stack):
    """From now on _log reads only what each process writes (earlier tests
    restart instances, which logs the same events)."""
    for name in ("router1", "router2", "sm1", "sm2", "c2s1", "c2s2"):
        path = os.path.join(stack.env["SB_VAR"], "log", name + ".log")
        _START[name] = os.path.getsize(path) if os.path.exists(path) else 0


def _log(stack, name):
    with open(os.path.join(stack.env["SB_VAR"], "log", name + ".log"), errors="replace") as f:
        f.seek(_START.get(name, 0))
        return f.read()


def _routers(stack):
    port = int(stack.env["SB_ROUTER_PORT"])
    return ["tcp://127.0.0.1:%d" % port, "tcp://127.0.0.1:%d" % (port + 1)]


def _direct(stack, sm):
    lease = redis_cli(stack, "GET", "lease:" + sm)
    eps = [w[7:] for w in lease.split() if w.startswith("direct=")]
    assert eps, "no direct endpoint in lease:%s: %r" % (sm, lease)
    return eps[0]


def _joined(stack, ctx, ep, identity):
    """A DEALER with the rogue's member key and the given routing id, its
    HELLO (as ROGUE) acknowledged when it went to a router."""
    s = bus_dealer(stack, ctx, ROGUE, identity)
    s.connect(ep)
    return s


def _hello(sock):
    sock.send_multipart([env_header(ENV_HELLO, ROUTE_ROUTER, sender=ROGUE.encode()),
                         b"kind=c2s pid=1 inc=00000000000000c9 seq=1 domains="])
    assert sock.poll(5000), "no hello-ack for the rogue member's HELLO"
    sock.recv_multipart()


def test_a_member_cannot_forge_a_sender_or_a_routers_controls(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2", "sm1", "sm2"))
    _mark(stack)
    owner = sm_for("c2s1")          # the sm a router sends c2s1's instance-down to
    inc = redis_cli(stack, "HGET", "sb:members", "c2s1").split()[0]
    down = b"kind=c2s inc=" + inc.encode()
    ctx = zmq.Context()
    socks = []

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            full = alice.boundjid.full
            r = _joined(stack, ctx, _routers(stack)[0], b"c2s9#0000000000000001")
            socks.append(r)
            _hello(r)
            for sender, flags in ((b"router1", 0), (ROGUE.encode(), 0),
                                  (ROGUE.encode(), ENV_F_ROUTER), (b"router1", ENV_F_ROUTER)):
                r.send_multipart([env_header(ENV_CONTROL, ROUTE_INSTANCE, owner.encode(),
                                             sender=sender, op=b"instance-down", aux=b"c2s1",
                                             flags=flags), down])
                r.send_multipart([env_header(ENV_CONTROL, ROUTE_INSTANCE, b"c2s2",
                                             sender=sender, op=b"members", flags=flags),
                                  b"sm sm1\n"])
            forged = ("<message xmlns='jabber:client' from='%s' to='%s' type='chat'>"
                      "<body>forged</body></message>" % (full, bob.boundjid.full)).encode()
            r.send_multipart([env_header(ENV_STANZA, ROUTE_JID, b_jid.encode(), sender=b"c2s1",
                                         aux=full.encode()), forged])
            for sm in ("sm1", "sm2"):
                d = _joined(stack, ctx, _direct(stack, sm), b"c2s9#0000000000000002")
                socks.append(d)
                d.send_multipart([env_header(ENV_CONTROL, ROUTE_INSTANCE, sm.encode(),
                                             sender=ROGUE.encode(), op=b"instance-down",
                                             aux=b"c2s1", flags=ENV_F_ROUTER), down])
                d.send_multipart([env_header(ENV_STANZA, ROUTE_JID, b_jid.encode(),
                                             sender=b"c2s1", aux=full.encode()), forged])
            got = []
            bob.add_event_handler("message", lambda m: got.append(str(m["body"])))
            # the pretended-dead c2s1's session stays: alice still gets messages
            for i in range(3):
                bob.send_message(mto=full, mbody="still here %d" % i, mtype="chat")
                await next_message(alice, timeout=10, body="still here %d" % i)
            assert "forged" not in got, got
        finally:
            await close(alice)
            await close(bob)
    try:
        run(go(), timeout=60)
    finally:
        if socks:      # the rogue's lease goes at once, not after the tests that follow
            socks[0].send_multipart([env_header(ENV_HELLO, ROUTE_ROUTER, sender=ROGUE.encode()),
                                     b"kind=c2s pid=1 inc=00000000000000c9 seq=2 domains= bye=1"])
            socks[0].poll(1000)
        for s in socks:
            s.close()
        ctx.term()
    assert "event=instance_down instance=c2s1" not in _log(stack, owner)
    wait_until(lambda: "event=bus_forged why=sender-not-its-name" in _log(stack, "router1"),
               5, "router1 to log the forged sender")
    assert "event=bus_forged why=not-from-a-router" in _log(stack, owner) + _log(stack, "c2s2")
    for sm in ("sm1", "sm2"):
        assert "event=bus_forged" in _log(stack, sm), sm


def test_a_member_cannot_take_over_another_instances_name(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2", "sm1", "sm2"))
    _mark(stack)
    ctx = zmq.Context()
    socks = []

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            full = alice.boundjid.full
            # the impostor: c2s9's key, c2s1's name, on every bus server
            for ep in _routers(stack) + [_direct(stack, "sm1"), _direct(stack, "sm2")]:
                s = _joined(stack, ctx, ep, b"c2s1")
                socks.append(s)
                s.send_multipart([env_header(ENV_HELLO, ROUTE_ROUTER, sender=b"c2s1"),
                                  b"kind=c2s pid=1 inc=00000000000000c1 seq=1 domains="])
            # its HELLO is refused, not a lease: it never speaks for c2s1
            for s in socks[:2]:
                s.poll(300)
            for i in range(5):
                bob.send_message(mto=full, mbody="to the real one %d" % i, mtype="chat")
            for i in range(5):
                await next_message(alice, timeout=10, body="to the real one %d" % i)
            for s in socks:
                while s.poll(0):
                    frames = s.recv_multipart()
                    assert b"to the real one" not in b"".join(frames), frames
            # a router-path ADMIN to c2s1 reaches the real stream
            p = await asyncio.to_thread(stack.sbctl, "session", "kick", full, "--reason", "t")
            assert "ended" in p.stdout, p.stdout + p.stderr
        finally:
            await close(alice)
            await close(bob)
    try:
        run(go(), timeout=60)
    finally:
        for s in socks:
            s.close()
        ctx.term()
    assert "event=bus_forged why=name-not-its-key from=\"c2s1\" key_of=\"c2s9\"" in \
        _log(stack, "router1") + _log(stack, "router2")
