#!/usr/bin/python3
"""make bench: run the sbbench scenarios against a private Switchboard stack
(deploy/dev/stack.sh -p bench: 1 router, 2 c2s, 2 sm) and, with PEER=prosody
or PEER=jabberd2, against a private instance of that server (class Peer) on
the same users, then write
tests/bench/results/<date>-<host>.json and a Markdown table (.md beside it,
also printed).

Every knob is an environment variable (defaults are modest, ~5 min for
Switchboard alone):
  BENCH_SCENARIOS   login,plain,msg,idle,scaleout
  BENCH_STEP        seconds per step [5]
  BENCH_MSG_USERS   [1000]      BENCH_MSG_RATES   [2500,5000,7500,10000,15000,20000,25000,30000]
  BENCH_PEER_MSG_RATES  the peer's message ladder [250,500,1000,1500,2000,2500,5000,7500,10000]
  BENCH_LOGIN_USERS [2000]      BENCH_LOGIN_RATES [100,200,400,600,800,1000,1200,1500,2000]
  BENCH_PLAIN_RATES [50,100,200,300,400,600,800]
  BENCH_LOGIN_NO_STOP=1  run every login step even after one failed
  BENCH_IDLE        [5000,20000]  BENCH_IDLE_TLS [1]
  BENCH_IDLE_HOLD   hold of the largest plaintext idle run [60]; others BENCH_IDLE_HOLD_OTHER [10]
  SB_BENCH_PORT_OFFSET  shifts every port of the bench profile
  PEER              prosody or jabberd2 (Debian package, private instance under
                    var/bench/<peer>, own ports: Prosody 6262, jabberd2 c2s 6272 and router 6273)
  BENCH_KEEP=1      leave the bench stack running afterwards
"""

import datetime
import hashlib
import hmac
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(ROOT, "deploy/dev/stack.sh")
VAR = os.path.join(ROOT, "var/bench")
SBBENCH = os.path.join(ROOT, "build/bench/sbbench")
SB_PROCS = ["router1", "sm1", "sm2", "c2s1", "c2s2", "bosh1"]
DOMAIN = "localhost"
PREFIX, PASSPREFIX = "bench", "pw"
OFF = int(os.environ.get("SB_BENCH_PORT_OFFSET", "0"))
PROSODY_PORT = 6262 + OFF
JABBERD2_PORT, JABBERD2_ROUTER_PORT = 6272 + OFF, 6273 + OFF


def env(name, default):
    return os.environ.get(name, default)


STEP = env("BENCH_STEP", "5")
SCEN = set(env("BENCH_SCENARIOS", "login,plain,msg,idle,scaleout").split(","))
MSG_USERS = int(env("BENCH_MSG_USERS", "1000"))
MSG_RATES = env("BENCH_MSG_RATES", "2500,5000,7500,10000,15000,20000,25000,30000")
PEER_MSG_RATES = env("BENCH_PEER_MSG_RATES", "250,500,1000,1500,2000,2500,5000,7500,10000")
LOGIN_USERS = int(env("BENCH_LOGIN_USERS", "2000"))
LOGIN_RATES = env("BENCH_LOGIN_RATES", "100,200,400,600,800,1000,1200,1500,2000")
PLAIN_RATES = env("BENCH_PLAIN_RATES", "50,100,200,300,400,600,800")
IDLE = [int(x) for x in env("BENCH_IDLE", "5000,20000").split(",") if x]
IDLE_TLS = env("BENCH_IDLE_TLS", "1") == "1"
IDLE_HOLD = env("BENCH_IDLE_HOLD", "60")
IDLE_HOLD_OTHER = env("BENCH_IDLE_HOLD_OTHER", "10")
PEER = env("PEER", "").strip()
# keep stepping after a failed login step (a server that fails every step
# with a few errors still shows what it completes)
LOGIN_NO_STOP = ["--no-stop"] if env("BENCH_LOGIN_NO_STOP", "") == "1" else []


def say(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, **kw)


