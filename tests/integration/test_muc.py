"""Multi-user chat (XEP-0045) on sb-muc at conference.DOMAIN: joining with
its status codes, nick conflicts, history, subject, private messages,
occupant ids, self-ping, moderation (kick, ban, voice), passwords,
members-only rooms, the owner's form, invitations, destruction; occupants
on both front-ends; a room whose instance dies carries on on another one
with its occupants; an occupant whose front-end dies leaves; the refusals
XEP-0045 lists, and service-unavailable when no sb-muc lives."""

import asyncio
import secrets
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from xmpptest import close, login, run, wait_until, fnv1a64

MUC = "http://jabber.org/protocol/muc"
USER = MUC + "#user"
ADMIN = MUC + "#admin"
OWNER = MUC + "#owner"
OID = "urn:xmpp:occupant-id:0"
ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
DATA = "jabber:x:data"


def service(stack):
    return "conference." + stack.domain


def new_room(stack, prefix="r"):
    return "%s%s@%s" % (prefix, secrets.token_hex(4), service(stack))


class Inbox:
    """Every presence and message a client gets, searchable in order."""

    def __init__(self, xmpp):
        self.items = []
        self.changed = asyncio.Event()
        # slixmpp's own "message" event needs a <body/>: subjects and
        # invitations have none, so every message is taken here.
        xmpp.register_handler(Callback("muc-test-messages",
                                       MatchXPath("{jabber:client}message"), self._add))
        xmpp.add_event_handler("presence", self._add)

    def _add(self, st):
        self.items.append(st.xml)
        self.changed.set()

    async def wait(self, pred, timeout=10, what="a stanza"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.items)):
                if pred(self.items[i]):
                    return self.items.pop(i)
            seen = len(self.items)
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("no %s within %ss; got: %s" % (
                    what, timeout, [ET.tostring(e)[:300] for e in self.items[-8:]]))
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def nothing(self, pred, secs=1.0):
        await asyncio.sleep(secs)
        return not any(pred(e) for e in self.items)


def codes(el):
    return {s.get("code") for s in el.findall("{%s}x/{%s}status" % (USER, USER))}


def item(el):
    return el.find("{%s}x/{%s}item" % (USER, USER))


def err(el):
    e = el.find("{jabber:client}error")
    if e is None:
        return None
    return next((c.tag.split("}")[1] for c in e if c.tag.startswith("{%s}" % ERR)
                 and not c.tag.endswith("}text")), None)


def is_pres(frm, type_=None):
    def p(el):
        return (el.tag == "{jabber:client}presence" and el.get("from") == frm and
                el.get("type") == type_)
    return p


def is_msg(frm=None, body=None, type_=None):
    def p(el):
        if el.tag != "{jabber:client}message" or (frm and el.get("from") != frm):
            return False
        if type_ and el.get("type") != type_:
            return False
        b = el.find("{jabber:client}body")
        return body is None or (b is not None and b.text == body)
    return p


async def user(stack, new_user, prefix, instance="c2s1"):
    jid, pw = new_user(prefix)
    c = await login(stack, jid, pw, instance=instance)
    c.box = Inbox(c)
    return c


INSTANT = "<query xmlns='%s'><x xmlns='%s' type='submit'/></query>" % (OWNER, DATA)


async def join(c, room, nick, inner="", expect_error=False, timeout=10, instant=True):
    """Join; the creator of a room (201) accepts the default configuration
    at once (an instant room, §10.1.2), as clients do, unless instant=False
    (the room stays locked)."""
    c.send_raw("<presence to='%s/%s'><x xmlns='%s'>%s</x></presence>" % (room, nick, MUC, inner))
    if expect_error:
        return await c.box.wait(is_pres("%s/%s" % (room, nick), "error"), timeout, "join error")
    me = await c.box.wait(lambda e: is_pres("%s/%s" % (room, nick))(e) and "110" in codes(e),
                          timeout, "self-presence of %s" % nick)
    if instant and "201" in codes(me):
        _, cond = await iq(c, room, "set", INSTANT)
        assert cond is None, "instant room refused: %s" % cond
    return me


