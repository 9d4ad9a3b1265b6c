"""PEP (XEP-0163) on every account, sm/mod_pep.c: publish (publish-options,
auto-create), items, retract, delete, node configuration, access models,
and notifications to the resources whose XEP-0115 caps ask for NODE+notify
(the server learns caps by one disco#info query, verified, cached in
Redis). Raw streams, so every answer is checked on the wire."""

import asyncio
import base64
import hashlib
import secrets

from xmpptest import Log, describe, redis_cli, run, sm_for, NS_CLIENT
from test_iq import Client, condition, error_condition, logins, make_contact, q

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
OMEMO_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
NS_OMEMO = "eu.siacs.conversations.axolotl"
NS_BOOKMARKS = "urn:xmpp:bookmarks:1"


def options(**fields):
    """A publish-options form (XEP-0060 §7.1.5)."""
    f = "".join("<field var='pubsub#%s'><value>%s</value></field>" % kv for kv in fields.items())
    return ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'><value>%s#publish-options</value></field>"
            "%s</x></publish-options>" % (NS_PUBSUB, f))


def publish(node, payload, item_id=None, opts=""):
    idattr = " id='%s'" % item_id if item_id else ""
    return ("<pubsub xmlns='%s'><publish node='%s'><item%s>%s</item></publish>%s</pubsub>"
            % (NS_PUBSUB, node, idattr, payload, opts))


def items_req(node, extra="", inner=""):
    return "<pubsub xmlns='%s'><items node='%s'%s>%s</items></pubsub>" % (NS_PUBSUB, node, extra, inner)


def ok(r):
    assert r.get("type") == "result", describe(r)
    return r


