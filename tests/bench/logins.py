#!/usr/bin/python3
"""The `logins` scenario of `make bench`: one login ladder per SASL
mechanism the server offers, one after another on the same stack, each
through sbbench's login storm (stream, STARTTLS, SASL, bind, session,
roster get, initial presence, close):

  PLAIN, SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-256-PLUS (tls-exporter) on the
    main domain, against its password accounts;
  X-OAUTH2 with our own tokens (`sbctl token issue`, a domain with
    `tokens = own`; users bulk-added there);
  OAUTHBEARER with JWTs sbbench signs per login (HS256, the domain's
    `jwt_key` secret, `tokens = jwt`, `auto_create = yes`);
  LDAP: PLAIN on an `auth = ldap` domain, search-then-bind against a
    private slapd (tests/integration/slapd.py) over StartTLS;
  extauth: PLAIN on an `auth = extauth` domain, tests/extauth/users.py;
  FAST: sbbench logs every user in once with SASL2 PLAIN + <request-token/>,
    then the ladder logs in with SASL2 HT-SHA-256-NONE and Bind 2.

By hand against a running stack:
  SB_BENCH_PORT_OFFSET=1000 tests/bench/logins.py --profile bench
  SB_TEST_PORT_OFFSET=1000 LOGINS_USERS=5 LOGINS_RATES=10 tests/bench/logins.py --profile test
Knobs: LOGINS_USERS (pool per mechanism) [1000], LOGINS_RATES [100,200,400,
600,800,1000,1200] (logins/s, one step each, stopping at the first step not
sustained: p99 >= 500 ms, an error, or < 97 % completed), LOGINS_STEP [5] s,
LOGINS_MECHS (names below, comma-separated) [all], LOGINS_WARMUP [1]: every
user of the pool logs in once at 200/s before each ladder (unmeasured: the
generator's SCRAM keys, the account rows LDAP/extauth/JWT make at a first
login). Before each ladder the server processes are given time to go idle
(a ladder ending overloaded leaves a backlog).

On the bench profile c2s1 and c2s2 are restarted with the domains' sections
appended to the INI (and again without them at the end); on the test
profile c2s1 is reloaded and only it is used. Prints every sbbench step as a
JSON line, then one "logins" summary line per mechanism; the table on
stderr."""

import concurrent.futures
import json
import os
import secrets
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from mam_bench import stack_for  # noqa: E402
from slapd import Slapd  # noqa: E402

SBBENCH = os.path.join(ROOT, "build/bench/sbbench")
EXTAUTH = os.path.join(ROOT, "tests/extauth/users.py")
USERS = int(os.environ.get("LOGINS_USERS", "1000"))
RATES = os.environ.get("LOGINS_RATES", "100,200,400,600,800,1000,1200")
STEP = os.environ.get("LOGINS_STEP", "5")
WARMUP = os.environ.get("LOGINS_WARMUP", "1") == "1"
# name in the table → sbbench --mech, which domain (see Setup.domain)
MECHS = [("PLAIN", "plain", "main"), ("SCRAM-SHA-1", "scram-sha-1", "main"),
         ("SCRAM-SHA-256", "scram-sha-256", "main"),
         ("SCRAM-SHA-256-PLUS", "scram-sha-256-plus", "main"),
         ("X-OAUTH2 (own token)", "x-oauth2", "own"), ("OAUTHBEARER (JWT)", "oauthbearer", "jwt"),
         ("LDAP (PLAIN)", "plain", "ldap"), ("extauth (PLAIN)", "plain", "ext"),
         ("FAST (HT-SHA-256-NONE)", "fast", "main")]
WATCH = ["router1", "router2", "sm1", "sm2", "c2s1", "c2s2"]


def say(*a):
    print("logins:", *a, file=sys.stderr, flush=True)


