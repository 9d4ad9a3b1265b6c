"""LDAP directory logins: a domain with `auth = ldap` checks PLAIN
passwords against a real slapd (Debian's, started here as our own
process on loopback with a config and database under the test var dir),
search-then-bind with a service account. One domain reaches it with
StartTLS, one with ldaps:// and a cache of successful logins. Such a
domain offers PLAIN under TLS only, never SCRAM; the account row is made
on the first login; the user name is escaped in the filter; the
directory down is temporary-auth-failure (logged once) while other
domains keep logging in, and logins work again when it is back."""

import os
import secrets
import shutil
import time

import pytest

from slapd import SUFFIX, Slapd as SharedSlapd

from xmpptest import (NS_SASL, Log, RawStream, close, domains_with_config, login, mechanisms, run,
                      wait_until)

OFFSET = int(os.environ.get("SB_TEST_PORT_OFFSET", "0") or 0)
LDAP_PORT = 25389 + OFFSET          # column 89/88 of the test ports: unused by the stack
LDAPS_PORT = 25388 + OFFSET
TIMEOUT = 2


class Slapd(SharedSlapd):
    """The private slapd of slapd.py with two users and a service account."""

    def __init__(self, stack, top):
        tls = os.path.join(stack.env["SB_VAR"], "tls")
        super().__init__(top, os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem"),
                         LDAP_PORT, LDAPS_PORT)
        # the test profile's second domain has a certificate of its own
        self.other_cert = os.path.join(tls, "domains", stack.env["SB_TLS_DOMAIN"] + ".pem")
        self.alice_pw = secrets.token_urlsafe(9)
        self.bob_pw = "bob pw (with *) and \\ spaces"

    def populate(self):
        super().populate({"alice": self.alice_pw, "bob": self.bob_pw})


class LdapDomains:
    def __init__(self, slapd, tmp):
        tag = secrets.token_hex(3)
        self.tls = "ldap%s.localhost" % tag          # StartTLS, no cache
        self.ldaps = "ldaps%s.localhost" % tag       # ldaps://, cache of successful logins
        self.badca = "ldapx%s.localhost" % tag       # ldaps:// with a CA that did not sign it
        pwfile = os.path.join(tmp, "svc-password")
        with open(pwfile, "w") as f:
            f.write(slapd.svc_pw + "\n")
        common = ("auth = ldap\nldap_ca_file = %s\nldap_bind_dn = cn=svc,%s\n"
                  "ldap_bind_password_file = %s\nldap_base = ou=people,%s\nldap_uid_attr = uid\n"
                  "ldap_filter = (objectClass=inetOrgPerson)\nldap_timeout = %d\nldap_pool = 2\n"
                  % (slapd.cert, SUFFIX, pwfile, SUFFIX, TIMEOUT))
        self.section = ("\n[domain.%s]\n%sldap_uri = ldap://127.0.0.1:%d\nldap_starttls = 1\n"
                        "\n[domain.%s]\n%sldap_uri = ldaps://127.0.0.1:%d\nldap_cache_ttl = 300\n"
                        % (self.tls, common, LDAP_PORT, self.ldaps, common, LDAPS_PORT))
        # the same settings but ldap_ca_file: another self-signed certificate
        other_ca = os.path.join(tmp, "other-ca.pem")
        with open(slapd.other_cert) as f, open(other_ca, "w") as out:
            pem = f.read()
            out.write(pem[:pem.index("-----END CERTIFICATE-----") + 26])
        self.section += ("\n[domain.%s]\n%sldap_uri = ldaps://127.0.0.1:%d\n"
                         % (self.badca, common.replace(slapd.cert, other_ca), LDAPS_PORT))

    def names(self):
        return (self.tls, self.ldaps, self.badca)


@pytest.fixture(scope="module")
def slapd(stack, tmp_path_factory):
    assert shutil.which("/usr/sbin/slapd"), "slapd is missing (deploy/dev/packages.txt)"
    top = os.path.join(stack.env["SB_VAR"], "slapd-%s" % secrets.token_hex(3))
    s = Slapd(stack, top)
    s.start()
    try:
        s.populate()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def ldap(stack, slapd, tmp_path_factory):
    d = LdapDomains(slapd, str(tmp_path_factory.mktemp("ldap")))
    with domains_with_config(stack, d.names(), d.section):
        yield d


async def tls_stream(stack, domain):
    s = RawStream(stack, to=domain)
    await s.connect()
    s.open_stream()
    await s.features()
    return s, await s.starttls()


async def plain(stack, domain, user, password):
    """The SASL outcome of PLAIN: 'success' or the failure condition."""
    s, _ = await tls_stream(stack, domain)
    el = await s.auth_plain("%s@%s" % (user, domain), password)
    await s.close()
    if el is not None and el.tag == "{%s}success" % NS_SASL:
        return "success"
    if el is None or el.tag != "{%s}failure" % NS_SASL or not len(el):
        return "no-answer: %r" % el
    return el[0].tag.split("}")[1]