def items_of(r, node):
    ok(r)
    its = r.find("%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "items")))
    assert its is not None and its.get("node") == node, describe(r)
    return its.findall(q(NS_PUBSUB, "item"))


def app_condition(r):
    c = error_condition(r)
    return c and [t.split("}", 1)[1] for t in c[2] if t.startswith("{%s}" % NS_ERRORS)]


def caps_ver(features, ident=("client", "pc", "", "t")):
    """XEP-0115 §5.1 verification string, SHA-1, base64."""
    s = "%s/%s/%s/%s<" % ident + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


CAPS_NODE = "https://switchboard.test/caps"


def caps_presence(ver):
    return "<presence><c xmlns='%s' hash='sha-1' node='%s' ver='%s'/></presence>" % (
        NS_CAPS, CAPS_NODE, ver)


class CapsClient(Client):
    """A raw client that answers the server's disco#info queries for its
    caps (from its own account's sm and from each contact's sm) while it
    waits for anything else."""
    caps = None                 # (ver, features) once it has sent caps
    answered = None

    def show_caps(self, features, ver=None):
        ver = ver or caps_ver(features)
        self.caps, self.answered = (ver, features), set()
        self.send(caps_presence(ver))
        return ver

    def _answer(self, el):
        ver, features = self.caps
        qry = el.find(q(NS_DISCO_INFO, "query"))
        if (el.tag != q(NS_CLIENT, "iq") or el.get("type") != "get" or qry is None
                or qry.get("node") != "%s#%s" % (CAPS_NODE, ver) or el.get("id") in self.answered):
            return False
        self.answered.add(el.get("id"))
        feats = "".join("<feature var='%s'/>" % f for f in features)
        self.send("<iq type='result' id='%s' to='%s'><query xmlns='%s' node='%s#%s'>"
                  "<identity category='client' type='pc' name='t'/>%s</query></iq>"
                  % (el.get("id"), el.get("from"), NS_DISCO_INFO, CAPS_NODE, ver, feats))
        return True

    async def wait_for(self, pred, timeout=10, what="element"):
        def wrapped(el):
            if self.caps and self._answer(el):
                return False
            return pred(el)
        return await super().wait_for(wrapped, timeout, what)

    async def pump(self, secs):
        """Read (and answer caps queries) for secs."""
        try:
            await self.wait_for(lambda el: False, secs, "nothing")
        except AssertionError:
            pass


async def caps_logins(stack, *accounts):
    return [await CapsClient.login(stack, acc, instance="c2s%d" % (1 + i % 2))
            for i, acc in enumerate(accounts)]


def is_event(node, item_id=None):
    def pred(el):
        ev = el.find(q(NS_EVENT, "event"))
        its = ev.find(q(NS_EVENT, "items")) if ev is not None else None
        if el.tag != q(NS_CLIENT, "message") or its is None or its.get("node") != node:
            return False
        return item_id is None or any(i.get("id") == item_id for i in its.findall(q(NS_EVENT, "item")))
    return pred


def events_in(c, node):
    return [e for e in c.others if is_event(node)(e)]


async def mutual(a, b):
    await make_contact(b, a)        # b follows a: a's nodes go to b (presence access)
    await make_contact(a, b)        # a follows b: a's sm sees b's presence


async def close_all(*clients):
    for c in clients:
        await c.close()


# ---------------------------------------------------------------------------------------
def test_omemo_devicelist_and_bundle_open_to_a_non_contact(stack, new_user):
    async def go():
        a, c = await logins(stack, new_user("om"), new_user("omx"))
        try:
            dl = "<list xmlns='%s'><device id='1234'/></list>" % NS_OMEMO
            r = ok(await a.iq("set", publish(OMEMO_DEVICES, dl, "current", options(access_model="open"))))
            pub = r.find("%s/%s" % (q(NS_PUBSUB, "pubsub"), q(NS_PUBSUB, "publish")))
            assert pub.get("node") == OMEMO_DEVICES
            assert pub.find(q(NS_PUBSUB, "item")).get("id") == "current"
            bundle_node = NS_OMEMO + ".bundles:1234"
            bundle = ("<bundle xmlns='%s'><signedPreKeyPublic signedPreKeyId='1'>AAAA"
                      "</signedPreKeyPublic><identityKey>BBBB</identityKey></bundle>" % NS_OMEMO)
            ok(await a.iq("set", publish(bundle_node, bundle, "current", options(access_model="open"))))
            # c has no subscription to a at all, and still reads both (open)
            its = items_of(await c.iq("get", items_req(OMEMO_DEVICES), to=a.bare), OMEMO_DEVICES)
            assert [i.get("id") for i in its] == ["current"]
            dev = its[0].find("%s/%s" % (q(NS_OMEMO, "list"), q(NS_OMEMO, "device")))
            assert dev.get("id") == "1234"
            its = items_of(await c.iq("get", items_req(bundle_node), to=a.bare), bundle_node)
            assert its[0].find(q(NS_OMEMO, "bundle")).find(q(NS_OMEMO, "identityKey")).text == "BBBB"
            # a node with the default access (presence) is not for c
            ok(await a.iq("set", publish("http://jabber.org/protocol/mood",
                                         "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>")))
            r = await c.iq("get", items_req("http://jabber.org/protocol/mood"), to=a.bare)
            assert condition(r) == "not-authorized" and app_condition(r) == [
                "presence-subscription-required"], describe(r)
            # republishing the devicelist with the same options replaces the item
            dl2 = "<list xmlns='%s'><device id='1234'/><device id='99'/></list>" % NS_OMEMO
            ok(await a.iq("set", publish(OMEMO_DEVICES, dl2, "current", options(access_model="open"))))
            its = items_of(await c.iq("get", items_req(OMEMO_DEVICES), to=a.bare), OMEMO_DEVICES)
            assert len(its) == 1 and len(its[0].find(q(NS_OMEMO, "list"))) == 2
        finally:
            await close_all(a, c)
    run(go())


def test_caps_notify_reaches_only_interested_resources_and_last_item_on_presence(stack, new_user):
    tag = secrets.token_hex(4)
    node1, node2 = "urn:test:tune:%s" % tag, "urn:test:mood:%s" % tag

    async def go():
        a_acc, b_acc = new_user("cpa"), new_user("cpb")
        a, b1 = await caps_logins(stack, a_acc, b_acc)
        b2 = await CapsClient.login(stack, b_acc, instance="c2s2")
        try:
            await mutual(a, b1)
            ok(await a.iq("set", publish(node1, "<tune xmlns='urn:test'>one</tune>", "i1")))
            f1 = ["http://jabber.org/protocol/caps", node1 + "+notify", "urn:test:" + tag]
            f2 = ["http://jabber.org/protocol/caps", node2 + "+notify", "urn:test:" + tag]
            v1, v2 = b1.show_caps(f1), b2.show_caps(f2)
            await b2.pump(0.3)
            # b1's caps are learnt: it gets node1's last item at once
            ev = await b1.wait_for(is_event(node1, "i1"), 10, "last item of node1")
            assert ev.get("from") == a.bare and ev.get("type") == "headline"
            # both hashes verified: cached for the whole cluster
            for v in (v1, v2):
                out = redis_cli(stack, "GET", "caps:sha-1:%s" % v).strip()
                assert node1 + "+notify" in out or node2 + "+notify" in out, out
            ok(await a.iq("set", publish(node1, "<tune xmlns='urn:test'>two</tune>", "i2")))
            await b1.wait_for(is_event(node1, "i2"), 10, "node1 event i2")
            ok(await a.iq("set", publish(node2, "<mood xmlns='urn:test'>three</mood>", "m1")))
            await b2.wait_for(is_event(node2, "m1"), 10, "node2 event m1")
            # b2 never asked for node1 (nor b1 for node2)
            assert events_in(b2, node1) == [], [describe(e) for e in b2.others]
            await b1.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=stack.domain)
            assert events_in(b1, node2) == []
        finally:
            await close_all(a, b1, b2)
    run(go())