async def iq(c, to, type_, payload):
    q = c.Iq()
    q["to"] = to
    q["type"] = type_
    q.append(ET.fromstring(payload))
    try:
        r = await q.send(timeout=10)
        return r.xml, None
    except IqError as e:
        return e.iq.xml, e.iq["error"]["condition"]


def groupchat(c, room, body):
    c.send_raw("<message to='%s' type='groupchat'><body>%s</body></message>" % (room, body))


async def closeall(*cs):
    for c in cs:
        await close(c)


# ------------------------------------------------------------------------ core
def test_join_codes_presence_message_subject_and_leave(stack, new_user):
    async def go():
        a = await user(stack, new_user, "ma")
        b = await user(stack, new_user, "mb", instance="c2s2")       # the other front-end
        room = new_room(stack)
        try:
            me = await join(a, room, "alice")
            assert {"110", "201"} <= codes(me), ET.tostring(me)
            it = item(me)
            assert it.get("affiliation") == "owner" and it.get("role") == "moderator"
            oid_a = me.find("{%s}occupant-id" % OID).get("id")
            assert oid_a
            # the room's subject comes after the join (empty)
            await a.box.wait(lambda e: is_msg(room)(e) and e.find("{jabber:client}subject")
                             is not None, 10, "subject")
            mb = await join(b, room, "bob")
            assert "201" not in codes(mb) and item(mb).get("role") == "participant"
            # bob sees alice first; alice sees bob arrive (semi-anonymous: no jid for bob)
            pa = await b.box.wait(is_pres(room + "/alice"), 10, "alice's presence")
            assert item(pa).get("jid") is None
            assert pa.find("{%s}occupant-id" % OID).get("id") == oid_a
            pb = await a.box.wait(is_pres(room + "/bob"), 10, "bob's presence")
            assert item(pb).get("jid", "").startswith(str(b.boundjid.bare))   # a moderator sees it
            # a groupchat message reaches both, from room/nick, with the occupant id
            groupchat(b, room, "hi all")
            for c in (a, b):
                m = await c.box.wait(is_msg(room + "/bob", "hi all", "groupchat"), 10, "message")
                assert m.find("{%s}occupant-id" % OID) is not None
            # the subject: participants may change it by default
            b.send_raw("<message to='%s' type='groupchat'><subject>news</subject></message>" % room)
            m = await a.box.wait(lambda e: is_msg(room + "/bob")(e) and e.findtext(
                "{jabber:client}subject") == "news", 10, "subject change")
            # bob leaves: alice sees unavailable, bob gets his own with 110
            b.send_raw("<presence to='%s/bob' type='unavailable'><status>bye</status></presence>"
                       % room)
            gone = await a.box.wait(is_pres(room + "/bob", "unavailable"), 10, "bob leaving")
            assert item(gone).get("role") == "none" and gone.findtext(
                "{jabber:client}status") == "bye"
            own = await b.box.wait(is_pres(room + "/bob", "unavailable"), 10, "own leave")
            assert "110" in codes(own)
            # not an occupant any more: a groupchat message is not-acceptable
            groupchat(b, room, "still here?")
            e = await b.box.wait(lambda e: e.get("type") == "error" and e.get("from") == room,
                                 10, "not-acceptable")
            assert err(e) == "not-acceptable"
        finally:
            await closeall(a, b)
    run(go(), timeout=90)


