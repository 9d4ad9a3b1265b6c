"""Helpers for the federation tests: a private test CA (certtool), a local
DNS server (dnsmasq on a loopback port, no system config touched) that
serves SRV and A records for the test domains on 127.0.0.2 and up, extra
Switchboard stacks (stack.sh profiles test2, test3), Prosody and ejabberd
with private configs on their own ports.

Every process started here is stopped by the fixture that started it;
every wait has a deadline."""

import os
import shutil
import signal
import socket
import subprocess
import time

from xmpptest import ROOT, Stack, wait_until

OFFSET = int(os.environ.get("SB_TEST_PORT_OFFSET", "0"))
DNS_PORT = 25353 + OFFSET


def port_base(n):
    """Ports of the stack.sh profile testN (test ports + 100·N)."""
    return OFFSET + 100 * n


def run(cmd, timeout=30, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(cmd), p.returncode, p.stdout,
                                                         p.stderr))
    return p.stdout


# ------------------------------------------------------------------ certificates
class CertAuthority:
    """A CA and certificates for the test domains, made with certtool."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.ca_key = self._key("ca")
        self.ca_cert = os.path.join(self.dir, "ca.pem")
        tpl = self._template("ca", ['cn = "Switchboard federation test CA"', "ca",
                                    "cert_signing_key", "expiration_days = 30"])
        run(["certtool", "--generate-self-signed", "--load-privkey", self.ca_key,
             "--template", tpl, "--outfile", self.ca_cert])

    def _key(self, name):
        path = os.path.join(self.dir, name + ".key")
        if not os.path.exists(path):
            run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1",
                 "--outfile", path])
        return path

    def _template(self, name, lines):
        path = os.path.join(self.dir, name + ".cfg")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def issue(self, name, domains, self_signed=False):
        """(cert, key) for the domains: signed by the CA, or self-signed."""
        key = self._key(name)
        cert = os.path.join(self.dir, name + ".pem")
        lines = ['cn = "%s"' % domains[0]] + ['dns_name = "%s"' % d for d in domains]
        lines += ["tls_www_server", "tls_www_client", "signing_key", "encryption_key",
                  "expiration_days = 30"]
        tpl = self._template(name, lines)
        if self_signed:
            run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template", tpl,
                 "--outfile", cert])
        else:
            run(["certtool", "--generate-certificate", "--load-privkey", key,
                 "--load-ca-certificate", self.ca_cert, "--load-ca-privkey", self.ca_key,
                 "--template", tpl, "--outfile", cert])
        return cert, key

    def bundle(self, name, cert, key):
        """cert+key in one file (ejabberd's `certfiles`)."""
        path = os.path.join(self.dir, name + "-bundle.pem")
        with open(path, "w") as out:
            for p in (cert, key):
                with open(p) as f:
                    out.write(f.read())
        return path


# ------------------------------------------------------------------ DNS
class Dns:
    """dnsmasq answering for *.sbtest on 127.0.0.1:DNS_PORT; nothing else."""

    def __init__(self, workdir, records):
        self.log = os.path.join(workdir, "dnsmasq.log")
        args = ["dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv",
                "--no-hosts", "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1",
                "--port=%d" % DNS_PORT, "--pid-file=", "--local=/sbtest/", "--user=root",
                "--log-facility=" + self.log, "--log-queries"]
        args += records
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._answers, 10, "dnsmasq on port %d" % DNS_PORT)

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError("dnsmasq exited: %s" % self.proc.stderr.read().decode())
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        try:
            # A minimal query for "x.sbtest" A; any answer means it is up.
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x06sbtest\x00\x00\x01\x00\x01"
            s.sendto(q, ("127.0.0.1", DNS_PORT))
            s.recvfrom(512)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        stop_proc(self.proc)


def srv(service, domain, host, port, prio=0, weight=5):
    return "--srv-host=_%s._tcp.%s,%s,%d,%d,%d" % (service, domain, host, port, prio, weight)


def host(name, addr):
    return "--host-record=%s,%s" % (name, addr)