def test_a_caps_hash_that_does_not_verify_is_not_cached(stack, new_user):
    tag = secrets.token_hex(4)
    node = "urn:test:bad:%s" % tag

    async def go():
        a_acc, b_acc = new_user("cba"), new_user("cbb")
        log = Log(stack, sm_for(a_acc[0]))
        a, good = await caps_logins(stack, a_acc, b_acc)
        liar = await CapsClient.login(stack, b_acc, instance="c2s2")
        try:
            await mutual(a, good)
            feats = ["http://jabber.org/protocol/caps", node + "+notify", "urn:test:" + tag]
            vgood = caps_ver(feats)
            vbad = caps_ver(feats + ["urn:test:not-there"])     # claims what it does not answer
            good.show_caps(feats)
            liar.show_caps(feats, ver=vbad)
            deadline = asyncio.get_running_loop().time() + 10
            while not log.lines("event=caps_unverified"):
                assert asyncio.get_running_loop().time() < deadline, "no caps_unverified in the log"
                await liar.pump(0.2)
                await good.pump(0.05)
            assert any(vbad in line for line in log.lines("event=caps_unverified"))
            assert redis_cli(stack, "EXISTS", "caps:sha-1:%s" % vbad).strip() == "0"
            ok(await a.iq("set", publish(node, "<x xmlns='urn:test'/>", "e1")))
            await good.wait_for(is_event(node, "e1"), 10, "event at the verified resource")
            await liar.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=stack.domain)
            assert events_in(liar, node) == [], [describe(e) for e in liar.others]
            assert len(log.lines("event=caps_unverified")) == 1     # logged once
        finally:
            await close_all(a, good, liar)
    run(go())


