"""Multi-user chat, the second part (muc/README.md): the room archive
(XEP-0313 on the room, status 170, RSM pages, who may read it), history
that survives the death of the room's instance, voice requests (§7.13,
§8.6), registration with a room and reserved nicks (§7.10, §7.12
x-roomuser-item), several sessions of one account under one nick, iqs to
room/nick forwarded to the occupant and answered back, and `sbctl room`
list/info/destroy, and a storm of 100 simultaneous joins into one room
that no instance loses its lease over."""

import asyncio
import json
import secrets
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmpptest import RawStream, close, login, run, redis_cli, wait_async
from test_muc import (DATA, MUC, USER, Inbox, closeall, codes, err, groupchat, iq, is_msg,
                      is_pres, item, join, muc_for, new_room, owner_form, user, OWNER)

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
FWD = "urn:xmpp:forward:0"
DISCO = "http://jabber.org/protocol/disco#info"
REG = "jabber:iq:register"
REQ = "http://jabber.org/protocol/muc#request"


def configure(c, room, **fields):
    return iq(c, room, "set", owner_form({k: v for k, v in fields.items()}))


async def subject(c):
    await c.box.wait(lambda e: e.find("{jabber:client}subject") is not None, 10, "subject")


async def mam_page(c, room, qid, rsm=""):
    """One archive query: (bodies in order, their archive ids, the <fin/>)."""
    r, cond = await iq(c, room, "set", "<query xmlns='%s' queryid='%s'>%s</query>"
                       % (MAM, qid, rsm))
    if cond:
        return None, None, cond
    fin = r.find("{%s}fin" % MAM)
    got = [e for e in c.box.items if e.find("{%s}result" % MAM) is not None and
           e.find("{%s}result" % MAM).get("queryid") == qid]
    for e in got:
        c.box.items.remove(e)
    bodies = [e.find(".//{%s}forwarded/{jabber:client}message/{jabber:client}body" % FWD).text
              for e in got]
    ids = [e.find("{%s}result" % MAM).get("id") for e in got]
    return bodies, ids, fin


def count_of(fin):
    return int(fin.find("{%s}set/{%s}count" % (RSM, RSM)).text)


