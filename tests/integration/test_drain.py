"""Graceful drain: `sbctl drain c2s1` with 100 users on it. Each is sent to
the other front-end with <see-other-host/> (c2s1's drain_redirect), logs in
there, and gets the one message a watcher sent it while the drain ran —
exactly once, live or from offline storage; c2s1 leaves the cluster and
stops listening."""

import asyncio
import secrets
import socket

from xmpptest import RawStream, close, login, run, wait_until

N = 100
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


def port_refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_drain_moves_100_users_to_the_other_front_end_and_loses_no_message(stack):
    prefix = "dr" + secrets.token_hex(3)
    stack.sbctl("user", "bulk-add", stack.domain, prefix, str(N), prefix + "pw", timeout=60)
    users = [("%s%d@%s" % (prefix, i, stack.domain), "%spw%d" % (prefix, i))
             for i in range(1, N + 1)]
    w_jid, w_pw = stack.add_user("watch")
    stack.wait_instances(present=("c2s1", "c2s2"))
    other = "localhost:%d" % stack.port("c2s2")
    bodies = {jid: "drain-%s" % secrets.token_hex(5) for jid, _ in users}

    async def online(jid, pw, instance):
        s = RawStream(stack, instance=instance)
        await s.login(jid, pw)
        # presence, then a roster get on the same user queue: the answer
        # means the session is available (and offline messages flushed)
        s.send("<presence/><iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        return s

    async def collect(s, got, until_closed, timeout):
        """Message bodies into got; returns the stream error element (or None)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                el = await s.element(timeout=max(0.1, deadline - loop.time()))
            except AssertionError:
                break
            if el is None:
                return None
            if el.tag == "{http://etherx.jabber.org/streams}error":
                return el
            if el.tag == "{jabber:client}message" and el.findtext("{jabber:client}body"):
                got.append(el.findtext("{jabber:client}body"))
                if not until_closed and bodies[s.user] in got:
                    return None
        return None

    async def user(jid, pw, first, go, results):
        s = first
        got = []
        err = await collect(s, got, True, 40)
        s.abort()
        assert err is not None, "%s: no stream error from the drained front-end" % jid
        soh = err.find("{%s}see-other-host" % NS_STREAMS)
        assert soh is not None and soh.text == other, \
            "%s: stream error %s, not see-other-host %s" % (jid, [c.tag for c in err], other)
        s2 = await online(jid, pw, "c2s2")
        s2.user = jid
        await go.wait()                 # the watcher has sent everything
        if bodies[jid] not in got:
            await collect(s2, got, False, 20)
        s2.abort()
        results[jid] = got

    async def go():
        watcher = await login(stack, w_jid, w_pw, instance="c2s2")
        sem = asyncio.Semaphore(20)

        async def one(jid, pw):
            async with sem:
                s = await online(jid, pw, "c2s1")
                s.user = jid
                await s.expect("{jabber:client}iq", timeout=20)
                return s
        streams = await asyncio.gather(*(one(j, p) for j, p in users))
        sent = asyncio.Event()
        results = {}
        tasks = [asyncio.ensure_future(user(j, p, s, sent, results))
                 for (j, p), s in zip(users, streams)]
        drain = asyncio.ensure_future(asyncio.to_thread(
            stack.sbctl, "drain", "c2s1", "--timeout", "20", timeout=45, check=False))
        try:
            # during the drain (it spreads the goodbyes over 5 s): one
            # message to every user, while some are still on c2s1
            for jid, _ in users:
                watcher.send_message(mto=jid, mbody=bodies[jid], mtype="chat")
                await asyncio.sleep(0.03)
            sent.set()
            await asyncio.gather(*tasks)
            p = await drain
            assert p.returncode == 0, "sbctl drain: %d %s %s" % (p.returncode, p.stdout, p.stderr)
            assert "has left the cluster" in p.stdout, p.stdout
            missing = [j for j in results if results[j].count(bodies[j]) != 1]
            assert not missing, "%d users did not get their message exactly once: %s" % (
                len(missing), [(j, results[j]) for j in missing[:5]])
            errors = []
            while not watcher.inbox.empty():
                m = watcher.inbox.get_nowait()
                if m["type"] == "error":
                    errors.append(m["body"])
            assert not errors, "the watcher was told of errors: %s" % errors[:5]
        finally:
            for t in tasks:
                t.cancel()
            await close(watcher)
    try:
        run(go(), timeout=110)
        wait_until(lambda: port_refuses(stack.port("c2s1")), 10, "c2s1 to stop listening")
    finally:
        stack.stack("start-proc", "c2s1")
        stack.stack("wait-ready")


def test_drain_lets_a_stream_managed_client_resume_on_the_other_front_end(stack, two_users):
    """A XEP-0198 client on the drained front-end is sent away with
    <see-other-host/>, but its session is only detached: it resumes on the
    other front-end with its previd and h, gets what it had not acknowledged
    and what arrived meanwhile, in order, once; its contact sees no
    unavailable presence."""
    from imclient import IMClient, MESSAGE, PRESENCE, befriend
    from test_stream_mgmt import SMClient, bodies, sm
    from xmpptest import describe

    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2"))
    other = "localhost:%d" % stack.port("c2s2")

    async def go():
        alice = await SMClient(stack, a_jid, a_pw, instance="c2s1").login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        again = SMClient(stack, a_jid, a_pw, instance="c2s2")
        try:
            await alice.enable()
            for c in (alice, bob):
                await c.roster_get()
                c.presence()
            await befriend(alice, bob)
            bob.message(alice.jid, "unacked")
            await alice.message_with("unacked")        # read, never acknowledged
            h = alice.h - 1
            drain = asyncio.ensure_future(asyncio.to_thread(
                stack.sbctl, "drain", "c2s1", "--timeout", "10", timeout=30, check=False))
            err = await alice.next(lambda e: e.tag == "{http://etherx.jabber.org/streams}error",
                                   20, "the drain's stream error")
            soh = err.find("{%s}see-other-host" % NS_STREAMS)
            assert soh is not None and soh.text == other, describe(err)
            alice.abort()
            bob.message(alice.jid, "during-drain")
            await bob.barrier(a_jid)
            el = await again.resume(alice.sm_id, h)
            assert el.tag == sm("resumed"), describe(el)
            got = [await again.next(lambda e: e.tag == MESSAGE, 15, "message %d" % i)
                   for i in range(2)]
            assert bodies(got) == ["unacked", "during-drain"], [describe(m) for m in got]
            assert all(m.get("to") == alice.jid for m in got), [describe(m) for m in got]
            await again.nothing(lambda e: e.tag == MESSAGE, wait=0.5)
            await bob.nothing(lambda e: e.tag == PRESENCE and e.get("type") == "unavailable"
                              and (e.get("from") or "").startswith(a_jid), wait=0.5)
            unavailable = [e for e in bob.backlog if e.tag == PRESENCE and
                           e.get("type") == "unavailable" and
                           (e.get("from") or "").startswith(a_jid)]
            assert not unavailable, describe(unavailable[0])
            p = await drain
            assert p.returncode == 0, "sbctl drain: %d %s %s" % (p.returncode, p.stdout, p.stderr)
        finally:
            for c in (alice, bob, again):
                c.abort()
    try:
        run(go(), timeout=60)
    finally:
        stack.stack("start-proc", "c2s1")
        stack.stack("wait-ready")