def test_nick_conflict_jid_malformed_and_nick_change(stack, new_user):
    async def go():
        a = await user(stack, new_user, "mc")
        b = await user(stack, new_user, "md")
        room = new_room(stack)
        try:
            await join(a, room, "same")
            e = await join(b, room, "same", expect_error=True)
            assert err(e) == "conflict", ET.tostring(e)
            # a presence to the bare room JID names no nick
            b.send_raw("<presence to='%s'><x xmlns='%s'/></presence>" % (room, MUC))
            e = await b.box.wait(lambda e: e.get("from") == room and e.get("type") == "error",
                                 10, "jid-malformed")
            assert err(e) == "jid-malformed"
            await join(b, room, "other")
            # nick change: 303 with the new nick, then the new presence
            b.send_raw("<presence to='%s/newnick'/>" % room)
            old = await a.box.wait(is_pres(room + "/other", "unavailable"), 10, "303")
            assert "303" in codes(old) and item(old).get("nick") == "newnick"
            await a.box.wait(is_pres(room + "/newnick"), 10, "new nick")
            # changing to a taken nick: conflict
            b.send_raw("<presence to='%s/same'/>" % room)
            e = await b.box.wait(is_pres(room + "/same", "error"), 10, "conflict")
            assert err(e) == "conflict"
        finally:
            await closeall(a, b)
    run(go(), timeout=60)


def test_history_on_join_with_limits(stack, new_user):
    async def go():
        a = await user(stack, new_user, "mh")
        b = await user(stack, new_user, "mi")
        c = await user(stack, new_user, "mj")
        room = new_room(stack)
        try:
            await join(a, room, "a")
            for i in range(5):
                groupchat(a, room, "h%d" % i)
            await a.box.wait(is_msg(room + "/a", "h4"), 10, "own last message")
            # maxstanzas=2: the last two, oldest first, with delay stamps
            await join(b, room, "b", "<history maxstanzas='2'/>")
            m1 = await b.box.wait(is_msg(room + "/a"), 10, "history 1")
            m2 = await b.box.wait(is_msg(room + "/a"), 10, "history 2")
            assert [m1.findtext("{jabber:client}body"), m2.findtext("{jabber:client}body")] == \
                ["h3", "h4"]
            assert m1.find("{urn:xmpp:delay}delay").get("from") == room
            subj = await b.box.wait(lambda e: e.find("{jabber:client}subject") is not None, 10,
                                    "subject after history")
            assert subj is not None
            assert await b.box.nothing(is_msg(room + "/a"), 0.5)
            # maxstanzas=0: none at all; seconds in the future-only window: none either
            await join(c, room, "c", "<history maxstanzas='0'/>")
            await c.box.wait(lambda e: e.find("{jabber:client}subject") is not None, 10, "subj")
            assert await c.box.nothing(is_msg(room + "/a"), 0.5)
        finally:
            await closeall(a, b, c)
    run(go(), timeout=60)


def test_private_messages_self_ping_and_iq_to_others(stack, new_user):
    async def go():
        a = await user(stack, new_user, "mp")
        b = await user(stack, new_user, "mq", instance="c2s2")
        x = await user(stack, new_user, "mx")
        room = new_room(stack)
        try:
            await join(a, room, "a")
            await join(b, room, "b")
            a.send_raw("<message to='%s/b' type='chat'><body>psst</body></message>" % room)
            m = await b.box.wait(is_msg(room + "/a", "psst", "chat"), 10, "private message")
            assert m.find("{%s}x" % USER) is not None
            a.send_raw("<message to='%s/nobody' type='chat'><body>?</body></message>" % room)
            e = await a.box.wait(lambda e: e.get("type") == "error" and e.get("from") ==
                                 room + "/nobody", 10, "item-not-found")
            assert err(e) == "item-not-found"
            # XEP-0410: joined → result; not joined → not-acceptable
            _, cond = await iq(a, room + "/a", "get", "<ping xmlns='urn:xmpp:ping'/>")
            assert cond is None
            _, cond = await iq(x, room + "/a", "get", "<ping xmlns='urn:xmpp:ping'/>")
            assert cond == "not-acceptable"
            # a non-occupant's private message: not-acceptable
            x.send_raw("<message to='%s/a' type='chat'><body>hi</body></message>" % room)
            e = await x.box.wait(lambda e: e.get("type") == "error", 10, "not-acceptable")
            assert err(e) == "not-acceptable"
            # groupchat to an occupant: bad-request
            a.send_raw("<message to='%s/b' type='groupchat'><body>x</body></message>" % room)
            e = await a.box.wait(lambda e: e.get("type") == "error" and e.get("from") ==
                                 room + "/b", 10, "bad-request")
            assert err(e) == "bad-request"
        finally:
            await closeall(a, b, x)
    run(go(), timeout=60)