# ---------------------------------------------------------------- room MAM
def test_room_archive_stanza_ids_status_170_pages_and_who_may_read(stack, new_user):
    async def go():
        a = await user(stack, new_user, "ra")
        b = await user(stack, new_user, "rb", instance="c2s2")
        x = await user(stack, new_user, "rx")
        room = new_room(stack, "arch")
        try:
            me = await join(a, room, "a")
            assert "170" not in codes(me)
            # no archive yet: the query is refused, disco says nothing of MAM
            _, _, cond = await mam_page(a, room, "q0")
            assert cond == "service-unavailable"
            _, cond = await configure(a, room, enablearchiving="1", persistentroom="1")
            assert cond is None
            note = await a.box.wait(lambda e: is_msg(room)(e) and "170" in codes(e), 10, "170")
            assert note is not None
            r, _ = await iq(a, room, "get", "<query xmlns='%s'/>" % DISCO)
            feats = {f.get("var") for f in r.iter("{%s}feature" % DISCO)}
            assert MAM in feats
            for i in range(5):
                groupchat(a, room, "m%d" % i)
            last = await a.box.wait(is_msg(room + "/a", "m4"), 10, "own m4")
            sid = last.find("{%s}stanza-id" % SID)
            assert sid is not None and sid.get("by") == room and sid.get("id")
            # a joiner sees 170 in its self-presence
            mb = await join(b, room, "b", "<history maxstanzas='0'/>")
            assert "170" in codes(mb)
            # the rows go to PostgreSQL off the delivery path: wait for all five
            fin = None
            for k in range(50):
                bodies, ids, fin = await mam_page(b, room, "c%d" % k, "<set xmlns='%s'>"
                                                  "<max>0</max></set>" % RSM)
                if count_of(fin) == 5:
                    break
                await asyncio.sleep(0.1)
            assert count_of(fin) == 5
            # pages of two, oldest first, then after the last id
            bodies, ids, fin = await mam_page(b, room, "p1", "<set xmlns='%s'><max>2</max>"
                                              "</set>" % RSM)
            assert bodies == ["m0", "m1"] and fin.get("complete") == "false"
            bodies, _, fin = await mam_page(b, room, "p2", "<set xmlns='%s'><max>2</max>"
                                            "<after>%s</after></set>" % (RSM, ids[-1]))
            assert bodies == ["m2", "m3"]
            bodies, _, fin = await mam_page(b, room, "p3", "<set xmlns='%s'><max>2</max>"
                                            "<before/></set>" % RSM)
            assert bodies == ["m3", "m4"]
            # with = room/nick
            bodies, _, _ = await mam_page(b, room, "w1", "<x xmlns='%s' type='submit'>"
                                          "<field var='FORM_TYPE'><value>%s</value></field>"
                                          "<field var='with'><value>%s/a</value></field></x>"
                                          % (DATA, MAM, room))
            assert len(bodies) == 5
            _, _, cond = await mam_page(b, room, "bad", "<set xmlns='%s'><after>nosuchid"
                                        "</after></set>" % RSM)
            assert cond == "item-not-found"
            # the archived copy carries the room's stanza id and from room/nick
            # members-only: a non-member who is not in the room may not read
            _, cond = await configure(a, room, membersonly="1")
            assert cond is None
            _, _, cond = await mam_page(x, room, "x1")
            assert cond == "forbidden"
            _, cond = await iq(a, room, "set", "<query xmlns='http://jabber.org/protocol/"
                               "muc#admin'><item affiliation='member' jid='%s'/></query>"
                               % x.boundjid.bare)
            assert cond is None
            bodies, _, fin = await mam_page(x, room, "x2")
            assert fin is not None and len(bodies) == 5
        finally:
            await closeall(a, b, x)
    run(go(), timeout=120)


# ------------------------------------------------------- history failover
def test_history_survives_the_death_of_the_rooms_instance(stack, new_user):
    async def go():
        await asyncio.to_thread(stack.stack, "start-proc", "muc2")
        await asyncio.to_thread(stack.wait_instances, ("muc1", "muc2"))
        room = new_room(stack, "hf")
        while muc_for(room) != "muc1":
            room = new_room(stack, "hf")
        a = await user(stack, new_user, "ha")
        b = await user(stack, new_user, "hb", instance="c2s2")
        try:
            await join(a, room, "a")
            for i in range(3):
                groupchat(a, room, "before%d" % i)
            await a.box.wait(is_msg(room + "/a", "before2"), 10, "own before2")
            # the history reaches Redis within [muc] history_flush_ms
            await wait_async(lambda: redis_cli(stack, "LLEN", "muc:{%s}:h" % room) == "3",
                             10, "history in Redis")
            await asyncio.to_thread(stack.stack, "kill-proc", "muc1")
            await asyncio.to_thread(stack.wait_instances, ("muc2",), ("muc1",), 20)
            # a newcomer on the other instance gets the messages from before
            await join(b, room, "b")
            got = []
            for i in range(3):
                m = await b.box.wait(is_msg(room + "/a"), 15, "history %d" % i)
                assert m.find("{urn:xmpp:delay}delay") is not None
                got.append(m.findtext("{jabber:client}body"))
            assert got == ["before0", "before1", "before2"]
            await subject(b)
            # and the room goes on: a new message lands in the history too
            groupchat(a, room, "after")
            await b.box.wait(is_msg(room + "/a", "after"), 15, "after")
        finally:
            await closeall(a, b)
            await asyncio.to_thread(stack.stack, "start-proc", "muc1")
            await asyncio.to_thread(stack.stack, "stop-proc", "muc2")
            await asyncio.to_thread(stack.stack, "wait-ready")
    run(go(), timeout=120)