def test_bookmarks_stay_private_to_their_owner(stack, new_user):
    async def go():
        a, b = await logins(stack, new_user("bma"), new_user("bmb"))
        try:
            await mutual(a, b)
            opts = options(access_model="whitelist", persist_items="true", max_items="max")
            for room in ("one", "two"):
                conf = "<conference xmlns='%s' name='%s' autojoin='true'><nick>me</nick></conference>" % (
                    NS_BOOKMARKS, room)
                ok(await a.iq("set", publish(NS_BOOKMARKS, conf, "%s@conference.example.org" % room, opts)))
            its = items_of(await a.iq("get", items_req(NS_BOOKMARKS)), NS_BOOKMARKS)
            assert sorted(i.get("id") for i in its) == ["one@conference.example.org",
                                                         "two@conference.example.org"]
            its = items_of(await a.iq("get", items_req(NS_BOOKMARKS, " max_items='1'")), NS_BOOKMARKS)
            assert [i.get("id") for i in its] == ["two@conference.example.org"]
            its = items_of(await a.iq("get", items_req(NS_BOOKMARKS, "", "<item id='one@conference.example.org'/>")),
                           NS_BOOKMARKS)
            assert [i.get("id") for i in its] == ["one@conference.example.org"]
            r = await b.iq("get", items_req(NS_BOOKMARKS), to=a.bare)
            assert condition(r) in ("item-not-found", "forbidden", "not-allowed"), describe(r)
            # disco#items shows b the nodes it may see, not the bookmarks
            ok(await a.iq("set", publish("urn:xmpp:avatar:metadata",
                                         "<metadata xmlns='urn:xmpp:avatar:metadata'/>", "x")))
            r = ok(await b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=a.bare))
            nodes = {i.get("node") for i in r.find(q(NS_DISCO_ITEMS, "query"))}
            assert "urn:xmpp:avatar:metadata" in nodes and NS_BOOKMARKS not in nodes, describe(r)
            r = ok(await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to=a.bare))
            assert NS_BOOKMARKS in {i.get("node") for i in r.find(q(NS_DISCO_ITEMS, "query"))}
            # retract one (notify), then the other is left
            ok(await a.iq("set", "<pubsub xmlns='%s'><retract node='%s' notify='true'>"
                          "<item id='one@conference.example.org'/></retract></pubsub>" % (NS_PUBSUB, NS_BOOKMARKS)))
            its = items_of(await a.iq("get", items_req(NS_BOOKMARKS)), NS_BOOKMARKS)
            assert [i.get("id") for i in its] == ["two@conference.example.org"]
            r = await a.iq("set", "<pubsub xmlns='%s'><retract node='%s'><item id='gone'/></retract>"
                           "</pubsub>" % (NS_PUBSUB, NS_BOOKMARKS))
            assert condition(r) == "item-not-found"
        finally:
            await close_all(a, b)
    run(go())


def test_publish_errors_forbidden_too_big_precondition(stack, new_user):
    async def go():
        a, b = await logins(stack, new_user("pea"), new_user("peb"))
        try:
            await mutual(a, b)
            # another user's PEP
            r = await b.iq("set", publish("urn:test:n", "<x xmlns='urn:test'/>"), to=a.bare)
            assert condition(r) == "forbidden" and error_condition(r)[0] == "auth", describe(r)
            # over [sm] pep_max_item_bytes (16384 in the test stack)
            big = "<x xmlns='urn:test'>%s</x>" % ("A" * 20000)
            r = await a.iq("set", publish("urn:test:n", big))
            assert condition(r) == "not-acceptable" and app_condition(r) == ["payload-too-big"], describe(r)
            # no node attribute, no item
            r = await a.iq("set", "<pubsub xmlns='%s'><publish/></pubsub>" % NS_PUBSUB)
            assert condition(r) == "bad-request" and app_condition(r) == ["nodeid-required"]
            r = await a.iq("set", "<pubsub xmlns='%s'><publish node='urn:test:n'/></pubsub>" % NS_PUBSUB)
            assert condition(r) == "bad-request" and app_condition(r) == ["item-required"]
            # publish-options against an existing node's configuration
            ok(await a.iq("set", publish("urn:test:n", "<x xmlns='urn:test'/>", "1",
                                         options(access_model="open"))))
            r = await a.iq("set", publish("urn:test:n", "<x xmlns='urn:test'/>", "2",
                                          options(access_model="presence")))
            assert condition(r) == "conflict" and app_condition(r) == ["precondition-not-met"], describe(r)
            # generated item id
            r = ok(await a.iq("set", publish("urn:test:n", "<x xmlns='urn:test'/>", None,
                                             options(access_model="open"))))
            gen = r.find(".//%s" % q(NS_PUBSUB, "item")).get("id")
            assert gen and gen not in ("1", "2")
            # node configuration: get the form, set access to presence
            r = ok(await a.iq("get", "<pubsub xmlns='%s'><configure node='urn:test:n'/></pubsub>" % NS_OWNER))
            fields = {f.get("var"): f.find("{jabber:x:data}value").text
                      for f in r.iter("{jabber:x:data}field")}
            assert fields["pubsub#access_model"] == "open" and fields["pubsub#max_items"] == "1"
            r = await b.iq("get", "<pubsub xmlns='%s'><configure node='urn:test:n'/></pubsub>" % NS_OWNER,
                           to=a.bare)
            assert condition(r) == "forbidden"
            ok(await a.iq("set", "<pubsub xmlns='%s'><configure node='urn:test:n'>"
                          "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                          "<value>%s#node_config</value></field><field var='pubsub#access_model'>"
                          "<value>whitelist</value></field></x></configure></pubsub>" % (NS_OWNER, NS_PUBSUB)))
            r = await b.iq("get", items_req("urn:test:n"), to=a.bare)
            assert condition(r) == "item-not-found"
            # delete the node: gone for the owner too
            ok(await a.iq("set", "<pubsub xmlns='%s'><delete node='urn:test:n'/></pubsub>" % NS_OWNER))
            r = await a.iq("get", items_req("urn:test:n"))
            assert condition(r) == "item-not-found"
            # the account advertises PEP
            r = ok(await b.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=a.bare))
            qry = r.find(q(NS_DISCO_INFO, "query"))
            ids = {(i.get("category"), i.get("type")) for i in qry.findall(q(NS_DISCO_INFO, "identity"))}
            feats = {f.get("var") for f in qry.findall(q(NS_DISCO_INFO, "feature"))}
            assert ("pubsub", "pep") in ids
            assert {NS_PUBSUB + "#publish", NS_PUBSUB + "#publish-options"} <= feats
        finally:
            await close_all(a, b)
    run(go())


