"""XEP-0313 message archive (MAM v2) with XEP-0359 stanza ids, XEP-0059
paging and XEP-0431 full-text search, over raw streams so every byte of the
answers is checked: what is archived (both directions, once per user, with
a stanza-id on the delivered stanza), queries and paging, preferences,
errors, the archive after an sm restart, and `sbctl archive purge`."""

import asyncio
import json
import secrets

from xmpptest import describe, run, sm_for, NS_CLIENT
from test_iq import Client, q, condition, result_payload, logins, close_all
from test_sbctl import psql

NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FWD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_FULLTEXT = "urn:xmpp:fulltext:0"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


def form(**fields):
    """A submitted MAM form; a list value gives several <value/>s."""
    out = ["<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
           "<value>%s</value></field>" % (NS_DATA, NS_MAM)]
    for var, val in fields.items():
        var = {"fulltext": "{%s}fulltext" % NS_FULLTEXT, "before_id": "before-id",
               "after_id": "after-id"}.get(var, var)
        vals = val if isinstance(val, list) else [val]
        out.append("<field var='%s'>%s</field>" % (var, "".join("<value>%s</value>" % v
                                                                for v in vals)))
    out.append("</x>")
    return "".join(out)


def rsm(max=None, after=None, before=None):
    parts = []
    if max is not None:
        parts.append("<max>%d</max>" % max)
    if after is not None:
        parts.append("<after>%s</after>" % after)
    if before is not None:
        parts.append("<before>%s</before>" % before if before else "<before/>")
    return "<set xmlns='%s'>%s</set>" % (NS_RSM, "".join(parts))


async def mam(c, payload="", timeout=10):
    """Run one query; returns (results, iq answer). Each result is
    (archive id, forwarded message element, delay stamp)."""
    qid = "q" + secrets.token_hex(3)
    iid = "m" + secrets.token_hex(4)
    c.send("<iq type='set' id='%s'><query xmlns='%s' queryid='%s'>%s</query></iq>"
           % (iid, NS_MAM, qid, payload))
    answer = await c.wait_for(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid,
                              timeout, "mam answer")
    results, keep = [], []
    for el in c.others:
        r = el.find(q(NS_MAM, "result"))
        if el.tag == q(NS_CLIENT, "message") and r is not None and r.get("queryid") == qid:
            fwd = r.find(q(NS_FWD, "forwarded"))
            results.append((r.get("id"), fwd.find(q(NS_CLIENT, "message")),
                            fwd.find(q(NS_DELAY, "delay")).get("stamp")))
        else:
            keep.append(el)
    c.others[:] = keep
    return results, answer


def fin(answer):
    f = result_payload(answer, NS_MAM, "fin")
    s = f.find(q(NS_RSM, "set"))
    first, last = s.find(q(NS_RSM, "first")), s.find(q(NS_RSM, "last"))
    return {"complete": f.get("complete") == "true",
            "count": int(s.find(q(NS_RSM, "count")).text),
            "first": first.text if first is not None else None,
            "index": int(first.get("index")) if first is not None else None,
            "last": last.text if last is not None else None}


def bodies(results):
    return [m.find(q(NS_CLIENT, "body")).text for _, m, _ in results]


