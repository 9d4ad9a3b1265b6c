"""XEP-0198 stream management on the wire: <enable/>, acks both ways, the
errors the XEP names, and resumption — on the same front-end while the old
stream is still open (it gives way), and on the other front-end after the
first one was killed with SIGKILL (the queue lives in the user's sm) —
and across the SIGKILL of the user's sm (the front-end's copies of what the
client has not acknowledged are adopted by the next sm)."""

import asyncio
import os
import signal
import time

import pytest

from imclient import IMClient, MESSAGE, PRESENCE, befriend
from xmpptest import NS_CLIENT, NS_SASL, describe, run, sm_for, stream_error_condition

NS_SM = "urn:xmpp:sm:3"
STREAM_ERROR = "{http://etherx.jabber.org/streams}error"
STANZAS = {"{%s}%s" % (NS_CLIENT, n) for n in ("message", "presence", "iq")}


def sm(tag):
    return "{%s}%s" % (NS_SM, tag)


class SMClient(IMClient):
    """An IMClient that counts, like a XEP-0198 client, the stanzas it has
    read since <enabled/> or <resumed/> (its `h`)."""

    def __init__(self, stack, jid, password, instance="c2s1"):
        super().__init__(stack, jid, password, instance)
        self.h = 0
        self.counting = False
        self.sm_id = None
        read = self.raw.element

        async def counted(timeout=10):
            el = await read(timeout)
            if el is not None:
                if el.tag in (sm("enabled"), sm("resumed")):
                    self.counting = True
                elif self.counting and el.tag in STANZAS:
                    self.h += 1
            return el
        self.raw.element = counted

    async def nonza(self, tag, timeout=10):
        return await self.next(lambda e: e.tag == sm(tag), timeout, "<%s/>" % tag)

    async def enable(self, resume=True, max_=None):
        attrs = " resume='true'" if resume else ""
        if max_ is not None:
            attrs += " max='%d'" % max_
        self.send("<enable xmlns='%s'%s/>" % (NS_SM, attrs))
        el = await self.next(lambda e: e.tag in (sm("enabled"), sm("failed")), 10, "<enabled/>")
        assert el.tag == sm("enabled"), describe(el)
        self.sm_id = el.get("id")
        return el

    def ack(self):
        self.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h))

    async def resume(self, previd, h, timeout=30):
        """A new stream, authenticated, then <resume/>: <resumed/> or <failed/>."""
        async def steps():
            s = self.raw
            await s.connect()
            s.open_stream()
            feats = await s.features()
            ok = await s.auth_plain(self.bare, self.password)
            assert ok is not None and ok.tag == "{%s}success" % NS_SASL, describe(ok)
            s.open_stream()
            feats = await s.features()
            assert feats.find(sm("sm")) is not None, describe(feats)
            self.h = h
            s.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
            return await self.next(lambda e: e.tag in (sm("resumed"), sm("failed")), 20,
                                   "<resumed/> or <failed/>")
        return await asyncio.wait_for(steps(), timeout)


async def stream_error(client):
    """Read past stanzas to the server's <stream:error/>."""
    err = await client.raw.element()
    while err is not None and err.tag != "{http://etherx.jabber.org/streams}error":
        err = await client.raw.element()
    return err


def failed_condition(el):
    assert el is not None and el.tag == sm("failed"), describe(el)
    return [c.tag.split("}", 1)[1] for c in el][0]


def is_msg(body):
    return lambda e: e.tag == MESSAGE and e.findtext("{%s}body" % NS_CLIENT) == body


def bodies(els):
    return [e.findtext("{%s}body" % NS_CLIENT) for e in els if e.tag == MESSAGE]