def test_items_survive_the_death_of_their_sm(stack, new_user):
    while True:                 # an account the router hashes to sm1
        a_acc = new_user("sur")
        if sm_for(a_acc[0]) == "sm1":
            break
    stack.wait_instances(present=("sm1", "sm2"))

    async def go():
        (a,) = await logins(stack, a_acc)
        try:
            ok(await a.iq("set", publish("urn:xmpp:avatar:data", "<data xmlns='urn:xmpp:avatar:data'>"
                                         "iVBORw0KGgo=</data>", "abc", options(access_model="open"))))
            await a.close()
            stack.stack("kill-proc", "sm1")
            await asyncio.to_thread(stack.wait_instances, absent=("sm1",), present=("sm2",))
            (a,) = await logins(stack, a_acc)
            its = items_of(await a.iq("get", items_req("urn:xmpp:avatar:data")), "urn:xmpp:avatar:data")
            assert [i.get("id") for i in its] == ["abc"]
            assert its[0].find("{urn:xmpp:avatar:data}data").text == "iVBORw0KGgo="
        finally:
            await a.close()
    try:
        run(go(), timeout=90)
    finally:
        stack.stack("start-proc", "sm1")
        stack.wait_instances(present=("sm1", "sm2"))


# ---- XEP-0398 and XEP-0411 (sm/pep_compat.c) ------------------------------------------
NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_PRIVATE = "jabber:iq:private"
NS_BM_LEGACY = "storage:bookmarks"


def avatar_image():
    img = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(600)
    return img, hashlib.sha1(img).hexdigest(), base64.b64encode(img).decode()


def photo_hash_of(el):
    """The <photo/> text of a presence's vcard-temp:x:update, "" for an
    empty one, None without it."""
    ph = el.find("%s/%s" % (q(NS_VCARD_UPDATE, "x"), q(NS_VCARD_UPDATE, "photo")))
    return None if ph is None else (ph.text or "")


def presence_from(full):
    return lambda el: (el.tag == q(NS_CLIENT, "presence") and el.get("from") == full
                       and not el.get("type"))


async def vcard_of(c, bare):
    r = ok(await c.iq("get", "<vCard xmlns='%s'/>" % NS_VCARD, to=bare))
    return r.find(q(NS_VCARD, "vCard"))