async def until_archived(c, n, payload="", timeout=10):
    """Query until at least n results (a copy written by another sm's
    buffer lands within its flush interval)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        res, ans = await mam(c, payload)
        if len(res) >= n or loop.time() > deadline:
            return res, ans
        await asyncio.sleep(0.1)


async def online(stack, *accounts):
    cs = await logins(stack, *accounts)
    for c in cs:
        c.send("<presence/>")
    for c in cs:        # answered by the user's sm after the presence: available
        r = await c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
        assert r.get("type") == "result", describe(r)
    return cs


def chat(to, body, extra=""):
    return "<message to='%s' type='chat' id='%s'><body>%s</body>%s</message>" % (
        to, secrets.token_hex(3), body, extra)


# ------------------------------------------------------------------ archiving
def test_messages_archived_both_ways_with_stanza_id_and_forgery_stripped(stack, new_user):
    async def go():
        a, b = await online(stack, new_user("mama"), new_user("mamb"))
        try:
            forged = "<stanza-id xmlns='%s' by='%s' id='forged1'/>" % (NS_SID, b.bare)
            a.send(chat(b.bare, "hello archive", forged))
            m = await b.message("hello archive")
            sids = [s for s in m.findall(q(NS_SID, "stanza-id"))]
            assert len(sids) == 1, describe(m)
            assert sids[0].get("by") == b.bare and sids[0].get("id") not in (None, "", "forged1")
            b.send(chat(a.bare, "reply archive"))
            m2 = await a.message("reply archive")
            (sid_a,) = [s.get("id") for s in m2.findall(q(NS_SID, "stanza-id"))]

            res, ans = await until_archived(b, 2)
            assert bodies(res) == ["hello archive", "reply archive"]
            assert res[0][0] == sids[0].get("id")
            assert res[0][1].get("from", "").startswith(a.bare)
            assert res[0][1].find(q(NS_SID, "stanza-id")).get("id") == sids[0].get("id")
            assert fin(ans) == {"complete": True, "count": 2, "first": res[0][0], "index": 0,
                                "last": res[1][0]}
            res_a, _ = await until_archived(a, 2)
            assert bodies(res_a) == ["hello archive", "reply archive"]
            assert res_a[1][0] == sid_a
            assert res_a[0][0] != res[0][0]          # each archive has its own ids
            # The forged id is nowhere.
            assert "forged1" not in [r[0] for r in res + res_a]
            # Not archived: headline, no body, no-store hint.
            a.send("<message to='%s' type='headline'><body>head</body></message>" % b.bare)
            a.send(chat(b.bare, "nostore", "<no-store xmlns='urn:xmpp:hints'/>"))
            a.send(chat(b.bare, "after"))
            await b.message("after")
            res, _ = await until_archived(b, 3)
            assert bodies(res) == ["hello archive", "reply archive", "after"]
        finally:
            await close_all(a, b)
    run(go(), timeout=60)


def test_a_message_to_a_domain_no_sm_serves_is_in_the_senders_archive(stack, new_user):
    """No sm sees a message to a remote domain or a component on its way
    out, so the front-end passes it through the sender's sm, which keeps
    the sender's copy (the component, gw.DOMAIN, need not be connected)."""
    comp = stack.env["SB_COMPONENT_DOMAIN"]

    async def go():
        (a,) = await online(stack, new_user("mamx"))
        try:
            a.send(chat("bot@" + comp, "to a component"))
            a.send(chat("someone@remote.invalid", "to a remote server"))
            res, ans = await until_archived(a, 2)
            assert sorted(bodies(res)) == ["to a component", "to a remote server"], bodies(res)
            tos = sorted(m.get("to") for _, m, _ in res)
            assert tos == sorted(["bot@" + comp, "someone@remote.invalid"]), tos
            assert all(m.get("from", "").startswith(a.bare + "/") for _, m, _ in res)
            res, _ = await mam(a, form(**{"with": "bot@" + comp}))
            assert bodies(res) == ["to a component"]
        finally:
            await close_all(a)
    run(go(), timeout=60)


def test_offline_message_archived_and_flushed_with_same_stanza_id(stack, new_user):
    async def go():
        (a,) = await online(stack, new_user("mamo"))
        bob = new_user("mamp")
        try:
            a.send(chat(bob[0], "while you were away"))
            b = await Client.login(stack, bob, instance="c2s2")
            res, _ = await until_archived(b, 1)
            assert bodies(res) == ["while you were away"]
            b.send("<presence/>")
            m = await b.message("while you were away")
            assert m.find(q(NS_SID, "stanza-id")).get("id") == res[0][0]
            await b.close()
        finally:
            await close_all(a)
    run(go(), timeout=60)


