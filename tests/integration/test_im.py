"""RFC 6121 end to end: rosters (set/get/remove, pushes, versioning),
presence subscriptions, probes, broadcasts on every way a session can end,
bare-JID message rules and offline storage — with the two users on
different c2s instances and, where it matters, on different sm instances."""

import asyncio
import re
import secrets

from imclient import (IQ, MESSAGE, NS_DELAY, NS_ROSTER, NS_ROSTERVER, IMClient, befriend,
                      error_condition, item_of, roster_items, user_on)
from xmpptest import describe, run


async def online(stack, jid, pw, instance="c2s1", resource=None, prio=None, roster=True):
    c = await IMClient(stack, jid, pw, instance).login(resource)
    if roster:
        await c.roster_get()
    c.presence(prio=prio)
    return c


async def close_all(*clients):
    for c in clients:
        if c is not None:
            await c.close()


# ------------------------------------------------------------------ rosters

def test_roster_set_get_remove_with_push_to_second_resource(stack, new_user):
    jid, pw = new_user("ros")
    contact = "friend%s@example.net" % secrets.token_hex(3)

    async def go():
        one = await online(stack, jid, pw, "c2s1")
        two = await online(stack, jid, pw, "c2s2")
        try:
            iq = await one.roster_set(contact, name="Friend", groups=["Work", "Pals"])
            assert iq.get("type") == "result", describe(iq)
            for c in (one, two):   # §2.1.6: every interested resource gets the push
                push = await c.push(contact, name="Friend", subscription="none")
                groups = sorted(g.text for g in item_of(push))
                assert groups == ["Pals", "Work"]
                assert push.find("{%s}query" % NS_ROSTER).get("ver")
            items = roster_items(await two.roster_get())
            assert items[contact].get("name") == "Friend"

            await one.roster_set(contact, name="Renamed", groups=["Work"])
            await two.push(contact, name="Renamed")

            iq = await two.roster_set(contact, subscription="remove")
            assert iq.get("type") == "result", describe(iq)
            await one.push(contact, subscription="remove")
            assert contact not in roster_items(await one.roster_get())
        finally:
            await close_all(one, two)
    run(go())


def test_roster_set_errors(stack, new_user):
    jid, pw = new_user("rerr")

    async def go():
        c = await online(stack, jid, pw)
        try:
            two_items = ("<query xmlns='%s'><item jid='a@example.net'/><item jid='b@example.net'/>"
                         "</query>" % NS_ROSTER)
            assert error_condition(await c.iq("set", two_items)) == "bad-request"
            none = "<query xmlns='%s'/>" % NS_ROSTER
            assert error_condition(await c.iq("set", none)) == "bad-request"
            assert error_condition(await c.roster_set("bad@@jid")) == "bad-request"
            assert error_condition(await c.roster_set("x@example.net", name="n" * 2000)) \
                == "not-acceptable"
            assert error_condition(await c.roster_set("x@example.net", groups=["g" * 2000])) \
                == "not-acceptable"
            assert error_condition(await c.roster_set("x@example.net", groups=[""])) \
                == "not-acceptable"
            assert error_condition(await c.roster_set("x@example.net", groups=["a", "a"])) \
                == "bad-request"
            assert error_condition(await c.roster_set("nobody@example.net", subscription="remove")) \
                == "item-not-found"
        finally:
            await c.close()
    run(go())