def test_pep_avatar_becomes_the_vcard_photo_and_the_presence_hash(stack, new_user):
    """XEP-0398 §3.1 and §4: a metadata publish writes the vCard PHOTO
    (from the data item, SHA-1 checked); own presence carries the hash
    unless it has a <photo/> of its own; the feature is on the account."""
    img, sha, b64 = avatar_image()

    async def go():
        a, b = await logins(stack, new_user("ava"), new_user("avb"))
        try:
            await mutual(a, b)
            r = ok(await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=a.bare))
            feats = {f.get("var") for f in r.find(q(NS_DISCO_INFO, "query"))}
            assert "urn:xmpp:pep-vcard-conversion:0" in feats, feats
            # before any avatar: no hash is made up
            a.send("<presence><status>one</status></presence>")
            p = await b.wait_for(lambda el: presence_from(a.full)(el) and
                                 el.findtext(q(NS_CLIENT, "status")) == "one", what="presence one")
            assert photo_hash_of(p) is None, describe(p)
            ok(await a.iq("set", publish(NS_AVATAR_DATA, "<data xmlns='%s'>%s</data>"
                                         % (NS_AVATAR_DATA, b64), sha)))
            ok(await a.iq("set", publish(NS_AVATAR_META,
                                         "<metadata xmlns='%s'><info id='%s' bytes='%d' type='image/png'"
                                         " width='8' height='8'/></metadata>" % (NS_AVATAR_META, sha, len(img)),
                                         sha)))
            v = await vcard_of(b, a.bare)       # anyone's vCard: public
            assert v is not None, "no vCard"
            assert v.findtext("%s/%s" % (q(NS_VCARD, "PHOTO"), q(NS_VCARD, "TYPE"))) == "image/png"
            got = v.findtext("%s/%s" % (q(NS_VCARD, "PHOTO"), q(NS_VCARD, "BINVAL")))
            assert got and base64.b64decode(got) == img
            # the hash in own presence, broadcast to the contact
            a.send("<presence><status>two</status></presence>")
            p = await b.wait_for(lambda el: presence_from(a.full)(el) and
                                 el.findtext(q(NS_CLIENT, "status")) == "two", what="presence two")
            assert photo_hash_of(p) == sha, describe(p)
            # an empty x is overwritten, an empty <photo/> is the client's word
            a.send("<presence><status>three</status><x xmlns='%s'/></presence>" % NS_VCARD_UPDATE)
            p = await b.wait_for(lambda el: presence_from(a.full)(el) and
                                 el.findtext(q(NS_CLIENT, "status")) == "three", what="presence three")
            assert photo_hash_of(p) == sha, describe(p)
            a.send("<presence><status>four</status><x xmlns='%s'><photo/></x></presence>" % NS_VCARD_UPDATE)
            p = await b.wait_for(lambda el: presence_from(a.full)(el) and
                                 el.findtext(q(NS_CLIENT, "status")) == "four", what="presence four")
            assert photo_hash_of(p) == "", describe(p)
        finally:
            await close_all(a, b)
    run(go())


def test_vcard_photo_is_published_as_the_pep_avatar(stack, new_user):
    """XEP-0398 §3.2: a vCard set with a PHOTO publishes the data item
    (id = SHA-1 hex) and then the metadata with the vCard's type; a
    contact reads both (presence access)."""
    img, sha, b64 = avatar_image()
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))

    async def go():
        a, b = await logins(stack, new_user("vca"), new_user("vcb"))
        try:
            await mutual(a, b)
            ok(await a.iq("set", "<vCard xmlns='%s'><FN>A</FN><PHOTO><TYPE>image/jpeg</TYPE>"
                          "<BINVAL>%s</BINVAL></PHOTO></vCard>" % (NS_VCARD, wrapped)))
            its = items_of(await a.iq("get", items_req(NS_AVATAR_META)), NS_AVATAR_META)
            assert [i.get("id") for i in its] == [sha]
            info = its[0].find("%s/%s" % (q(NS_AVATAR_META, "metadata"), q(NS_AVATAR_META, "info")))
            assert info is not None and info.get("id") == sha, describe(its[0])
            assert info.get("type") == "image/jpeg" and int(info.get("bytes")) == len(img)
            its = items_of(await b.iq("get", items_req(NS_AVATAR_DATA), to=a.bare), NS_AVATAR_DATA)
            assert [i.get("id") for i in its] == [sha]
            data = its[0].findtext(q(NS_AVATAR_DATA, "data"))
            assert data and base64.b64decode(data) == img
            # the vCard itself is kept as set (FN and all)
            v = await vcard_of(a, a.bare)
            assert v.findtext(q(NS_VCARD, "FN")) == "A"
            # and the presence hash follows
            a.send("<presence><status>v</status></presence>")
            p = await b.wait_for(lambda el: presence_from(a.full)(el) and
                                 el.findtext(q(NS_CLIENT, "status")) == "v", what="presence")
            assert photo_hash_of(p) == sha, describe(p)
        finally:
            await close_all(a, b)
    run(go())


