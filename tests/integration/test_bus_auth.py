"""Only cluster members join the bus (common/curve.c): a ZeroMQ peer with
no CURVE at all, or with a CURVE key that is not in members.pub, completes
no handshake with a router or an sm's direct socket, and nothing it sends
reaches anyone — not even when it claims a member's name. A peer with a
member key (the control) is answered."""

import asyncio
import os
import subprocess
import time

import pytest

from xmpptest import (ENV_ADMIN, ENV_BOUNCE, ENV_HELLO, ENV_STANZA, ROUTE_INSTANCE, ROUTE_JID,
                      ROUTE_ROUTER, bus_dealer, close, env_header, login, next_message,
                      read_key_file, run, wait_until)

zmq = pytest.importorskip("zmq")     # python3-zmq (deploy/dev/packages.txt)


def _bus_endpoints(stack):
    """Both routers and every sm's direct endpoint (the DIRECT column)."""
    port = int(stack.env["SB_ROUTER_PORT"])
    eps = ["tcp://127.0.0.1:%d" % port, "tcp://127.0.0.1:%d" % (port + 1)]
    out = stack.sbctl("status", timeout=10).stdout
    for line in out.splitlines():
        w = line.split()
        if len(w) > 2 and w[1] == "sm":
            eps += [x for x in w[2:] if x.startswith("tcp://")]
    assert len(eps) == 4, out
    return eps


def _log(stack, name):
    with open(os.path.join(stack.env["SB_VAR"], "log", name + ".log"), errors="replace") as f:
        return f.read()


def test_only_member_keys_join_the_bus(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    eps = _bus_endpoints(stack)
    server = read_key_file(os.path.join(stack.env["SB_VAR"], "keys", "server.pub"))
    ctx = zmq.Context()
    socks = []

    def plain(ep):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, b"c2s1")          # claims a member's name
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ep)
        return s

    def stranger(ep):
        pub, sec = zmq.curve_keypair()                # valid CURVE, unknown key
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, b"c2s1")
        s.setsockopt(zmq.LINGER, 0)
        s.curve_publickey, s.curve_secretkey = pub, sec
        s.curve_serverkey = server["public"]
        s.connect(ep)
        return s

    async def go():
        b = await login(stack, b_jid, b_pw, instance="c2s2")
        a = await login(stack, a_jid, a_pw, instance="c2s1")
        got = []
        b.add_event_handler("message", lambda m: got.append(m["body"]))
        try:
            forged = ("<message xmlns='jabber:client' from='%s/x' to='%s' type='chat'>"
                      "<body>forged</body></message>" % (a_jid, b.boundjid.full)).encode()
            for ep in eps:
                for make in (plain, stranger):
                    s = make(ep)
                    socks.append(s)
                    # a HELLO, a stanza for b's sm, one straight for b's front-end
                    s.send_multipart([env_header(ENV_HELLO, ROUTE_ROUTER, sender=b"c2s1"),
                                      b"kind=c2s pid=1 inc=00000000000000aa seq=1 domains="])
                    s.send_multipart([env_header(ENV_STANZA, ROUTE_JID, b_jid.encode(),
                                                 sender=b"c2s1"), forged])
                    s.send_multipart([env_header(ENV_STANZA, ROUTE_INSTANCE, b"c2s2",
                                                 sender=b"c2s1"), forged])
                    s.send_multipart([env_header(ENV_ADMIN, ROUTE_ROUTER, op=b"status",
                                                 sender=b"c2s1"), b""])
            # None of them hears anything back (not even a bounce)...
            for s in socks:
                assert s.poll(300) == 0, "a non-member got an answer"
            # ...while a member key on the same endpoint is answered.
            member = bus_dealer(stack, ctx, "sbctl", b"sbctl-bus-auth")
            socks.append(member)
            member.connect(eps[0])
            member.send_multipart([env_header(ENV_ADMIN, ROUTE_ROUTER, op=b"status",
                                              sender=b"sbctl-bus-auth"), b""])
            assert member.poll(5000) != 0, "the member key was not answered"
            reply = member.recv_multipart()
            assert b"name=c2s1" in reply[-1]
            # A member key that never said HELLO routes nothing: bounced back.
            member.send_multipart([env_header(ENV_STANZA, ROUTE_JID, b_jid.encode(),
                                              sender=b"sbctl-bus-auth"), forged])
            assert member.poll(5000) != 0, "no answer to a non-member's stanza"
            bounce = member.recv_multipart()
            assert bounce[0][1] == ENV_BOUNCE and b"not-a-member" in bounce[0], bounce[0]
            # A real message still flows and the forged ones never arrived.
            a.send_message(mto=b.boundjid.full, mbody="genuine", mtype="chat")
            await next_message(b, body="genuine", timeout=10)
            assert "forged" not in got, got
        finally:
            await close(a)
            await close(b)
    try:
        run(go(), timeout=60)
    finally:
        for s in socks:
            s.close()
        ctx.term()
    # The unknown key is logged by the servers it tried (rate-limited).
    wait_until(lambda: "event=bus_peer_refused reason=unknown_key" in _log(stack, "router1"),
               5, "router1 to log the unknown key")
    assert "event=bus_peer_refused reason=unknown_key" in _log(stack, "sm1") + _log(stack, "sm2")
    # The impostor never registered: c2s1 is still the real one.
    assert "name=c2s1 key_of" not in _log(stack, "router1")


def test_a_component_with_a_wrong_key_says_why_and_keeps_trying(stack, tmp_path):
    """A key that is not in members.pub: the routers refuse the handshake;
    the component logs why (not a silent hang, not 'no router') and keeps
    retrying with back-off instead of exiting; it never joins."""
    subprocess.run([os.path.join(stack.bin, "sbctl"), "keys", "generate", "--dir",
                    str(tmp_path), "sm3"], check=True, capture_output=True, timeout=10)
    env = dict(os.environ, SB_CLUSTER_CURVE_KEY_FILE=str(tmp_path / "sm3.key"),
               SB_CLUSTER_ROUTER_WAIT="2")
    log = tmp_path / "sm3.log"
    with open(log, "w") as out:
        p = subprocess.Popen([os.path.join(stack.bin, "sb-sm"), "-c", stack.ini, "-n", "sm3"],
                             cwd=stack.root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "event=link_refused" in log.read_text(), 10,
                   "sm3 to log that its key is refused")
        assert "why=key-refused" in log.read_text(), log.read_text()[-2000:]
        # past router_wait it is still there, still trying, and not a member
        wait_until(lambda: "event=no_router" not in log.read_text() and p.poll() is None
                   and "sm3" not in stack.live_instances(), 5, "sm3 retrying")
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 > 3, 5, "three more seconds")
        assert p.poll() is None, log.read_text()[-2000:]
        assert "sm3" not in stack.live_instances()
        assert "event=bus_peer_refused reason=unknown_key" in _log(stack, "router1")
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
