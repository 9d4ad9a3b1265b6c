#!/usr/bin/python3
"""make bench: run the sbbench scenarios against a private Switchboard stack
(deploy/dev/stack.sh -p bench: 2 routers, 2 c2s, 2 sm) and, with PEER=prosody
or PEER=jabberd2, against a private instance of that server (class Peer) on
the same users, then write
tests/bench/results/<date>-<host>.json and a Markdown table (.md beside it,
also printed).

Every knob is an environment variable (defaults are modest, ~5 min for
Switchboard alone):
  BENCH_SCENARIOS   login,plain,msg,smmsg,mamcpu,idle,scaleout,chaos,resume,csi,carbons,mamq,
                    muc,pep
  BENCH_STEP        seconds per step [5]
  BENCH_MSG_USERS   [1000]      BENCH_MSG_RATES   [2500,5000,7500,10000,15000,20000,25000,30000]
  BENCH_PEER_MSG_RATES  the peer's message ladder [250,500,1000,1500,2000,2500,5000,7500,10000]
  BENCH_LOGIN_USERS [2000]      BENCH_LOGIN_RATES [100,200,400,600,800,1000,1200,1500,2000]
  BENCH_PLAIN_RATES [50,100,200,300,400,600,800]
  BENCH_LOGIN_NO_STOP=1  run every login step even after one failed
  BENCH_IDLE        [5000,20000]  BENCH_IDLE_TLS [1]
  BENCH_IDLE_HOLD   hold of the largest plaintext idle run [60]; others BENCH_IDLE_HOLD_OTHER [10]
  BENCH_CHAOS_SECS (or CHAOS_S) [300]  BENCH_CHAOS_RATE [500]  BENCH_CHAOS_USERS [1000]
  BENCH_CHAOS_EVERY seconds between faults [5]  BENCH_CHAOS_PAUSE down time after a kill [1]
  BENCH_CHAOS_FREEZE SIGSTOP time, past the 3 s lease [5]
  BENCH_CHAOS_FAULTS  kill,freeze [both]  BENCH_CHAOS_TARGETS [router,sm,c2s,redis,postgres]
  BENCH_CHAOS_SM  1: XEP-0198 clients (acked = accepted) [1]
  BENCH_CHAOS_DRAIN [20]  BENCH_CHAOS_SEED  random seed of the fault choice [time]
  BENCH_SM_ACK_EVERY  smmsg: each client sends <r/> after this many stanzas [5]
  BENCH_RESUME_USERS [1000]  BENCH_RESUME_SENDERS [50]  BENCH_RESUME_WINDOW [200]
  BENCH_MAMCPU_RATES  mamcpu: the msg ladder run with [sm] mam_enabled = 0, then 1 [BENCH_MSG_RATES]
  BENCH_CARBONS_MSGS  carbons: messages per run (3 runs off, 3 on) [400]
  BENCH_MAM_ROWS    mamq: archive rows generated (once; kept in var/bench) [10000000]
  BENCH_MAM_HEAVY   mamq: rows of the measured user [100000]  BENCH_MAM_QUERIES per kind [50]
  BENCH_MUC_USERS   muc: occupants of one room [500]  BENCH_MUC_SENDERS of them sending [10]
  BENCH_MUC_RATE    muc: groupchat messages/s in, all senders together [100]
  BENCH_MUC_JOIN_WINDOW  muc: joins in flight while the room fills [100]
  BENCH_PEP_CONTACTS  pep: contacts of the publisher [1000]  BENCH_PEP_RATE tunes/s [20]
  BENCH_CURVE       on|off|both: the bus's CURVE for Switchboard [on]; both runs
                    msg again with it off (SB_CLUSTER_CURVE=off for every process)
  SB_BENCH_PORT_OFFSET  shifts every port of the bench profile
  PEER              prosody or jabberd2 (Debian package, private instance under
                    var/bench/<peer>, own ports: Prosody 6262, jabberd2 c2s 6272 and router 6273)
  BENCH_KEEP=1      leave the bench stack running afterwards
  storm             SCRAM-SHA-1 then SCRAM-SHA-256 full logins over STARTTLS, stepping
                    BENCH_STORM_RATES [250,500,1000,2000,3000,5000] (every step run),
                    with `perf record -g` on c2s1 during each ladder (BENCH_PERF=0: none)
  logins            one login ladder per SASL mechanism (tests/bench/logins.py): PLAIN,
                    SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, X-OAUTH2 (own tokens),
                    OAUTHBEARER (JWT), LDAP, extauth, FAST; BENCH_LOGINS_USERS [1000]
                    BENCH_LOGINS_RATES [100,200,400,600,800,1000,1200] BENCH_LOGINS_MECHS [all]
  idlebig           BENCH_IDLE_BIG [100000] connections over BENCH_IDLE_C2S [6] c2s
                    (c2s3.. started with their own ports), BENCH_IDLE_WORKERS [6]
                    generator processes, BENCH_IDLE_SRC [8] source addresses 127.0.0.2..,
                    held BENCH_IDLE_BIG_HOLD [300] s while BENCH_IDLE_CHAT_PCT [1] % chat
                    at BENCH_IDLE_CHAT_RATE [1000] msg/s; BENCH_IDLE_BIG_TLS [50000]
                    the same over STARTTLS (0: not run); BENCH_IDLE_WS [20000] over
                    WebSocket and BENCH_IDLE_BOSH [5000] over BOSH (hold=1), both to
                    bosh1..boshN (BENCH_IDLE_WEB [2]; bosh2.. started with their own
                    ports), no chat (0: not run)
  GEN=tsung         the message scenario with Debian's tsung (tsung_gen.py) and, side
                    by side at the same rates, with sbbench; only that (BENCH_SCENARIOS
                    is ignored). BENCH_TSUNG_RATES [1000,3000,6000,10000]
                    BENCH_TSUNG_USERS [1000]  BENCH_TSUNG_SECS chat seconds per rate [20]
                    BENCH_TSUNG_ARRIVAL logins/s [200]  BENCH_TSUNG_DRAIN [3]
"""

import datetime
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(ROOT, "deploy/dev/stack.sh")
VAR = os.path.join(ROOT, "var/bench")
SBBENCH = os.path.join(ROOT, "build/bench/sbbench")
# start order: the routers first, so components find them at once
SB_PROCS = ["router1", "router2", "sm1", "sm2", "c2s1", "c2s2", "bosh1", "s2s1", "muc1"]
# what the chaos scenario kills or freezes (bosh1 and s2s1 carry none of its traffic)
CHAOS_PROCS = {"router": ["router1", "router2"], "sm": ["sm1", "sm2"], "c2s": ["c2s1", "c2s2"],
               "redis": ["redis"], "postgres": ["postgres"]}
DOMAIN = "localhost"
PREFIX, PASSPREFIX = "bench", "pw"
OFF = int(os.environ.get("SB_BENCH_PORT_OFFSET", "0"))
PROSODY_PORT = 6262 + OFF
JABBERD2_PORT, JABBERD2_ROUTER_PORT = 6272 + OFF, 6273 + OFF


def env(name, default):
    return os.environ.get(name, default)