def stack(*args, check=True):
    e = dict(os.environ, SB_BENCH_PORT_OFFSET=str(OFF))
    return subprocess.run([STACK, "-p", "bench", *args], check=check, env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stack_env():
    out = stack("env").stdout
    return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    say("open files limit:", resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def pidfile(path):
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def max_users():
    return max([MSG_USERS, LOGIN_USERS] + IDLE)


# ---------------------------------------------------------------- targets

class Target:
    """A server under test: how to reach it and which processes to watch."""
    name = "?"
    ports = []
    max_conns = 10**9

    def watches(self):
        return []

    def fresh(self):
        pass

    def run(self, scenario, *args, label=""):
        cmd = [SBBENCH, "-H", "127.0.0.1", "-p", ",".join(map(str, self.ports)),
               "-d", DOMAIN, "-u", PREFIX, "-w", PASSPREFIX,
               "--scram-cache", os.path.join(VAR, "cache", self.name + ".scram"),
               "--label", label or scenario, *args]
        for w in self.watches():
            cmd += ["--watch", w]
        cmd.append(scenario)
        say(self.name, ":", " ".join(cmd[1:]))
        load = os.getloadavg()[0]      # the machine is shared: say how busy it was
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        rows = []
        for line in p.stdout.splitlines():
            try:
                rows.append(dict(json.loads(line), load1=load))
            except ValueError:
                pass
        return rows, p.returncode


class Switchboard(Target):
    name = "switchboard"

    def __init__(self):
        self.env = None

    def start(self):
        r = stack("run", check=False)
        if r.returncode != 0:
            print(r.stdout, file=sys.stderr)
            raise SystemExit("bench: the bench stack did not start")
        self.env = stack_env()
        self.ports = [int(self.env["SB_C2S1_PORT"]), int(self.env["SB_C2S2_PORT"])]
        self.ensure_users()

    def ensure_users(self):
        n = max_users()
        marker = os.path.join(VAR, "users-%s" % PREFIX)
        try:
            have = int(open(marker).read())
        except (OSError, ValueError):
            have = 0
        if have >= n:
            return
        t = time.time()
        sh(os.path.join(ROOT, "bin/sbctl"), "-c", self.env["SB_INI"], "user", "bulk-add",
           DOMAIN, PREFIX, str(n), PASSPREFIX, stdout=sys.stderr)
        say("switchboard: %d users ready in %.1f s" % (n, time.time() - t))
        with open(marker, "w") as f:
            f.write(str(n))

    def watches(self):
        w = []
        for n in SB_PROCS:
            pid = pidfile(os.path.join(VAR, "pid", n + ".pid"))
            if pid and os.path.exists("/proc/%d" % pid):
                w.append("%s:%d" % (n, pid))
        pid = pidfile(os.path.join(VAR, "pid", "redis.pid"))
        if pid:
            w.append("redis:%d" % pid)
        pid = pidfile(os.path.join(VAR, "pg", "postmaster.pid"))
        if pid:
            w.append("postgres:%d+" % pid)
        return w

    def fresh(self):
        for n in reversed(SB_PROCS):
            stack("stop-proc", n)
        for n in SB_PROCS:
            stack("start-proc", n)
            if n == "router1":
                time.sleep(0.2)
        stack("wait-ready")
        time.sleep(1)

    def layout(self, small):
        """small: 1 c2s + 1 sm (scale-out baseline); else the full 2 + 2."""
        if small:
            stack("stop-proc", "c2s2")
            stack("stop-proc", "sm2")
            self.ports = [int(self.env["SB_C2S1_PORT"])]
            time.sleep(4.5)            # the router forgets sm2 (heartbeat timeout)
        else:
            stack("start-proc", "sm2")
            stack("start-proc", "c2s2")
            stack("wait-ready")
            self.ports = [int(self.env["SB_C2S1_PORT"]), int(self.env["SB_C2S2_PORT"])]
            time.sleep(1)

    def stop(self):
        if env("BENCH_KEEP", "") != "1":
            stack("stop", check=False)


class Peer(Target):
    """Another XMPP server from Debian, run as a private instance: its own
    config and data under var/bench/<name>, its own loopback ports, logging
    low, its system service never started. Subclasses say what differs: the
    package, the config files, how accounts are written, and the processes
    (PROCS: name -> argv, started in that order; CPU and RSS are read from
    each and summed in the table)."""
    package = "?"
    probe = "/bin/false"              # a file the package installs
    PROCS = {}

    def __init__(self):
        self.dir = os.path.join(VAR, self.name)
        self.procs = {}

    def install(self):
        if os.path.exists(self.probe):
            return
        say("installing %s from Debian (its system service is kept from starting)" %
            self.package)
        policy = "/usr/sbin/policy-rc.d"
        made = not os.path.exists(policy)
        if made:
            with open(policy, "w") as f:
                f.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        try:
            e = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            sh("apt-get", "install", "-y", "-q", self.package, env=e, stdout=sys.stderr)
        finally:
            if made:
                os.unlink(policy)

    def ensure_users(self):
        """Create accounts have+1..n the fast way (write_accounts) once."""
        n = max_users()
        marker = os.path.join(self.dir, "users-%s" % PREFIX)
        try:
            have = int(open(marker).read())
        except (OSError, ValueError):
            have = 0
        if have >= n:
            return
        t = time.time()
        self.write_accounts(have + 1, n)
        with open(marker, "w") as f:
            f.write(str(n))
        say("%s: %d accounts written in %.1f s" % (self.name, n - have, time.time() - t))

    def start(self):
        self.install()
        os.makedirs(self.dir, exist_ok=True)
        self.write_config()
        self.ensure_users()
        log = open(os.path.join(self.dir, "stdout.log"), "a")
        for name, argv in self.PROCS.items():
            self.procs[name] = subprocess.Popen(
                [a.format(d=self.dir) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
            self.started(name)
        log.close()
        end = time.time() + 20
        while time.time() < end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                self.stop()
                raise SystemExit("bench: %s: %s exited at start (see %s)" %
                                 (self.name, ",".join(dead), self.dir))
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit("bench: %s is not ready on %s" % (self.name, self.ports))

    def started(self, name):
        """Called after each process starts (e.g. wait for its listener)."""

    def ready(self):
        return all(listening(p) for p in self.ports)

    def watches(self):
        return ["%s:%d" % (n, p.pid) for n, p in self.procs.items() if p.poll() is None]

    def fresh(self):
        self.stop()
        self.start()

    def stop(self):
        for name in reversed(list(self.procs)):
            p = self.procs.pop(name)
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def prosody_keys(args):
    """(user, salt, stored, server) for one account, as internal_hashed stores it."""
    i, it = args
    salt = hashlib.sha1(b"sbbench-salt-%d" % i).hexdigest()[:16].encode()
    pw = ("%s%d" % (PASSPREFIX, i)).encode()
    salted = hashlib.pbkdf2_hmac("sha1", pw, salt, it)
    ck = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
    sk = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
    return i, salt.decode(), hashlib.sha1(ck).hexdigest(), sk.hex()


class Prosody(Peer):
    """A private Prosody 0.12: one process, accounts as internal_hashed files."""
    name = "prosody"
    package = "prosody"
    probe = "/usr/bin/prosody"
    PROCS = {"prosody": ["prosody", "--config", "{d}/prosody.cfg.lua"]}
    ITER = 4096                       # same cost per account as Switchboard's
    # one process: it cannot hold more sockets than RLIMIT_NOFILE (20,000 in
    # the CI container, which cannot raise it)
    max_conns = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 1000
    ports = [PROSODY_PORT]

    def write_config(self):
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        tls = os.path.join(VAR, "tls")
        with open(os.path.join(self.dir, "prosody.cfg.lua"), "w") as f:
            f.write("""-- written by tests/bench/bench.py: a private Prosody for make bench
run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ warn = "{d}/prosody.log" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ }}
network_backend = "epoll"
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = false
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "legacyauth"; }}
modules_disabled = {{ "s2s"; "offline"; "c2s_limits"; "limits"; }}
ssl = {{ certificate = "{tls}/cert.pem"; key = "{tls}/key.pem"; }}
VirtualHost "{dom}"
""".format(d=self.dir, port=PROSODY_PORT, tls=tls, dom=DOMAIN))

    def write_accounts(self, first, last):
        # prosodyctl register starts a Lua VM per account (tenths of a second):
        # write the internal_hashed account files it would write instead.
        acc = os.path.join(self.dir, "data", DOMAIN, "accounts")
        os.makedirs(acc, exist_ok=True)
        with multiprocessing.Pool() as pool:
            for i, salt, stored, server in pool.imap_unordered(
                    prosody_keys, ((i, self.ITER) for i in range(first, last + 1)), 256):
                with open(os.path.join(acc, "%s%d.dat" % (PREFIX, i)), "w") as f:
                    f.write('return {\n\t["iteration_count"] = %d;\n\t["salt"] = "%s";\n'
                            '\t["stored_key"] = "%s";\n\t["server_key"] = "%s";\n};\n'
                            % (self.ITER, salt, stored, server))


class Jabberd2(Peer):
    """A private jabberd2 2.7: router, sm and c2s processes (no s2s: nothing
    federates here), configured from the package's own /etc/jabberd2/*.xml
    with only paths, ports, domain and limits changed (so its default module
    chains run, as Prosody's defaults do). Storage and authreg are SQLite
    files that sm and c2s open in-process, so their CPU is in those two."""
    name = "jabberd2"
    package = "jabberd2"
    probe = "/usr/sbin/jabberd2-c2s"
    PROCS = {n: ["/usr/sbin/jabberd2-" + n, "-c", "{d}/%s.xml" % n]
             for n in ("router", "sm", "c2s")}
    SCHEMA = "/usr/share/doc/jabberd2/db-setup.sqlite.gz"
    ports = [JABBERD2_PORT]
    # c2s is one process: the same socket cap as Prosody
    max_conns = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 1000

    def write_config(self):
        import xml.etree.ElementTree as ET
        d = self.dir
        secret = "bench-%d" % JABBERD2_ROUTER_PORT

        def load(name):
            return ET.parse(os.path.join("/etc/jabberd2", name + ".xml"))

        def put(root, path, text):
            el = root
            for part in path.split("/"):
                nxt = el.find(part)
                el = nxt if nxt is not None else ET.SubElement(el, part)
            el.text = str(text)
            return el

        def common(root, name):
            if os.path.exists("%s/%s.log" % (d, name)):
                os.unlink("%s/%s.log" % (d, name))      # one run per log (sm's is waited on)
            put(root, "pidfile", "%s/%s.pid" % (d, name))
            log = root.find("log")
            log.set("type", "file")   # notice level: one line per login, no lower setting
            put(log, "file", "%s/%s.log" % (d, name))
            if root.find("router") is not None:
                put(root, "router/ip", "127.0.0.1")
                put(root, "router/port", JABBERD2_ROUTER_PORT)
                put(root, "router/pass", secret)

        t = load("router")
        r = t.getroot()
        common(r, "router")
        put(r, "local/ip", "127.0.0.1")
        put(r, "local/port", JABBERD2_ROUTER_PORT)
        put(r, "local/users", d + "/router-users.xml")
        put(r, "local/secret", secret)
        aci = r.find("aci")
        aci.remove(aci.find("filter"))          # the package's filter file is not ours
        t.write(os.path.join(d, "router.xml"))
        with open(os.path.join(d, "router-users.xml"), "w") as f:
            f.write("<users><user><name>jabberd</name><secret>%s</secret></user></users>\n"
                    % secret)

        t = load("sm")
        r = t.getroot()
        common(r, "sm")
        put(r, "local/id", DOMAIN)
        put(r, "storage/sqlite/dbname", os.path.join(d, "storage.db"))
        t.write(os.path.join(d, "sm.xml"))

        t = load("c2s")
        r = t.getroot()
        common(r, "c2s")
        host = put(r, "local/id", DOMAIN)
        host.attrib.pop("register-enable", None)    # accounts are written, not registered
        # STARTTLS is offered (not required) only with a pemfile on the host
        host.set("pemfile", os.path.join(d, "server.pem"))
        put(r, "local/ip", "127.0.0.1")
        put(r, "local/port", JABBERD2_PORT)
        put(r, "io/max_fds", self.max_conns + 1000)
        # authreg in its own file: c2s and sm each own one SQLite file
        put(r, "authreg/sqlite/dbname", os.path.join(d, "authreg.db"))
        sasl = r.find("authreg/mechanisms/sasl")
        if sasl.find("scram-sha-1") is None:
            ET.SubElement(sasl, "scram-sha-1")
        t.write(os.path.join(d, "c2s.xml"))
        tls = os.path.join(VAR, "tls")
        with open(os.path.join(d, "server.pem"), "w") as f:
            for n in ("cert.pem", "key.pem"):
                f.write(open(os.path.join(tls, n)).read())

    def write_accounts(self, first, last):
        # jabberd2 stores plaintext passwords (authreg_sqlite, password_type
        # plaintext): one INSERT each into c2s's authreg and sm's "active"
        # (the account exists) instead of one in-band registration each.
        import gzip
        import sqlite3
        try:
            schema = gzip.open(self.SCHEMA, "rt").read()
        except OSError as e:
            raise SystemExit("bench: jabberd2's SQLite schema %s: %s" % (self.SCHEMA, e))
        users = range(first, last + 1)
        now = int(time.time())
        for db, sql, rows in (
                ("authreg.db", 'INSERT INTO authreg (username, realm, password) VALUES (?, ?, ?)',
                 (("%s%d" % (PREFIX, i), DOMAIN, "%s%d" % (PASSPREFIX, i)) for i in users)),
                ("storage.db", 'INSERT INTO active ("collection-owner", "time") VALUES (?, ?)',
                 (("%s%d@%s" % (PREFIX, i, DOMAIN), now) for i in users))):
            path = os.path.join(self.dir, db)
            fresh = not os.path.exists(path)
            con = sqlite3.connect(path)
            if fresh:
                con.executescript(schema)
            with con:
                con.executemany(sql, rows)
            con.close()

    def started(self, name):
        # sm and c2s give up when the router is not there yet; c2s listens
        # once it has the router, but logins need sm bound too
        if name == "router":
            wait_for(lambda: listening(JABBERD2_ROUTER_PORT), 10, "jabberd2 router")
        elif name == "sm":
            wait_for(lambda: "ready for sessions" in read(os.path.join(self.dir, "sm.log")),
                     10, "jabberd2 sm")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def wait_for(cond, secs, what):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise SystemExit("bench: %s not ready after %d s" % (what, secs))


PEERS = {"prosody": Prosody, "jabberd2": Jabberd2}


# ---------------------------------------------------------------- scenarios

SERVER_PROCS = dict({"switchboard": SB_PROCS}, **{n: list(c.PROCS) for n, c in PEERS.items()})


def best(rows):
    ok = [r for r in rows if r.get("ok")]
    return max(ok, key=lambda r: r["rate"]) if ok else None


def run_scenarios(t):
    res = {"steps": []}

    def keep(rows):
        res["steps"].extend(rows)
        return rows

    common = ["--step", STEP]
    if "login" in SCEN:
        rows, _ = t.run("login", "--users", str(LOGIN_USERS), "--rates", LOGIN_RATES,
                        "--window", "400", *LOGIN_NO_STOP, *common, label="login-scram")
        # the first pass derives keys for new accounts: run it again if it did
        res["login"] = best(keep(rows))
    if "plain" in SCEN:
        rows, _ = t.run("login", "--plain", "--users", str(LOGIN_USERS), "--rates",
                        PLAIN_RATES, *LOGIN_NO_STOP, *common, label="login-plain")
        res["plain"] = best(keep(rows))
    if "msg" in SCEN:
        rates = MSG_RATES if isinstance(t, Switchboard) else PEER_MSG_RATES
        rows, rc = t.run("msg", "--users", str(MSG_USERS), "--rates", rates, *common,
                         label="msg")
        res["msg"] = best(keep(rows))
        res["msg_all"] = rows
    if "idle" in SCEN:
        res["idle"] = []
        big = max(IDLE) if IDLE else 0
        for tls in ([False, True] if IDLE_TLS else [False]):
            for n in IDLE:
                hold = IDLE_HOLD if (n == big and not tls) else IDLE_HOLD_OTHER
                t.fresh()              # RSS deltas from a clean heap
                # memory, not login speed: slow servers get time to log everyone in
                args = ["--users", str(min(n, t.max_conns)), "--hold", hold, "--window", "200",
                        "--login-timeout", "120"]
                if tls:
                    args.append("--tls")
                rows, _ = t.run("idle", *args, label="idle-%d%s" % (n, "-tls" if tls else ""))
                keep(rows)
                res["idle"].extend(rows)
    if "scaleout" in SCEN and isinstance(t, Switchboard):
        t.layout(small=True)
        try:
            rows, _ = t.run("msg", "--users", str(MSG_USERS), "--rates", MSG_RATES, *common,
                            label="msg-1c2s-1sm")
        finally:
            t.layout(small=False)
        res["scaleout_small"] = best(keep(rows))
    return res


# ---------------------------------------------------------------- report

def cpu_of(row, names):
    return sum(v["cpu_s"] for k, v in row.get("procs", {}).items() if k in names)


def fmt(v, nd=0):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return ("{:,.%df}" % nd).format(v)


def idle_row(res, n, tls):
    for r in res.get("idle", []):
        if r["label"] == "idle-%d%s" % (n, "-tls" if tls else ""):
            return r
    return None


def idle_kib(r, names):
    if not r or not r.get("online"):
        return None
    d = sum(v["rss_kb"] - v["rss0_kb"] for k, v in r["procs"].items() if k in names)
    return d / r["online"]


def stopped(res, label):
    """The first failed step of a login ladder: why the next rate was not tried."""
    rows = [r for r in res.get("steps", []) if r.get("label") == label]
    bad = [r for r in rows or [] if not r.get("ok")]
    if not rows:
        return None
    if not bad:
        return "not stopped (all %d steps held)" % len(rows)
    r = bad[0]
    return "%s/s: %s/s done, p99 %.0f ms, %d errors%s" % (
        fmt(r["rate"]), fmt(r["per_s"]), r["p99_ms"], r["errors"],
        " (%s)" % r["last_error"] if r.get("last_error") else "")


def figures(name, res):
    """(label, value, digits, higher_is_better) for the table."""
    procs = SERVER_PROCS[name]
    out = []
    m = res.get("msg")
    out.append(("messages: highest rate with p99 < 50 ms, no loss (msg/s)", m and m["per_s"], 0))
    out.append(("messages: p50 / p99 / p99.9 at that rate (ms)",
                m and "%.2f / %.2f / %.2f" % (m["p50_ms"], m["p99_ms"], m["p999_ms"]), 0))
    allm = res.get("msg_all") or []
    out.append(("messages: lost / reordered (all steps)",
                "%d / %d" % (sum(r["lost"] for r in allm), sum(r["reordered"] for r in allm))
                if allm else None, 0))
    out.append(("messages: server CPU per delivered message (µs)",
                m and cpu_of(m, procs) / max(m["delivered"], 1) * 1e6, 1))
    out.append(("messages: load generator CPU at that rate (% of one core)",
                m and 100 * m["gen_cpu_s"] / m["secs"], 0))
    l = res.get("login")
    out.append(("SCRAM-SHA-1 logins/s sustained (p99 < 500 ms, no errors)", l and l["per_s"], 0))
    out.append(("SCRAM-SHA-1 login p50 / p99 at that rate (ms)",
                l and "%.1f / %.1f" % (l["p50_ms"], l["p99_ms"]), 0))
    out.append(("SCRAM-SHA-1 login ladder: first failed step", stopped(res, "login-scram"), 0))
    p = res.get("plain")
    out.append(("PLAIN logins/s sustained", p and p["per_s"], 0))
    out.append(("PLAIN login ladder: first failed step", stopped(res, "login-plain"), 0))
    for tls in (False, True):
        for n in IDLE:
            r = idle_row(res, n, tls)
            tag = "%s idle, %s" % (fmt(n), "TLS" if tls else "no TLS")
            out.append(("memory per connection, %s (KiB, server processes)" % tag,
                        idle_kib(r, procs), 1))
            if name == "switchboard":
                out.append(("memory per connection, %s (KiB, Redis)" % tag,
                            idle_kib(r, ["redis"]), 2))
            out.append(("dropped / failed of connected, %s" % tag,
                        r and "%d / %d of %d, held %d s" % (r["dropped"], r["failed"], r["users"],
                                                           r["held_s"]), 0))
    s = res.get("scaleout_small")
    if name == "switchboard" and "scaleout" in SCEN:
        out.append(("scale-out: 1 c2s + 1 sm, highest msg/s", s and s["per_s"], 0))
        out.append(("scale-out: 2 c2s + 2 sm, highest msg/s", m and m["per_s"], 0))
    return out


def where_time_goes(name, res):
    m = res.get("msg")
    if not m:
        return []
    lines = ["", "%s: CPU per delivered message at %s msg/s, by process (µs):" % (
        name, fmt(m["per_s"])), ""]
    lines.append("| process | CPU s | µs/msg | RSS MiB |")
    lines.append("|---|---|---|---|")
    for k, v in m["procs"].items():
        lines.append("| %s | %.2f | %.1f | %.1f |" % (k, v["cpu_s"],
                     v["cpu_s"] / max(m["delivered"], 1) * 1e6, v["rss_kb"] / 1024))
    lines.append("| load generator | %.2f | %.1f | |" % (m["gen_cpu_s"],
                 m["gen_cpu_s"] / max(m["delivered"], 1) * 1e6))
    return lines


def table(results):
    names = list(results)
    figs = {n: figures(n, results[n]) for n in names}
    head = "| figure | " + " | ".join(names)
    if len(names) > 1:
        head += " | ratio %s/%s" % (names[0], names[1])
    lines = [head + " |", "|---" * (len(names) + 1 + (len(names) > 1)) + "|"]
    bylabel = {n: {f[0]: f[1] for f in figs[n]} for n in names}
    for label, _, nd in figs[names[0]]:
        vals = [bylabel[n].get(label) for n in names]
        row = "| %s | %s" % (label, " | ".join(fmt(v, nd) for v in vals))
        if len(names) > 1:
            a, b = vals[0], vals[1]
            ratio = "%.2f×" % (a / b) if isinstance(a, (int, float)) and \
                isinstance(b, (int, float)) and b else "—"
            row += " | " + ratio
        lines.append(row + " |")
    # rows only Switchboard has (Redis, scale-out) are kept, others show "—"
    for n in names:
        lines += where_time_goes(n, results[n])
    return lines


def machine():
    cpu = "?"
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return "%s, %d cores, %.0f GiB RAM, %s; the load generator runs on the same cores" % (
        cpu, os.cpu_count(), mem, os.uname().release)


def loads(results):
    """One line: the 1-minute load average when each run started."""
    parts = []
    for name, res in results.items():
        seen = {}
        for r in res.get("steps", []):
            if "load1" in r:
                seen.setdefault(r["label"], r["load1"])
        if seen:
            parts.append("%s: %s" % (name, ", ".join("%s %.1f" % kv for kv in seen.items())))
    return ["Load average (1 min) at the start of each run — " + "; ".join(parts), ""] \
        if parts else []


def report(machine_line, results):
    return ["Machine: " + machine_line, ""] + loads(results) + table(results)


def render(path):
    doc = json.load(open(path))
    print("\n".join(report(doc["machine"], doc["results"])))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        return render(sys.argv[2])
    if not os.access(SBBENCH, os.X_OK):
        raise SystemExit("bench: %s missing (make bench builds it)" % SBBENCH)
    raise_nofile()
    os.makedirs(os.path.join(VAR, "cache"), exist_ok=True)
    t0 = time.time()
    results = {}
    if PEER and PEER not in PEERS:
        raise SystemExit("bench: PEER=%s is not supported (%s are)" % (PEER, ", ".join(PEERS)))
    sb = Switchboard()
    peer = PEERS[PEER]() if PEER else None
    try:
        sb.start()
        results["switchboard"] = run_scenarios(sb)
        if peer:
            peer.start()
            results[peer.name] = run_scenarios(peer)
    finally:
        if peer:
            peer.stop()
        sb.stop()
    host = socket.gethostname()
    date = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    outdir = os.path.join(ROOT, "tests/bench/results")
    os.makedirs(outdir, exist_ok=True)
    base = os.path.join(outdir, "%s-%s" % (date, host))
    doc = {"date": date, "host": host, "machine": machine(), "peer": PEER or None,
           "config": {k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
           "seconds": round(time.time() - t0), "results": results}
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    md = report(machine(), results)
    with open(base + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    say("results: %s.json and .md (%.0f s)" % (base, time.time() - t0))


if __name__ == "__main__":
    main()
