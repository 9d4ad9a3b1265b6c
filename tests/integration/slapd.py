"""A private slapd (Debian's) for LDAP directory logins (`auth = ldap`):
started as our own process on loopback with a slapd.conf and an mdb
database under a directory of the caller's, a service account `cn=svc`
and people under ou=people. Used by tests/integration/test_ldap.py and by
the `logins` scenario of `make bench` (tests/bench/logins.py)."""

import base64
import hashlib
import os
import secrets
import signal
import subprocess
import time

SUFFIX = "dc=example,dc=org"


def ssha(pw):
    """{SSHA} userPassword value (what slappasswd makes), computed here so
    that thousands of entries need no process each."""
    salt = secrets.token_bytes(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(pw.encode() + salt).digest() + salt).decode()


class Slapd:
    def __init__(self, top, cert, key, port, ldaps_port=None):
        self.dir, self.cert, self.port, self.ldaps_port = top, cert, port, ldaps_port
        self.admin_pw = secrets.token_urlsafe(9)
        self.svc_pw = secrets.token_urlsafe(9)
        os.makedirs(os.path.join(top, "db"), exist_ok=True)
        self.pidfile = os.path.join(top, "slapd.pid")
        self.conf = os.path.join(top, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write("""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %(pid)s
TLSCertificateFile %(cert)s
TLSCertificateKeyFile %(key)s
database mdb
suffix "%(suffix)s"
rootdn "cn=admin,%(suffix)s"
rootpw %(admin)s
directory %(db)s
maxsize 104857600
access to attrs=userPassword by anonymous auth by * none
access to * by * read
""" % {"pid": self.pidfile, "cert": cert, "key": key, "suffix": SUFFIX,
       "admin": self.admin_pw, "db": os.path.join(top, "db")})
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "slapd.log"), "ab")
        urls = "ldap://127.0.0.1:%d/" % self.port
        if self.ldaps_port:
            urls += " ldaps://127.0.0.1:%d/" % self.ldaps_port
        # -d 0: stays in the foreground (our child), logs nothing
        self.proc = subprocess.Popen(["/usr/sbin/slapd", "-f", self.conf, "-d", "0", "-h", urls],
                                     stdout=self.log, stderr=self.log)
        end = time.monotonic() + 15
        while self.ldap("ldapsearch", "-b", SUFFIX, "-s", "base",
                        check=False).returncode not in (0, 32):
            if time.monotonic() > end:
                raise AssertionError("slapd did not answer on %d" % self.port)
            time.sleep(0.2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def ldap(self, tool, *args, stdin=None, check=True, timeout=15):
        p = subprocess.run([tool, "-x", "-H", "ldap://127.0.0.1:%d" % self.port,
                            "-D", "cn=admin," + SUFFIX, "-w", self.admin_pw, *args],
                           input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s failed: %s%s" % (tool, p.stdout, p.stderr))
        return p

    def populate(self, people):
        """The base entries, the service account and people: {uid: password}."""
        ldif = ["dn: %(s)s\nobjectClass: dcObject\nobjectClass: organization\no: test\n"
                "dc: example\n\ndn: ou=people,%(s)s\nobjectClass: organizationalUnit\n"
                "ou: people\n\ndn: cn=svc,%(s)s\nobjectClass: person\ncn: svc\nsn: svc\n"
                "userPassword: %(svc)s\n" % {"s": SUFFIX, "svc": ssha(self.svc_pw)}]
        for uid, pw in people.items():
            ldif.append("dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\n"
                        "cn: %s\nsn: %s\nuserPassword: %s\n" % (uid, SUFFIX, uid, uid, uid,
                                                                 ssha(pw)))
        self.ldap("ldapadd", stdin="\n".join(ldif), timeout=300)

    def domain_section(self, name, pwfile, timeout=5, **extra):
        """An `auth = ldap` [domain.NAME] section reaching this directory with
        StartTLS through the service account (its password written to pwfile)."""
        with open(pwfile, "w") as f:
            f.write(self.svc_pw + "\n")
        keys = dict({"auth": "ldap", "ldap_uri": "ldap://127.0.0.1:%d" % self.port,
                     "ldap_starttls": "1", "ldap_ca_file": self.cert,
                     "ldap_bind_dn": "cn=svc," + SUFFIX, "ldap_bind_password_file": pwfile,
                     "ldap_base": "ou=people," + SUFFIX, "ldap_uid_attr": "uid",
                     "ldap_filter": "(objectClass=inetOrgPerson)", "ldap_timeout": str(timeout)},
                    **extra)
        return "\n[domain.%s]\n%s" % (name, "".join("%s = %s\n" % kv for kv in keys.items()))