# ------------------------------------------------------------------ queries
def test_query_by_with_start_end_and_rsm_paging_both_ways(stack, new_user):
    async def go():
        a, b, c = await online(stack, new_user("mqa"), new_user("mqb"), new_user("mqc"))
        try:
            for i in range(7):
                a.send(chat(b.bare, "m%d" % i))
                await b.message("m%d" % i)
            c.send(chat(b.bare, "from c"))
            await b.message("from c")
            res, ans = await until_archived(b, 8)
            ids = [r[0] for r in res]
            assert bodies(res) == ["m%d" % i for i in range(7)] + ["from c"]

            res, _ = await mam(b, form(**{"with": a.bare}))
            assert bodies(res) == ["m%d" % i for i in range(7)]
            res, _ = await mam(b, form(**{"with": c.bare}))
            assert bodies(res) == ["from c"]

            # Forward pages of 3.
            res, ans = await mam(b, rsm(max=3))
            f = fin(ans)
            assert bodies(res) == ["m0", "m1", "m2"]
            assert f == {"complete": False, "count": 8, "first": ids[0], "index": 0,
                         "last": ids[2]}
            res, ans = await mam(b, rsm(max=3, after=f["last"]))
            f = fin(ans)
            assert bodies(res) == ["m3", "m4", "m5"] and f["index"] == 3 and not f["complete"]
            res, ans = await mam(b, rsm(max=3, after=f["last"]))
            f = fin(ans)
            assert bodies(res) == ["m6", "from c"] and f["complete"] and f["index"] == 6

            # Backward: the last page, then the one before.
            res, ans = await mam(b, rsm(max=3, before=""))
            f = fin(ans)
            assert bodies(res) == ["m5", "m6", "from c"]
            assert f["index"] == 5 and not f["complete"] and f["first"] == ids[5]
            res, ans = await mam(b, rsm(max=3, before=f["first"]))
            f = fin(ans)
            assert bodies(res) == ["m2", "m3", "m4"] and f["index"] == 2 and not f["complete"]
            res, ans = await mam(b, rsm(max=3, before=f["first"]))
            f = fin(ans)
            assert bodies(res) == ["m0", "m1"] and f["complete"] and f["index"] == 0

            # flip-page: the same page, newest first.
            res, ans = await mam(b, rsm(max=3, before="") + "<flip-page/>")
            assert bodies(res) == ["from c", "m6", "m5"]
            assert fin(ans)["first"] == ids[7] and fin(ans)["last"] == ids[5]

            # after-id / before-id / ids form fields.
            res, _ = await mam(b, form(after_id=ids[4], before_id=ids[7]))
            assert bodies(res) == ["m5", "m6"]
            res, _ = await mam(b, form(ids=[ids[1], ids[6]]))
            assert bodies(res) == ["m1", "m6"]

            # start / end from the stamps.
            all_res, _ = await mam(b)
            stamps = [r[2] for r in all_res]
            res, _ = await mam(b, form(start=stamps[7]))
            assert bodies(res) == ["from c"]
            res, _ = await mam(b, form(end=stamps[0]))
            assert bodies(res) == ["m0"]
            res, _ = await mam(b, form(start="2000-01-01T00:00:00Z", end="2000-01-02T00:00:00Z"))
            assert res == []
            # max=0: only the count.
            res, ans = await mam(b, rsm(max=0))
            assert res == [] and fin(ans)["count"] == 8
        finally:
            await close_all(a, b, c)
    run(go(), timeout=90)