def test_roster_versioning_stale_current_and_unknown_ver(stack, new_user):
    jid, pw = new_user("ver")
    a, b, cc = ("%s%s@example.net" % (n, secrets.token_hex(3)) for n in "abc")

    async def go():
        c = await IMClient(stack, jid, pw).login()
        try:
            assert c.features.find("{%s}ver" % NS_ROSTERVER) is not None, \
                "rosterver not advertised: %s" % describe(c.features)
            first = await c.roster_get(ver="")
            ver0 = first.find("{%s}query" % NS_ROSTER).get("ver")
            assert ver0 is not None
            await c.roster_set(a, name="A")
            await c.roster_set(b, name="B")
            mid = (await c.roster_get(ver="")).find("{%s}query" % NS_ROSTER).get("ver")
            await c.roster_set(cc, name="C")
            await c.roster_set(a, subscription="remove")
            now = await c.roster_get(ver="")
            q = now.find("{%s}query" % NS_ROSTER)
            cur = q.get("ver")
            assert set(roster_items(now)) == {b, cc}
            c.backlog.clear()

            # Up to date: an empty result, no pushes.
            res = await c.roster_get(ver=cur)
            assert res.find("{%s}query" % NS_ROSTER) is None
            await c.nothing(lambda e: e.tag == IQ and e.get("type") == "set", wait=0.5)

            # Stale: empty result, then only what changed since `mid`.
            res = await c.roster_get(ver=mid)
            assert res.find("{%s}query" % NS_ROSTER) is None
            await c.push(cc, name="C")
            await c.push(a, subscription="remove")
            await c.nothing(lambda e: e.tag == IQ and e.get("type") == "set"
                            and item_of(e).get("jid") == b, wait=0.5)

            # Unknown version: the full roster with the current ver.
            for ver in ("bogus", "999999999"):
                res = await c.roster_get(ver=ver)
                assert set(roster_items(res)) == {b, cc}
                assert res.find("{%s}query" % NS_ROSTER).get("ver") == cur
        finally:
            await c.close()
    run(go())


# ------------------------------------------------------------------ subscriptions

def test_subscription_handshake_pushes_both_sides_across_sms(stack):
    a_jid, a_pw = user_on(stack, "sm1")
    b_jid, b_pw = user_on(stack, "sm2")

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1", prio=1)
        b = await online(stack, b_jid, b_pw, "c2s2", prio=1)
        try:
            a.presence(to=b_jid, type_="subscribe")
            await a.push(b_jid, subscription="none", ask="subscribe")         # §3.1.2
            req = await b.presence_from(a_jid, "subscribe")                     # §3.1.3
            assert req.get("from") == a_jid, "stamped with the bare JID"
            b.presence(to=a_jid, type_="subscribed")
            await b.push(a_jid, subscription="from")                            # §3.1.5
            await a.presence_from(b_jid, "subscribed")
            await a.push(b_jid, subscription="to")                              # §3.1.6
            await a.presence_from(b.jid)            # b's current presence follows approval
            assert roster_items(await a.roster_get())[b_jid].get("subscription") == "to"
            assert roster_items(await b.roster_get())[a_jid].get("subscription") == "from"

            # b's presence changes reach a (from); a's do not reach b (none).
            b.presence(status="busy")
            got = await a.presence_from(b.jid, exact=True)
            assert got.findtext("{jabber:client}status") == "busy"
            a.presence(status="hidden")
            await b.nothing(lambda e: e.get("from") == a.jid and e.get("type") is None, wait=0.5)

            # a cancels: unsubscribe → b loses from, a gets b's unavailable.
            a.presence(to=b_jid, type_="unsubscribe")
            await a.push(b_jid, subscription="none")
            await b.presence_from(a_jid, "unsubscribe")
            await b.push(a_jid, subscription="none")
            await a.presence_from(b.jid, "unavailable")                         # §3.3.3
        finally:
            await close_all(a, b)
    run(go())


