"""GEN=tsung for make bench: the message scenario driven by Debian's tsung
(1.7, Erlang), a load generator we did not write, against any XMPP target
of bench.py (Switchboard or a peer).

One tsung run per rate. Every run: USERS users arrive at ARRIVAL/s, log in
with SASL PLAIN on the plaintext port (tsung has no SCRAM), bind, session,
send initial presence with ack="global" (every user waits there until all
USERS have sent theirs), then each sends LOOPS chat messages with a
64-byte stamped body to a random *online* user (tsung's destination=
"online", to the bare JID), one every USERS/RATE seconds, so the offered
total is RATE/s; then waits DRAIN s and closes.

Every login step waits with ack="parse" and a regexp for the element it
needs (</stream:features>, <success|<failure, </iq>, <iq), not tsung's
usual ack="local" (any bytes): sb-c2s sends the stream header at once and
the features with the next flush (two TCP segments), so under load a
tsung user taking the header for the features sent <auth/> and the stream
restart out of step and was closed with not-well-formed / bad-format.

What is measured, and by whom:
  sent       tsung's count of the `chat` transaction around each send
  latency    tsung's own xmpp_msg_latency: the sender writes its node id
             and an Erlang timestamp into the body (stamped="true"); the
             receiving tsung session computes now - stamp when it reads a
             chunk holding "@@@node,stamp@@@". It is taken for the FIRST
             stamp of each chunk the socket delivers only (tsung's regexp
             match), so when several messages arrive in one read, one
             sample stands for them: a lower bound of deliveries, and a
             latency sample biased toward the first of a burst. Every
             sample is written by tsung itself to tsung-fullstats.log
             (backend="fullstats"); p50/p99 are computed from those
             samples, mean/max from tsung.log's own summary.
  delivered  the number of those samples (tsung's view, a lower bound);
             for Switchboard also the c2s front-ends' own count of
             <message/> stanzas written to clients (sb_stanzas_out_total,
             /metrics), which counts every delivered message exactly.
  CPU        utime+stime of every server process (Redis and PostgreSQL
             with its backends included), sampled from /proc every 0.25 s
             during the run; the chat window is read back from tsung.log's
             1-second intervals (first interval with a send to the last
             with a received stamp), and CPU is the difference of the two
             samples around it, divided by the messages delivered.
"""

import glob
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

TSUNG = "/usr/bin/tsung"
FULLSTAT_RE = re.compile(rb"\{sample,xmpp_msg_latency,([0-9.eE+-]+)\}")


def say(*a):
    print("bench(tsung):", *a, file=sys.stderr, flush=True)


