"""The docker-compose stack (deploy/docker-compose.yml, deploy/docker/).

test_layout_matches_stack_sh needs no Docker: the compose services, the
compose INI and the Prometheus targets must be deploy/dev/stack.sh's
process layout (PROCS, ROUTERS), so the two descriptions cannot drift.

test_compose_stack builds the images and runs the stack: two users on
different c2s containers exchange messages, one c2s container is restarted
and the other user's session is still there (it receives a message sent
through the restarted one), `sbctl status` in router1 lists every instance,
and `--scale c2s-extra=1` adds a front-end. It is skipped, with the reason
printed, only when Docker cannot run here. Where no image registry is
reachable the debian:bookworm-slim base is built locally (debootstrap from
the configured apt mirror, then `docker import`), so the Dockerfiles stay
the conventional ones. When no daemon runs and we are root it starts
`dockerd --storage-driver=vfs` itself (and stops it at the end). Containers
talk only on the stack's network, whose subnet the test chooses; clients
reach the stack only through ports published on 127.0.0.1, shifted by
SB_TEST_PORT_OFFSET like every test port."""

import asyncio
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from xmpptest import close, login, next_message, run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(ROOT, "deploy")
COMPOSE_FILE = os.path.join(DEPLOY, "docker-compose.yml")
BASE_IMAGE = "debian:bookworm-slim"
OFFSET = int(os.environ.get("SB_TEST_PORT_OFFSET", "0"))
TAG = "sbtest"
PROJECT = "sbtest" + (str(OFFSET) if OFFSET else "")
# the stack's network, and the daemon's default bridge if we start the daemon
SUBNET = "10.231.%d.0/24" % (2 + (OFFSET // 100) % 200)
DAEMON_BIP = "10.231.1.1/24"
# Host ports on 127.0.0.1: below the kernel's ephemeral range (32768 up), so
# no outgoing connection of the suite can hold one when compose publishes
# it; same last two digits as the other profiles' ports, 8,000 above the
# bench's and 11,000 below the tests', so no offset in use meets them.
PORTS = {
    "c2s1": 14222 + OFFSET, "c2s1_tls": 14223 + OFFSET, "c2s2": 14242 + OFFSET,
    "bosh": 14280 + OFFSET, "s2s": 14269 + OFFSET,
}


def _stack_sh_arrays():
    """PROCS and ROUTERS as deploy/dev/stack.sh defines them."""
    out = subprocess.run(
        ["bash", "-c", 'eval "$(grep -E "^(PROCS|ROUTERS)=" "$1")"; echo "${PROCS[*]}"; '
         'echo "${ROUTERS[*]}"', "-", os.path.join(DEPLOY, "dev/stack.sh")],
        check=True, capture_output=True, text=True, timeout=10).stdout.splitlines()
    return out[0].split(), out[1].split()


def _ini(path):
    sections, cur = {}, None
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("["):
                cur = sections.setdefault(s.strip("[]"), {})
            elif "=" in s:
                k, _, v = s.partition("=")
                cur[k.strip()] = v.strip()
    return sections


def test_layout_matches_stack_sh():
    yaml = pytest.importorskip("yaml", reason="python3-yaml is needed to read the compose file")
    procs, routers = _stack_sh_arrays()
    with open(COMPOSE_FILE) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    named = {n: s for n, s in services.items() if (s.get("environment") or {}).get("SB_INSTANCE")}
    assert sorted(named) == sorted(procs), "compose services ≠ stack.sh PROCS"
    for name, svc in named.items():
        assert svc["environment"]["SB_INSTANCE"] == name
        assert svc["command"] == name.rstrip("0123456789"), name
        keys = [s["target"] for s in svc["secrets"] if isinstance(s, dict)]
        assert name + ".key" in keys, "%s lacks its CURVE key" % name
    # every bus member name has a key made by `secrets`, and a compose secret
    members = services["secrets"]["environment"]["SB_MEMBERS"].split()
    slots = services["c2s-extra"]["environment"]["SB_INSTANCE_SLOTS"].split()
    assert set(procs) | set(slots) | {"sbctl"} <= set(members)
    for m in members:
        assert "key_" + m in compose["secrets"], m
    # the INI names exactly stack.sh's routers
    ini = _ini(os.path.join(DEPLOY, "docker/switchboard.ini"))
    assert ini["cluster"]["routers"].split(",") == ["tcp://%s:15555" % r for r in routers]
    for r in routers:
        assert ini["router." + r]["advertise"] == "tcp://%s:15555" % r
    assert ini["cluster"]["metrics"] == "0.0.0.0:9100"
    # published container ports of the default profile: 5222/5223/5269/5280 only
    published = set()
    for name, svc in services.items():
        if svc.get("profiles"):
            continue
        for p in svc.get("ports", []):
            published.add(int(str(p).rsplit(":", 1)[1]))
    assert published == {5222, 5223, 5269, 5280}
    # Prometheus scrapes every process
    with open(os.path.join(DEPLOY, "docker/prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted("%s:9100" % p for p in procs)
    # PostgreSQL and Redis images use the package list's servers
    with open(os.path.join(DEPLOY, "dev/packages.txt")) as f:
        pkgs = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert {"postgresql", "redis-server"} <= pkgs


# ------------------------------------------------------------------ docker
def _sh(cmd, timeout, check=True, env=None, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), p.returncode,
                                                           p.stdout[-4000:], p.stderr[-4000:]))
    return p


def _docker_bin():
    # Prefer the engine's own client (Debian's docker.io) when there are two.
    for c in ("/usr/bin/docker", shutil.which("docker")):
        if c and os.access(c, os.X_OK):
            return c
    return None


def _daemon_up(docker):
    return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="module")
def docker():
    """The docker client, with a daemon running (started here if need be)."""
    docker = _docker_bin()
    if not docker:
        pytest.skip("Docker cannot run here: no docker client (apt-get install docker.io)")
    started = None
    if not _daemon_up(docker):
        dockerd = shutil.which("dockerd")
        if not dockerd or os.geteuid() != 0:
            pytest.skip("Docker cannot run here: no daemon answers (`docker info` fails) and %s"
                        % ("no dockerd" if not dockerd else "not root to start one"))
        log = open(os.path.join(tempfile.gettempdir(), "sbtest-dockerd.log"), "ab")
        started = subprocess.Popen([dockerd, "--storage-driver=vfs", "--bip=" + DAEMON_BIP],
                                   stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while not _daemon_up(docker):
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                pytest.skip("Docker cannot run here: dockerd did not start (log: %s)" % log.name)
            time.sleep(0.5)
    yield docker
    if started:
        started.terminate()
        try:
            started.wait(30)
        except subprocess.TimeoutExpired:
            started.kill()


def _compose_cmd(docker):
    if subprocess.run([docker, "compose", "version"], capture_output=True,
                      timeout=20).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("Docker cannot run compose here: neither `docker compose` nor docker-compose")


def _apt_mirror():
    """The Debian mirror of the configured apt sources (deb822 or one-line)."""
    files = glob.glob("/etc/apt/sources.list.d/*.sources") + ["/etc/apt/sources.list"] + \
        glob.glob("/etc/apt/sources.list.d/*.list")
    for path in files:
        try:
            text = open(path).read()
        except OSError:
            continue
        for m in re.finditer(r"^URIs:\s*(\S+)\s*\nSuites:\s*([^\n]*)", text, re.M):
            if "bookworm" in m.group(2).split():
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return m.group(1)
    return "http://deb.debian.org/debian"


def _ensure_base_image(docker):
    if _sh([docker, "image", "inspect", BASE_IMAGE], 30, check=False).returncode == 0:
        return
    if not shutil.which("debootstrap"):
        pytest.fail("no %s image and no debootstrap to build it (apt-get install debootstrap)"
                    % BASE_IMAGE)
    d = tempfile.mkdtemp(prefix="sbtest-base-", dir="/var/tmp")
    os.chmod(d, 0o755)      # it becomes the image's /: mkdtemp's 0700 would lock out non-root users
    try:
        _sh(["debootstrap", "--variant=minbase", "bookworm", d, _apt_mirror()], 900)
        tar = subprocess.Popen(["tar", "-C", d, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([docker, "import", "-", BASE_IMAGE], stdin=tar.stdout,
                             capture_output=True, text=True, timeout=600)
        tar.stdout.close()
        assert tar.wait() == 0 and imp.returncode == 0, "docker import failed: %s" % imp.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _build_images(docker):
    """The images the compose file names (its `build:` sections), built
    here once with the plain client so compose finds them and builds nothing."""
    docker_dir = os.path.join(DEPLOY, "docker")
    for tag, dockerfile, ctx in (
            ("switchboard", os.path.join(docker_dir, "Dockerfile"), ROOT),
            ("switchboard-postgres", os.path.join(docker_dir, "postgres.Dockerfile"), docker_dir),
            ("switchboard-redis", os.path.join(docker_dir, "redis.Dockerfile"), docker_dir)):
        _sh([docker, "build", "-q", "-f", dockerfile, "-t", "%s:%s" % (tag, TAG), ctx], 2400)


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class ComposeStack:
    """Just what xmpptest.login needs of a stack, plus compose helpers."""

    def __init__(self, compose, env):
        self.compose, self.env = compose, env
        self.domain, self.host = "localhost", "127.0.0.1"
        self.c2s = {"c2s1": (PORTS["c2s1"], PORTS["c2s1_tls"]), "c2s2": (PORTS["c2s2"], None)}

    def port(self, instance="c2s1"):
        return self.c2s[instance][0]

    def tls_port(self, instance="c2s1"):
        return self.c2s[instance][1]

    def run(self, *args, timeout=120, check=True):
        return _sh(self.compose + list(args), timeout, check=check, env=self.env, cwd=DEPLOY)

    def sbctl(self, *args, timeout=20, check=True):
        return self.run("exec", "-T", "router1", "sbctl", *args, timeout=timeout, check=check)

    def instances(self):
        out = self.sbctl("status", check=False).stdout
        names = set()
        for line in out.splitlines():
            if line.startswith("S2S CONNECTIONS") or line.startswith("ROUTERS"):
                break
            w = line.split()
            if w and w[0] != "INSTANCE":
                tagged = [x[5:] for x in w if x.startswith("name=")]
                names.add(tagged[0] if tagged else w[0])
        return names

    def wait(self, what, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                logs = self.run("logs", "--tail", "20", timeout=60, check=False).stdout
                raise AssertionError("timed out after %ss waiting for %s\n%s"
                                     % (timeout, what, logs[-6000:]))
            time.sleep(0.5)

    def wait_instances(self, names, timeout=120):
        self.wait("instances %s (last: %s)" % (sorted(names), "…"),
                  lambda: set(names) <= self.instances(), timeout)


@pytest.mark.timeout(3000)
def test_compose_stack(docker):
    compose = _compose_cmd(docker)
    t0 = time.monotonic()
    _ensure_base_image(docker)
    t_base = time.monotonic()
    _build_images(docker)
    t_build = time.monotonic()
    work = tempfile.mkdtemp(prefix="sbtest-compose-", dir="/var/tmp")
    secrets_dir = os.path.join(work, "secrets")
    override = os.path.join(work, "override.yml")
    with open(override, "w") as f:
        # c2s2 is not published by the stack (one host port, one container):
        # the test reaches it on a port of its own.
        f.write('services:\n  c2s2:\n    ports:\n      - "127.0.0.1:%d:5222"\n' % PORTS["c2s2"])
    env = dict(os.environ,
               COMPOSE_PROJECT_NAME=PROJECT, SWITCHBOARD_TAG=TAG,
               SWITCHBOARD_SECRETS=secrets_dir, SWITCHBOARD_SUBNET=SUBNET,
               SWITCHBOARD_PUBLISH_IP="127.0.0.1",
               SWITCHBOARD_C2S_PORT=str(PORTS["c2s1"]),
               SWITCHBOARD_C2S_TLS_PORT=str(PORTS["c2s1_tls"]),
               SWITCHBOARD_BOSH_PORT=str(PORTS["bosh"]), SWITCHBOARD_S2S_PORT=str(PORTS["s2s"]))
    if compose[0].endswith("docker"):
        env["DOCKER_BUILDKIT"] = "0"
    st = ComposeStack(compose + ["-f", COMPOSE_FILE, "-f", override], env)
    st.run("down", "-v", "--remove-orphans", timeout=180, check=False)  # an earlier run's leftovers
    try:
        st.run("run", "--rm", "secrets", timeout=300)
        st.run("up", "-d", timeout=600)
        st.wait_instances({"router1", "router2", "sm1", "sm2", "c2s1", "c2s2", "bosh1", "s2s1"}
                          - {"router1", "router2"})
        st.wait("published ports", lambda: all(_port_open(p) for p in PORTS.values()), 60)
        t_up = time.monotonic()

        alice, bob = ("%s@localhost" % n for n in ("alice", "bob"))
        for jid in (alice, bob):
            st.sbctl("user", "add", jid, "pw-" + jid)

        async def go():
            a = await login(st, alice, "pw-" + alice, instance="c2s1", timeout=30)
            b = await login(st, bob, "pw-" + bob, instance="c2s2", timeout=30)
            try:
                assert str(a.boundjid) != str(b.boundjid)
                a.send_message(mto=b.boundjid.full, mbody="hello via c2s1", mtype="chat")
                await next_message(b, body="hello via c2s1", timeout=15)
                b.send_message(mto=a.boundjid.full, mbody="hello via c2s2", mtype="chat")
                await next_message(a, body="hello via c2s2", timeout=15)
                # c2s1 goes away and comes back; bob, on c2s2, stays connected
                await close(a)
                a = None
                await asyncio.to_thread(st.run, "restart", "c2s1", timeout=120)
                await asyncio.to_thread(st.wait_instances, {"c2s1", "c2s2"})
                await asyncio.to_thread(st.wait, "c2s1 port", lambda: _port_open(PORTS["c2s1"]), 60)
                a = await login(st, alice, "pw-" + alice, instance="c2s1", timeout=30)
                a.send_message(mto=b.boundjid.full, mbody="after the restart", mtype="chat")
                await next_message(b, body="after the restart", timeout=15)
            finally:
                await close(a)
                await close(b)
        run(go(), timeout=300)

        status = st.sbctl("status").stdout
        for name in ("sm1", "sm2", "c2s1", "c2s2", "bosh1", "s2s1"):
            assert re.search(r"(^|\s|=)%s(\s|$)" % name, status, re.M), status
        assert "answering" in status, status
        assert st.run("exec", "-T", "c2s1", "id", "-u").stdout.strip() == "10001"

        # one more front-end
        st.run("up", "-d", "--scale", "c2s-extra=1", timeout=300)
        st.wait_instances({"c2s3"})
        t_end = time.monotonic()
        print("\ncompose test: base image %.0fs, image builds %.0fs, secrets+up %.0fs, "
              "scenario %.0fs, total %.0fs" % (t_base - t0, t_build - t_base, t_up - t_build,
                                               t_end - t_up, t_end - t0))
    except BaseException:
        # what the containers said, for the failure report
        print(st.run("ps", timeout=60, check=False).stdout)
        print(st.run("logs", "--tail", "30", timeout=120, check=False).stdout[-20000:])
        raise
    finally:
        st.run("down", "-v", "--remove-orphans", "-t", "5", timeout=300, check=False)
        shutil.rmtree(work, ignore_errors=True)