def test_temporary_room_goes_with_its_last_occupant(stack, new_user):
    async def go():
        a = await user(stack, new_user, "mt")
        room = new_room(stack)
        try:
            await join(a, room, "a")
            _, cond = await iq(a, room, "get",
                               "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            assert cond is None
            a.send_raw("<presence to='%s/a' type='unavailable'/>" % room)
            await a.box.wait(is_pres(room + "/a", "unavailable"), 10, "leave")
            _, cond = await iq(a, room, "get",
                               "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            assert cond == "item-not-found"
            # joining again creates it anew
            me = await join(a, room, "a")
            assert "201" in codes(me)
        finally:
            await closeall(a)
    run(go(), timeout=60)


def test_service_disco_and_server_items(stack, new_user):
    async def go():
        a = await user(stack, new_user, "ms")
        try:
            r, cond = await iq(a, service(stack), "get",
                               "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            assert cond is None
            ident = r.find(".//{http://jabber.org/protocol/disco#info}identity")
            assert ident.get("category") == "conference"
            feats = {f.get("var") for f in r.iter("{http://jabber.org/protocol/disco#info}feature")}
            assert MUC in feats and OID in feats
            r, cond = await iq(a, stack.domain, "get",
                               "<query xmlns='http://jabber.org/protocol/disco#items'/>")
            assert service(stack) in {i.get("jid") for i in
                                      r.iter("{http://jabber.org/protocol/disco#items}item")}
        finally:
            await closeall(a)
    run(go(), timeout=40)


# ------------------------------------------------------------------ moderation
def test_kick_ban_voice_and_their_refusals(stack, new_user):
    async def go():
        o = await user(stack, new_user, "mo")
        p = await user(stack, new_user, "mu", instance="c2s2")
        v = await user(stack, new_user, "mv")
        room = new_room(stack)
        try:
            await join(o, room, "owner")
            await join(p, room, "p")
            await join(v, room, "v")
            # a participant cannot kick: forbidden
            _, cond = await iq(p, room, "set", "<query xmlns='%s'><item nick='v' role='none'/>"
                               "</query>" % ADMIN)
            assert cond == "forbidden"
            # nor may anyone kick an owner: not-allowed
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item nick='owner' "
                               "role='none'/></query>" % ADMIN)
            assert cond == "not-allowed"
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item nick='ghost' "
                               "role='none'/></query>" % ADMIN)
            assert cond == "item-not-found"
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item nick='v' "
                               "role='emperor'/></query>" % ADMIN)
            assert cond == "bad-request"
            # revoke voice: v becomes a visitor and may not speak
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item nick='v' "
                               "role='visitor'/></query>" % ADMIN)
            assert cond is None
            pr = await p.box.wait(lambda e: is_pres(room + "/v")(e) and
                                  item(e).get("role") == "visitor", 10, "voice revoked")
            assert pr is not None
            groupchat(v, room, "can I?")
            e = await v.box.wait(lambda e: e.get("type") == "error" and e.get("from") == room,
                                 10, "forbidden")
            assert err(e) == "forbidden"
            # kick: 307 to everyone, the kicked one included
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item nick='v' role='none'>"
                               "<reason>out</reason></item></query>" % ADMIN)
            assert cond is None
            k = await p.box.wait(is_pres(room + "/v", "unavailable"), 10, "kick seen")
            assert "307" in codes(k)
            k = await v.box.wait(is_pres(room + "/v", "unavailable"), 10, "kicked")
            assert {"307", "110"} <= codes(k)
            # ban by JID: 301, and the banned one cannot come back (forbidden)
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item jid='%s' "
                               "affiliation='outcast'/></query>" % (ADMIN, p.boundjid.bare))
            assert cond is None
            k = await o.box.wait(is_pres(room + "/p", "unavailable"), 10, "ban seen")
            assert "301" in codes(k)
            e = await join(p, room, "p2", expect_error=True)
            assert err(e) == "forbidden"
            # the owner list; the last owner cannot step down (conflict)
            r, cond = await iq(o, room, "get", "<query xmlns='%s'><item affiliation='outcast'/>"
                               "</query>" % ADMIN)
            assert cond is None and [i.get("jid") for i in r.iter("{%s}item" % ADMIN)] == \
                [str(p.boundjid.bare)]
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><item jid='%s' "
                               "affiliation='member'/></query>" % (ADMIN, o.boundjid.bare))
            assert cond == "conflict"
            # a non-admin cannot list or set affiliations
            _, cond = await iq(v, room, "get", "<query xmlns='%s'><item affiliation='member'/>"
                               "</query>" % ADMIN)
            assert cond == "forbidden"
        finally:
            await closeall(o, p, v)
    run(go(), timeout=90)