def test_enable_acks_and_server_requests(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await SMClient(stack, a_jid, a_pw).login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        try:
            feats = alice.features
            assert feats.find(sm("sm")) is not None, describe(feats)
            en = await alice.enable()
            assert en.get("resume") == "true" and len(en.get("id") or "") >= 16, describe(en)
            assert en.get("max") == "300", describe(en)
            alice.send("<r xmlns='%s'/>" % NS_SM)
            assert (await alice.nonza("a")).get("h") == "0"
            for _ in range(2):
                iq = await alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
                assert iq.get("type") == "result", describe(iq)
            alice.send("<r xmlns='%s'/>" % NS_SM)
            assert (await alice.nonza("a")).get("h") == "2"
            for i in range(6):
                bob.message(alice.jid, "m%d" % i)
            for i in range(6):
                await alice.message_with("m%d" % i)
            # sm_ack_every = 5: the server asked for an ack on its own
            await alice.nonza("r")
            assert alice.h == 8, alice.h          # 2 iq results + 6 messages
            alice.ack()
            alice.send("<a xmlns='%s' h='%d'/>" % (NS_SM, alice.h + 50))
            err = await stream_error(alice)
            assert stream_error_condition(err) == "undefined-condition", describe(err)
            high = err.find(sm("handled-count-too-high"))
            assert high is not None, describe(err)
            assert (high.get("h"), high.get("send-count")) == (str(alice.h + 50), str(alice.h))
        finally:
            await alice.close()
            await bob.close()
    run(go(), timeout=60)


def test_r_before_enable_enable_twice_and_resume_of_unknown_or_foreign_id_fail(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await SMClient(stack, a_jid, a_pw).login()
        intruder = SMClient(stack, b_jid, b_pw, instance="c2s2")
        stranger = SMClient(stack, a_jid, a_pw, instance="c2s2")
        try:
            alice.send("<r xmlns='%s'/>" % NS_SM)
            assert failed_condition(await alice.nonza("failed")) == "unexpected-request"
            await alice.enable()
            alice.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
            assert failed_condition(await alice.nonza("failed")) == "unexpected-request"
            # bob presents alice's token: not his session
            el = await intruder.resume(alice.sm_id, 0)
            assert failed_condition(el) == "item-not-found"
            # an id nobody has
            el = await stranger.resume("nosuchsession0000000000x", 0)
            assert failed_condition(el) == "item-not-found"
            # the stream is still usable: bind as usual
            jid = await stranger.raw.bind()
            assert jid.startswith(a_jid + "/")
            # alice's stream was not disturbed
            iq = await alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
            assert iq.get("type") == "result", describe(iq)
        finally:
            for c in (alice, intruder, stranger):
                await c.close()
    run(go(), timeout=60)


def test_resume_while_the_old_stream_is_open_takes_it_over(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await SMClient(stack, a_jid, a_pw).login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        again = SMClient(stack, a_jid, a_pw)
        try:
            await alice.enable()
            bob.message(alice.jid, "one")
            await alice.message_with("one")
            bob.message(alice.jid, "two")
            await alice.message_with("two")
            alice.send("<a xmlns='%s' h='1'/>" % NS_SM)   # only "one" acknowledged
            el = await again.resume(alice.sm_id, 1)
            assert el.tag == sm("resumed") and el.get("previd") == alice.sm_id, describe(el)
            assert el.get("h") == "0", describe(el)
            got = await again.message_with("two")
            assert got.get("to") == alice.jid, describe(got)
            # the old stream gives way with <conflict/>
            err = await stream_error(alice)
            assert stream_error_condition(err) == "conflict", describe(err)
            bob.message(alice.jid, "three")
            await again.message_with("three")
            await again.nothing(is_msg("two"), wait=0.5)
        finally:
            for c in (alice, bob, again):
                await c.close()
    run(go(), timeout=60)


@pytest.mark.parametrize("to", ["full", "bare"])
def test_resume_on_the_other_front_end_after_it_was_killed(stack, two_users, to):
    """alice's front-end c2s2 dies (SIGKILL) with stanzas unacknowledged and
    more arriving while it is dead; alice resumes on c2s1 with her h and gets
    exactly what she had not acknowledged, in order, once, under the same
    full JID; bob never sees her go unavailable. Messages to her bare JID
    too: their bounces from the dead front-end carry no resource, and must
    not be delivered a second time."""
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2"))

    async def go():
        alice = await SMClient(stack, a_jid, a_pw, instance="c2s2").login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s1").login()
        again = SMClient(stack, a_jid, a_pw, instance="c2s1")
        try:
            await alice.enable()
            for c in (alice, bob):
                await c.roster_get()                   # interested: gets pushes
                c.presence()
            await befriend(alice, bob)
            for i in range(3):
                bob.message(alice.jid, "before%d" % i)
            for i in range(3):
                await alice.message_with("before%d" % i)
            alice.ack()
            bob.message(alice.jid, "unacked")
            await alice.message_with("unacked")       # read, never acknowledged
            h = alice.h - 1                            # as if the <a/> for it was lost
            stack.stack("kill-proc", "c2s2")
            # at once, while the cluster still counts c2s2 in: the sm sends
            # them there and they come back from the router
            for i in range(3):
                bob.message(alice.jid if to == "full" else a_jid, "while-dead%d" % i)
            await bob.barrier(a_jid)
            await asyncio.to_thread(stack.wait_instances, absent=("c2s2",), timeout=20)
            el = await again.resume(alice.sm_id, h)
            assert el.tag == sm("resumed"), describe(el)
            # exactly the unacknowledged ones, in the order they were sent
            want = ["unacked", "while-dead0", "while-dead1", "while-dead2"]
            got = [await again.next(lambda e: e.tag == MESSAGE, 15, "message %d" % i)
                   for i in range(len(want))]
            assert bodies(got) == want, [describe(m) for m in got]
            dead_to = alice.jid if to == "full" else a_jid      # delivered as addressed
            assert [m.get("to") for m in got] == [alice.jid] + [dead_to] * 3, \
                [describe(m) for m in got]
            bob.message(alice.jid, "after")
            assert bodies([await again.next(lambda e: e.tag == MESSAGE)]) == ["after"]
            await again.nothing(lambda e: e.tag == MESSAGE, wait=0.5)
            unavailable = [e for e in bob.backlog if e.tag == PRESENCE and
                           e.get("type") == "unavailable" and
                           (e.get("from") or "").startswith(a_jid)]
            assert not unavailable, describe(unavailable[0])
            await bob.nothing(lambda e: e.tag == PRESENCE and e.get("type") == "unavailable"
                              and (e.get("from") or "").startswith(a_jid), wait=0.5)
        finally:
            for c in (alice, bob, again):
                c.abort()
    try:
        run(go(), timeout=90)
    finally:
        stack.stack("start-proc", "c2s2")
        stack.stack("wait-ready")


def test_session_that_times_out_ends_and_its_unacked_messages_go_offline(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        alice = await SMClient(stack, a_jid, a_pw).login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        late = SMClient(stack, a_jid, a_pw)
        fresh = IMClient(stack, a_jid, a_pw)
        try:
            el = await alice.enable(max_=2)
            assert el.get("max") == "2", describe(el)
            for c in (alice, bob):
                await c.roster_get()                   # interested: gets pushes
                c.presence()
            await befriend(alice, bob)
            bob.message(alice.jid, "lost-ack")
            await alice.message_with("lost-ack")
            h = alice.h - 1
            alice.abort()                              # the network went away
            t0 = time.monotonic()
            await bob.presence_from(a_jid, "unavailable", timeout=15)
            assert time.monotonic() - t0 >= 1.5        # kept for `max`, not ended at once
            bob.message(alice.jid, "after-timeout")
            await bob.barrier(a_jid)
            el = await late.resume(alice.sm_id, h)
            assert failed_condition(el) == "item-not-found"
            await fresh.login()
            fresh.presence()
            await fresh.message_with("lost-ack")
            await fresh.message_with("after-timeout")
        finally:
            for c in (bob, late, fresh):
                await c.close()
    run(go(), timeout=60)


def _user_on(stack, sm, prefix):
    """A fresh account whose bare JID the router hashes to `sm`."""
    for _ in range(64):
        jid, pw = stack.add_user(prefix)
        if sm_for(jid) == sm:
            return jid, pw
    raise AssertionError("no JID hashing to %s found" % sm)


def test_stream_survives_the_death_of_its_users_sm(stack):
    """alice (XEP-0198, on c2s1) has two messages read but unacknowledged
    when her sm (sm1) is killed with SIGKILL. Once sm2 owns her it adopts the
    stream from c2s1: her stream stays open, what bob sends then arrives on
    it numbered after what she had, her acks and <r/> stay exact. Then her
    connection drops and she resumes on c2s2 with her last acknowledged h:
    she gets every unacknowledged message exactly once, in order — sm2's
    queue holds c2s1's copies — and nothing after."""
    a_jid, a_pw = _user_on(stack, "sm1", "alice")
    b_jid, b_pw = _user_on(stack, "sm2", "bob")
    stack.wait_instances(present=("sm1", "sm2", "c2s1", "c2s2"))

    async def go():
        alice = await SMClient(stack, a_jid, a_pw, instance="c2s1").login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        again = SMClient(stack, a_jid, a_pw, instance="c2s2")
        try:
            await alice.enable()
            for i in range(3):
                bob.message(alice.jid, "before%d" % i)
            for i in range(3):
                await alice.message_with("before%d" % i)
            alice.ack()
            acked = alice.h
            for i in range(2):
                bob.message(alice.jid, "unacked%d" % i)
            for i in range(2):
                await alice.message_with("unacked%d" % i)      # read, never acknowledged
            await bob.barrier(a_jid)
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",), present=("sm2",),
                                    timeout=20)
            for i in range(3):
                bob.message(alice.jid, "after%d" % i)
            got = [await alice.next(lambda e: e.tag == MESSAGE, 20, "message after%d" % i)
                   for i in range(3)]
            assert bodies(got) == ["after0", "after1", "after2"], [describe(m) for m in got]
            # the stream is the same one and its counts are right on both sides
            alice.send("<r xmlns='%s'/>" % NS_SM)
            a = await alice.nonza("a")
            assert a.get("h") == "0", describe(a)          # she sent no stanza
            alice.send("<a xmlns='%s' h='%d'/>" % (NS_SM, acked))     # still valid
            await alice.nothing(lambda e: e.tag == STREAM_ERROR, wait=0.5)
            assert not alice.raw.closed
            alice.abort()                                  # no </stream>: detached
            el = await again.resume(alice.sm_id, acked)
            assert el.tag == sm("resumed"), describe(el)
            assert el.get("h") == "0", describe(el)
            want = ["unacked0", "unacked1", "after0", "after1", "after2"]
            got = [await again.next(lambda e: e.tag == MESSAGE, 15, "message %d" % i)
                   for i in range(len(want))]
            assert bodies(got) == want, [describe(m) for m in got]
            bob.message(alice.jid, "final")
            assert bodies([await again.next(lambda e: e.tag == MESSAGE)]) == ["final"]
            await again.nothing(lambda e: e.tag == MESSAGE, wait=0.5)
            again.ack()
            again.send("<r xmlns='%s'/>" % NS_SM)
            a = await again.nonza("a")
            assert a.get("h") == "0", describe(a)
        finally:
            for c in (alice, bob, again):
                c.abort()
    try:
        run(go(), timeout=120)
    finally:
        stack.stack("start-proc", "sm1")
        stack.stack("wait-ready")


def test_detached_stream_survives_the_death_of_its_users_sm(stack):
    """alice's connection to c2s1 drops with messages unacknowledged; more
    arrive while she is away (her sm queues them and c2s1 keeps a copy
    beside the broken stream's ghost); then her sm (sm1) is killed with
    SIGKILL and more arrive once sm2 owns her. She resumes on c2s2 with her
    last acknowledged h: every message she had not acknowledged, exactly
    once, in order."""
    a_jid, a_pw = _user_on(stack, "sm1", "alice")
    b_jid, b_pw = _user_on(stack, "sm2", "bob")
    stack.wait_instances(present=("sm1", "sm2", "c2s1", "c2s2"))

    async def go():
        alice = await SMClient(stack, a_jid, a_pw, instance="c2s1").login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        again = SMClient(stack, a_jid, a_pw, instance="c2s2")
        try:
            await alice.enable()
            bob.message(alice.jid, "acked")
            await alice.message_with("acked")
            alice.ack()
            acked = alice.h
            bob.message(alice.jid, "unacked")
            await alice.message_with("unacked")
            alice.abort()    # detached at sm1 (if a message beats the EOF, c2s1 wrote
                             # it to the dead socket and kept its copy all the same)
            for i in range(2):
                bob.message(alice.jid, "detached%d" % i)
            await bob.barrier(a_jid)
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",), present=("sm2",),
                                    timeout=20)
            for i in range(2):
                bob.message(alice.jid, "after%d" % i)
            await bob.barrier(a_jid)
            el = await again.resume(alice.sm_id, acked)
            assert el.tag == sm("resumed"), describe(el)
            want = ["unacked", "detached0", "detached1", "after0", "after1"]
            got = [await again.next(lambda e: e.tag == MESSAGE, 15, "message %d" % i)
                   for i in range(len(want))]
            assert bodies(got) == want, [describe(m) for m in got]
            bob.message(alice.jid, "final")
            assert bodies([await again.next(lambda e: e.tag == MESSAGE)]) == ["final"]
            await again.nothing(lambda e: e.tag == MESSAGE, wait=0.5)
        finally:
            for c in (alice, bob, again):
                c.abort()
    try:
        run(go(), timeout=120)
    finally:
        stack.stack("start-proc", "sm1")
        stack.stack("wait-ready")


def test_error_for_a_message_to_a_dead_sm_reaches_a_sender_on_it_and_counts(stack):
    """alice (XEP-0198) and bob both hash to sm1, which is killed with
    SIGKILL. alice's message to bob comes back from the router while sm1's
    lease runs; the error c2s1 answers her with would go through her sm
    (sm1, dead) to be numbered, so c2s1 numbers it itself. She gets it; then
    sm2 adopts her stream and what follows is numbered after it: her acks
    stay valid and a resumption gets both again, once, in order."""
    a_jid, a_pw = _user_on(stack, "sm1", "alice")
    b_jid, b_pw = _user_on(stack, "sm1", "bob")
    stack.wait_instances(present=("sm1", "sm2", "c2s1", "c2s2"))

    async def go():
        alice = await SMClient(stack, a_jid, a_pw, instance="c2s1").login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        again = SMClient(stack, a_jid, a_pw, instance="c2s2")
        try:
            await alice.enable()
            stack.stack("kill-proc", "sm1")
            # One sent in the instant before c2s1 sees sm1's connection drop
            # goes into the dead direct pipe: c2s1 sends it again once sm1
            # is gone (to bob's next sm); the next one is bounced by the
            # router.
            err, sent = None, 0
            while err is None and sent < 3:
                sent += 1
                alice.send("<message to='%s' id='x%d' type='chat'><body>?</body></message>"
                           % (bob.jid, sent))
                try:
                    err = await alice.next(lambda e: e.tag == MESSAGE and e.get("type") ==
                                           "error", 1.5, "an error")
                except AssertionError:
                    pass
            assert err is not None, "no error for %d messages to a user of a dead sm" % sent
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",), present=("sm2",),
                                    timeout=20)
            bob.message(alice.jid, "after")
            await alice.message_with("after", timeout=20)
            n = alice.h                                    # the errors, then "after"
            alice.send("<a xmlns='%s' h='%d'/>" % (NS_SM, n - 1))
            alice.send("<r xmlns='%s'/>" % NS_SM)
            a = await alice.nonza("a")
            assert a.get("h") == str(sent), describe(a)    # her messages
            await alice.nothing(lambda e: e.tag == STREAM_ERROR, wait=0.5)
            alice.abort()
            el = await again.resume(alice.sm_id, n - 1)
            assert el.tag == sm("resumed"), describe(el)
            got = await again.next(lambda e: e.tag == MESSAGE, 15, "the message after")
            assert bodies([got]) == ["after"], describe(got)   # number n, once
            await again.nothing(lambda e: e.tag == MESSAGE, wait=0.5)
            again.send("<a xmlns='%s' h='%d'/>" % (NS_SM, n))
            await again.nothing(lambda e: e.tag == STREAM_ERROR, wait=0.5)
        finally:
            for c in (alice, bob, again):
                c.abort()
    try:
        run(go(), timeout=120)
    finally:
        stack.stack("start-proc", "sm1")
        stack.stack("wait-ready")


def _pid(stack, name):
    var = stack.env.get("SB_VAR", os.path.join(stack.root, "var/test"))
    with open(os.path.join(var, "pid", name + ".pid")) as f:
        return int(f.read().strip())


@pytest.mark.parametrize("restart", [False, True], ids=["gone", "restarted"])
def test_messages_acknowledged_in_flight_to_a_killed_sm_are_delivered(stack, restart):
    """alice (XEP-0198, on c2s1, her sm sm2) sends bob (c2s2, his sm sm1)
    30 messages while sm1 is frozen (SIGSTOP, well within its lease): they
    wait in c2s1's direct pipe to sm1 and in sm1's socket, and c2s1
    acknowledges every one (<a h/>). Then sm1 is killed with SIGKILL, which
    takes them with it — and, [restarted], started again at once. Every
    acknowledged message reaches bob (or comes back to alice as an error),
    each once: c2s1 kept a copy of what it sent sm1 directly until sm1
    confirmed it, and sends the copies again when the routers say sm1 is
    gone or restarted (common/link.c, direct confirmations)."""
    a_jid, a_pw = _user_on(stack, "sm2", "alice")
    b_jid, b_pw = _user_on(stack, "sm1", "bob")
    stack.wait_instances(present=("sm1", "sm2", "c2s1", "c2s2"))
    n = 30

    async def go():
        alice = await SMClient(stack, a_jid, a_pw, instance="c2s1").login()
        bob = await IMClient(stack, b_jid, b_pw, instance="c2s2").login()
        try:
            await alice.enable()
            alice.message(bob.jid, "warm-up")      # the direct path to sm1 is up
            await bob.message_with("warm-up")
            alice.send("<r xmlns='%s'/>" % NS_SM)
            h0 = int((await alice.nonza("a")).get("h"))
            pid = _pid(stack, "sm1")
            os.kill(pid, signal.SIGSTOP)
            try:
                for i in range(n):
                    alice.send("<message to='%s' id='f%d' type='chat'><body>f%d</body></message>"
                               % (bob.jid, i, i))
                alice.send("<r xmlns='%s'/>" % NS_SM)
                acked = int((await alice.nonza("a")).get("h")) - h0
            finally:
                stack.stack("kill-proc", "sm1")
            if restart:
                stack.stack("start-proc", "sm1")
            assert acked == n, "c2s1 acknowledged %d of %d" % (acked, n)
            want = {"f%d" % i for i in range(n)}
            got, errors = [], set()
            deadline = time.monotonic() + 30
            while want - set(got) - errors and time.monotonic() < deadline:
                try:
                    m = await bob.next(lambda e: e.tag == MESSAGE, 0.5, "message")
                    got.append(m.findtext("{%s}body" % NS_CLIENT))
                except AssertionError:
                    pass
                while True:
                    try:
                        e = await alice.next(lambda e: e.tag == MESSAGE and
                                             e.get("type") == "error", 0.01, "an error")
                    except AssertionError:
                        break
                    errors.add(e.get("id"))
            lost = sorted(want - set(got) - errors, key=lambda b: int(b[1:]))
            assert not lost, "acknowledged, never delivered nor bounced: %s" % lost
            assert len(got) == len(set(got)), "delivered twice: %s" % sorted(got)
        finally:
            for c in (alice, bob):
                c.abort()
    try:
        run(go(), timeout=120)
    finally:
        if not restart:
            stack.stack("start-proc", "sm1")
        stack.stack("wait-ready")