def stop_proc(proc, timeout=5):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ------------------------------------------------------------------ stacks
def clean_environ():
    """The environment without the `test` profile's SB_* variables (`make
    test` exports them), which would otherwise leak into another stack's
    processes as SB_<KIND>_<KEY> overrides."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SB_") or k in ("SB_TEST_PORT_OFFSET", "SB_READY_TIMEOUT")}


class FedStack(Stack):
    """A Switchboard stack of profile testN serving `domain`."""

    def __init__(self, n, domain, extra_env):
        self.n = n
        self.profile_name = "test%d" % n
        self.extra_env = dict(extra_env)
        env = dict(clean_environ(), SB_STACK_DOMAIN=domain, **self.extra_env)
        out = run([os.path.join(ROOT, "deploy/dev/stack.sh"), "-p", self.profile_name, "env"],
                  env=env)
        senv = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        super().__init__(senv)
        self.domain = domain
        self.s2s_addr = senv["SB_S2S1_LISTEN"]
        self.s2s_port = int(senv["SB_S2S1_PORT"])
        self.s2s_tls_port = int(senv["SB_S2S1_TLS_PORT"])
        self.c2s = {"c2s1": (int(senv["SB_C2S1_PORT"]), int(senv["SB_C2S1_TLS_PORT"]))}

    def _env(self, **more):
        return dict(clean_environ(), SB_STACK_PROFILE=self.profile_name,
                    SB_STACK_DOMAIN=self.domain, **self.extra_env, **more)

    def sh(self, *args, timeout=60, **more):
        return run([self.stack_sh, "-p", self.profile_name, *args], timeout=timeout,
                   env=self._env(**more), cwd=self.root)

    def start(self):
        self.sh("stop")
        shutil.rmtree(os.path.join(ROOT, "var", self.profile_name), ignore_errors=True)
        self.sh("run", timeout=120)

    def stop(self):
        try:
            self.sh("stop")
        except Exception:
            pass

    def append_ini(self, text):
        """Add settings to the generated INI (read by processes started later)."""
        with open(self.ini, "a") as f:
            f.write("\n" + text)

    def restart_s2s(self, **env):
        """Restart s2s1 with extra SB_S2S_* settings (e.g. another certificate)."""
        self.extra_env.update(env)
        self.sh("stop-proc", "s2s1")
        self.sh("start-proc", "s2s1")
        wait_until(lambda: port_open(self.s2s_addr, self.s2s_port), 10,
                   "s2s1 of %s listening" % self.domain)
        self.wait_instances(present=("s2s1",), timeout=10)

    def s2s_status(self):
        """Rows of the S2S CONNECTIONS table of `sbctl status` as dicts."""
        out = self.sbctl("status", timeout=10).stdout
        rows, on = [], False
        for line in out.splitlines():
            if line.startswith("S2S CONNECTIONS"):
                on = True
                continue
            if line.startswith("ROUTERS"):
                break                   # the routers' table comes last
            if not on or not line.strip() or line.startswith("REMOTE") or line.startswith("("):
                continue
            w = line.split()
            rows.append(dict(remote=w[0], local=w[1], dir=w[2], state=w[3], tls=w[4],
                             auth=w[5], idle=w[6], instance=w[7]))
        return rows

    def log_text(self, name="s2s1"):
        with open(os.path.join(self.env["SB_VAR"], "log", name + ".log")) as f:
            return f.read()


def alive(proc, name, log):
    """True while proc runs; fails at once (with the log's tail) when it exited."""
    if proc.poll() is None:
        return True
    try:
        with open(log) as f:
            tail = "".join(f.readlines()[-8:])
    except OSError:
        tail = "(no log)"
    raise AssertionError("%s exited (%s); %s:\n%s" % (name, proc.returncode, log, tail))


def port_open(addr, port):
    try:
        socket.create_connection((addr, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ raw s2s stream
import asyncio  # noqa: E402
import ssl  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

NS_STREAM = "http://etherx.jabber.org/streams"


class RawS2S:
    """A hand-driven server-to-server stream into a stack's s2s port, to
    check what the server does with malformed or spoofed input."""

    def __init__(self, stack, direct_tls=False):
        self.stack = stack
        self.direct_tls = direct_tls
        self.reader = self.writer = None
        self.parser = self.root = None
        self.pending = []
        self.closed = False
        self.stream_id = None

    async def connect(self, cert=None, key=None, timeout=10):
        port = self.stack.s2s_tls_port if self.direct_tls else self.stack.s2s_port
        ctx = self._ctx(cert, key) if self.direct_tls else None
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.stack.s2s_addr, port, ssl=ctx,
                                    server_hostname=self.stack.domain if ctx else None), timeout)
        return self

    @staticmethod
    def _ctx(cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def send(self, data):
        self.writer.write(data.encode() if isinstance(data, str) else data)

    def open_stream(self, frm, to=None, send=True):
        self.parser = ET.XMLPullParser(("start", "end"))
        self.root = None
        self.pending = []
        if send:
            self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                      "xmlns:stream='%s' xmlns:db='jabber:server:dialback' from='%s' to='%s' "
                      "version='1.0'>" % (NS_STREAM, frm, to or self.stack.domain))

    def _drain(self):
        for ev, el in self.parser.read_events():
            if ev == "start" and self.root is None:
                self.root = el
                self.stream_id = el.get("id")
            elif ev == "end" and el is self.root:
                self.closed = True
                self.pending.append(None)
            elif ev == "end" and self.root is not None and el in list(self.root):
                self.pending.append(el)
                self.root.remove(el)

    async def element(self, timeout=10):
        deadline = time.monotonic() + timeout
        while not self.pending:
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no element from the server within %ss" % timeout)
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except asyncio.TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return None
            if self.parser is None:
                self.open_stream(None, send=False)
            self.parser.feed(data)
            self._drain()
        return self.pending.pop(0)

    async def stream_error(self, timeout=10):
        """The condition of the stream error that ends the stream (None if none)."""
        while True:
            el = await self.element(timeout)
            if el is None:
                return None
            if el.tag == "{%s}error" % NS_STREAM:
                return el[0].tag.split("}")[1] if len(el) else "?"

    async def starttls(self, frm, cert=None, key=None):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        el = await self.element()
        assert el is not None and el.tag.endswith("proceed"), el
        await self.writer.start_tls(self._ctx(cert, key), server_hostname=self.stack.domain)
        self.open_stream(frm)
        return await self.element()    # features

    async def close(self):
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 3)
            except (asyncio.TimeoutError, OSError, ssl.SSLError):
                pass