class Setup:
    """The domains, accounts, tokens, directory and extauth program of every
    mechanism, and the INI section that configures them."""

    def __init__(self, stack, profile):
        self.stack, self.profile = stack, profile
        self.bench = profile == "bench"
        self.var = os.path.join(stack.env["SB_VAR"], "logins")
        os.makedirs(self.var, exist_ok=True)
        tag = "" if self.bench else secrets.token_hex(3)
        base = stack.domain
        self.names = {"main": base, "own": "own%s.%s" % (tag, base),
                      "jwt": "jwt%s.%s" % (tag, base), "ldap": "ldap%s.%s" % (tag, base),
                      "ext": "ext%s.%s" % (tag, base)}
        self.prefix, self.passprefix = ("bench", "pw") if self.bench else ("lgn", "lgnpw")
        off = int(os.environ.get("SB_BENCH_PORT_OFFSET" if self.bench else "SB_TEST_PORT_OFFSET",
                                 "0") or 0)
        # bench: beside the profile's ports; test: beside test_ldap's 25389/25388
        self.ldap_port = (6389 if self.bench else 25386) + off
        self.slapd = None
        self.saved_ini = None

    def sbctl(self, *args, timeout=60, check=True):
        return self.stack.sbctl(*args, timeout=timeout, check=check)

    def users(self, domain):
        """USERS accounts prefixN/passprefixN on domain (once on the bench)."""
        marker = os.path.join(self.var, "users-%s" % domain)
        try:
            if int(open(marker).read()) >= USERS:
                return
        except (OSError, ValueError):
            pass
        self.sbctl("user", "bulk-add", domain, self.prefix, str(USERS), self.passprefix,
                   timeout=600)
        if self.bench:
            with open(marker, "w") as f:
                f.write(str(USERS))

    def tokens(self):
        """One own token per user of the own-token domain (sbctl token issue;
        on the bench kept for the next runs while well inside their 30 days)."""
        path = os.path.join(self.var, "tokens")
        try:
            fresh = time.time() - os.path.getmtime(path) < 15 * 86400
            if self.bench and fresh and len(open(path).read().splitlines()) == USERS:
                return path
        except OSError:
            pass
        t = time.time()
        dom = self.names["own"]

        def issue(i):
            out = self.sbctl("token", "issue", "%s%d@%s" % (self.prefix, i, dom), "--ttl",
                             str(30 * 86400 if self.bench else 3600)).stdout.strip()
            return "%d %s\n" % (i, out.splitlines()[-1])
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            lines = list(ex.map(issue, range(1, USERS + 1)))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
        say("%d tokens issued in %.1f s" % (USERS, time.time() - t))
        return path

    def prepare(self):
        for key in ("own", "jwt", "ldap", "ext"):
            self.sbctl("domain", "add", self.names[key], check=not self.bench)
        if not self.bench:
            self.users(self.names["main"])
        self.users(self.names["own"])
        self.token_file = self.tokens()
        self.jwt_key = os.path.join(self.var, "jwt-secret")
        fd = os.open(self.jwt_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        people = {"%s%d" % (self.prefix, i): "%s%d" % (self.passprefix, i)
                  for i in range(1, USERS + 1)}
        ext_users = os.path.join(self.var, "ext-users")
        with open(ext_users, "w") as f:
            f.writelines("%s:%s\n" % kv for kv in people.items())
        top = os.path.join(self.var, "slapd")
        shutil.rmtree(top, ignore_errors=True)
        tls = os.path.join(self.stack.env["SB_VAR"], "tls")
        self.slapd = Slapd(top, os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem"),
                           self.ldap_port)
        self.slapd.start()
        t = time.time()
        self.slapd.populate(people)
        say("slapd on %d with %d people (%.1f s)" % (self.ldap_port, USERS, time.time() - t))
        section = ("\n# logins bench (tests/bench/logins.py)\n"
                   "[domain.%s]\ntokens = own\n\n[domain.%s]\ntokens = jwt\njwt_alg = HS256\n"
                   "jwt_key = %s\nauto_create = yes\n\n[domain.%s]\nauth = extauth\n"
                   "extauth_program = /usr/bin/python3 %s %s\nextauth_instances = 2\n"
                   % (self.names["own"], self.names["jwt"], self.jwt_key, self.names["ext"],
                      EXTAUTH, ext_users))
        section += self.slapd.domain_section(self.names["ldap"], os.path.join(self.var, "svc-pw"))
        with open(self.stack.ini) as f:
            self.saved_ini = f.read()
        with open(self.stack.ini, "a") as f:
            f.write(section)
        self.apply()

    def apply(self):
        """The INI as it is now, in the front-ends."""
        if self.bench:
            for n in ("c2s1", "c2s2"):
                self.stack.stack("stop-proc", n)
                self.stack.stack("start-proc", n)
            self.stack.stack("wait-ready", timeout=60)
        else:
            from xmpptest import reload_and_wait
            reload_and_wait(self.stack, "c2s1")

    def cleanup(self):
        if self.saved_ini is not None:
            with open(self.stack.ini, "w") as f:
                f.write(self.saved_ini)
            self.apply()
        if self.slapd:
            self.slapd.stop()
        if not self.bench:
            for key in ("own", "jwt", "ldap", "ext"):
                self.sbctl("domain", "del", self.names[key], "--force", check=False)

    def ports(self):
        inst = ("c2s1", "c2s2") if self.bench else ("c2s1",)
        return ",".join(str(self.stack.port(i)) for i in inst)

    def watches(self, key):
        piddir = os.path.join(self.stack.env["SB_VAR"], "pid")
        w, c2s = [], []
        for n in WATCH:
            try:
                pid = int(open(os.path.join(piddir, n + ".pid")).read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if os.path.exists("/proc/%d" % pid):
                w.append("%s:%d" % (n, pid))
                if n.startswith("c2s"):
                    c2s.append((n, pid))
        try:
            w.append("redis:%d" % int(open(os.path.join(piddir, "redis.pid")).read().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        try:
            pg = int(open(os.path.join(self.stack.env["SB_VAR"], "pg", "postmaster.pid"))
                     .readline())
            w.append("postgres:%d+" % pg)
        except (OSError, ValueError):
            pass
        if key == "ldap" and self.slapd and self.slapd.proc:
            w.append("slapd:%d" % self.slapd.proc.pid)
        if key == "ext":
            # the front-end runs each copy through /bin/sh -c: + adds the program
            for name, pid in c2s:
                for i, child in enumerate(children(pid)):
                    w.append("extauth.%s.%d:%d+" % (name, i, child))
        return w


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return sorted(out)


def settle(setup):
    """Wait until the Switchboard processes are idle (< 5 % of a core over
    1 s; at most 30 s, 3 s on the test stack): a ladder that ended
    overloaded must not leave its backlog to the next mechanism's first
    step."""
    pids = [int(w.split(":")[1].rstrip("+")) for w in setup.watches("main")
            if w.split(":")[0] in WATCH]

    def cpu():
        tot = 0
        for pid in pids:
            try:
                st = open("/proc/%d/stat" % pid).read()
                f = st[st.rindex(")") + 2:].split()
                tot += int(f[11]) + int(f[12])
            except (OSError, ValueError):
                pass
        return tot / os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + (30 if setup.bench else 3)
    while time.monotonic() < end:
        c0 = cpu()
        time.sleep(1)
        if cpu() - c0 < 0.05:
            return


def sbbench(setup, mech, key, rates, step, label, no_stop=False):
    domain = setup.names[key]
    cmd = [SBBENCH, "-H", "127.0.0.1", "-p", setup.ports(), "-d", domain, "-u", setup.prefix,
           "-w", setup.passprefix, "--tls", "--mech", mech, "--users", str(USERS),
           "--rates", rates, "--step", step, "--window", "2000", "--login-timeout", "10",
           "--label", label,
           "--scram-cache", os.path.join(setup.var, "%s.scram" % mech.replace("-plus", ""))]
    if mech == "x-oauth2":
        cmd += ["--token-file", setup.token_file]
    if mech == "oauthbearer":
        cmd += ["--jwt-key", setup.jwt_key]
    if no_stop:
        cmd.append("--no-stop")
    if setup.bench:
        cmd += ["--p99", "500"]
    else:
        cmd += ["--p99", "100000"]      # the test profile: no timing, only that it works
    for w in setup.watches(key):
        cmd += ["--watch", w]
    cmd.append("login")
    say(" ".join(cmd[1:]))
    load = os.getloadavg()[0]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=600)
    sys.stderr.write(p.stderr)
    rows = []
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            rows.append(dict(json.loads(line), load1=load))
    return rows


def summary(name, rows):
    """The highest sustained step (else the first), its CPU per login by process."""
    steps = [r for r in rows if "rate" in r]
    ok = [r for r in steps if r.get("ok")]
    r = max(ok, key=lambda x: x["rate"]) if ok else (steps[0] if steps else None)
    out = {"scenario": "logins", "mechanism": name, "sustained": r["rate"] if ok else 0,
           "steps": len(steps), "errors": sum(s.get("errors", 0) for s in steps),
           "setup_failed": any(x.get("setup_failed") for x in rows)}
    if not r:
        out["last_error"] = next((x.get("last_error") for x in rows), "no result")
        return out
    n = max(r["completed"], 1)
    # the first step is the same offered rate for every mechanism: its CPU
    # split compares them at equal load (more logins per wake-up at higher rates)
    f = steps[0]
    out["first_rate"] = f["rate"]
    out["first_cpu_ms"] = {k: round(v["cpu_s"] / max(f["completed"], 1) * 1e3, 3)
                           for k, v in f["procs"].items()}
    out.update({"rate": r["rate"], "per_s": r["per_s"], "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"], "completed": r["completed"], "step_errors": r["errors"],
                "last_error": r.get("last_error", ""), "load1": r.get("load1"),
                "gen_ms": round(r["gen_cpu_s"] / n * 1e3, 3),
                "cpu_ms": {k: round(v["cpu_s"] / n * 1e3, 3) for k, v in r["procs"].items()},
                "max_rate": max(s["rate"] for s in steps),
                "max_per_s": max(s["per_s"] for s in steps)})
    return out


def group(cpu):
    """CPU ms per login: c2s, sm, routers, Redis, PostgreSQL, directory, total."""
    def s(pred):
        return sum(v for k, v in cpu.items() if pred(k))
    return (s(lambda k: k.startswith("c2s")), s(lambda k: k.startswith("sm")),
            s(lambda k: k.startswith("router")), s(lambda k: k == "redis"),
            s(lambda k: k == "postgres"),
            s(lambda k: k == "slapd" or k.startswith("extauth")), s(lambda k: True))


def table(sums):
    out = ["| mechanism | sustained logins/s | p50 / p99 ms there | failures (all steps) | "
           "server CPU ms per login at the first step (%s/s): c2s / sm / routers / Redis / "
           "PostgreSQL / slapd or extauth / total | total CPU ms per login at the sustained rate | "
           "highest step: offered → done/s | load avg |"
           % (sums[0].get("first_rate", "?") if sums else "?"),
           "|---|---|---|---|---|---|---|---|"]
    for m in sums:
        if "cpu_ms" not in m:
            out.append("| %s | set-up failed: %s | | | | | | |" % (m["mechanism"],
                                                                m.get("last_error")))
            continue
        g = group(m["first_cpu_ms"])
        out.append("| %s | %s | %.1f / %.1f | %d | %s | %s | %s → %.0f | %.1f |" % (
            m["mechanism"], m["sustained"] or "none (%s/s: p99 %.0f ms)" % (m["rate"], m["p99_ms"]),
            m["p50_ms"], m["p99_ms"], m["errors"], " / ".join("%.2f" % x for x in g),
            "%.2f" % group(m["cpu_ms"])[-1] if m["sustained"] else "—",
            m["max_rate"], m["max_per_s"], m.get("load1") or 0))
    return out


def main():
    profile = "test"
    if len(sys.argv) == 3 and sys.argv[1] == "--profile":
        profile = sys.argv[2]
    only = [x.strip() for x in os.environ.get("LOGINS_MECHS", "").split(",") if x.strip()]
    stack = stack_for(profile)
    setup = Setup(stack, profile)
    sums = []
    try:
        setup.prepare()
        for name, mech, key in MECHS:
            if only and name not in only and mech not in only and key not in only:
                continue
            if WARMUP and mech != "fast":
                secs = "%g" % (USERS / 200.0 + 0.5)
                setup_rows = sbbench(setup, mech, key, "200", secs, "logins-warmup", no_stop=True)
                for r in setup_rows:
                    print(json.dumps(dict(r, warmup=True)), flush=True)
            settle(setup)
            rows = sbbench(setup, mech, key, RATES, STEP, "logins-%s" % mech)
            for r in rows:
                print(json.dumps(dict(r, mechanism=name)), flush=True)
            sums.append(summary(name, rows))
            print(json.dumps(sums[-1]), flush=True)
            settle(setup)
    finally:
        setup.cleanup()
    for line in table(sums):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