def install():
    """tsung is a bench-only dependency (deploy/dev/bench-packages.txt)."""
    if os.access(TSUNG, os.X_OK):
        return
    say("installing tsung from Debian")
    subprocess.run(["apt-get", "install", "-y", "-q", "tsung"], check=True, stdout=sys.stderr,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def config(ports, domain, prefix, passprefix, users, rate, secs, arrival, drain, body=64):
    """The tsung XML for one run at `rate` messages/s in total."""
    think = users / float(rate)                 # seconds between two sends of one user
    loops = max(1, int(round(secs / think)))
    # the phase lasts longer than the arrivals need: maxnumber stops it at
    # `users` (tsung starts slowly and drops arrivals a short phase missed)
    login_secs = int(users / float(arrival)) + 10
    return """<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "/usr/share/tsung/tsung-1.0.dtd">
<!-- written by tests/bench/tsung_gen.py: {users} users, {rate} msg/s -->
<tsung loglevel="warning" dumptraffic="{dump}" version="1.0" backend="fullstats">
  <clients>
    <client host="localhost" use_controller_vm="true" maxusers="{maxu}"/>
  </clients>
  <servers>
{servers}  </servers>
  <load duration="{maxdur}" unit="second">
    <arrivalphase phase="1" duration="{login_secs}" unit="second">
      <users maxnumber="{users}" arrivalrate="{arrival}" unit="second"/>
    </arrivalphase>
  </load>
  <options>
    <option type="ts_jabber" name="global_number" value="{users}"/>
    <option type="ts_jabber" name="userid_max" value="{users}"/>
    <option type="ts_jabber" name="domain" value="{domain}"/>
    <option type="ts_jabber" name="username" value="{prefix}"/>
    <option type="ts_jabber" name="passwd" value="{passprefix}"/>
    <option name="global_ack_timeout" value="{gack}"/>
  </options>
  <sessions>
    <session probability="100" name="chat" type="ts_jabber" bidi="true">
      <request><jabber type="connect" ack="parse" regexp="&lt;/stream:features&gt;"/></request>
      <transaction name="login">
        <request><jabber type="auth_sasl" ack="parse" regexp="&lt;(success|failure)"/></request>
        <request><jabber type="connect" ack="parse" regexp="&lt;/stream:features&gt;"/></request>
        <request><jabber type="auth_sasl_bind" ack="parse" regexp="&lt;/iq&gt;"/></request>
        <request><jabber type="auth_sasl_session" ack="parse" regexp="&lt;iq"/></request>
      </transaction>
      <request><jabber type="presence:initial" ack="global"/></request>
      <thinktime value="1" random="false"/>
      <for from="1" to="{loops}" incr="1" var="i">
        <transaction name="chat">
          <request><jabber type="chat" ack="no_ack" size="{body}" destination="online"
                           stamped="true"/></request>
        </transaction>
        <thinktime value="{think:.4f}" random="false"/>
      </for>
      <thinktime value="{drain}" random="false"/>
      <request><jabber type="close" ack="no_ack"/></request>
    </session>
  </sessions>
</tsung>
""".format(users=users, rate=rate, maxu=users + 10,
           servers="".join('    <server host="127.0.0.1" port="%d" type="tcp" weight="1"/>\n' % p
                           for p in ports), login_secs=login_secs,
           arrival=arrival, domain=domain, prefix=prefix, passprefix=passprefix,
           gack=int((login_secs + 60) * 1000), loops=loops, body=body, think=think,
           drain=drain, maxdur=int(login_secs + 1.5 * secs + drain + 30), dump=os.environ.get("BENCH_TSUNG_DUMP", "false")), loops


# ---- /proc sampling --------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    """utime+stime of pid (and, with children, of its live children:
    PostgreSQL's backends), in seconds; None when gone."""
    def one(p):
        try:
            with open("/proc/%d/stat" % p) as f:
                s = f.read()
        except OSError:
            return None
        f = s[s.rfind(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / TICK
    t = one(pid)
    if t is None:
        return None
    if children:
        try:
            kids = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
        except OSError:
            kids = []
        for k in kids:
            t += one(int(k)) or 0
    return t


def proc_rss_kb(pid):
    try:
        for l in open("/proc/%d/status" % pid):
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    except OSError:
        pass
    return 0


def parse_watch(spec):
    name, pid = spec.split(":")
    return name, int(pid.rstrip("+")), pid.endswith("+")


class Sampler(threading.Thread):
    """CPU of every watched process every `every` s: [(unix time, {name: s})]."""

    def __init__(self, watches, every=0.25):
        super().__init__(daemon=True)
        self.w = [parse_watch(s) for s in watches]
        self.every = every
        self.samples = []
        self.stop_ev = threading.Event()

    def snap(self):
        self.samples.append((time.time(), {n: proc_cpu(p, c) for n, p, c in self.w}))

    def run(self):
        while not self.stop_ev.is_set():
            self.snap()
            self.stop_ev.wait(self.every)
        self.snap()

    def window(self, t0, t1):
        """CPU seconds per process between the last sample <= t0 and the
        first >= t1."""
        a = [s for s in self.samples if s[0] <= t0]
        b = [s for s in self.samples if s[0] >= t1]
        a = a[-1] if a else self.samples[0]
        b = b[0] if b else self.samples[-1]
        out = {}
        for n in a[1]:
            x, y = a[1][n], b[1].get(n)
            out[n] = round(y - x, 3) if x is not None and y is not None else 0.0
        return out, b[0] - a[0]


# ---- Switchboard's own counts (c2s /metrics) ---------------------------------

def sb_messages_out(metrics_ports):
    """<message/> stanzas the front-ends wrote to clients, summed."""
    n = 0
    for port in metrics_ports:
        try:
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=3).read()
        except OSError:
            return None
        for line in text.decode().splitlines():
            if line.startswith("sb_stanzas_out_total") and 'type="message"' in line:
                n += int(float(line.split()[-1]))
    return n


# ---- tsung's output ------------------------------------------------------------

def parse_log(path):
    """tsung.log: per 1-second dump (its unix time) the count of each sample
    in that interval (a dump may list a name more than once: summed), and
    each sample's run total (count in the interval + the count up to the
    previous dump, the line's last field; the highest seen)."""
    intervals, totals, t, cur = [], {}, None, {}
    for line in open(path, errors="replace"):
        if line.startswith("# stats: dump at"):
            if t is not None:
                intervals.append((t, cur))
            t, cur = int(line.split()[-1]), {}
        elif line.startswith("stats: "):
            f = line.split()
            try:
                vals = [float(x) for x in f[2:]]
            except ValueError:
                continue               # {cpu,"node"} and the like
            if len(vals) == 7:         # a sample: count mean stddev max min mean' count'
                cur[f[1]] = cur.get(f[1], 0) + vals[0]
                totals[f[1]] = max(totals.get(f[1], 0), vals[0] + vals[-1])
            elif len(vals) == 2:       # a counter: in this interval, total
                cur[f[1]] = cur.get(f[1], 0) + vals[0]
                totals[f[1]] = max(totals.get(f[1], 0), vals[1])
    if t is not None:
        intervals.append((t, cur))
    return intervals, totals


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def run_step(target, rate, users, secs, arrival, drain, workdir, domain, prefix, passprefix,
             step_no, metrics_ports=None):
    xml, loops = config(target.ports, domain, prefix, passprefix, users, rate, secs, arrival, drain)
    d = os.path.join(workdir, "%s-%d" % (target.name, rate))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    conf = os.path.join(d, "tsung.xml")
    with open(conf, "w") as f:
        f.write(xml)
    prepare = getattr(target, "tsung_prepare", None)
    if prepare:
        prepare()
    watches = target.watches()
    sampler = Sampler(watches)
    out0 = sb_messages_out(metrics_ports) if metrics_ports else None
    load = os.getloadavg()[0]
    sampler.start()
    # a controller id of its own per run: its node name is in every stamp, so
    # a message of an earlier run delivered late (offline storage at the
    # next login) is not taken for one of this run
    cid = "sb%d%d" % (os.getpid() % 10000, int(time.time()) % 100000)
    e = dict(os.environ, ERL_AFLAGS="-tsung_controller dumpstats_interval 1000")
    t0 = time.time()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    say("%s: %d users, %d msg/s (%d messages each, every %.3f s), ports %s" % (
        target.name, users, rate, loops, users / float(rate), target.ports))
    # tsung stops itself at the load's duration (a generator that falls
    # behind sends fewer messages, which the sent rate then shows)
    timeout = users / float(arrival) + 10 + 1.5 * secs + drain + 90
    p = subprocess.Popen([TSUNG, "-n", "-f", conf, "-l", d + "/", "-i", cid, "start"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e,
                         start_new_session=True, cwd=d)   # erl_crash.dump lands there
    try:
        p.stdout_text = p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 15)           # the script and its Erlang VM
        p.stdout_text = p.communicate()[0]
    p.stdout = p.stdout_text
    sampler.stop_ev.set()
    sampler.join()
    wall = time.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    out1 = sb_messages_out(metrics_ports) if metrics_ports else None
    logs = glob.glob(os.path.join(d, "*", "tsung.log"))
    row = {"scenario": "msg", "gen": "tsung", "label": "tsung-msg", "rate": rate,
           "users": users, "secs": secs, "load1": load, "wall_s": round(wall, 1),
           "tsung_rc": p.returncode, "gen_cpu_s": round(gen_cpu, 2), "dir": os.path.relpath(d)}
    if not logs:
        row["error"] = "no tsung.log (%s)" % p.stdout[-300:]
        return row
    intervals, totals = parse_log(logs[0])
    # the chat window: first interval with a send .. last with a stamp read
    sends = [t for t, c in intervals if c.get("tr_chat", 0) > 0]
    recvs = [t for t, c in intervals if c.get("xmpp_msg_latency", 0) > 0]
    sent = totals.get("tr_chat", 0)
    lat = os.path.join(os.path.dirname(logs[0]), "tsung-fullstats.log")
    samples = []
    if os.path.exists(lat):
        samples = sorted(float(m.group(1)) for m in FULLSTAT_RE.finditer(open(lat, "rb").read()))
    got = len(samples)
    errors = {k: int(v) for k, v in totals.items() if k.startswith("error") and v}
    if sends and recvs:
        w0, w1 = min(sends) - 1, max(recvs) + 0.5   # an interval reports the second before it
        cpu, wsecs = sampler.window(w0, w1)
    else:
        cpu, wsecs = {}, 0
    rss = {n: proc_rss_kb(pid) for n, pid, _ in (parse_watch(s) for s in watches)}
    row.update({
        "sent": int(sent), "delivered_tsung": got,
        "delivered_fraction_tsung": round(got / sent, 4) if sent else None,
        "per_s": round(sent / (max(sends) - min(sends) + 1), 1) if sends else 0,
        "chat_window_s": round(wsecs, 2),
        "p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99), "p999_ms": pct(samples, 99.9),
        "max_ms": samples[-1] if samples else None,
        "mean_ms": round(sum(samples) / got, 3) if got else None,
        "errors": errors, "users": int(totals.get("users_count", 0)),
        "procs": {n: {"cpu_s": cpu.get(n, 0.0), "rss_kb": rss.get(n, 0)} for n in cpu},
    })
    if out0 is not None and out1 is not None:
        # every <message/> written by the front-ends during the run (no other
        # traffic is running on the bench stack meanwhile)
        row["delivered_server"] = out1 - out0
        row["delivered_fraction_server"] = round((out1 - out0) / sent, 4) if sent else None
    delivered = row.get("delivered_server") or got
    row["delivered"] = delivered
    row["us_per_msg"] = round(sum(cpu.values()) / max(delivered, 1) * 1e6, 1) if cpu else None
    return row


def run_ladder(target, rates, users, secs, arrival, drain, workdir, domain, prefix, passprefix,
               metrics_ports=None):
    install()
    rows = []
    for i, rate in enumerate(rates):
        if i:
            time.sleep(2)              # the previous run's users logged out
        r = run_step(target, rate, users, secs, arrival, drain, workdir, domain, prefix,
                     passprefix, i, metrics_ports)
        say(json.dumps({k: v for k, v in r.items() if k != "procs"}))
        rows.append(r)
    return rows