# ----------------------------------------------------------- voice requests
def test_voice_request_reaches_moderators_and_approval_grants_voice(stack, new_user):
    async def go():
        o = await user(stack, new_user, "vo")
        jv, pv = new_user("vv")
        v = await login(stack, jv, pv, plugins=("xep_0045",), instance="c2s2")
        v.box = Inbox(v)
        room = new_room(stack, "voice")
        try:
            await join(o, room, "owner")
            _, cond = await configure(o, room, moderatedroom="1")
            assert cond is None
            mv = await join(v, room, "visitor")
            assert item(mv).get("role") == "visitor"
            groupchat(v, room, "may I?")
            e = await v.box.wait(lambda e: e.get("type") == "error", 10, "no voice")
            assert err(e) == "forbidden"
            v.plugin["xep_0045"].request_voice(room, "participant")        # slixmpp's own
            req = await o.box.wait(lambda e: e.tag == "{jabber:client}message" and
                                   e.get("from") == room and
                                   e.find("{%s}x" % DATA) is not None, 10, "approval form")
            fields = {f.get("var"): f.findtext("{%s}value" % DATA)
                      for f in req.find("{%s}x" % DATA).findall("{%s}field" % DATA)}
            assert fields["FORM_TYPE"] == REQ and fields["muc#roomnick"] == "visitor"
            assert fields["muc#role"] == "participant"
            assert fields["muc#jid"].startswith(str(v.boundjid.bare))
            o.send_raw("<message to='%s'><x xmlns='%s' type='submit'>"
                       "<field var='FORM_TYPE'><value>%s</value></field>"
                       "<field var='muc#role'><value>participant</value></field>"
                       "<field var='muc#jid'><value>%s</value></field>"
                       "<field var='muc#roomnick'><value>visitor</value></field>"
                       "<field var='muc#request_allow'><value>true</value></field>"
                       "</x></message>" % (room, DATA, REQ, fields["muc#jid"]))
            p = await v.box.wait(lambda e: is_pres(room + "/visitor")(e) and
                                 item(e).get("role") == "participant", 10, "voice granted")
            assert "110" in codes(p)
            groupchat(v, room, "thanks")
            await o.box.wait(is_msg(room + "/visitor", "thanks"), 10, "voiced message")
            # a request form that is not submitted: bad-request
            o.send_raw("<message to='%s'><x xmlns='%s' type='form'><field var='FORM_TYPE'>"
                       "<value>%s</value></field></x></message>" % (room, DATA, REQ))
            e = await o.box.wait(lambda e: e.get("type") == "error", 10, "bad-request")
            assert err(e) == "bad-request"
        finally:
            await closeall(o, v)
    run(go(), timeout=90)


# -------------------------------------------------- registration and nicks
def reg_form(nick):
    return ("<query xmlns='%s'><x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>"
            "http://jabber.org/protocol/muc#register</value></field>"
            "<field var='muc#register_roomnick'><value>%s</value></field></x></query>"
            % (REG, DATA, nick))


