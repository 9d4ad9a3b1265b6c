#!/usr/bin/python3
"""make bench: run the sbbench scenarios against a private Switchboard stack
(deploy/dev/stack.sh -p bench: 1 router, 2 c2s, 2 sm) and, with PEER=prosody,
against a private Prosody on the same users, then write
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
  BENCH_IDLE        [5000,20000]  BENCH_IDLE_TLS [1]
  BENCH_IDLE_HOLD   hold of the largest plaintext idle run [60]; others BENCH_IDLE_HOLD_OTHER [10]
  SB_BENCH_PORT_OFFSET  shifts every port of the bench profile
  PEER              prosody (Debian package, private instance under var/bench/prosody)
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
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        rows = []
        for line in p.stdout.splitlines():
            try:
                rows.append(json.loads(line))
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


def prosody_keys(args):
    """(user, salt, stored, server) for one account, as internal_hashed stores it."""
    i, it = args
    salt = hashlib.sha1(b"sbbench-salt-%d" % i).hexdigest()[:16].encode()
    pw = ("%s%d" % (PASSPREFIX, i)).encode()
    salted = hashlib.pbkdf2_hmac("sha1", pw, salt, it)
    ck = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
    sk = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
    return i, salt.decode(), hashlib.sha1(ck).hexdigest(), sk.hex()


class Prosody(Target):
    """A private Prosody (Debian package): own config, data, ports, logs."""
    name = "prosody"
    ITER = 4096                       # same cost per account as Switchboard's
    # one process: it cannot hold more sockets than RLIMIT_NOFILE (20,000 in
    # the CI container, which cannot raise it)
    max_conns = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 1000

    def __init__(self):
        self.dir = os.path.join(VAR, "prosody")
        self.cfg = os.path.join(self.dir, "prosody.cfg.lua")
        self.proc = None
        self.ports = [PROSODY_PORT]

    def install(self):
        if os.path.exists("/usr/bin/prosody"):
            return
        say("installing prosody from Debian (its system service is kept from starting)")
        policy = "/usr/sbin/policy-rc.d"
        made = not os.path.exists(policy)
        if made:
            with open(policy, "w") as f:
                f.write("#!/bin/sh\nexit 101\n")
            os.chmod(policy, 0o755)
        try:
            e = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            sh("apt-get", "install", "-y", "-q", "prosody", env=e, stdout=sys.stderr)
        finally:
            if made:
                os.unlink(policy)

    def write_config(self):
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        tls = os.path.join(VAR, "tls")
        with open(self.cfg, "w") as f:
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

    def ensure_users(self):
        n = max_users()
        marker = os.path.join(self.dir, "users-%s" % PREFIX)
        try:
            have = int(open(marker).read())
        except (OSError, ValueError):
            have = 0
        if have >= n:
            return
        # prosodyctl register starts a Lua VM per account (tenths of a second):
        # write the internal_hashed account files it would write instead.
        t = time.time()
        acc = os.path.join(self.dir, "data", DOMAIN, "accounts")
        os.makedirs(acc, exist_ok=True)
        with multiprocessing.Pool() as pool:
            for i, salt, stored, server in pool.imap_unordered(
                    prosody_keys, ((i, self.ITER) for i in range(have + 1, n + 1)), 256):
                with open(os.path.join(acc, "%s%d.dat" % (PREFIX, i)), "w") as f:
                    f.write('return {\n\t["iteration_count"] = %d;\n\t["salt"] = "%s";\n'
                            '\t["stored_key"] = "%s";\n\t["server_key"] = "%s";\n};\n'
                            % (self.ITER, salt, stored, server))
        with open(marker, "w") as f:
            f.write(str(n))
        say("prosody: %d accounts written in %.1f s" % (n - have, time.time() - t))

    def fresh(self):
        self.stop()
        self.start()

    def start(self):
        self.install()
        self.write_config()
        self.ensure_users()
        log = open(os.path.join(self.dir, "stdout.log"), "a")
        self.proc = subprocess.Popen(["prosody", "--config", self.cfg], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        end = time.time() + 20
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit("bench: prosody exited at start (see %s)" % self.dir)
            try:
                socket.create_connection(("127.0.0.1", PROSODY_PORT), 0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("bench: prosody is not listening on %d" % PROSODY_PORT)

    def watches(self):
        return ["prosody:%d" % self.proc.pid] if self.proc else []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---------------------------------------------------------------- scenarios

SERVER_PROCS = {"switchboard": SB_PROCS, "prosody": ["prosody"]}


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
                        "--window", "400", *common, label="login-scram")
        # the first pass derives keys for new accounts: run it again if it did
        res["login"] = best(keep(rows))
    if "plain" in SCEN:
        rows, _ = t.run("login", "--plain", "--users", str(LOGIN_USERS), "--rates",
                        PLAIN_RATES, *common, label="login-plain")
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
    p = res.get("plain")
    out.append(("PLAIN logins/s sustained", p and p["per_s"], 0))
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


def where_time_goes(res):
    m = res.get("msg")
    if not m:
        return []
    lines = ["", "CPU per delivered message at %s msg/s, by process (µs):" % fmt(m["per_s"]), ""]
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
    return lines + where_time_goes(results[names[0]])


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


def render(path):
    doc = json.load(open(path))
    print("\n".join(["Machine: " + doc["machine"], ""] + table(doc["results"])))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        return render(sys.argv[2])
    if not os.access(SBBENCH, os.X_OK):
        raise SystemExit("bench: %s missing (make bench builds it)" % SBBENCH)
    raise_nofile()
    os.makedirs(os.path.join(VAR, "cache"), exist_ok=True)
    t0 = time.time()
    results = {}
    if PEER and PEER != "prosody":
        raise SystemExit("bench: PEER=%s is not supported (PEER=prosody is)" % PEER)
    sb = Switchboard()
    peer = Prosody() if PEER else None
    try:
        sb.start()
        results["switchboard"] = run_scenarios(sb)
        if peer:
            peer.start()
            results["prosody"] = run_scenarios(peer)
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
    md = ["Machine: " + machine(), ""] + table(results)
    with open(base + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    say("results: %s.json and .md (%.0f s)" % (base, time.time() - t0))


if __name__ == "__main__":
    main()