def test_fulltext_search_english_and_russian(stack, new_user):
    async def go():
        a, b = await online(stack, new_user("mfa"), new_user("mfb"))
        try:
            texts = ["the quick brown fox", "Привет, как дела?", "lazy dog sleeps",
                     "дела идут хорошо"]
            for t in texts:
                a.send(chat(b.bare, t))
                await b.message(t)
            await until_archived(b, 4)
            res, _ = await mam(b, form(fulltext="fox"))
            assert bodies(res) == ["the quick brown fox"]
            res, _ = await mam(b, form(fulltext="дела"))
            assert bodies(res) == ["Привет, как дела?", "дела идут хорошо"]
            res, _ = await mam(b, form(fulltext="хорошо"))
            assert bodies(res) == ["дела идут хорошо"]
            res, _ = await mam(b, form(fulltext="elephant"))
            assert res == []
            res, _ = await mam(b, form(fulltext="lazy dog"))
            assert bodies(res) == ["lazy dog sleeps"]
            # Form discovery lists the full-text field; disco lists the features.
            r = await b.iq("get", "<query xmlns='%s'/>" % NS_MAM)
            x = result_payload(r, NS_MAM, "query").find(q(NS_DATA, "x"))
            vars_ = {f.get("var") for f in x.findall(q(NS_DATA, "field"))}
            assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids",
                    "{%s}fulltext" % NS_FULLTEXT} <= vars_
            r = await b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=b.bare)
            feats = {f.get("var") for f in result_payload(r, NS_DISCO_INFO, "query")
                     .findall(q(NS_DISCO_INFO, "feature"))}
            assert {NS_MAM, NS_MAM + "#extended", NS_FULLTEXT} <= feats
        finally:
            await close_all(a, b)
    run(go(), timeout=60)


# ------------------------------------------------------------------ preferences
def test_prefs_never_stops_archiving(stack, new_user):
    async def go():
        a, b = await online(stack, new_user("mpa"), new_user("mpb"))
        try:
            r = await b.iq("get", "<prefs xmlns='%s'/>" % NS_MAM)
            assert result_payload(r, NS_MAM, "prefs").get("default") == "always"
            r = await b.iq("set", "<prefs xmlns='%s' default='always'><always/><never><jid>%s"
                           "</jid></never></prefs>" % (NS_MAM, a.bare))
            p = result_payload(r, NS_MAM, "prefs")
            assert [j.text for j in p.find(q(NS_MAM, "never"))] == [a.bare]
            a.send(chat(b.bare, "not kept"))
            m = await b.message("not kept")
            assert m.find(q(NS_SID, "stanza-id")) is None
            # a's own archive still keeps a's copy (a's default is always).
            res_a, _ = await until_archived(a, 1)
            assert bodies(res_a) == ["not kept"]
            r = await b.iq("set", "<prefs xmlns='%s' default='never'/>" % NS_MAM)
            assert result_payload(r, NS_MAM, "prefs").get("default") == "never"
            b.send(chat(a.bare, "mine not kept"))
            m = await a.message("mine not kept")
            assert m.find(q(NS_SID, "stanza-id")) is not None    # a archives it
            await until_archived(a, 2)
            res, ans = await mam(b)
            assert res == [] and fin(ans)["count"] == 0
            r = await b.iq("get", "<prefs xmlns='%s'/>" % NS_MAM)
            assert result_payload(r, NS_MAM, "prefs").get("default") == "never"
            r = await b.iq("set", "<prefs xmlns='%s' default='sometimes'/>" % NS_MAM)
            assert condition(r) == "bad-request"
        finally:
            await close_all(a, b)
    run(go(), timeout=60)


# ------------------------------------------------------------------ errors
def test_bad_queries_and_another_users_archive(stack, new_user):
    async def go():
        a, b = await online(stack, new_user("mea"), new_user("meb"))
        try:
            _, ans = await mam(a, "<x xmlns='%s' type='submit'><field var='FORM_TYPE'>"
                                  "<value>urn:example</value></field></x>" % NS_DATA)
            assert condition(ans) == "bad-request"
            _, ans = await mam(a, form(colour="blue"))
            assert condition(ans) == "feature-not-implemented"
            _, ans = await mam(a, form(start="yesterday"))
            assert condition(ans) == "bad-request"
            _, ans = await mam(a, "<set xmlns='%s'><max>lots</max></set>" % NS_RSM)
            assert condition(ans) == "bad-request"
            _, ans = await mam(a, rsm(after="no-such-id"))
            assert condition(ans) == "item-not-found"
            # A huge max is capped (250), not refused.
            _, ans = await mam(a, rsm(max=1000000))
            assert ans.get("type") == "result"
            r = await a.iq("set", "<query xmlns='%s'/>" % NS_MAM, to=b.bare)
            assert condition(r) == "forbidden"
            r = await a.iq("get", "<prefs xmlns='%s'/>" % NS_MAM, to=b.bare)
            assert condition(r) == "forbidden"
        finally:
            await close_all(a, b)
    run(go(), timeout=60)