def test_registration_reserves_a_nick(stack, new_user):
    async def go():
        a = await user(stack, new_user, "ga")
        b = await user(stack, new_user, "gb")
        c = await user(stack, new_user, "gc", instance="c2s2")
        room = new_room(stack, "reg")
        try:
            await join(a, room, "a")
            _, cond = await configure(a, room, persistentroom="1")
            assert cond is None
            r, cond = await iq(b, room, "get", "<query xmlns='%s'/>" % REG)
            assert cond is None and r.find(".//{%s}x" % DATA) is not None
            _, cond = await iq(b, room, "set", reg_form("bobby"))
            assert cond is None
            r, cond = await iq(b, room, "get", "<query xmlns='%s'/>" % REG)
            assert r.find("{%s}query/{%s}registered" % (REG, REG)) is not None
            assert r.findtext("{%s}query/{%s}username" % (REG, REG)) == "bobby"
            # §7.12: the reserved nick by disco
            r, cond = await iq(b, room, "get", "<query xmlns='%s' node='x-roomuser-item'/>"
                               % DISCO)
            assert r.find(".//{%s}identity" % DISCO).get("name") == "bobby"
            r, cond = await iq(c, room, "get", "<query xmlns='%s' node='x-roomuser-item'/>"
                               % DISCO)
            assert cond is None and r.find(".//{%s}identity" % DISCO) is None
            # another account may neither take it nor register it
            e = await join(c, room, "bobby", expect_error=True)
            assert err(e) == "conflict"
            _, cond = await iq(c, room, "set", reg_form("bobby"))
            assert cond == "conflict"
            # its owner joins with it, as a member
            mb = await join(b, room, "bobby")
            assert item(mb).get("affiliation") == "member"
            # the admin list shows the nick
            r, cond = await iq(a, room, "get", "<query xmlns='http://jabber.org/protocol/"
                               "muc#admin'><item affiliation='member'/></query>")
            its = r.findall(".//{http://jabber.org/protocol/muc#admin}item")
            assert [(i.get("jid"), i.get("nick")) for i in its] == [(b.boundjid.bare, "bobby")]
            # cancelling frees the nick
            _, cond = await iq(b, room, "set", "<query xmlns='%s'><remove/></query>" % REG)
            assert cond is None
            # the room sees bobby a member no more
            await a.box.wait(lambda e: is_pres(room + "/bobby")(e) and
                             item(e).get("affiliation") == "none", 10, "affiliation none")
            b.send_raw("<presence to='%s/bobby' type='unavailable'/>" % room)
            await b.box.wait(is_pres(room + "/bobby", "unavailable"), 10, "b left")
            await join(c, room, "bobby")
        finally:
            await closeall(a, b, c)
    run(go(), timeout=90)


# -------------------------------------------------- one nick, two sessions
def test_two_sessions_of_one_account_share_a_nick(stack, new_user):
    async def go():
        jid, pw = new_user("ms")
        s1 = await login(stack, jid + "/one", pw)
        s2 = await login(stack, jid + "/two", pw, instance="c2s2")
        s1.box, s2.box = Inbox(s1), Inbox(s2)
        x = await user(stack, new_user, "mx")
        other = await user(stack, new_user, "mo")
        room = new_room(stack, "multi")
        try:
            await join(x, room, "x")
            await join(s1, room, "me")
            m2 = await join(s2, room, "me")                  # allowed: the same account
            assert "110" in codes(m2)
            # someone else may not take the nick
            e = await join(other, room, "me", expect_error=True)
            assert err(e) == "conflict"
            # both sessions get the room's messages and private messages
            groupchat(x, room, "to all")
            for s in (s1, s2, x):
                await s.box.wait(is_msg(room + "/x", "to all"), 10, "groupchat")
            x.send_raw("<message to='%s/me' type='chat'><body>psst</body></message>" % room)
            for s in (s1, s2):
                await s.box.wait(is_msg(room + "/x", "psst", "chat"), 10, "private")
            # one session leaves: the room still sees "me", the other goes on
            x.box.items.clear()             # the presences of both joins came before
            s1.send_raw("<presence to='%s/me' type='unavailable'/>" % room)
            own = await s1.box.wait(is_pres(room + "/me", "unavailable"), 10, "own leave")
            assert "110" in codes(own)
            still = await x.box.wait(lambda e: e.tag == "{jabber:client}presence" and
                                     e.get("from") == room + "/me", 10, "presence of me")
            assert still.get("type") is None, ET.tostring(still)
            groupchat(x, room, "still there?")
            await s2.box.wait(is_msg(room + "/x", "still there?"), 10, "s2 still in")
            # the last session leaving: now the room sees it go
            s2.send_raw("<presence to='%s/me' type='unavailable'/>" % room)
            await x.box.wait(is_pres(room + "/me", "unavailable"), 10, "me gone")
        finally:
            await closeall(s1, s2, x, other)
    run(go(), timeout=90)