def private_bookmarks(r):
    ok(r)
    st = r.find("%s/%s" % (q(NS_PRIVATE, "query"), q(NS_BM_LEGACY, "storage")))
    assert st is not None, describe(r)
    return {c.get("jid"): c for c in st.findall(q(NS_BM_LEGACY, "conference"))}


def test_bookmarks_compat_private_storage_and_pep_stay_in_step(stack, new_user):
    """XEP-0411: PEP bookmarks (XEP-0402) appear in private storage
    (XEP-0048), and a private-storage set becomes the PEP node's items
    (published whitelist, the ones no longer listed retracted)."""
    get_private = "<query xmlns='%s'><storage xmlns='%s'/></query>" % (NS_PRIVATE, NS_BM_LEGACY)

    async def go():
        (a,) = await logins(stack, new_user("bmc"))
        try:
            r = ok(await a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=a.bare))
            assert NS_BOOKMARKS + "#compat" in {f.get("var") for f in r.find(q(NS_DISCO_INFO, "query"))}
            opts = options(access_model="whitelist", persist_items="true", max_items="max")
            conf = ("<conference xmlns='%s' name='One' autojoin='true'><nick>me</nick>"
                    "</conference>" % NS_BOOKMARKS)
            ok(await a.iq("set", publish(NS_BOOKMARKS, conf, "one@conference.example.org", opts)))
            got = private_bookmarks(await a.iq("get", get_private))
            assert list(got) == ["one@conference.example.org"]
            c = got["one@conference.example.org"]
            assert c.get("name") == "One" and c.get("autojoin") == "true"
            assert c.findtext(q(NS_BM_LEGACY, "nick")) == "me"
            # a legacy client writes two others: PEP follows, "one" retracted
            ok(await a.iq("set", "<query xmlns='%s'><storage xmlns='%s'>"
                          "<conference jid='two@conference.example.org' name='Two' autojoin='1'>"
                          "<nick>n2</nick></conference>"
                          "<conference jid='three@conference.example.org' autojoin='false'/>"
                          "</storage></query>" % (NS_PRIVATE, NS_BM_LEGACY)))
            its = items_of(await a.iq("get", items_req(NS_BOOKMARKS)), NS_BOOKMARKS)
            byid = {i.get("id"): i for i in its}
            assert sorted(byid) == ["three@conference.example.org", "two@conference.example.org"]
            two = byid["two@conference.example.org"].find(q(NS_BOOKMARKS, "conference"))
            assert two.get("name") == "Two" and two.get("autojoin") in ("true", "1")
            assert two.findtext(q(NS_BOOKMARKS, "nick")) == "n2"
            r = ok(await a.iq("get", "<pubsub xmlns='%s'><configure node='%s'/></pubsub>"
                              % (NS_OWNER, NS_BOOKMARKS)))
            vals = {f.get("var"): f.findtext("{jabber:x:data}value")
                    for f in r.iter("{jabber:x:data}field")}
            assert vals["pubsub#access_model"] == "whitelist", vals
            # a PEP retract shows in private storage
            ok(await a.iq("set", "<pubsub xmlns='%s'><retract node='%s' notify='true'>"
                          "<item id='three@conference.example.org'/></retract></pubsub>"
                          % (NS_PUBSUB, NS_BOOKMARKS)))
            got = private_bookmarks(await a.iq("get", get_private))
            assert list(got) == ["two@conference.example.org"]
        finally:
            await close_all(a)
    run(go())