STEP = env("BENCH_STEP", "5")
SCEN = set(env("BENCH_SCENARIOS",
                "login,plain,msg,smmsg,mamcpu,idle,scaleout,chaos,resume,csi,carbons,"
                "mamq,muc,pep").split(","))
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
CHAOS_SECS = float(env("CHAOS_S", env("BENCH_CHAOS_SECS", "300")))
CHAOS_RATE = env("BENCH_CHAOS_RATE", "500")
CHAOS_USERS = int(env("BENCH_CHAOS_USERS", "1000"))
CHAOS_EVERY = float(env("BENCH_CHAOS_EVERY", "5"))
CHAOS_PAUSE = float(env("BENCH_CHAOS_PAUSE", "1"))
CHAOS_DRAIN = env("BENCH_CHAOS_DRAIN", "20")
CHAOS_FREEZE = float(env("BENCH_CHAOS_FREEZE", "5"))
CHAOS_FAULTS = env("BENCH_CHAOS_FAULTS", "kill,freeze").split(",")
CHAOS_TARGETS = env("BENCH_CHAOS_TARGETS", "router,sm,c2s,redis,postgres").split(",")
CHAOS_SM = env("BENCH_CHAOS_SM", "1") == "1"
CHAOS_SEED = env("BENCH_CHAOS_SEED", "")
SM_ACK_EVERY = env("BENCH_SM_ACK_EVERY", "5")
RESUME_USERS = int(env("BENCH_RESUME_USERS", "1000"))
RESUME_SENDERS = int(env("BENCH_RESUME_SENDERS", "50"))
RESUME_WINDOW = env("BENCH_RESUME_WINDOW", "200")
MAMCPU_RATES = env("BENCH_MAMCPU_RATES", MSG_RATES)
CARBONS_MSGS = env("BENCH_CARBONS_MSGS", "400")
MAM_ROWS = env("BENCH_MAM_ROWS", "10000000")
MAM_HEAVY = env("BENCH_MAM_HEAVY", "100000")
MAM_QUERIES = env("BENCH_MAM_QUERIES", "50")
MUC_USERS = int(env("BENCH_MUC_USERS", "500"))
MUC_SENDERS = env("BENCH_MUC_SENDERS", "10")
MUC_RATE = env("BENCH_MUC_RATE", "100")
MUC_JOIN_WINDOW = env("BENCH_MUC_JOIN_WINDOW", "100")
PEP_CONTACTS = int(env("BENCH_PEP_CONTACTS", "1000"))
PEP_RATE = env("BENCH_PEP_RATE", "20")
CURVE = env("BENCH_CURVE", "on")
if CURVE not in ("on", "off", "both"):
    raise SystemExit("bench: BENCH_CURVE=%s: on, off or both" % CURVE)
STORM_RATES = env("BENCH_STORM_RATES", "250,500,1000,2000,3000,5000")
LOGINS_USERS = env("BENCH_LOGINS_USERS", "1000")
LOGINS_RATES = env("BENCH_LOGINS_RATES", "100,200,400,600,800,1000,1200")
LOGINS_MECHS = env("BENCH_LOGINS_MECHS", "")
PERF = env("BENCH_PERF", "1") == "1"
IDLE_BIG = int(env("BENCH_IDLE_BIG", "100000"))
IDLE_BIG_TLS = int(env("BENCH_IDLE_BIG_TLS", "50000"))
IDLE_C2S = int(env("BENCH_IDLE_C2S", "6"))
IDLE_WS = int(env("BENCH_IDLE_WS", "20000"))
IDLE_BOSH = int(env("BENCH_IDLE_BOSH", "5000"))
IDLE_WEB = int(env("BENCH_IDLE_WEB", "2"))
IDLE_WORKERS = int(env("BENCH_IDLE_WORKERS", "6"))
IDLE_SRC = int(env("BENCH_IDLE_SRC", "8"))
IDLE_BIG_HOLD = env("BENCH_IDLE_BIG_HOLD", "300")
IDLE_CHAT_PCT = env("BENCH_IDLE_CHAT_PCT", "1")
IDLE_CHAT_RATE = env("BENCH_IDLE_CHAT_RATE", "1000")
GEN = env("GEN", "").strip() or "sbbench"
if GEN not in ("sbbench", "tsung"):
    raise SystemExit("bench: GEN=%s: sbbench or tsung" % GEN)
TSUNG_RATES = [int(x) for x in env("BENCH_TSUNG_RATES", "1000,3000,6000,10000").split(",")]
TSUNG_USERS = int(env("BENCH_TSUNG_USERS", "1000"))
TSUNG_SECS = float(env("BENCH_TSUNG_SECS", "20"))
TSUNG_ARRIVAL = int(env("BENCH_TSUNG_ARRIVAL", "200"))
TSUNG_DRAIN = float(env("BENCH_TSUNG_DRAIN", "3"))
if GEN == "tsung":
    SCEN = {"tsung"}
# keep stepping after a failed login step (a server that fails every step
# with a few errors still shows what it completes)
LOGIN_NO_STOP = ["--no-stop"] if env("BENCH_LOGIN_NO_STOP", "") == "1" else []


def say(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, **kw)