# ------------------------------------------------ iqs forwarded to occupants
def test_iqs_to_an_occupant_are_forwarded_and_answered_back(stack, new_user):
    async def go():
        a = await user(stack, new_user, "ia")
        b = await user(stack, new_user, "ib", instance="c2s2")
        room = new_room(stack, "iq")
        seen = []

        def answer(st):
            seen.append(st.xml)
            r = b.make_iq_result(st["id"], ito=st["from"])
            r.append(ET.fromstring("<query xmlns='urn:example:muc-test'><v>42</v></query>"))
            r.send()
        b.register_handler(Callback("muc-test-iq", MatchXPath(
            "{jabber:client}iq/{urn:example:muc-test}query"), answer))
        try:
            await join(a, room, "a")
            await join(b, room, "b")
            r, cond = await iq(a, room + "/b", "get", "<query xmlns='urn:example:muc-test'/>")
            assert cond is None, ET.tostring(r)
            assert r.get("from") == room + "/b"
            assert r.findtext(".//{urn:example:muc-test}v") == "42"
            # b saw it from the room JID of a, never a's real JID
            assert seen and seen[0].get("from") == room + "/a"
            # a vCard goes to the occupant's account, the answer comes back from room/b
            r, cond = await iq(a, room + "/b", "get", "<vCard xmlns='vcard-temp'/>")
            assert r.get("from") == room + "/b" and cond in (None, "item-not-found")
            # a ping to someone else is theirs to answer (slixmpp does)
            _, cond = await iq(a, room + "/b", "get", "<ping xmlns='urn:xmpp:ping'/>")
            assert cond in (None, "service-unavailable", "feature-not-implemented")
            _, cond = await iq(a, room + "/nobody", "get", "<query xmlns='urn:example:x'/>")
            assert cond == "item-not-found"
        finally:
            await closeall(a, b)
    run(go(), timeout=60)


# ------------------------------------------------------------ sbctl room
def sbctl_json(stack, *args):
    p = stack.sbctl("room", *args, "--json", check=False)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), p.stderr


def test_sbctl_room_list_info_and_destroy(stack, new_user):
    async def go():
        a = await user(stack, new_user, "sa")
        b = await user(stack, new_user, "sb")
        room = new_room(stack, "ctl")
        try:
            await join(a, room, "a")
            _, cond = await configure(a, room, persistentroom="1", enablearchiving="1",
                                      roomname="Control")
            assert cond is None
            _, cond = await iq(b, room, "set", reg_form("bee"))
            assert cond is None
            await join(b, room, "bee")
            rc, rooms, _ = await asyncio.to_thread(sbctl_json, stack, "list", stack.domain)
            assert rc == 0
            mine = [r for r in rooms if r["jid"] == room]
            assert mine and mine[0]["name"] == "Control" and mine[0]["persistent"]
            assert mine[0]["archiving"] and mine[0]["occupants"] == 2
            rc, info, errout = await asyncio.to_thread(sbctl_json, stack, "info", room)
            assert rc == 0 and info["archiving"] and info["persistent"], errout
            affs = {(x["jid"], x["affiliation"], x["nick"]) for x in info["affiliations"]}
            assert (str(b.boundjid.bare), "member", "bee") in affs
            assert (str(a.boundjid.bare), "owner", None) in affs
            assert {o["nick"] for o in info["occupants"]} == {"a", "bee"}
            p = await asyncio.to_thread(stack.sbctl, "room", "list", check=False)
            assert p.returncode == 0 and room in p.stdout
            # destroy: the occupants are told, with the reason
            rc, out, _ = await asyncio.to_thread(sbctl_json, stack, "destroy", room,
                                                 "--reason", "closing time")
            assert rc == 0 and out["destroyed"]
            for c, nick in ((a, "a"), (b, "bee")):
                e = await c.box.wait(is_pres(room + "/" + nick, "unavailable"), 10, "destroyed")
                d = e.find("{%s}x/{%s}destroy" % (USER, USER))
                assert d is not None and d.findtext("{%s}reason" % USER) == "closing time"
            rc, _, errout = await asyncio.to_thread(sbctl_json, stack, "info", room)
            assert rc != 0 and "no room" in errout
            rc, _, _ = await asyncio.to_thread(sbctl_json, stack, "destroy", room)
            assert rc != 0
            p = await asyncio.to_thread(stack.sbctl, "room", "info", "not a jid", check=False)
            assert p.returncode != 0
        finally:
            await closeall(a, b)
    run(go(), timeout=90)


