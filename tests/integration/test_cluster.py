"""Cluster behaviour: many binds of one account across front-ends, and an
sm instance dying under two chatting users."""

import asyncio
import os
import secrets
import signal
import time

from xmpptest import (RawStream, close, iq_error_condition, login, next_message, redis_cli, run,
                      sm_for, wait_until)

BINDS = 300
# 300 logins at once from one address would be refused: each front-end
# admits 100 unauthenticated sessions per source address (c2s/limits.c,
# max_unauth_per_addr). So many clients come from many addresses; these
# leave from six loopback ones (25 per address per front-end).
SOURCES = ["127.0.2.%d" % n for n in range(1, 7)]


def test_concurrent_binds_of_one_account_get_distinct_full_jids(stack, new_user):
    jid, pw = new_user("many")

    async def one(i):
        s = RawStream(stack, instance="c2s1" if i % 2 == 0 else "c2s2", direct_tls=True,
                      source=SOURCES[(i // 2) % len(SOURCES)])
        # every client asks for the same resource: the server must still make them unique
        await s.login(jid, pw, resource="same", timeout=90)
        return s

    async def go():
        results = await asyncio.gather(*(one(i) for i in range(BINDS)), return_exceptions=True)
        streams = [r for r in results if isinstance(r, RawStream)]
        errors = [r for r in results if not isinstance(r, RawStream)]
        try:
            assert not errors, "%d of %d logins failed, first: %r" % (len(errors), BINDS, errors[0])
            jids = [s.jid for s in streams]
            assert all(j.startswith(jid + "/") for j in jids)
            assert len(set(jids)) == BINDS, "%d distinct of %d" % (len(set(jids)), BINDS)
            assert all(not s.closed for s in streams), "some sessions were closed"
        finally:
            for s in streams:
                s.abort()
    run(go(), timeout=110)


def _user_on(stack, sm):
    """A fresh account whose bare JID the router hashes to `sm`."""
    for _ in range(64):
        node = "u%s" % secrets.token_hex(5)
        jid = "%s@%s" % (node, stack.domain)
        if sm_for(jid) == sm:
            pw = secrets.token_urlsafe(12)
            stack.sbctl("user", "add", jid, pw)
            return jid, pw
    raise AssertionError("no JID hashing to %s found" % sm)


async def _exchange(alice, bob, tag):
    text = "a→b %s %s" % (tag, secrets.token_hex(4))
    alice.send_message(mto=bob.boundjid.full, mbody=text, mtype="chat")
    await next_message(bob, body=text, timeout=10)
    text = "b→a %s %s" % (tag, secrets.token_hex(4))
    bob.send_message(mto=alice.boundjid.full, mbody=text, mtype="chat")
    await next_message(alice, body=text, timeout=10)


def test_chat_survives_the_death_of_an_sm(stack):
    # Both users hash to sm1, so its death moves both to sm2.
    a_jid, a_pw = _user_on(stack, "sm1")
    b_jid, b_pw = _user_on(stack, "sm1")
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            await _exchange(alice, bob, "before")
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",), present=("sm2",))
            await _exchange(alice, bob, "sm1 dead")
            stack.stack("start-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, present=("sm1", "sm2"))
            await _exchange(alice, bob, "sm1 back")
        finally:
            await close(alice)
            await close(bob)
    try:
        run(go(), timeout=100)
    finally:
        # leave the stack whole for the tests after this one
        stack.stack("start-proc", "sm1")
        stack.wait_instances(present=("sm1", "sm2"))


def test_an_sm_frozen_past_its_lease_rejoins_every_router_when_thawed(stack):
    """SIGSTOP of an sm past its lease: the routers end it and its users
    move to sm2. On SIGCONT it knows its lease is lost, and its DEALERs to
    the routers are made anew while each router may still hold the old
    connection; a ROUTER without handover ignores a second connection under
    an id in use, so each socket has an id of its own (link.c zs_open). It
    must be acknowledged by both routers again and serve its users."""
    a_jid, a_pw = _user_on(stack, "sm1")
    b_jid, b_pw = _user_on(stack, "sm1")
    stack.wait_instances(present=("sm1", "sm2"))
    log = os.path.join(stack.env["SB_VAR"], "log", "sm1.log")
    port = int(stack.env["SB_ROUTER_PORT"])
    routers = ["tcp://127.0.0.1:%d" % (port + i) for i in (0, 1)]
    with open(os.path.join(stack.env["SB_VAR"], "pid", "sm1.pid")) as f:
        pid = int(f.read().strip())

    def since(mark):
        with open(log, errors="replace") as f:
            f.seek(mark)
            return f.read()

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        bob = await login(stack, b_jid, b_pw, instance="c2s2")
        try:
            await _exchange(alice, bob, "before")
            os.kill(pid, signal.SIGSTOP)
            try:
                mark = os.path.getsize(log)     # nothing is written while frozen
                await asyncio.to_thread(stack.wait_instances, absent=("sm1",),
                                        present=("sm2",), timeout=20)
                await _exchange(alice, bob, "sm1 frozen")
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.to_thread(
                wait_until, lambda: all('event=link_router_up endpoint="%s"' % ep in since(mark)
                                        for ep in routers),
                15, "sm1 acknowledged by both routers after the thaw")
            assert "event=lease_lost" in since(mark)
            await asyncio.to_thread(stack.wait_instances, present=("sm1", "sm2"))
            await _exchange(alice, bob, "sm1 thawed")
        finally:
            await close(alice)
            await close(bob)
    try:
        run(go(), timeout=100)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        stack.wait_instances(present=("sm1", "sm2"))


def test_sessions_of_a_dead_c2s_are_cleaned_up(stack, two_users):
    """kill -9 of a front-end: after the router misses its heartbeats, its
    sessions are gone cluster-wide (an iq to one gets service-unavailable)."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2"))

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        victim = RawStream(stack, instance="c2s2", direct_tls=True)
        full = await victim.login(b_jid, b_pw)
        try:
            # first the session is reachable: alice's ping arrives and is answered
            pending = asyncio.ensure_future(
                alice.make_iq_get(queryxmlns="urn:xmpp:ping", ito=full).send(timeout=10))
            got = await victim.expect("{jabber:client}iq")
            victim.send("<iq type='result' id='%s' to='%s'/>" % (got.get("id"), got.get("from")))
            await asyncio.wait_for(pending, 10)
            stack.stack("kill-proc", "c2s2")
            await asyncio.to_thread(stack.wait_instances, absent=("c2s2",))
            deadline = time.monotonic() + 15
            last = None
            while time.monotonic() < deadline:
                last = await iq_error_condition(alice, full, timeout=2)
                if last == "service-unavailable":
                    return
                await asyncio.sleep(0.2)
            raise AssertionError("iq to %s on the dead c2s2: last answer %r" % (full, last))
        finally:
            victim.abort()
            await close(alice)
    try:
        run(go(), timeout=60)
    finally:
        stack.stack("start-proc", "c2s2")
        stack.stack("wait-ready")


def test_messages_for_a_dead_front_ends_user_are_stored_offline(stack, two_users):
    """kill -9 of bob's front-end, then messages to him before its lease
    ends: the sm's delivery comes back from the router, and instead of an
    error to the sender each message goes to offline storage; bob, logging
    in again elsewhere, gets every one of them (RFC 6121 §8.5.2)."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2"))
    bare_b = b_jid.split("/")[0]
    bodies = ["after-kill-%d-%s" % (i, secrets.token_hex(4)) for i in range(3)]

    async def go():
        alice = await login(stack, a_jid, a_pw, instance="c2s1")
        victim = RawStream(stack, instance="c2s2", direct_tls=True)
        bob = None
        try:
            await victim.login(b_jid, b_pw)
            # presence, then a roster get on the same user queue: its result
            # means the session is available
            victim.send("<presence/><iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
            await victim.expect("{jabber:client}iq")
            alice.send_message(mto=bare_b, mbody="before", mtype="chat")
            got = await victim.expect("{jabber:client}message")
            assert got.findtext("{jabber:client}body") == "before"
            stack.stack("kill-proc", "c2s2")
            for b in bodies:
                alice.send_message(mto=bare_b, mbody=b, mtype="chat")
            bob = await login(stack, b_jid, b_pw, instance="c2s1")
            for b in bodies:
                msg = await next_message(bob, timeout=15, body=b)
                assert msg.xml.find("{urn:xmpp:delay}delay") is not None, \
                    "not from offline storage: %s" % msg
            errors = []
            while not alice.inbox.empty():
                m = alice.inbox.get_nowait()
                if m["type"] == "error":
                    errors.append(m["body"])
            assert not errors, "alice was told of errors for %s" % errors
        finally:
            victim.abort()
            await close(alice)
            await close(bob)
    try:
        run(go(), timeout=60)
    finally:
        stack.stack("start-proc", "c2s2")
        stack.stack("wait-ready")


def test_a_restarted_front_end_clears_what_its_dead_incarnation_left(stack, new_user):
    """kill -9 of a front-end whose clean-up by the routers is lost (here a
    router's claim `down:c2s2:INC` is taken beforehand, as if the router
    that won it died before sending instance-down): when c2s2 starts again
    it ends the old incarnation's sessions itself — the fe:c2s2 member and
    the sess: binding are gone and `sbctl session list` shows none."""
    jid, pw = new_user("stale")
    stack.wait_instances(present=("c2s1", "c2s2"))

    async def kill_with_a_session():
        victim = RawStream(stack, instance="c2s2", direct_tls=True)
        try:
            full = await victim.login(jid, pw)
            members = redis_cli(stack, "SMEMBERS", "fe:c2s2").splitlines()
            mine = [m for m in members if m.startswith(full + " ")]
            assert mine, "no fe:c2s2 member for %s in %r" % (full, members)
            inc = redis_cli(stack, "HGET", "sb:members", "c2s2").split()[0]
            assert redis_cli(stack, "SET", "down:c2s2:%s" % inc, "lost-router", "NX",
                             "PX", "60000") == "OK"
            await asyncio.to_thread(stack.stack, "kill-proc", "c2s2")
            return full.split("/", 1)[1], mine[0]
        finally:
            victim.abort()

    restarted = False
    try:
        resource, member = run(kill_with_a_session(), timeout=40)
        stack.wait_instances(absent=("c2s2",))
        # the routers could not clean it up: the binding is still there
        assert resource in redis_cli(stack, "HKEYS", "sess:{%s}" % jid).splitlines()
        stack.stack("start-proc", "c2s2")
        restarted = True
        stack.stack("wait-ready")
        wait_until(lambda: member not in redis_cli(stack, "SMEMBERS", "fe:c2s2").splitlines(),
                   15, "fe:c2s2 without %s" % member)
        wait_until(lambda: resource not in redis_cli(stack, "HKEYS",
                                                     "sess:{%s}" % jid).splitlines(),
                   15, "sess:{%s} without %s" % (jid, resource))
        out = stack.sbctl("session", "list", jid).stdout
        assert "(no sessions)" in out, out
    finally:
        if not restarted:
            stack.stack("start-proc", "c2s2")
            stack.stack("wait-ready")