def users_of(stack, domain):
    return stack.sbctl("user", "list", domain).stdout


def test_ldap_domain_offers_plain_not_scram(stack, ldap):
    async def go():
        s = RawStream(stack, to=ldap.tls)
        await s.connect()
        s.open_stream()
        before = mechanisms(await s.features())
        after = await s.starttls()
        s.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPWFiY2Q=</auth>"
               % NS_SASL)
        el = await s.element()
        await s.close()
        return before, mechanisms(after), after, el
    before, got, feats, el = run(go())
    assert "PLAIN" not in before                  # not before TLS
    assert got == ["PLAIN"]
    assert not [e for e in feats.iter() if e.tag.endswith("}sasl-channel-binding")]
    assert el.tag == "{%s}failure" % NS_SASL and el[0].tag == "{%s}invalid-mechanism" % NS_SASL


def test_ldap_login_over_starttls_creates_account(stack, slapd, ldap):
    assert "alice" not in users_of(stack, ldap.tls)
    log = Log(stack, "c2s1")

    async def go():
        xmpp = await login(stack, "alice@%s" % ldap.tls, slapd.alice_pw, mech="PLAIN")
        jid = str(xmpp.boundjid)
        await close(xmpp)
        return jid
    assert run(go()).startswith("alice@%s/" % ldap.tls)
    assert "alice" in users_of(stack, ldap.tls)
    assert log.lines("event=account_auto_created") and log.lines("backend=ldap")
    # a password with spaces, '*' and '\' is bound as typed
    assert run(plain(stack, ldap.tls, "bob", slapd.bob_pw)) == "success"


def test_ldap_wrong_password_and_unknown_user_are_not_authorized(stack, slapd, ldap):
    log = Log(stack, "c2s1")
    assert run(plain(stack, ldap.tls, "alice", "wrong")) == "not-authorized"
    assert run(plain(stack, ldap.tls, "nobody", slapd.alice_pw)) == "not-authorized"
    # the service account is no XMPP user (the filter wants inetOrgPerson)
    assert run(plain(stack, ldap.tls, "svc", slapd.svc_pw)) == "not-authorized"
    assert log.lines("reason=wrong-password") and log.lines("reason=no-such-user")
    assert "nobody" not in users_of(stack, ldap.tls)


def test_ldap_filter_injection_fails(stack, slapd, ldap):
    # unescaped, "alic*" would find alice and bind her with her password;
    # "*)(uid=*" would widen the filter
    for name in ("alic*", "*)(uid=*", "*", "alice)(objectClass=*"):
        assert run(plain(stack, ldap.tls, name, slapd.alice_pw)) == "not-authorized", name


def test_ldaps_domain_logs_in(stack, slapd, ldap):
    assert run(plain(stack, ldap.ldaps, "alice", slapd.alice_pw)) == "success"
    assert run(plain(stack, ldap.ldaps, "alice", "wrong")) == "not-authorized"


def test_ldaps_certificate_not_from_the_ca_file_is_refused(stack, slapd, ldap):
    log = Log(stack, "c2s1")
    assert run(plain(stack, ldap.badca, "alice", slapd.alice_pw)) == "temporary-auth-failure"
    assert [ln for ln in log.lines("event=ldap_down") if ldap.badca in ln]
    assert "alice" not in users_of(stack, ldap.badca)


def test_ldap_down_is_temporary_failure_and_comes_back(stack, slapd, ldap):
    # a cached login on the ldaps domain (ldap_cache_ttl) before the outage
    assert run(plain(stack, ldap.ldaps, "bob", slapd.bob_pw)) == "success"
    log = Log(stack, "c2s1")
    slapd.stop()
    try:
        t0 = time.monotonic()
        assert run(plain(stack, ldap.tls, "alice", slapd.alice_pw)) == "temporary-auth-failure"
        assert time.monotonic() - t0 < 2 * TIMEOUT + 5         # bounded, not a hang
        assert run(plain(stack, ldap.tls, "bob", slapd.bob_pw)) == "temporary-auth-failure"

        # other domains keep logging in meanwhile
        async def other():
            xmpp = await login(stack, *stack.add_user("ld"))
            await close(xmpp)
            return True
        assert run(other())
        # the cache answers for a login it has seen, not for another password
        assert run(plain(stack, ldap.ldaps, "bob", slapd.bob_pw)) == "success"
        assert run(plain(stack, ldap.ldaps, "bob", "other")) == "temporary-auth-failure"
        assert log.lines("reason=directory-unavailable")
        down = [ln for ln in log.lines("event=ldap_down") if ldap.tls in ln]
        assert len(down) == 1, down                            # one line per outage
    finally:
        slapd.start()

    def works():
        return run(plain(stack, ldap.tls, "alice", slapd.alice_pw)) == "success"
    wait_until(works, 30, "LDAP logins to work again", interval=0.5)
    assert [ln for ln in log.lines("event=ldap_up") if ldap.tls in ln]