# ---------------------------------------------------------------- locked rooms
def error_type(el):
    e = el.find("{jabber:client}error")
    return e.get("type") if e is not None else None


def test_a_new_room_is_locked_until_its_owner_configures_it_or_accepts_the_defaults(
        stack, new_user):
    """§10.1.2-3: the creator gets 201 and the room stays locked — anyone
    else's join gets item-not-found (cancel) — until the owner submits the
    configuration form (a filled one, or an empty one: an instant room); an
    owner cancelling the first configuration destroys the room."""
    async def go():
        a = await user(stack, new_user, "lka")
        b = await user(stack, new_user, "lkb", instance="c2s2")
        filled, instant, cancelled = (new_room(stack, p) for p in ("lk1", "lk2", "lk3"))
        try:
            for room in (filled, instant, cancelled):
                me = await join(a, room, "owner", instant=False)
                assert {"110", "201"} <= codes(me)
                e = await join(b, room, "early", expect_error=True)
                assert err(e) == "item-not-found" and error_type(e) == "cancel", ET.tostring(e)
            # the owner may still read the form while the room is locked
            r, cond = await iq(a, filled, "get", "<query xmlns='%s'/>" % OWNER)
            assert cond is None and r.find("{%s}query/{%s}x" % (OWNER, DATA)) is not None
            _, cond = await configure(a, filled, roomname="Filled")
            assert cond is None
            _, cond = await iq(a, instant, "set", "<query xmlns='%s'><x xmlns='%s' "
                               "type='submit'/></query>" % (OWNER, DATA))
            assert cond is None
            for room in (filled, instant):
                mb = await join(b, room, "late")
                assert "201" not in codes(mb) and item(mb).get("affiliation") == "none"
            r, cond = await iq(a, filled, "get", "<query xmlns='%s'/>" % DISCO)
            assert cond is None and r.find("{%s}query/{%s}identity" % (DISCO, DISCO)).get(
                "name") == "Filled"
            # cancelling the first configuration: the room is gone
            _, cond = await iq(a, cancelled, "set", "<query xmlns='%s'><x xmlns='%s' "
                               "type='cancel'/></query>" % (OWNER, DATA))
            assert cond is None
            gone = await a.box.wait(lambda e: is_pres(cancelled + "/owner", "unavailable")(e)
                                    and e.find("{%s}x/{%s}destroy" % (USER, USER)) is not None,
                                    10, "destroyed")
            assert gone is not None
            mb = await join(b, cancelled, "anew")      # free to be created again, by b
            assert "201" in codes(mb) and item(mb).get("affiliation") == "owner"
        finally:
            await closeall(a, b)
    run(go(), timeout=90)


# ---------------------------------------------------------------- join storm
STORM = 100


def leases(stack):
    """Every live instance's incarnation, from its lease in Redis: a new one
    means it lost its lease (and was declared dead) meanwhile."""
    out = {}
    for name in stack.live_instances():
        v = redis_cli(stack, "GET", "lease:" + name)
        incs = [w[4:] for w in v.split() if w.startswith("inc=")]
        out[name] = incs[0] if incs else None
    return out


