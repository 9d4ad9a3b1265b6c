"""Bearer-token logins: SASL X-OAUTH2 and OAUTHBEARER (RFC 7628) with our
own tokens (`sbctl token issue|list|revoke`) and with JWTs (HS256 and
RS256, keys made here with openssl), on domains whose [domain.NAME]
`tokens` names a source; never without TLS, never on other domains."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time

import pytest

from xmpptest import (domains_with_config, NS_SASL, Log, RawStream, close, describe, login, mechanisms,
                      run, stream_error_condition, wait_until)

NS_STREAM = "http://etherx.jabber.org/streams"


def b64(data):
    return base64.b64encode(data).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ------------------------------------------------------------------ set-up
class TokenDomains:
    """Two fresh domains with token sources, and one without:
    own  — tokens = own jwt, JWT HS256 (issuer/audience checked), no auto_create
    rsa  — tokens = jwt own, JWT RS256, auto_create, user claim `preferred_username`
    none — no token source."""

    def __init__(self, stack, tmp):
        tag = secrets.token_hex(3)
        self.own = "tok%s.localhost" % tag
        self.rsa = "jwt%s.localhost" % tag
        self.none = "notok%s.localhost" % tag
        self.secret = secrets.token_bytes(32)
        self.secret_file = os.path.join(tmp, "hs256.secret")
        with open(self.secret_file, "wb") as f:
            f.write(self.secret + b"\n")   # trailing newline: not part of the secret
        self.rsa_key = os.path.join(tmp, "rsa.key")
        self.rsa_pub = os.path.join(tmp, "rsa.pub")
        self.other_key = os.path.join(tmp, "other.key")
        for k in (self.rsa_key, self.other_key):
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                            "rsa_keygen_bits:2048", "-out", k], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", self.rsa_key, "-pubout", "-out", self.rsa_pub],
                       check=True, capture_output=True)
        self.section = (
            "\n[domain.%s]\ntokens = own jwt\njwt_alg = HS256\njwt_key = %s\n"
            "jwt_issuer = https://idp.test\njwt_audience = xmpp-test\n"
            "\n[domain.%s]\ntokens = jwt own\njwt_alg = RS256\njwt_key = %s\n"
            "jwt_user_claim = preferred_username\nauto_create = yes\n"
            % (self.own, self.secret_file, self.rsa, self.rsa_pub))

    def hs256(self, claims, key=None, alg="HS256"):
        head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        signing = ("%s.%s" % (head, body)).encode()
        if alg == "none":
            return "%s.%s." % (head, body)
        sig = hmac.new(key or self.secret, signing, hashlib.sha256).digest()
        return "%s.%s.%s" % (head, body, b64url(sig))

    def rs256(self, claims, key=None):
        head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        signing = ("%s.%s" % (head, body)).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key or self.rsa_key],
                             input=signing, check=True, capture_output=True).stdout
        return "%s.%s.%s" % (head, body, b64url(sig))


@pytest.fixture(scope="module")
def doms(stack, tmp_path_factory):
    d = TokenDomains(stack, str(tmp_path_factory.mktemp("tokens")))
    with domains_with_config(stack, (d.own, d.rsa, d.none), d.section):
        yield d


def add_user(stack, domain):
    node = "t%s" % secrets.token_hex(4)
    stack.sbctl("user", "add", "%s@%s" % (node, domain), secrets.token_urlsafe(10))
    return node


def issue(stack, jid, *args):
    p = stack.sbctl("token", "issue", jid, *args, "--json")
    return json.loads(p.stdout)


def claims(d, sub, **over):
    now = int(time.time())
    c = {"sub": sub, "iss": "https://idp.test", "aud": "xmpp-test", "iat": now, "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


async def tls_stream(stack, domain):
    s = RawStream(stack, to=domain)
    await s.connect()
    s.open_stream()
    await s.features()
    return s, await s.starttls()


async def auth(s, mech, raw):
    s.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (NS_SASL, mech, b64(raw) if raw else "="))
    return await s.element()


def xoauth2(user, token, authzid=""):
    return authzid.encode() + b"\0" + user.encode() + b"\0" + token.encode()


def oauthbearer(token, authzid=None):
    gs2 = "n,a=%s," % authzid if authzid else "n,,"
    return (gs2 + "\x01host=localhost\x01port=5222\x01auth=Bearer %s\x01\x01" % token).encode()


def tag(el, name):
    return el is not None and el.tag == "{%s}%s" % (NS_SASL, name)


def condition(el):
    assert tag(el, "failure"), describe(el)
    return [c.tag.split("}", 1)[1] for c in el if not c.tag.endswith("}text")][0]


async def bind_after_success(s):
    s.open_stream()
    feats = await s.features()
    assert feats.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None, describe(feats)
    return await s.bind()


async def xoauth2_login(stack, domain, user, token):
    """X-OAUTH2 over STARTTLS: the SASL answer element (success or failure)."""
    s, _ = await tls_stream(stack, domain)
    try:
        return await auth(s, "X-OAUTH2", xoauth2(user, token))
    finally:
        await s.close()


async def oauthbearer_refused(stack, domain, token, authzid=None):
    """OAUTHBEARER that must be refused: the JSON error challenge, our
    "\\x01", then <failure><not-authorized/>."""
    s, _ = await tls_stream(stack, domain)
    try:
        ch = await auth(s, "OAUTHBEARER", oauthbearer(token, authzid))
        assert tag(ch, "challenge"), describe(ch)
        err = json.loads(base64.b64decode(ch.text))
        assert err["status"] == "invalid_token", err
        s.send("<response xmlns='%s'>%s</response>" % (NS_SASL, b64(b"\x01")))
        assert condition(await s.element()) == "not-authorized"
    finally:
        await s.close()


# ------------------------------------------------------------------ offering
def test_token_mechanisms_offered_only_under_tls_and_only_on_token_domains(stack, doms):
    async def go():
        s = RawStream(stack, to=doms.own)
        await s.connect()
        s.open_stream()
        before = mechanisms(await s.features())
        feats = await s.starttls()
        after = mechanisms(feats)
        await s.close()
        assert "X-OAUTH2" not in before and "OAUTHBEARER" not in before, before
        assert "X-OAUTH2" in after and "OAUTHBEARER" in after, after
        assert "SCRAM-SHA-256" in after, after          # passwords keep working
        for dom in (doms.none, stack.domain):
            s, feats = await tls_stream(stack, dom)
            m = mechanisms(feats)
            assert "X-OAUTH2" not in m and "OAUTHBEARER" not in m, (dom, m)
            # asked for anyway: not offered here
            assert condition(await auth(s, "X-OAUTH2", xoauth2("x", "sbt_x"))) == \
                "invalid-mechanism"
            await s.close()
    run(go())


# ------------------------------------------------------------------ our own tokens
def test_issued_token_logs_in_with_x_oauth2_and_oauthbearer(stack, doms):
    node = add_user(stack, doms.own)
    jid = "%s@%s" % (node, doms.own)
    tok = issue(stack, jid, "--ttl", "600")
    assert tok["token"].startswith("sbt_") and tok["id"] > 0

    async def go():
        s, _ = await tls_stream(stack, doms.own)
        assert tag(await auth(s, "X-OAUTH2", xoauth2(node, tok["token"])), "success")
        assert (await bind_after_success(s)).startswith(jid + "/")
        await s.close()
        # OAUTHBEARER with a=user@domain, and without (the user is the token's)
        for authzid in (jid, None):
            s, _ = await tls_stream(stack, doms.own)
            el = await auth(s, "OAUTHBEARER", oauthbearer(tok["token"], authzid))
            assert tag(el, "success"), describe(el)
            assert (await bind_after_success(s)).startswith(jid + "/")
            await s.close()
        # slixmpp's own X-OAUTH2
        xmpp = None
        try:
            xmpp = await login(stack, jid, "unused", mech="X-OAUTH2", access_token=tok["token"])
            assert str(xmpp.boundjid.bare) == jid
        finally:
            await close(xmpp)
    run(go())

    listed = json.loads(stack.sbctl("token", "list", jid, "--json").stdout)
    assert [t["id"] for t in listed] == [tok["id"]]
    assert listed[0]["last_used"] is not None and listed[0]["scope"] == "xmpp"
    assert tok["token"] not in stack.sbctl("token", "list", jid).stdout


def test_bad_own_tokens_are_not_authorized_and_logged_without_the_token(stack, doms):
    node = add_user(stack, doms.own)
    other = add_user(stack, doms.own)
    jid = "%s@%s" % (node, doms.own)
    expired = issue(stack, jid, "--ttl", "1")
    good = issue(stack, jid)
    revoked = issue(stack, jid)
    stack.sbctl("token", "revoke", str(revoked["id"]), jid)
    # a token for another domain does not work here (the same local part)
    twin = add_user(stack, doms.own)
    stack.sbctl("user", "add", "%s@%s" % (twin, doms.rsa), "pw-unused-1")
    foreign = issue(stack, "%s@%s" % (twin, doms.own))
    time.sleep(1.1)   # the 1 s token's lifetime, not a wait for the server
    log = Log(stack, "c2s1")

    async def go():
        cases = [
            (node, expired["token"], "expired"),
            (node, revoked["token"], "unknown-or-revoked"),
            (node, "sbt_" + "A" * 43, "unknown-or-revoked"),
            (other, good["token"], "user-mismatch"),          # someone else's token
        ]
        for user, token, reason in cases:
            assert condition(await xoauth2_login(stack, doms.own, user, token)) == \
                "not-authorized", reason
        for user, token, _ in cases:
            await oauthbearer_refused(stack, doms.own, token,
                                      "%s@%s" % (user, doms.own))
        # the token of twin@own presented as twin@rsa
        el = await xoauth2_login(stack, doms.rsa, twin, foreign["token"])
        assert condition(el) == "not-authorized"
        # malformed: no token field
        s, _ = await tls_stream(stack, doms.own)
        assert condition(await auth(s, "OAUTHBEARER", b"n,,\x01host=x\x01\x01")) == \
            "malformed-request"
        await s.close()
    run(go())
    text = log.text()
    for reason in ("expired", "unknown-or-revoked", "user-mismatch"):
        assert "reason=%s" % reason in text, text[-2000:]
    for t in (expired, good, revoked):
        assert t["token"] not in text


def test_revoking_a_token_ends_the_sessions_that_used_it_only(stack, doms):
    node = add_user(stack, doms.own)
    jid = "%s@%s" % (node, doms.own)
    t1, t2 = issue(stack, jid), issue(stack, jid)

    async def token_session(token):
        s, _ = await tls_stream(stack, doms.own)
        assert tag(await auth(s, "X-OAUTH2", xoauth2(node, token)), "success")
        await bind_after_success(s)
        return s

    async def go():
        a = await token_session(t1["token"])
        b = await token_session(t2["token"])
        out = await asyncio.to_thread(stack.sbctl, "token", "revoke", str(t1["id"]), jid,
                                      "--json")
        ans = json.loads(out.stdout)
        assert ans["revoked"] == 1 and ans["sessions_ended"] == 1, ans
        el = await a.element(timeout=10)
        assert stream_error_condition(el) == "not-authorized", describe(el)
        # the other token's session is still served: it answers a ping
        b.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await b.element(timeout=10)
        assert pong is not None and pong.get("id") == "p1", describe(pong)
        out = await asyncio.to_thread(stack.sbctl, "token", "revoke", "--all", jid, "--json")
        assert json.loads(out.stdout)["sessions_ended"] == 1
        assert stream_error_condition(await b.element(timeout=10)) == "not-authorized"
        await a.close()
        await b.close()
        # and the revoked tokens no longer log in
        assert condition(await xoauth2_login(stack, doms.own, node, t1["token"])) == \
            "not-authorized"
    run(go())
    assert "(no tokens)" in stack.sbctl("token", "list", jid).stdout


def test_token_issue_needs_an_existing_account(stack, doms):
    p = stack.sbctl("token", "issue", "nobody%s@%s" % (secrets.token_hex(3), doms.own),
                    check=False)
    assert p.returncode == 1 and "no such user" in p.stderr


# ------------------------------------------------------------------ JWT
def test_jwt_hs256_logs_in_and_bad_ones_are_refused(stack, doms):
    node = add_user(stack, doms.own)
    now = int(time.time())
    good = doms.hs256(claims(doms, node))

    async def go():
        s, _ = await tls_stream(stack, doms.own)
        assert tag(await auth(s, "X-OAUTH2", xoauth2(node, good)), "success")
        assert (await bind_after_success(s)).startswith("%s@%s/" % (node, doms.own))
        await s.close()
        # case → (token, the reason c2s logs)
        bad = {
            "wrong-signature": (doms.hs256(claims(doms, node), key=b"not the secret"),
                                "bad-signature"),
            "alg-none": (doms.hs256(claims(doms, node), alg="none"), "alg-none"),
            "expired": (doms.hs256(claims(doms, node, exp=now - 600)), "expired"),
            "not-yet": (doms.hs256(claims(doms, node, nbf=now + 600)), "not-yet-valid"),
            "wrong-aud": (doms.hs256(claims(doms, node, aud="someone-else")), "wrong-audience"),
            "wrong-iss": (doms.hs256(claims(doms, node, iss="https://evil.test")),
                          "wrong-issuer"),
            "no-exp": (doms.hs256(claims(doms, node, exp=None)), "no-exp"),
            "rs256-on-hs256": (doms.rs256(claims(doms, node)), "alg-not-allowed"),
            "other-domain-sub": (doms.hs256(claims(doms, "%s@%s" % (node, doms.rsa))),
                                 "other-domain"),
            "garbage": ("a.b.c", "malformed"),
        }
        for why, (token, reason) in bad.items():
            log = Log(stack, "c2s1")
            el = await xoauth2_login(stack, doms.own, node, token)
            assert condition(el) == "not-authorized", why
            wait_until(lambda: log.lines("reason=%s" % reason), 5, "log reason=%s" % reason)
            assert token not in log.text()
        await oauthbearer_refused(stack, doms.own, bad["alg-none"][0])
        await oauthbearer_refused(stack, doms.own, bad["expired"][0])
        # no account and no auto_create on this domain
        ghost = doms.hs256(claims(doms, "ghost%s" % secrets.token_hex(3)))
        await oauthbearer_refused(stack, doms.own, ghost)
    run(go())


def test_jwt_rs256_with_auto_create_and_a_bare_jid_claim(stack, doms):
    node = "new%s" % secrets.token_hex(4)
    jid = "%s@%s" % (node, doms.rsa)
    c = claims(doms, "ignored", preferred_username=jid, iss=None, aud=None)
    token = doms.rs256(c)

    async def go():
        s, _ = await tls_stream(stack, doms.rsa)
        el = await auth(s, "OAUTHBEARER", oauthbearer(token))
        assert tag(el, "success"), describe(el)
        assert (await bind_after_success(s)).startswith(jid + "/")
        await s.close()
        # signed by another key
        await oauthbearer_refused(stack, doms.rsa, doms.rs256(c, key=doms.other_key))
        # the HS256 trick: the public key's PEM text used as the HMAC secret
        with open(doms.rsa_pub, "rb") as f:
            pem = f.read().rstrip(b"\n")
        await oauthbearer_refused(stack, doms.rsa, doms.hs256(c, key=pem))
    run(go())
    # the account row exists now
    assert node in stack.sbctl("user", "list", doms.rsa).stdout