def owner_form(fields):
    return ("<query xmlns='%s'><x xmlns='%s' type='submit'><field var='FORM_TYPE'><value>"
            "http://jabber.org/protocol/muc#roomconfig</value></field>%s</x></query>"
            % (OWNER, DATA, "".join("<field var='muc#roomconfig_%s'><value>%s</value></field>"
                                     % kv for kv in fields.items())))


def test_owner_form_password_members_only_invites_and_destroy(stack, new_user):
    async def go():
        o = await user(stack, new_user, "mf")
        m = await user(stack, new_user, "mg")
        x = await user(stack, new_user, "mk")
        room = new_room(stack)
        try:
            await join(o, room, "owner")
            r, cond = await iq(o, room, "get", "<query xmlns='%s'/>" % OWNER)
            assert cond is None
            vars_ = {f.get("var") for f in r.iter("{%s}field" % DATA)}
            assert {"muc#roomconfig_persistentroom", "muc#roomconfig_roomsecret",
                    "muc#roomconfig_membersonly", "muc#roomconfig_whois"} <= vars_
            # only owners configure
            await join(m, room, "m")
            _, cond = await iq(m, room, "get", "<query xmlns='%s'/>" % OWNER)
            assert cond == "forbidden"
            _, cond = await iq(o, room, "set", owner_form({"maxusers": "lots"}))
            assert cond == "not-acceptable"
            # a password: a join without it is not-authorized, with it fine
            _, cond = await iq(o, room, "set", owner_form({
                "passwordprotectedroom": "1", "roomsecret": "s3cret", "roomname": "Den"}))
            assert cond is None
            await m.box.wait(lambda e: is_msg(room)(e) and "104" in codes(e), 10, "104 notice")
            e = await join(x, room, "x", expect_error=True)
            assert err(e) == "not-authorized"
            await join(x, room, "x", "<password>s3cret</password>")
            x.send_raw("<presence to='%s/x' type='unavailable'/>" % room)
            await x.box.wait(is_pres(room + "/x", "unavailable"), 10, "x left")
            # members-only: m (no affiliation) leaves with 321, x cannot join
            _, cond = await iq(o, room, "set", owner_form({
                "passwordprotectedroom": "0", "membersonly": "1", "persistentroom": "1"}))
            assert cond is None
            k = await m.box.wait(is_pres(room + "/m", "unavailable"), 10, "321")
            assert "321" in codes(k)
            e = await join(x, room, "x", expect_error=True)
            assert err(e) == "registration-required"
            # a mediated invitation by the owner makes x a member
            o.send_raw("<message to='%s'><x xmlns='%s'><invite to='%s'><reason>come</reason>"
                       "</invite></x></message>" % (room, USER, x.boundjid.bare))
            inv = await x.box.wait(lambda e: e.get("from") == room and e.find(
                "{%s}x/{%s}invite" % (USER, USER)) is not None, 10, "invitation")
            assert inv.find("{%s}x/{%s}invite" % (USER, USER)).get("from") == str(o.boundjid.bare)
            await join(x, room, "x")
            # a non-occupant's invitation: not-acceptable
            m.send_raw("<message to='%s'><x xmlns='%s'><invite to='%s'/></x></message>"
                       % (room, USER, x.boundjid.bare))
            e = await m.box.wait(lambda e: e.get("type") == "error" and e.get("from") == room,
                                 10, "invite refused")
            assert err(e) == "not-acceptable"
            # XEP-0249 direct invitations pass user to user untouched
            o.send_raw("<message to='%s'><x xmlns='jabber:x:conference' jid='%s'/></message>"
                       % (m.boundjid.bare, room))
            await m.box.wait(lambda e: e.find("{jabber:x:conference}x") is not None and
                             e.get("from", "").startswith(str(o.boundjid.bare)), 10, "direct")
            # persistent: it stays when everyone left, with its name
            for c, n in ((x, "x"), (o, "owner")):
                c.send_raw("<presence to='%s/%s' type='unavailable'/>" % (room, n))
                await c.box.wait(is_pres("%s/%s" % (room, n), "unavailable"), 10, "leave")
            r, cond = await iq(m, room, "get",
                               "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            assert cond is None
            feats = {f.get("var") for f in r.iter("{http://jabber.org/protocol/disco#info}feature")}
            assert {"muc_persistent", "muc_membersonly"} <= feats
            r, _ = await iq(m, service(stack), "get",
                            "<query xmlns='http://jabber.org/protocol/disco#items'/>")
            assert room in {i.get("jid") for i in
                            r.iter("{http://jabber.org/protocol/disco#items}item")}
            # destroy: only the owner; the occupants are told
            await join(o, room, "owner")
            _, cond = await iq(m, room, "set", "<query xmlns='%s'><destroy/></query>" % OWNER)
            assert cond == "forbidden"
            _, cond = await iq(o, room, "set", "<query xmlns='%s'><destroy><reason>done"
                               "</reason></destroy></query>" % OWNER)
            assert cond is None
            d = await o.box.wait(is_pres(room + "/owner", "unavailable"), 10, "destroyed")
            assert d.find("{%s}x/{%s}destroy" % (USER, USER)) is not None
            _, cond = await iq(m, room, "get",
                               "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            assert cond == "item-not-found"
        finally:
            await closeall(o, m, x)
    run(go(), timeout=120)


def test_slixmpp_muc_plugin_joins_and_chats(stack, new_user):
    async def go():
        ja, pa = new_user("sa")
        jb, pb = new_user("sb")
        a = await login(stack, ja, pa, plugins=("xep_0045",))
        b = await login(stack, jb, pb, plugins=("xep_0045",), instance="c2s2")
        room = new_room(stack)
        try:
            await a.plugin["xep_0045"].join_muc_wait(room, "ann", maxstanzas=0, timeout=15)
            # the new room is locked (§10.1.2) until its creator accepts the defaults
            form = a.plugin["xep_0004"].make_form(ftype="submit")
            await a.plugin["xep_0045"].set_room_config(room, form, timeout=10)
            await b.plugin["xep_0045"].join_muc_wait(room, "ben", maxstanzas=0, timeout=15)
            got = asyncio.get_running_loop().create_future()
            a.add_event_handler("groupchat_message", lambda m: m["body"] == "plug" and
                                not got.done() and got.set_result(m))
            b.send_message(mto=room, mbody="plug", mtype="groupchat")
            m = await asyncio.wait_for(got, 10)
            assert m["from"].resource == "ben"
            assert set(a.plugin["xep_0045"].get_roster(room)) == {"ann", "ben"}
        finally:
            await closeall(a, b)
    run(go(), timeout=60)


# --------------------------------------------------------------------- faults
def test_an_occupant_whose_front_end_dies_leaves_the_room(stack, new_user):
    async def go():
        a = await user(stack, new_user, "md1")
        b = await user(stack, new_user, "md2", instance="c2s2")
        room = new_room(stack)
        try:
            await join(a, room, "a")
            await join(b, room, "b")
            await asyncio.to_thread(stack.stack, "kill-proc", "c2s2")
            # the lease runs out, the sm ends b's session and tells the room
            gone = await a.box.wait(is_pres(room + "/b", "unavailable"), 30, "b gone")
            assert item(gone).get("role") == "none"
        finally:
            b.abort()
            await closeall(a)
            await asyncio.to_thread(stack.stack, "start-proc", "c2s2")
            await asyncio.to_thread(stack.stack, "wait-ready")
    run(go(), timeout=90)


def muc_for(room, mucs=("muc1", "muc2")):
    """The instance the routers send a room to (common/route.c)."""
    return max(mucs, key=lambda m: fnv1a64(("%s\n%s" % (m, room)).encode()))


def test_rooms_on_two_instances_survive_the_death_of_one(stack, new_user):
    async def go():
        await asyncio.to_thread(stack.stack, "start-proc", "muc2")
        await asyncio.to_thread(stack.wait_instances, ("muc1", "muc2"))
        # a room on each instance
        rooms = {}
        while len(rooms) < 2:
            r = new_room(stack, "f")
            rooms.setdefault(muc_for(r), r)
        a = await user(stack, new_user, "fa")
        b = await user(stack, new_user, "fb", instance="c2s2")
        try:
            for r in rooms.values():
                await join(a, r, "a")
                await join(b, r, "b")
                groupchat(a, r, "before")
                await b.box.wait(is_msg(r + "/a", "before"), 10, "before")
            await asyncio.to_thread(stack.stack, "kill-proc", "muc1")
            await asyncio.to_thread(stack.wait_instances, ("muc2",), ("muc1",), 20)
            # both rooms now on muc2, occupants kept (from Redis): no rejoin
            for r in rooms.values():
                _, cond = await iq(a, r + "/a", "get", "<ping xmlns='urn:xmpp:ping'/>")
                assert cond is None, "%s: self-ping %s after the failover" % (r, cond)
                groupchat(a, r, "after")
                await b.box.wait(is_msg(r + "/a", "after"), 15, "after on " + r)
                e = await join(b, r, "a", expect_error=True)     # nicks still taken
                assert err(e) == "conflict"
        finally:
            await closeall(a, b)
            await asyncio.to_thread(stack.stack, "start-proc", "muc1")
            await asyncio.to_thread(stack.stack, "stop-proc", "muc2")
            await asyncio.to_thread(stack.stack, "wait-ready")
    run(go(), timeout=120)


def test_no_muc_instance_means_service_unavailable(stack, new_user):
    async def go():
        a = await user(stack, new_user, "mn")
        room = new_room(stack)
        try:
            await asyncio.to_thread(stack.stack, "stop-proc", "muc1")
            await asyncio.to_thread(stack.wait_instances, (), ("muc1",), 20)
            e = await join(a, room, "a", expect_error=True, timeout=15)
            assert err(e) == "service-unavailable", ET.tostring(e)
            groupchat(a, room, "anyone?")
            e = await a.box.wait(lambda e: e.get("type") == "error" and
                                 e.tag == "{jabber:client}message", 15, "message error")
            assert err(e) == "service-unavailable"
        finally:
            await closeall(a)
            await asyncio.to_thread(stack.stack, "start-proc", "muc1")
            await asyncio.to_thread(stack.stack, "wait-ready")
    run(go(), timeout=90)