def test_a_storm_of_100_simultaneous_joins_gets_every_self_presence_and_no_lease_is_lost(stack):
    """The joins are sent all at once (each a presence per occupant both
    ways: ~10,000 stanzas out of sb-muc in a burst); every joiner gets its
    self-presence with 110, the owner sees every one of them come in, and no
    instance — sb-muc, the sms it floods, the front-ends — changed its
    incarnation (muc/main.c's work queue, common/link.c's drain slice)."""
    prefix = "st" + secrets.token_hex(3)
    stack.sbctl("user", "bulk-add", stack.domain, prefix, str(STORM + 1), prefix + "pw",
                timeout=60)
    users = [("%s%d@%s" % (prefix, i, stack.domain), "%spw%d" % (prefix, i))
             for i in range(1, STORM + 2)]
    room = "storm%s@conference.%s" % (secrets.token_hex(4), stack.domain)
    before = leases(stack)
    assert before.get("muc1"), before

    async def online(i, jid, pw):
        s = RawStream(stack, instance="c2s1" if i % 2 else "c2s2")
        await s.login(jid, pw)
        s.nick = "n%d" % i
        return s

    async def self_presence(s, timeout):
        """Read until the presence from room/nick with 110; returns what came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = []
        me = "%s/%s" % (room, s.nick)
        while loop.time() < deadline:
            el = await s.element(timeout=max(0.1, deadline - loop.time()))
            assert el is not None, "%s: stream closed before its self-presence" % s.nick
            seen.append(el)
            if el.tag == "{jabber:client}presence" and el.get("from") == me:
                assert el.get("type") is None, "%s: %s" % (s.nick, ET.tostring(el)[:300])
                assert "110" in codes(el), ET.tostring(el)[:300]
                return seen
        raise AssertionError("%s: no self-presence within %ss" % (s.nick, timeout))

    def join(s):
        s.send("<presence to='%s/%s'><x xmlns='%s'><history maxstanzas='0'/></x></presence>"
               % (room, s.nick, MUC))

    async def go():
        streams = await asyncio.gather(*(online(i, j, p) for i, (j, p) in enumerate(users)))
        owner, joiners = streams[0], streams[1:]
        try:
            join(owner)
            got = await self_presence(owner, 20)
            assert "201" in codes(got[-1])
            r = ("<iq type='set' id='instant' to='%s'><query xmlns='%s'><x xmlns='%s' "
                 "type='submit'/></query></iq>" % (room, OWNER, DATA))
            owner.send(r)
            while True:                    # the room is locked until this is answered
                el = await owner.element(timeout=10)
                assert el is not None
                if el.tag == "{jabber:client}iq" and el.get("id") == "instant":
                    assert el.get("type") == "result", ET.tostring(el)[:300]
                    break
            t0 = asyncio.get_running_loop().time()
            for s in joiners:              # all at once, before reading anything
                join(s)
            seen = await asyncio.gather(*(self_presence(s, 90) for s in joiners))
            took = asyncio.get_running_loop().time() - t0
            # the last one in saw everyone who came before it (and the owner): the room has them all
            assert max(sum(1 for e in got if e.tag == "{jabber:client}presence")
                       for got in seen) == STORM + 1
            # the owner sees all 100 arrive
            nicks = {s.nick for s in joiners}
            came = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while came != nicks and loop.time() < deadline:
                el = await owner.element(timeout=max(0.1, deadline - loop.time()))
                assert el is not None
                f = el.get("from") or ""
                if el.tag == "{jabber:client}presence" and f.startswith(room + "/"):
                    came.add(f.split("/", 1)[1])
            assert came == nicks, "owner missed %s" % sorted(nicks - came)[:10]
            print("join storm: %d joins in %.1f s" % (STORM, took))
        finally:
            for s in streams:
                s.abort()

    run(go(), timeout=240)
    after = leases(stack)
    changed = {n: (before[n], after.get(n)) for n in before if after.get(n) != before[n]}
    assert not changed, "instances that lost their lease during the storm: %s" % changed