# ------------------------------------------------------------------ Prosody
class Prosody:
    """Prosody (Debian package) with a private config, data dir, ports and
    resolver (libunbound pointed at our dnsmasq); it never reads /etc/prosody."""

    def __init__(self, workdir, domain, addr, c2s_port, s2s_port, cert, key, cafile):
        self.dir = os.path.join(workdir, "prosody")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "data"))
        self.domain, self.addr = domain, addr
        self.host = "127.0.0.1"       # clients connect here; peers on addr
        self.c2s = {"c2s1": (c2s_port, c2s_port)}
        self.s2s_port = s2s_port
        self.cfg = os.path.join(self.dir, "prosody.cfg.lua")
        with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1@%d\n" % DNS_PORT)
        with open(self.cfg, "w") as f:
            f.write("""-- written by tests/integration/fedtest.py
run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ debug = "{d}/prosody.log" }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_interfaces = {{ "{addr}" }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ {s2s} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "posix" }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
unbound = {{ resolvconf = false; forward = "127.0.0.1@{dns}" }}
-- No cafile: prosody cannot validate our certificate, so both directions
-- use dialback (XEP-0220) with prosody as the other implementation.
ssl = {{ certificate = "{cert}"; key = "{key}" }}
VirtualHost "{dom}"
""".format(d=self.dir, addr=addr, c2s=c2s_port, s2s=s2s_port, cert=cert, key=key, ca=cafile, dns=DNS_PORT,
           dom=domain))
        self.proc = None

    def ctl(self, *args):
        return run(["prosodyctl", "--config", self.cfg, *args], timeout=30)

    def start(self):
        self.proc = subprocess.Popen(["prosody", "--config", self.cfg, "-F"],
                                     stdout=open(os.path.join(self.dir, "stdout.log"), "w"),
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        wait_until(lambda: alive(self.proc, "prosody", self.dir + "/prosody.log")
                   and port_open(self.addr, self.s2s_port)
                   and port_open(self.host, self.c2s["c2s1"][0]), 20, "prosody listening")

    def add_user(self, prefix="p"):
        import secrets
        node = "%s%s" % (prefix, secrets.token_hex(4))
        pw = secrets.token_urlsafe(10)
        self.ctl("register", node, self.domain, pw)
        return "%s@%s" % (node, self.domain), pw

    def port(self, instance="c2s1"):
        return self.c2s["c2s1"][0]

    def tls_port(self, instance="c2s1"):
        return self.c2s["c2s1"][1]

    def stop(self):
        stop_proc(self.proc, timeout=10)

    def log_text(self):
        with open(os.path.join(self.dir, "prosody.log")) as f:
            return f.read()


# ------------------------------------------------------------------ ejabberd
class Ejabberd:
    """ejabberd (Debian package) as root with its own config dir, node name,
    cookie, spool and log dirs; Erlang distribution on a private port without
    epmd, DNS through our dnsmasq (inetrc). Never touches /etc/ejabberd."""

    def __init__(self, workdir, domain, addr, c2s_port, s2s_port, dist_port, bundle, cafile,
                 hosts):
        self.dir = os.path.join(workdir, "ejabberd")
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("conf", "spool", "logs"):
            os.makedirs(os.path.join(self.dir, sub))
        self.domain, self.addr = domain, addr
        self.host = "127.0.0.1"
        self.c2s = {"c2s1": (c2s_port, c2s_port)}
        self.s2s_port = s2s_port
        conf = os.path.join(self.dir, "conf")
        import secrets
        with open(os.path.join(conf, "ejabberdctl.cfg"), "w") as f:
            f.write("# written by tests/integration/fedtest.py\n"
                    "EXEC_CMD=as_current_user\n"
                    "ERLANG_NODE=sbtest%d@localhost\n"
                    "ERL_DIST_PORT=%d\n"
                    "INET_DIST_INTERFACE=127.0.0.1\n"
                    "ERL_OPTIONS=\"-setcookie %s\"\n" % (dist_port, dist_port, secrets.token_hex(12)))
        with open(os.path.join(conf, "inetrc"), "w") as f:
            f.write("{resolv_conf, \"\"}.\n{hosts_file, \"\"}.\n"
                    "{host, {127,0,0,1}, [\"localhost\"]}.\n"
                    "{nameserver, {127,0,0,1}, %d}.\n"
                    "{lookup, [file, dns]}.\n" % DNS_PORT)
        with open(os.path.join(conf, "ejabberd.yml"), "w") as f:
            f.write("""# written by tests/integration/fedtest.py
hosts: ["{dom}"]
loglevel: info
log_rotate_count: 0
certfiles: ["{bundle}"]
ca_file: "{ca}"
listen:
  - port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
  - port: {s2s}
    ip: "{addr}"
    module: ejabberd_s2s_in
s2s_use_starttls: required
# The test DNS has A records only.
outgoing_s2s_families: [ipv4]
auth_method: internal
default_db: mnesia
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_s2s_dialback: {{}}
""".format(dom=domain, bundle=bundle, ca=cafile, c2s=c2s_port, s2s=s2s_port, addr=addr))
        # ejabberd resolves SRV records with Erlang's resolver (inetrc above)
        # but the SRV targets with the C library (net:getaddrinfo), which
        # reads only /etc/hosts and /etc/resolv.conf. It runs in a private
        # mount namespace where /etc/hosts also names the test hosts; the
        # system's file is untouched.
        self.hosts_file = os.path.join(conf, "hosts")
        with open("/etc/hosts") as src, open(self.hosts_file, "w") as f:
            f.write(src.read())
            f.write("\n# federation test hosts\n")
            for name, ip in sorted(hosts.items()):
                f.write("%s %s\n" % (ip, name))
        self.proc = None

    def _ctl_args(self):
        d = self.dir
        return ["ejabberdctl", "-c", d + "/conf/ejabberdctl.cfg", "-d", d + "/conf",
                "-s", d + "/spool", "-l", d + "/logs", "-f", d + "/conf/ejabberd.yml"]

    def ctl(self, *args, timeout=30):
        return run(self._ctl_args() + list(args), timeout=timeout, cwd=self.dir)

    def start(self):
        cmd = " ".join("'%s'" % a for a in self._ctl_args() + ["foreground"])
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      "mount --bind '%s' /etc/hosts && exec %s"
                                      % (self.hosts_file, cmd)], cwd=self.dir,
                                     stdout=open(os.path.join(self.dir, "logs", "stdout.log"), "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: alive(self.proc, "ejabberd", self.dir + "/logs/ejabberd.log")
                   and port_open(self.addr, self.s2s_port)
                   and port_open(self.host, self.c2s["c2s1"][0]), 40, "ejabberd listening")

    def add_user(self, prefix="e"):
        import secrets
        node = "%s%s" % (prefix, secrets.token_hex(4))
        pw = secrets.token_urlsafe(10)
        self.ctl("register", node, self.domain, pw)
        return "%s@%s" % (node, self.domain), pw

    def port(self, instance="c2s1"):
        return self.c2s["c2s1"][0]

    def tls_port(self, instance="c2s1"):
        return self.c2s["c2s1"][1]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop", timeout=15)
            self.proc.wait(15)
        except Exception:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the group we started
            except OSError:
                pass
            self.proc.wait(5)