# ------------------------------------------------------------------ durability
def test_archive_survives_an_sm_restart(stack, new_user):
    """A graceful stop flushes the write buffer: a message delivered just
    before SIGTERM is in the archive after the restart."""
    acc_a, acc_b = new_user("mra"), new_user("mrb")
    owner = sm_for(acc_b[0])

    async def go():
        a, b = await online(stack, acc_a, acc_b)
        try:
            a.send(chat(b.bare, "survives"))
            await b.message("survives")
        finally:
            await close_all(a, b)
        await asyncio.to_thread(stack.stack, "stop-proc", owner)
        await asyncio.to_thread(stack.stack, "start-proc", owner)
        await asyncio.to_thread(stack.wait_instances, present=("sm1", "sm2"))
        (b,) = await logins(stack, acc_b)
        try:
            res, _ = await until_archived(b, 1)
            assert bodies(res) == ["survives"]
        finally:
            await close_all(b)
    try:
        run(go(), timeout=100)
    finally:
        stack.stack("start-proc", owner)
        stack.wait_instances(present=("sm1", "sm2"))


# ------------------------------------------------------------------ sbctl
def test_sbctl_archive_purge_and_user_del_remove_rows(stack, new_user):
    async def go():
        a, b = await online(stack, new_user("msa"), new_user("msb"))
        try:
            for t in ("one", "two"):
                a.send(chat(b.bare, t))
                await b.message(t)
            await until_archived(b, 2)
            await until_archived(a, 2)
            node_b = b.bare.split("@")[0]
            psql(stack, "UPDATE archive SET ts = ts - interval '10 days' WHERE username = '%s'"
                 " AND domain = '%s' AND stanza LIKE '%%>one<%%'" % (node_b, stack.domain))
            p = stack.sbctl("archive", "purge", b.bare, "--before",
                            "2999-01-01T00:00:00Z", "--json")
            assert json.loads(p.stdout) == {"user": b.bare, "deleted": 2}, p.stdout
            res, ans = await mam(b)
            assert res == [] and fin(ans)["count"] == 0
            res_a, _ = await mam(a)
            assert len(res_a) == 2                    # a's archive untouched
            stack.sbctl("user", "del", a.bare)
            assert psql(stack, "SELECT count(*) FROM archive WHERE username = '%s'"
                        % a.bare.split("@")[0]) == "0"
        finally:
            await close_all(a, b)
    run(go(), timeout=60)


def test_sbctl_archive_purge_older_than_days_on_a_domain(stack, new_user):
    async def go():
        a, b = await online(stack, new_user("mda"), new_user("mdb"))
        try:
            for t in ("old", "new"):
                a.send(chat(b.bare, t))
                await b.message(t)
            await until_archived(b, 2)
            psql(stack, "UPDATE archive SET ts = ts - interval '40 days' WHERE username = '%s'"
                 " AND stanza LIKE '%%>old<%%'" % b.bare.split("@")[0])
            stack.sbctl("archive", "purge", "--domain", stack.domain, "--older-than", "30")
            res, _ = await mam(b)
            assert bodies(res) == ["new"]
            p = stack.sbctl("archive", "purge", "--domain", stack.domain, check=False)
            assert p.returncode != 0                  # --older-than is required
        finally:
            await close_all(a, b)
    run(go(), timeout=60)