def stack(*args, check=True, extra=None):
    e = dict(os.environ, SB_BENCH_PORT_OFFSET=str(OFF), **(extra or {}))
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
    big = [IDLE_BIG, IDLE_BIG_TLS, IDLE_WS, IDLE_BOSH] if "idlebig" in SCEN else []
    return max([MSG_USERS, LOGIN_USERS, CHAOS_USERS, RESUME_USERS + RESUME_SENDERS,
                MUC_USERS, PEP_CONTACTS + 1] + IDLE + big)


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

    curve = None                      # the bus's CURVE mode (Switchboard only)

    def command(self, scenario, *args, label="", watch=True):
        cmd = [SBBENCH, "-H", "127.0.0.1", "-p", ",".join(map(str, self.ports)),
               "-d", DOMAIN, "-u", PREFIX, "-w", PASSPREFIX,
               "--scram-cache", os.path.join(VAR, "cache", self.name + ".scram"),
               "--label", label or scenario, *args]
        for w in self.watches() if watch else []:
            cmd += ["--watch", w]
        cmd.append(scenario)
        say(self.name, ":", " ".join(cmd[1:]))
        return cmd

    def rows(self, out, load):
        rows = []
        for line in out.splitlines():
            try:
                rows.append(dict(json.loads(line), load1=load, curve=self.curve or "n/a"))
            except ValueError:
                pass
        return rows

    def run(self, scenario, *args, label=""):
        cmd = self.command(scenario, *args, label=label)
        load = os.getloadavg()[0]      # the machine is shared: say how busy it was
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        return self.rows(p.stdout, load), p.returncode


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

    extra = []                         # c2s3.. started by more_c2s()

    def more_c2s(self, n):
        """c2s3..c2sN besides c2s1 and c2s2, each on ports of its own
        (6300 + 2·N and + 1 for direct TLS, shifted by the offset) through
        the SB_C2S_* environment overrides; returns every c2s port."""
        ports = [int(self.env["SB_C2S1_PORT"]), int(self.env["SB_C2S2_PORT"])]
        for i in range(3, n + 1):
            name = "c2s%d" % i
            port = 6300 + OFF + 2 * i
            stack("start-proc", name, extra={"SB_C2S_PORT": str(port),
                                             "SB_C2S_TLS_PORT": str(port + 1)})
            if name not in self.extra:
                self.extra.append(name)
            ports.append(port)
        stack("wait-ready")
        end = time.time() + 20
        while not all(listening(p) for p in ports) and time.time() < end:
            time.sleep(0.2)
        return ports

    def more_bosh(self, n):
        """bosh2..boshN besides bosh1 (ports 6400 + 2·N and + 1, shifted by
        the offset, through SB_BOSH_PORT / SB_BOSH_TLS_PORT); returns every
        bosh port (WebSocket and BOSH share them)."""
        ports = [int(self.env["SB_BOSH_PORT"])]
        for i in range(2, n + 1):
            name = "bosh%d" % i
            port = 6400 + OFF + 2 * i
            stack("start-proc", name, extra={"SB_BOSH_PORT": str(port),
                                             "SB_BOSH_TLS_PORT": str(port + 1)})
            if name not in self.extra:
                self.extra.append(name)
            ports.append(port)
        stack("wait-ready")
        end = time.time() + 20
        while not all(listening(p) for p in ports) and time.time() < end:
            time.sleep(0.2)
        return ports

    def fewer_c2s(self):
        """Stop what more_c2s / more_bosh started."""
        for name in self.extra:
            stack("stop-proc", name, check=False)
        self.extra = []

    def watches(self):
        w = []
        for n in SB_PROCS + self.extra:
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
        for n in SB_PROCS:             # routers first
            stack("start-proc", n)
            if n.startswith("router"):
                time.sleep(0.2)
        stack("wait-ready")
        time.sleep(1)

    # ---- the bus's CURVE mode

    def set_curve(self, mode):
        """Every process started from now on (stack.sh passes its environment
        on), sbctl included, runs the bus with CURVE on or off."""
        self.curve = mode
        os.environ["SB_CLUSTER_CURVE"] = mode

    def curve_check(self):
        """The mode each running process logged at its last start:
        bus_curve_off is logged at start-up only when CURVE is off."""
        bad = []
        for n in SB_PROCS:
            log = read(os.path.join(VAR, "log", n + ".log"))
            last = log[log.rfind("=== "):]
            off = "bus_curve_off" in last
            if off != (self.curve == "off"):
                bad.append(n)
        if bad:
            raise SystemExit("bench: %s did not start with curve=%s (see var/bench/log)" %
                             (",".join(bad), self.curve))
        say("switchboard: every process runs the bus with curve=%s" % self.curve)

    # ---- membership as the routers see it

    def status(self):
        try:
            return subprocess.run([os.path.join(ROOT, "bin/sbctl"), "-c", self.env["SB_INI"],
                                   "status"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, timeout=8).stdout
        except subprocess.TimeoutExpired:
            return ""

    def listed(self, name, st=None):
        """Is NAME live in `sbctl status`: a router answering on its endpoint,
        a component listed with the pid it runs under now."""
        st = self.status() if st is None else st
        if name.startswith("router"):
            port = int(self.env["SB_ROUTER_PORT"]) + int(name[len("router"):]) - 1
            return any(l.startswith("tcp://127.0.0.1:%d " % port) and "answering" in l
                       for l in st.splitlines())
        pid = pidfile(os.path.join(VAR, "pid", name + ".pid"))
        for l in st.splitlines():
            f = l.split()
            if len(f) >= 3 and f[0] == name:
                return pid is None or str(pid) in f[1:5]   # PID after KIND, ADDRESS
        return False

    def wait_unlisted(self, names, secs):
        end = time.time() + secs
        while time.time() < end:
            st = self.status()
            if st and not any(self.listed(n, st) for n in names):
                return
            time.sleep(0.1)
        raise SystemExit("bench: %s still listed by sbctl status after %d s" %
                         (",".join(names), secs))

    def layout(self, small):
        """small: 1 c2s + 1 sm (scale-out baseline); else the full 2 + 2."""
        if small:
            stack("stop-proc", "c2s2")
            stack("stop-proc", "sm2")
            self.ports = [int(self.env["SB_C2S1_PORT"])]
            # a clean stop gives the lease back at once (HELLO bye=1)
            self.wait_unlisted(["sm2", "c2s2"], 10)
        else:
            stack("start-proc", "sm2")
            stack("start-proc", "c2s2")
            stack("wait-ready")
            self.ports = [int(self.env["SB_C2S1_PORT"]), int(self.env["SB_C2S2_PORT"])]
            time.sleep(1)

    # ---- chaos: chatting while processes are killed

    def store_pids(self, name):
        """The pids a fault of a store acts on: Redis's; PostgreSQL's
        postmaster, and for a freeze its backends too."""
        if name == "redis":
            p = pidfile(os.path.join(VAR, "pid", "redis.pid"))
            return [p] if p else []
        p = pidfile(os.path.join(VAR, "pg", "postmaster.pid"))
        if not p:
            return []
        kids = subprocess.run(["pgrep", "-P", str(p)], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        return [p] + [int(k) for k in kids]

    def store_up(self, name):
        if name == "redis":
            return stack("redis-start", check=False).returncode == 0
        return stack("pg-start", check=False).returncode == 0

    def back_listed(self, name, t, secs=20):
        end = time.time() + secs
        while time.time() < end:
            if name in ("redis", "postgres") or self.listed(name):
                return time.time() - t
            time.sleep(0.1)
        return None

    def fault(self, name, how):
        """kill: SIGKILL, a pause, a restart; freeze: SIGSTOP for
        CHAOS_FREEZE s (past the lease), SIGCONT. Returns the time of the
        fault and how long until it was back (listed by the routers, or the
        store answering again); None: not within 20 s."""
        store = name in ("redis", "postgres")
        t = time.time()
        if how == "kill":
            if store:                      # PostgreSQL: the postmaster and every backend,
                for p in self.store_pids(name):   # a crash of the whole server
                    try:
                        os.kill(p, 9)
                    except OSError:
                        pass
            else:
                stack("kill-proc", name, check=False)
            time.sleep(CHAOS_PAUSE)
            if store:
                end = time.time() + 60     # crash recovery under load takes a while
                while not self.store_up(name) and time.time() < end:
                    time.sleep(0.3)
                return t, time.time() - t if time.time() < end else None
            stack("start-proc", name)
            return t, self.back_listed(name, t)
        pids = self.store_pids(name) if store else \
            [pidfile(os.path.join(VAR, "pid", name + ".pid"))]
        pids = [p for p in pids if p]
        for p in pids:
            try:
                os.kill(p, 19)             # SIGSTOP
            except OSError:
                pass
        time.sleep(CHAOS_FREEZE)
        for p in pids:
            try:
                os.kill(p, 18)             # SIGCONT
            except OSError:
                pass
        if not store and not pidfile(os.path.join(VAR, "pid", name + ".pid")):
            stack("start-proc", name, check=False)
        back = self.back_listed(name, t)
        if back is None and not store:     # it left on waking: start it again
            stack("start-proc", name, check=False)
            back = self.back_listed(name, t)
        return t, back

    def chaos(self):
        sm = ["--sm", "--sm-ack-every", SM_ACK_EVERY] if CHAOS_SM else []
        cmd = self.command("chaos", "--users", str(CHAOS_USERS), "--rates", CHAOS_RATE,
                           "--duration", "%g" % CHAOS_SECS, "--drain", CHAOS_DRAIN,
                           "--window", "200", "--check", *sm, label="chaos", watch=False)
        load = os.getloadavg()[0]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sending = threading.Event()
        out = []

        def relay():                   # its progress to ours; notice when it sends
            for line in p.stderr:
                sys.stderr.write(line)
                if "users online;" in line:
                    sending.set()

        threading.Thread(target=relay, daemon=True).start()
        reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
        reader.start()
        rng = random.Random(int(CHAOS_SEED) if CHAOS_SEED else None)
        kills = []
        while not sending.is_set() and p.poll() is None:
            time.sleep(0.1)
        t0 = time.time() + 1           # the generator lets presences settle for 1 s
        nxt = t0 + CHAOS_EVERY
        # the last kill leaves the cluster a few seconds to recover while chatting
        while p.poll() is None and nxt < t0 + CHAOS_SECS - 3:
            time.sleep(max(0, nxt - time.time()))
            for n in ("redis", "postgres"):   # a store that did not come back: again
                self.store_up(n)
            kind = rng.choice(CHAOS_TARGETS)
            name = rng.choice(CHAOS_PROCS[kind])
            how = rng.choice(CHAOS_FAULTS)
            at, back = self.fault(name, how)
            kills.append({"name": name, "kind": "%s %s" % (how, kind), "at_unix": at,
                          "back_s": back})
            say("chaos: %s %s at +%.1f s, back after %s s" % (
                how, name, at - t0, "%.1f" % back if back is not None else "never"))
            nxt = max(nxt + CHAOS_EVERY, time.time())
        p.wait()
        reader.join()
        for n in ("redis", "postgres"):    # a store fault at the very end
            self.store_up(n)
        stack("wait-ready", check=False)
        rows = self.rows(out[0] if out else "", load)
        for r in rows:
            if r.get("scenario") == "chaos" and "timeline" in r:
                chaos_attribute(r, kills)
        return rows, p.returncode

    # ---- resumption storm: the resumable users' front-end is killed

    def resume_storm(self):
        """RESUME_USERS resumable XEP-0198 sessions on c2s1, senders on
        c2s2; sbbench SIGKILLs c2s1 once everyone is online and counted, the
        users resume on c2s2. c2s1 is started again afterwards."""
        pid = pidfile(os.path.join(VAR, "pid", "c2s1.pid"))
        if not pid:
            raise SystemExit("bench: c2s1 is not running")
        lease = 3
        cmd = self.command("resume", "--users", str(RESUME_USERS), "--senders",
                           str(RESUME_SENDERS), "--window", RESUME_WINDOW, "--kill", str(pid),
                           "--before", "4", "--dead", "3", "--drain", "15",
                           "--settle", str(lease + 2), label="resume", watch=False)
        # c2s1 dies during the step: watch the rest (a dead pid reads as no CPU)
        for w in self.watches():
            if not w.startswith("c2s1:"):
                cmd[-1:-1] = ["--watch", w]
        load = os.getloadavg()[0]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        stack("start-proc", "c2s1", check=False)
        stack("wait-ready", check=False)
        return self.rows(p.stdout, load), p.returncode

    # ---- fan-out: one room, one publisher (tests/bench/fanout.c)
    def muc_fanout(self):
        room = "bench%s@conference.%s" % (random.randrange(1 << 30), DOMAIN)
        return self.run("muc", "--users", str(MUC_USERS), "--senders", MUC_SENDERS, "--rates",
                        MUC_RATE, "--step", STEP, "--drain", "15", "--room", room,
                        "--window", MUC_JOIN_WINDOW, label="muc")

    def pep_fanout(self):
        """User bench1 publishes to bench2..benchN+1, its contacts: the
        roster rows go straight into PostgreSQL first (fanout_setup.py)."""
        sys.path.insert(0, os.path.join(ROOT, "tests/bench"))
        from fanout_setup import pep_roster_sql
        from mam_bench import psql
        # (an sm frees the record of a user without sessions: the next login
        # loads these rows)
        psql(self.env, pep_roster_sql(DOMAIN, PREFIX, 1, PEP_CONTACTS + 1))
        return self.run("pep", "--users", str(PEP_CONTACTS + 1), "--rates", PEP_RATE,
                        "--step", STEP, "--drain", "15", "--first", "1", label="pep")

    # ---- archiving on/off: the sms again with SB_SM_MAM_ENABLED

    def mam_enabled(self, on):
        """Restart sm1 and sm2 with [sm] mam_enabled overridden (stack.sh
        passes the environment on); a clean stop gives the lease back."""
        os.environ["SB_SM_MAM_ENABLED"] = "1" if on else "0"
        for n in ("sm1", "sm2"):
            stack("stop-proc", n)
        self.wait_unlisted(["sm1", "sm2"], 10)
        for n in ("sm1", "sm2"):
            stack("start-proc", n)
        stack("wait-ready")
        time.sleep(1)

    def psql(self, sql):
        from mam_bench import psql
        return psql(self.env, sql)

    def archive_rows_since(self, last_id, settle=1.5, secs=60):
        """Rows with id > last_id, once the count has stood still for
        `settle` s (the sms write in batches every mam_flush_ms)."""
        end, seen, since = time.time() + secs, -1, time.time()
        while time.time() < end:
            n = int(self.psql("SELECT count(*) FROM archive WHERE id > %d" % last_id))
            if n != seen:
                seen, since = n, time.time()
            elif time.time() - since >= settle:
                break
            time.sleep(0.3)
        return seen

    def mamcpu(self, common):
        """The msg ladder with archiving off, then on, one sbbench run per
        rate so that the archive rows each step wrote are counted in
        PostgreSQL (max(id) before, count after): every message between two
        local users is two rows, one in each archive. A step whose rows fall
        short (the sms' buffer was full: mam_buffer_full) is marked
        archive_ok = false."""
        out = {}
        try:
            for on in (False, True):
                tag = "on" if on else "off"
                self.mam_enabled(on)
                out[tag] = []
                for rate in MAMCPU_RATES.split(","):
                    last = int(self.psql("SELECT coalesce(max(id), 0) FROM archive"))
                    rows, _ = self.run("msg", "--users", str(MSG_USERS), "--rates", rate,
                                       *common, label="msg-mam-%s" % tag)
                    n = self.archive_rows_since(last)
                    for r in rows:
                        r["archive_rows"] = n
                        r["archive_ok"] = n == (2 * r["delivered"] if on else 0)
                    out[tag] += rows
                    say("mamcpu: archive %s, %s msg/s: %d delivered, %d archive rows" % (
                        tag, rate, sum(r["delivered"] for r in rows), n))
                    if not rows or not all(r.get("ok") for r in rows):
                        break
        finally:
            os.environ.pop("SB_SM_MAM_ENABLED", None)
            self.mam_enabled(True)     # back to the configured default
            os.environ.pop("SB_SM_MAM_ENABLED", None)
        return out

    def tsung_prepare(self):
        """Before a tsung run: no bench user has offline messages left from
        an earlier run (their delivery at login would be counted as this
        run's by the front-ends' counters)."""
        self.psql("DELETE FROM offline WHERE username LIKE '%s%%'" % PREFIX)

    def stop(self):
        self.fewer_c2s()
        if env("BENCH_KEEP", "") != "1":
            stack("stop", check=False)


def chaos_attribute(row, kills):
    """Per fault: the generator's timeline from the second of that fault to
    the next one (drops, re-logins, bounces, losses by send time), the
    longest delivery latency of a message sent in that window and the
    longest cluster-wide gap between two deliveries that began in it; the
    sums (and maxima) per kind of fault."""
    tl = row["timeline"]
    t0 = row["t0_unix"]
    fields = ["sent", "delivered", "bounced", "lost", "unacked", "drops", "relogins"]
    maxima = {"max_latency_ms": 9, "max_gap_ms": 10}
    for i, k in enumerate(kills):
        a = max(0, int(k["at_unix"] - t0))
        b = int(kills[i + 1]["at_unix"] - t0) if i + 1 < len(kills) else len(tl)
        k["at_s"] = round(k["at_unix"] - t0, 1)
        win = tl[a:max(a + 1, b)]
        for j, f in enumerate(fields):
            k[f] = sum(r[j + 1] for r in win)
        for f, j in maxima.items():
            k[f] = max([r[j] for r in win if len(r) > j] or [0])
    kinds = {}
    for k in kills:
        d = kinds.setdefault(k["kind"], {"kills": 0, **{f: 0 for f in fields},
                                         **{f: 0 for f in maxima}})
        d["kills"] += 1
        for f in fields:
            d[f] += k[f]
        for f in maxima:
            d[f] = max(d[f], k[f])
    row["kills"] = kills
    row["kills_by_kind"] = kinds


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
    if "tsung" in SCEN:
        return run_tsung(t, res, keep)
    only_msg = isinstance(t, Switchboard) and t.curve == "off" and CURVE == "both"
    if "login" in SCEN and not only_msg:
        rows, _ = t.run("login", "--users", str(LOGIN_USERS), "--rates", LOGIN_RATES,
                        "--window", "400", *LOGIN_NO_STOP, *common, label="login-scram")
        # the first pass derives keys for new accounts: run it again if it did
        res["login"] = best(keep(rows))
    if "plain" in SCEN and not only_msg:
        rows, _ = t.run("login", "--plain", "--users", str(LOGIN_USERS), "--rates",
                        PLAIN_RATES, *LOGIN_NO_STOP, *common, label="login-plain")
        res["plain"] = best(keep(rows))
    if "msg" in SCEN:
        rates = MSG_RATES if isinstance(t, Switchboard) else PEER_MSG_RATES
        rows, rc = t.run("msg", "--users", str(MSG_USERS), "--rates", rates, *common,
                         label="msg")
        res["msg"] = best(keep(rows))
        res["msg_all"] = rows
    if "smmsg" in SCEN and isinstance(t, Switchboard) and not only_msg:
        rows, _ = t.run("msg", "--sm", "--sm-ack-every", SM_ACK_EVERY, "--users",
                        str(MSG_USERS), "--rates", MSG_RATES, *common, label="msg-sm")
        res["smmsg"] = best(keep(rows))
        res["smmsg_all"] = rows
    if "mamcpu" in SCEN and isinstance(t, Switchboard) and not only_msg:
        m = t.mamcpu(common)
        keep(m["off"] + m["on"])
        res["mamcpu"] = m
    if "idle" in SCEN and not only_msg:
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
    if "storm" in SCEN and not only_msg:
        res["storm"] = {}
        for mech in ("scram-sha-1", "scram-sha-256"):
            cmd_extra = ["--scram-cache", os.path.join(VAR, "cache", "%s-%s.scram" % (t.name, mech))]
            # every account once at a modest rate, so the generator's key cache
            # is warm (its PBKDF2 must not be in the measured steps)
            t.run("login", "--tls", "--mech", mech, "--users", str(LOGIN_USERS), "--rates",
                  "400", "--step", "%g" % (LOGIN_USERS / 400.0 + 0.5), "--no-stop",
                  *cmd_extra, label="storm-warmup-%s" % mech)
            perf = start_perf(t, "storm-" + mech) if PERF else None
            rows, _ = t.run("login", "--tls", "--mech", mech, "--users", str(LOGIN_USERS),
                            "--rates", STORM_RATES, "--window", "2000", "--no-stop",
                            "--login-timeout", "10", *cmd_extra, *common,
                            label="storm-%s" % mech)
            prof = stop_perf(perf)
            keep(rows)
            res["storm"][mech] = {"rows": rows, "perf": prof}
    if "idlebig" in SCEN and isinstance(t, Switchboard) and not only_msg:
        res["idlebig"] = []
        for n, tp in ((IDLE_BIG, "tcp"), (IDLE_BIG_TLS, "tls"), (IDLE_WS, "ws"),
                      (IDLE_BOSH, "bosh")):
            if n <= 0:
                continue
            t.fresh()
            web = tp in ("ws", "bosh")
            ports = t.more_bosh(IDLE_WEB) if web else t.more_c2s(IDLE_C2S)
            saved = t.ports
            t.ports = ports
            src = ",".join("127.0.0.%d" % (2 + i) for i in range(IDLE_SRC))
            # one worker per 16,000 connections at least (RLIMIT_NOFILE 20,000)
            workers = max(IDLE_WORKERS if not web else 1, (n + 15999) // 16000)
            args = ["--users", str(n), "--hold", IDLE_BIG_HOLD, "--window", "200",
                    "--login-timeout", "120", "--workers", str(workers), "--src", src,
                    "--transport", tp]
            if not web:
                args += ["--chat-rate", IDLE_CHAT_RATE, "--chat-pct", IDLE_CHAT_PCT]
            label = "idlebig-%d%s" % (n, "" if tp == "tcp" else "-" + tp)
            try:
                rows, _ = t.run("idle", *args, label=label)
            finally:
                t.ports = saved
                t.fewer_c2s()
            keep(rows)
            res["idlebig"].extend(rows)
    if "scaleout" in SCEN and isinstance(t, Switchboard) and not only_msg:
        t.layout(small=True)
        try:
            rows, _ = t.run("msg", "--users", str(MSG_USERS), "--rates", MSG_RATES, *common,
                            label="msg-1c2s-1sm")
        finally:
            t.layout(small=False)
        res["scaleout_small"] = best(keep(rows))
    if "chaos" in SCEN and isinstance(t, Switchboard) and not only_msg:
        rows, _ = t.chaos()
        keep(rows)
        res["chaos"] = next((r for r in rows if r.get("scenario") == "chaos"), None)
    if "resume" in SCEN and isinstance(t, Switchboard) and not only_msg:
        rows, _ = t.resume_storm()
        keep(rows)
        res["resume"] = next((r for r in rows if r.get("scenario") == "resume"), None)
    if "csi" in SCEN and isinstance(t, Switchboard) and not only_msg:
        # XEP-0352: bytes to one client of 100 contacts, active vs inactive
        # (tests/bench/csi.py speaks to the bench stack itself)
        out = sh("/usr/bin/python3", os.path.join(ROOT, "tests/bench/csi.py"), "--profile",
                 "bench", check=False, capture_output=True, text=True, timeout=600)
        lines = [x for x in (out.stdout or "").splitlines() if x.startswith("{")]
        res["csi"] = json.loads(lines[-1]) if lines else None
        if not lines:
            say("csi scenario failed:", (out.stderr or "")[-400:])
    if "carbons" in SCEN and isinstance(t, Switchboard) and not only_msg:
        # XEP-0280: server CPU per message of a user with two resources,
        # carbons off vs on (tests/bench/carbons_cpu.py, raw streams)
        out = sh("/usr/bin/python3", os.path.join(ROOT, "tests/bench/carbons_cpu.py"),
                 "--profile", "bench", CARBONS_MSGS, check=False, capture_output=True,
                 text=True, timeout=600)
        lines = [json.loads(x) for x in (out.stdout or "").splitlines() if x.startswith("{")]
        res["carbons"] = next((x for x in lines if "summary" in x), None)
        if not res["carbons"]:
            say("carbons scenario failed:", (out.stderr or "")[-400:])
    if "mamq" in SCEN and isinstance(t, Switchboard) and not only_msg:
        # XEP-0313: query latency on a generated archive (tests/bench/mam_bench.py)
        e = dict(os.environ, MAM_ROWS=MAM_ROWS, MAM_HEAVY=MAM_HEAVY, MAM_QUERIES=MAM_QUERIES)
        out = sh("/usr/bin/python3", os.path.join(ROOT, "tests/bench/mam_bench.py"),
                 "--profile", "bench", check=False, capture_output=True, text=True,
                 timeout=7200, env=e)
        sys.stderr.write(out.stderr or "")
        lines = [json.loads(x) for x in (out.stdout or "").splitlines() if x.startswith("{")]
        res["mamq"] = lines[-1] if lines else None
        if not lines:
            say("mamq scenario failed:", (out.stderr or "")[-400:])
    if "logins" in SCEN and isinstance(t, Switchboard) and not only_msg:
        # one login ladder per SASL mechanism on freshly started processes
        # (tests/bench/logins.py: its domains, tokens, slapd and extauth)
        t.fresh()
        e = dict(os.environ, LOGINS_USERS=LOGINS_USERS, LOGINS_RATES=LOGINS_RATES,
                 LOGINS_STEP=STEP, LOGINS_MECHS=LOGINS_MECHS)
        out = sh("/usr/bin/python3", os.path.join(ROOT, "tests/bench/logins.py"),
                 "--profile", "bench", check=False, capture_output=True, text=True,
                 timeout=3600, env=e)
        sys.stderr.write(out.stderr or "")
        lines = [json.loads(x) for x in (out.stdout or "").splitlines() if x.startswith("{")]
        keep([x for x in lines if x.get("scenario") == "login" and not x.get("warmup")])
        res["logins"] = [x for x in lines if x.get("scenario") == "logins"]
        if out.returncode or not res["logins"]:
            say("logins scenario failed:", (out.stderr or "")[-400:])
    if "muc" in SCEN and isinstance(t, Switchboard) and not only_msg:
        rows, _ = t.muc_fanout()
        keep(rows)
        res["muc"] = rows[-1] if rows else None
    if "pep" in SCEN and isinstance(t, Switchboard) and not only_msg:
        rows, _ = t.pep_fanout()
        keep(rows)
        res["pep"] = rows[-1] if rows else None
    res["curve"] = t.curve or "n/a"
    return res


def start_perf(t, label):
    """perf record -g on c2s1 (Switchboard) while a login ladder runs."""
    if not isinstance(t, Switchboard) or not os.access("/usr/bin/perf", os.X_OK):
        return None
    pid = pidfile(os.path.join(VAR, "pid", "c2s1.pid"))
    if not pid:
        return None
    out = os.path.join(VAR, "perf-%s.data" % label)
    p = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p", str(pid),
                          "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, out


def stop_perf(perf):
    """The top of `perf report` (self time by symbol, and by shared object)."""
    if not perf:
        return None
    p, out = perf
    p.send_signal(2)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
    rep = {}
    for key, sort in (("symbols", "symbol"), ("dsos", "dso")):
        r = subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", sort,
                            "--stdio", "-g", "none", "--percent-limit", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        rep[key] = [l.strip() for l in r.stdout.splitlines()
                    if l.strip() and not l.startswith("#")][:25]
    rep["file"] = os.path.relpath(out)
    return rep


def run_tsung(t, res, keep):
    """GEN=tsung: the tsung ladder, then sbbench's msg at the same rates and
    for the same time per step, on the same (fresh) server."""
    import tsung_gen
    mports = None
    if isinstance(t, Switchboard):
        mports = [int(t.env["SB_C2S1_METRICS_PORT"]), int(t.env["SB_C2S2_METRICS_PORT"])]
    t.fresh()
    rows = tsung_gen.run_ladder(t, TSUNG_RATES, TSUNG_USERS, TSUNG_SECS, TSUNG_ARRIVAL,
                                TSUNG_DRAIN, os.path.join(VAR, "tsung"), DOMAIN, PREFIX,
                                PASSPREFIX, mports)
    for r in rows:
        r["curve"] = t.curve or "n/a"
    res["tsung_all"] = keep(rows)
    srows, _ = t.run("msg", "--users", str(TSUNG_USERS), "--rates",
                     ",".join(map(str, TSUNG_RATES)), "--step", "%g" % TSUNG_SECS,
                     "--no-stop", label="msg")
    res["msg_all"] = keep(srows)
    res["msg"] = best(srows)
    res["curve"] = t.curve or "n/a"
    return res


def tsung_table(results):
    """One row per rate and generator: sbbench and tsung side by side."""
    lines = ["", "| server | generator | offered msg/s | sent msg/s | delivered (fraction) | "
             "p50 / p99 / max ms | server CPU µs/msg | per process µs/msg | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        procs = SERVER_PROCS[base_name(name)] + ["redis", "postgres"]
        sb = {r["rate"]: r for r in res.get("msg_all") or []}
        for r in res.get("tsung_all") or []:
            for gen, x in (("tsung", r), ("sbbench", sb.get(r["rate"]))):
                if not x:
                    continue
                d = x.get("delivered") or 0
                sent = x.get("sent") or 0
                frac = "%s (%.4f)" % (fmt(d), d / sent) if sent else fmt(d)
                if gen == "tsung" and "delivered_server" in x:
                    frac = "%s server / %s tsung samples (%.4f / %.4f)" % (
                        fmt(x["delivered_server"]), fmt(x["delivered_tsung"]),
                        x["delivered_fraction_server"] or 0, x["delivered_fraction_tsung"] or 0)
                elif gen == "tsung":
                    frac = "%s tsung samples (%.4f)" % (fmt(x["delivered_tsung"]),
                                                        x["delivered_fraction_tsung"] or 0)
                lat = "%s / %s / %s" % tuple(fmt(x.get(k), 1) for k in ("p50_ms", "p99_ms",
                                                                         "max_ms"))
                cpu = sum(v["cpu_s"] for k, v in x.get("procs", {}).items() if k in procs)
                per = ", ".join("%s %.1f" % (k, v["cpu_s"] / max(d, 1) * 1e6)
                                for k, v in sorted(x.get("procs", {}).items())
                                if v["cpu_s"] / max(d, 1) * 1e6 >= 0.5)
                rate = x.get("per_s")
                lines.append("| %s | %s | %s | %s | %s | %s | %.1f | %s | %.1f |" % (
                    name, gen, fmt(r["rate"]), fmt(rate), frac, lat,
                    cpu / max(d, 1) * 1e6, per, x.get("load1", 0)))
    return lines


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


def base_name(name):
    """"switchboard curve=off" -> "switchboard" (one column per CURVE mode)."""
    return name.split(" ")[0]


def chaos_figures(c):
    if not c:
        return [("chaos: sent / delivered / bounced with an error", None, 0)]
    kinds = c.get("kills_by_kind", {})
    nk = sum(d["kills"] for d in kinds.values())
    per = "; ".join("%s ×%d: stall %.1f s (gap %.1f s), bounced %d, lost %d, re-logins %d" % (
        k, d["kills"], d.get("max_latency_ms", 0) / 1e3, d.get("max_gap_ms", 0) / 1e3,
        d["bounced"], d["lost"], d["relogins"]) for k, d in sorted(kinds.items()))
    return [
        ("chaos: %s users, %s msg/s, %.0f s, a fault every %g s%s" % (
            fmt(c["users"]), fmt(c["rate"]), c["secs"], CHAOS_EVERY,
            ", XEP-0198 clients" if c.get("sm") else ""), "", 0),
        ("chaos: sent / delivered / bounced with an error", "%s / %s / %s" % (
            fmt(c["sent"]), fmt(c["delivered"]), fmt(c["bounced_error"])), 0),
        ("chaos: **lost** (acked, never delivered, not offline, not archived) / unacked at end",
         "%s / %s" % (fmt(c["lost"]), fmt(c.get("unacked_at_end", c["lost_with_connection"]))),
         0),
        ("chaos: delivered twice / reordered / from offline storage / at the check / archive only",
         "%s / %s / %s / %s / %s" % (
             fmt(c["duplicates"]), fmt(c["reordered"]), fmt(c["from_offline"]),
             fmt(c.get("delivered_at_check", 0)), fmt(c.get("archived_only", 0))), 0),
        ("chaos: connections lost / resumed / resumption failed / re-sent", "%s / %s / %s / %s" % (
            fmt(c["drops"]), fmt(c.get("resumed", 0)), fmt(c.get("resume_failed", 0)),
            fmt(c.get("resent", 0))), 0),
        ("chaos: faults (%d) per kind" % nk, per or "none", 0),
    ]


def sm_figures(res, procs):
    """XEP-0198 on every client against none: the best rate of each, and CPU
    per message at the highest rate both sustained (same load, same work)."""
    m, sm = res.get("msg"), res.get("smmsg")
    plain = {r["rate"]: r for r in res.get("msg_all") or [] if r.get("ok")}
    both = [r for r in res.get("smmsg_all") or [] if r.get("ok") and r["rate"] in plain]
    top = max(both, key=lambda r: r["rate"]) if both else None

    def us(r):
        return cpu_of(r, procs) / max(r["delivered"], 1) * 1e6
    out = [("messages, XEP-0198 on every client (<r/> every %s sent, answers the "
            "server's): highest rate (msg/s)" % SM_ACK_EVERY, sm and sm["per_s"], 0),
           ("messages, XEP-0198: p50 / p99 at that rate (ms)",
            sm and "%.2f / %.2f" % (sm["p50_ms"], sm["p99_ms"]), 0),
           ("messages, XEP-0198: lost / reordered (all steps)",
            "%d / %d" % (sum(r["lost"] for r in res["smmsg_all"]),
                         sum(r["reordered"] for r in res["smmsg_all"]))
            if res.get("smmsg_all") else None, 0)]
    if top:
        a, b = us(plain[top["rate"]]), us(top)
        out.append(("server CPU per message at %s msg/s without / with XEP-0198 (µs)" %
                    fmt(top["rate"]), "%.1f / %.1f (%+.0f %%)" % (a, b, 100 * (b - a) / a), 0))
    return out


def mamcpu_figures(res):
    """Archiving off vs on: CPU per message (every process, PostgreSQL
    included: the archive's cost is mostly there) at the highest rate both
    ladders sustained with every archive row written, and the rows of each
    step."""
    m = res.get("mamcpu")
    if not m:
        return [("archiving off / on", None, 0)]
    off = {r["rate"]: r for r in m["off"] if r.get("ok")}
    both = [r for r in m["on"] if r.get("ok") and r["archive_ok"] and r["rate"] in off]
    top = max(both, key=lambda r: r["rate"]) if both else None
    ok_off = best(m["off"])
    ok_on = best([r for r in m["on"] if r["archive_ok"]])
    out = [("archiving off / on: highest rate with p99 < 50 ms (on: and every archive row "
            "written) (msg/s)", "%s / %s" % (fmt(ok_off and ok_off["per_s"]),
                                              fmt(ok_on and ok_on["per_s"])), 0),
           ("archiving on: per step, msg/s: delivered → archive rows (2 per message expected)",
            "; ".join("%s: %s → %s%s" % (fmt(r["rate"]), fmt(r["delivered"]),
                                         fmt(r["archive_rows"]),
                                         "" if r["archive_ok"] else " SHORT")
                      for r in m["on"]), 0),
           ("archiving off: archive rows written (all steps)",
            fmt(sum(r["archive_rows"] for r in m["off"])), 0)]
    if top:
        a, b = off[top["rate"]], top
        every = set(a["procs"]) | set(b["procs"])

        def us(r, names):
            return cpu_of(r, names) / max(r["delivered"], 1) * 1e6
        out.append(("server CPU per message at %s msg/s, archiving off / on, all processes "
                    "with Redis and PostgreSQL (µs)" % fmt(top["rate"]),
                    "%.1f / %.1f (%+.1f)" % (us(a, every), us(b, every),
                                             us(b, every) - us(a, every)), 0))
        for n in sorted(every):
            if us(a, [n]) >= 0.05 or us(b, [n]) >= 0.05:
                out.append(("  … %s (µs/msg off / on)" % n, "%.1f / %.1f" % (
                    us(a, [n]), us(b, [n])), 0))
    return out


def carbons_figures(c):
    if not c:
        return [("carbons: server CPU per message off / on", None, 0)]
    return [("carbons: server CPU per message, 2 resources, %s messages, off / on "
             "(µs, median of %d runs; each run)" % (fmt(c["messages"]), c["runs"]),
             "%.1f / %.1f (off %s; on %s)" % (c["off_us"], c["on_us"],
                                              ", ".join("%.0f" % x for x in c["off_all"]),
                                              ", ".join("%.0f" % x for x in c["on_all"])), 0)]


def fanout_figures(what, r, procs):
    """A fan-out run: rates in and out, latency, CPU per delivery per process."""
    if not r or r.get("setup_failed"):
        return [("%s fan-out" % what, r and "set-up failed: %s" % r.get("last_error"), 0)]
    d = max(r["delivered"], 1)
    per = ", ".join("%s %.1f" % (k, v["cpu_s"] / d * 1e6)
                    for k, v in r.get("procs", {}).items() if v["cpu_s"] >= 0.005)
    return [
        ("%s fan-out: %s receivers, in (/s) / deliveries out (/s)" % (what, fmt(r["receivers"])),
         "%.0f / %.0f" % (r["in_per_s"], r["out_per_s"]), 0),
        ("%s fan-out: delivered / expected" % what,
         "%s / %s" % (fmt(r["delivered"]), fmt(r["expected"])), 0),
        ("%s fan-out: p50 / p99 delivery latency (ms)" % what,
         "%.1f / %.1f" % (r["p50_ms"], r["p99_ms"]), 0),
        ("%s fan-out: server CPU per delivery (µs)" % what, cpu_of(r, procs) / d * 1e6, 1),
        ("%s fan-out: CPU per delivery by process (µs)" % what, per, 0),
    ]


def mamq_figures(q):
    if not q:
        return [("MAM query latency", None, 0)]
    out = [("MAM: archive rows / measured user's rows / generated in (s)", "%s / %s / %s" % (
        fmt(q["archive_rows"]), fmt(q["heavy"]),
        "%.1f" % q["generate_s"] if q.get("generate_s") is not None else "kept"), 0)]
    for k, v in q["kinds"].items():
        out.append(("MAM %s: p50 / p99 (ms, %d queries)" % (k, q["queries"]),
                    "%.1f / %.1f" % (v["p50_ms"], v["p99_ms"]), 0))
    return out


def resume_figures(r):
    if not r or r.get("setup_failed"):
        return [("resumption storm", r and "set-up failed: %s" % r.get("last_error"), 0)]
    return [
        ("resumption storm: %s resumable sessions on c2s1, SIGKILL, resumed on c2s2 "
         "(%s in flight)" % (fmt(r["users"]), fmt(r["window"])), "", 0),
        ("resumption storm: resumed / failed", "%s / %s" % (fmt(r["resumed"]),
                                                           fmt(r["resume_failed"])), 0),
        ("resumption storm: resumptions/s (first connect → last <resumed/>)", r["per_s"], 0),
        ("resumption storm: p50 / p99 / max resume latency, connect → <resumed/> (ms)",
         "%.1f / %.1f / %.1f" % (r["p50_ms"], r["p99_ms"], r["max_ms"]), 0),
        ("resumption storm: messages sent / delivered / lost / duplicates / reordered",
         "%s / %s / %s / %s / %s" % (fmt(r["sent"]), fmt(r["delivered"]), fmt(r["lost"]),
                                     fmt(r["duplicates"]), fmt(r["reordered"])), 0),
        ("resumption storm: server CPU during the storm (s, every process but the killed c2s1)",
         sum(v["cpu_s"] for v in r.get("procs", {}).values()), 2),
    ]


def figures(name, res):
    """(label, value, digits, higher_is_better) for the table."""
    name = base_name(name)
    procs = SERVER_PROCS[name]
    out = [("bus CURVE (curve=on/off)", res.get("curve", "n/a"), 0)]
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
    if name == "switchboard" and "smmsg" in SCEN:
        out += sm_figures(res, procs)
    if name == "switchboard" and "mamcpu" in SCEN:
        out += mamcpu_figures(res)
    if name == "switchboard" and "resume" in SCEN:
        out += resume_figures(res.get("resume"))
    if name == "switchboard" and "chaos" in SCEN and "chaos" in res:
        out += chaos_figures(res.get("chaos"))
    c = res.get("csi")
    if name == "switchboard" and "csi" in SCEN:
        out.append(("CSI: bytes to a client, %s contacts x %s presence changes, active / "
                    "inactive (saved)" % (c and c["contacts"], c and c["rounds"]),
                    c and "%s / %s (%s, %s %%)" % (fmt(c["active_bytes"]), fmt(c["inactive_bytes"]),
                                                  fmt(c["saved_bytes"]), c["saved_pct"]), 0))
    if name == "switchboard" and "carbons" in SCEN:
        out += carbons_figures(res.get("carbons"))
    if name == "switchboard" and "mamq" in SCEN:
        out += mamq_figures(res.get("mamq"))
    if name == "switchboard" and "muc" in SCEN:
        out += fanout_figures("MUC", res.get("muc"), procs + ["muc1"])
    if name == "switchboard" and "pep" in SCEN:
        out += fanout_figures("PEP", res.get("pep"), procs)
    return out


def where_time_goes(name, res):
    m = res.get("msg")
    if not m:
        return []
    lines = ["", "%s (curve=%s): CPU per delivered message at %s msg/s, by process (µs):" % (
        name, res.get("curve", "n/a"), fmt(m["per_s"])), ""]
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
    order = []
    for n in names:                   # rows only some columns have (chaos) are kept
        order += [f for f in figs[n] if f[0] not in [o[0] for o in order]]
    for label, _, nd in order:
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


def storm_idle_lines(results):
    """The login storm per mechanism and step, the big idle runs."""
    out = []
    for name, res in results.items():
        procs = SERVER_PROCS[base_name(name)] + ["redis", "postgres"]
        for mech, st in (res.get("storm") or {}).items():
            out += ["", "%s: login storm, %s over STARTTLS (stream, TLS, SASL, bind, session, "
                    "roster, presence):" % (name, mech.upper()), "",
                    "| offered/s | completed/s | p50 / p99 ms | errors | server CPU ms/login "
                    "(c2s / sm / Redis / PostgreSQL / all) | load avg |", "|---|---|---|---|---|---|"]
            for r in st["rows"]:
                n = max(r.get("done", 0) or r.get("completed", 0) or 1, 1)
                pr = r.get("procs", {})

                def ms(keys):
                    return sum(v["cpu_s"] for k, v in pr.items() if k in keys) / n * 1e3
                out.append("| %s | %s | %.1f / %.1f | %s | %.2f / %.2f / %.2f / %.2f / %.2f | %.1f |"
                           % (fmt(r["rate"]), fmt(r["per_s"]), r["p50_ms"], r["p99_ms"],
                              r["errors"], ms([k for k in pr if k.startswith("c2s")]),
                              ms([k for k in pr if k.startswith("sm")]), ms(["redis"]),
                              ms(["postgres"]), ms(procs + [k for k in pr]), r["load1"]))
            if st.get("perf"):
                out += ["", "perf (c2s1, self time, cpu-clock): %s" % st["perf"]["file"], ""]
                out += ["    " + l for l in st["perf"]["dsos"][:12]]
                out += [""] + ["    " + l for l in st["perf"]["symbols"][:25]]
        for r in res.get("idlebig") or []:
            pr = r.get("procs", {})
            on = max(r.get("online", 0), 1)

            def kib(pred):
                return sum(v["rss_kb"] - v["rss0_kb"] for k, v in pr.items() if pred(k)) / on
            out += ["", "%s: %s — %s/%s online in %.1f s (%d workers, %d source addresses), "
                    "held %s s, dropped %s, failed %s; chat %s/s among %s %%: %s sent, %s "
                    "delivered, p50 %.1f / p99 %.1f ms; load avg %.1f" % (
                        name, r["label"], fmt(r["online"]), fmt(r["users"]), r["login_s"],
                        r.get("workers", 1), r.get("sources", 0), r["held_s"], r["dropped"],
                        r["failed"], fmt(r.get("chat_rate")), r.get("chat_pct"),
                        fmt(r.get("chat_sent")), fmt(r.get("chat_delivered")),
                        r.get("chat_p50_ms", 0), r.get("chat_p99_ms", 0), r["load1"]),
                    "", "| KiB per connection | c2s (all) | sm (all) | routers | Redis | "
                    "PostgreSQL | all |", "|---|---|---|---|---|---|---|",
                    "| | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
                        kib(lambda k: k.startswith("c2s")), kib(lambda k: k.startswith("sm")),
                        kib(lambda k: k.startswith("router")), kib(lambda k: k == "redis"),
                        kib(lambda k: k == "postgres"), kib(lambda k: True))]
            out += ["", "per process (KiB per connection): " + ", ".join(
                "%s %.2f" % (k, (v["rss_kb"] - v["rss0_kb"]) / on) for k, v in sorted(pr.items()))]
    return out


def logins_lines(results):
    """The table of tests/bench/logins.py: one row per mechanism."""
    from logins import table as logins_table
    out = []
    for name, res in results.items():
        if res.get("logins"):
            out += ["", "%s: logins per SASL mechanism over STARTTLS (stream, TLS, SASL, bind, "
                    "session, roster, presence; highest step with p99 < 500 ms, no error, "
                    "≥ 97 %% done):" % name, ""] + logins_table(res["logins"])
    return out


def report(machine_line, results):
    if any("tsung_all" in r for r in results.values()):
        return ["Machine: " + machine_line, ""] + tsung_table(results)
    return (["Machine: " + machine_line, ""] + loads(results) + table(results) +
            storm_idle_lines(results) + logins_lines(results))


def commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        return "?"


def render(path):
    doc = json.load(open(path))
    print("\n".join(report(doc["machine"], doc["results"])))


COMMIT = commit()                      # the code that runs, read at start


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
        modes = ["on", "off"] if CURVE == "both" else [CURVE]
        for i, mode in enumerate(modes):
            sb.set_curve(mode)
            if i == 0:
                sb.start()
            if i > 0 or mode == "off":
                sb.fresh()             # every process again, with the mode in its environment
            sb.curve_check()
            key = "switchboard" if len(modes) == 1 else "switchboard curve=%s" % mode
            results[key] = run_scenarios(sb)
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
    n = 2
    while os.path.exists(base + ".json"):   # two runs in one minute: keep both
        base = os.path.join(outdir, "%s-%s-%d" % (date, host, n))
        n += 1
    doc = {"date": date, "host": host, "machine": machine(), "peer": PEER or None,
           "gen": GEN, "commit": COMMIT,
           "curve": CURVE,
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