def test_pending_request_is_stored_and_resent_at_next_login(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = None
        try:
            a.presence(to=b_jid, type_="subscribe")
            await a.push(b_jid, ask="subscribe")
            await a.barrier(b_jid)
            for _ in range(2):          # re-sent at every initial presence until answered
                b = await online(stack, b_jid, b_pw, "c2s2")
                await b.presence_from(a_jid, "subscribe")
                await b.close()
            b = await online(stack, b_jid, b_pw, "c2s2")
            await b.presence_from(a_jid, "subscribe")
            b.presence(to=a_jid, type_="unsubscribed")                          # deny
            await a.presence_from(b_jid, "unsubscribed")
            await a.push(b_jid, subscription="none")
            item = roster_items(await a.roster_get())[b_jid]
            assert item.get("ask") is None
        finally:
            await close_all(a, b)
    run(go())


def test_subscribe_to_unknown_user_is_answered_unsubscribed(stack, new_user):
    jid, pw = new_user("lonely")
    ghost = "ghost%s@%s" % (secrets.token_hex(4), stack.domain)

    async def go():
        c = await online(stack, jid, pw)
        try:
            c.presence(to=ghost, type_="subscribe")
            await c.presence_from(ghost, "unsubscribed")
            await c.push(ghost, subscription="none")
        finally:
            await c.close()
    run(go())


def test_initial_presence_probes_and_broadcasts(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = await online(stack, b_jid, b_pw, "c2s2")
        try:
            await befriend(a, b)
            await b.close()
            b = await IMClient(stack, b_jid, b_pw, "c2s2").login()
            b.presence(status="back")
            got = await a.presence_from(b.jid, exact=True)                   # broadcast
            assert got.findtext("{jabber:client}status") == "back"
            await b.presence_from(a.jid, exact=True)                          # probe answer
        finally:
            await close_all(a, b)
    run(go())


def test_probe_is_answered_after_the_contacts_sm_restarts(stack):
    # The contact (b) hashes to sm1: when sm1 dies, sm2 answers the probe
    # from Redis; when sm1 is back, sm1 does.
    a_jid, a_pw = user_on(stack, "sm2")
    b_jid, b_pw = user_on(stack, "sm1")
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = await online(stack, b_jid, b_pw, "c2s2")
        try:
            b.presence(status="on duty")
            await befriend(a, b)
            for step in ("kill", "start"):
                await a.close()
                if step == "kill":
                    stack.stack("kill-proc", "sm1")
                    await asyncio.to_thread(stack.wait_instances, absent=("sm1",))
                else:
                    stack.stack("start-proc", "sm1")
                    await asyncio.to_thread(stack.wait_instances, present=("sm1", "sm2"))
                a = await online(stack, a_jid, a_pw, "c2s1")
                got = await a.presence_from(b.jid, exact=True, timeout=15)
                assert got.findtext("{jabber:client}status") == "on duty", describe(got)
                # b's state was rebuilt by the sm that took it over: roster
                # from PostgreSQL, "asked for the roster" from Redis (pushes).
                assert roster_items(await b.roster_get())[a_jid].get("subscription") == "both"
                extra = "x%s@example.net" % secrets.token_hex(3)
                await b.roster_set(extra, name=step)
                await b.push(extra, name=step)
        finally:
            await close_all(a, b)
    try:
        run(go(), timeout=90)
    finally:
        stack.stack("start-proc", "sm1")
        stack.wait_instances(present=("sm1", "sm2"))


def test_offline_messages_survive_the_death_of_the_recipients_sm(stack):
    a_jid, a_pw = user_on(stack, "sm2")
    b_jid, b_pw = user_on(stack, "sm1")
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = None
        try:
            texts = ["kept %d %s" % (i, secrets.token_hex(3)) for i in range(2)]
            for t in texts:
                a.message(b_jid, t)
            await a.barrier(b_jid)
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",))
            b = await online(stack, b_jid, b_pw, "c2s2", roster=False)
            for t in texts:
                got = await b.next(lambda e: e.tag == MESSAGE, what="offline message")
                assert got.findtext("{jabber:client}body") == t
        finally:
            await close_all(a, b)
    try:
        run(go(), timeout=60)
    finally:
        stack.stack("start-proc", "sm1")
        stack.wait_instances(present=("sm1", "sm2"))


# ------------------------------------------------------------------ session end

def test_unavailable_is_broadcast_when_the_tcp_connection_drops(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = await online(stack, b_jid, b_pw, "c2s2")
        try:
            await befriend(a, b)
            b.abort()
            await a.presence_from(b.jid, "unavailable", exact=True)
        finally:
            await close_all(a)
    run(go())


def test_unavailable_is_broadcast_when_the_contacts_c2s_dies(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users
    stack.wait_instances(present=("c2s1", "c2s2"))

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = await online(stack, b_jid, b_pw, "c2s2")
        try:
            await befriend(a, b)
            stack.stack("kill-proc", "c2s2")
            await a.presence_from(b.jid, "unavailable", exact=True, timeout=20)
        finally:
            b.abort()
            await close_all(a)
    try:
        run(go(), timeout=60)
    finally:
        stack.stack("start-proc", "c2s2")
        stack.stack("wait-ready")


def test_directed_presence_gets_unavailable_on_logout(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = await online(stack, b_jid, b_pw, "c2s2")
        try:
            a.presence(to=b.jid)                    # no subscription: directed
            await b.presence_from(a.jid, exact=True)
            await a.close()
            await b.presence_from(a.jid, "unavailable", exact=True)
        finally:
            await close_all(b)
    run(go())


# ------------------------------------------------------------------ messages

def test_bare_jid_message_goes_to_highest_non_negative_priority(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        prios = [5, 5, 1, -1]
        bs = [await online(stack, b_jid, b_pw, "c2s%d" % (i % 2 + 1), prio=p, roster=False)
              for i, p in enumerate(prios)]
        try:
            await a.barrier(b_jid)                 # b's presences are in place
            text = "to the bare JID %s" % secrets.token_hex(3)
            a.message(b_jid, text)
            for c in bs[:2]:                       # §8.5.2.1.1: all of the highest
                await c.message_with(text)
            for c in bs[2:]:                       # lower and negative: not
                mark = "marker %s" % secrets.token_hex(3)
                a.message(c.jid, mark)             # full JID: always that session
                got = await c.next(lambda e: e.tag == MESSAGE, what="message")
                assert got.findtext("{jabber:client}body") == mark, describe(got)

            head = "headline %s" % secrets.token_hex(3)
            a.message(b_jid, head, type_="headline")   # §8.5.2.1.2: all non-negative
            for c in bs[:3]:
                await c.message_with(head)
        finally:
            await close_all(a, *bs)
    run(go())


def test_message_to_unknown_user_is_service_unavailable(stack, new_user):
    jid, pw = new_user("snd")
    ghost = "ghost%s@%s" % (secrets.token_hex(4), stack.domain)

    async def go():
        c = await online(stack, jid, pw)
        try:
            for _ in range(2):          # the second answer comes from the cache
                c.message(ghost, "anyone?")
                err = await c.next(lambda e: e.tag == MESSAGE and e.get("type") == "error",
                                   what="message error")
                assert error_condition(err) == "service-unavailable"
                assert err.get("from") == ghost
        finally:
            await c.close()
    run(go())


def test_offline_message_is_delivered_with_delay_at_next_login(stack, two_users):
    (a_jid, a_pw), (b_jid, b_pw) = two_users

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        b = None
        try:
            texts = ["while you were out %d %s" % (i, secrets.token_hex(3)) for i in range(3)]
            for t in texts:
                a.message(b_jid, t)
            await a.barrier(b_jid)
            await a.nothing(lambda e: e.tag == MESSAGE and e.get("type") == "error", wait=0.3)
            b = await IMClient(stack, b_jid, b_pw, "c2s2").login()
            await b.nothing(lambda e: e.tag == MESSAGE, wait=0.3)   # not before presence
            b.presence()
            for t in texts:                                           # in order
                got = await b.next(lambda e: e.tag == MESSAGE, what="offline message")
                assert got.findtext("{jabber:client}body") == t
                assert got.get("from") == a.jid
                delay = got.find("{%s}delay" % NS_DELAY)
                assert delay is not None, describe(got)
                assert delay.get("from") == stack.domain
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", delay.get("stamp"))
            await b.close()
            # delivered means deleted: the next login gets nothing
            b = await online(stack, b_jid, b_pw, "c2s2", roster=False)
            await b.nothing(lambda e: e.tag == MESSAGE, wait=0.5)
        finally:
            await close_all(a, b)
    run(go())


def test_offline_quota_answers_resource_constraint(stack, two_users):
    (a_jid, a_pw), (b_jid, _b_pw) = two_users
    quota = 100      # [sm] offline_max default

    async def go():
        a = await online(stack, a_jid, a_pw, "c2s1")
        try:
            for i in range(quota):
                a.message(b_jid, "filler %d" % i)
            await a.barrier(b_jid)
            await a.nothing(lambda e: e.tag == MESSAGE and e.get("type") == "error", wait=0.2)
            a.message(b_jid, "one too many")
            err = await a.next(lambda e: e.tag == MESSAGE and e.get("type") == "error",
                               what="quota error")
            assert error_condition(err) == "resource-constraint"
            assert err.findtext("{jabber:client}body") == "one too many"
        finally:
            await a.close()
    run(go())
