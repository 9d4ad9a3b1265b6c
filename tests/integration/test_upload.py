"""HTTP File Upload (XEP-0363): the slot service upload.DOMAIN (any sm) found
through the server's disco#items with slixmpp's xep_0363 plugin, its
max-file-size in disco#info; slots PUT and fetched back over raw HTTP on
sb-bosh (content, Content-Type, Content-Length, ranges, HEAD); the errors:
file-too-large with the maximum, the quota, a forged or expired slot (403),
a body other than the slot's size (413/400), an unknown file (404), a full
disk (507 and one log line, on a tmpfs of 64 KiB), and `sbctl upload purge`.
The test profile sets max_file_size = 1 MiB and quota = 3 MiB."""

import http.client
import os
import subprocess
import tempfile
import time
import urllib.parse
import hashlib
import hmac
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from test_limits import ExtraC2S
from xmpptest import Log, close, insecure_tls_context, login, run, wait_until

NS_UPLOAD = "urn:xmpp:http:upload:0"
MAX = 1048576
QUOTA = 3145728


def upload_cfg(stack):
    """[upload] of the stack's INI (what every sm and bosh read)."""
    cfg, sect = {}, None
    with open(stack.ini) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                sect = line.strip("[]")
            elif sect == "upload" and "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                cfg[k.strip()] = v.strip()
    with open(cfg["secret_file"]) as f:
        cfg["secret"] = f.readline().rstrip("\n")
    return cfg


def req(port, method, url_or_path, body=None, headers=None, timeout=10):
    """One HTTP request to 127.0.0.1:port → (status, headers dict, body)."""
    u = urllib.parse.urlsplit(url_or_path)
    path = u.path + ("?" + u.query if u.query else "")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def bosh_port(stack):
    return int(stack.env["SB_BOSH_PORT"])


async def session(stack, new_user):
    jid, pw = new_user("up")
    x = await login(stack, jid, pw, plugins=["xep_0030", "xep_0363"])
    return x


async def slot(x, name, size, ctype="application/octet-stream"):
    iq = await x["xep_0363"].request_slot(x["xep_0363"].upload_service or
                                          "upload." + x.boundjid.domain, name, size, ctype,
                                          timeout=10)
    s = iq["http_upload_slot"]
    return s["put"]["url"], s["get"]["url"]


async def slot_error(x, name, size, ctype="text/plain"):
    try:
        await slot(x, name, size, ctype)
    except IqError as e:
        return e.iq["error"]
    raise AssertionError("slot for %s (%d bytes) was granted" % (name, size))


def test_discovery_put_get_round_trip(stack, new_user):
    async def go():
        x = await session(stack, new_user)
        try:
            # what xep_0363's find_upload_service does (its own trips over
            # Python 3.11's asyncio.wait): disco#items of the server, then
            # disco#info of each item, the one with identity store/file
            items = await x["xep_0030"].get_items(jid=stack.domain, timeout=10)
            info = None
            for jid, _node, _name in items["disco_items"]["items"]:
                try:
                    i = await x["xep_0030"].get_info(jid=jid, timeout=10)
                except IqError:
                    continue        # gw.DOMAIN: a component not attached now
                if ("store", "file") in [(c, t) for c, t, _l, _n in
                                         i["disco_info"]["identities"]] and \
                        NS_UPLOAD in i["disco_info"]["features"]:
                    info = i
            assert info is not None, "no upload service in the server's disco#items"
            assert str(info["from"]) == "upload." + stack.domain
            forms = [f["values"] for f in info["disco_info"].iterables]
            up = [v for v in forms if v.get("FORM_TYPE") == [NS_UPLOAD]]
            assert up and int(up[0]["max-file-size"]) == MAX, forms
            x["xep_0363"].upload_service = info["from"]
            data = os.urandom(200000) + b"end"
            put, get = await slot(x, "holiday photo é.png", len(data), "image/png")
            return put, get, data
        finally:
            await close(x)
    put, get, data = run(go())
    port = bosh_port(stack)
    assert get.startswith(upload_cfg(stack)["url"] + "/")
    assert "holiday%20photo%20%C3%A9.png" in get
    st, _, _ = req(port, "GET", get)
    assert st == 404, "a file not yet PUT is served"
    st, _, _ = req(port, "PUT", put, data, {"Content-Type": "image/png"})
    assert st == 201
    st, h, body = req(port, "GET", get)
    assert st == 200 and body == data
    assert h["content-type"] == "image/png"
    assert int(h["content-length"]) == len(data)
    assert h.get("accept-ranges") == "bytes"
    # the HTTPS port streams the same file through TLS records
    c = http.client.HTTPSConnection("127.0.0.1", int(stack.env["SB_BOSH_TLS_PORT"]), timeout=10,
                                    context=insecure_tls_context())
    try:
        c.request("GET", urllib.parse.urlsplit(get).path)
        r = c.getresponse()
        assert (r.status, r.read()) == (200, data)
    finally:
        c.close()
    st, h, body = req(port, "GET", get, headers={"Range": "bytes=10-19"})
    assert st == 206 and body == data[10:20]
    assert h["content-range"] == "bytes 10-19/%d" % len(data)
    st, h, body = req(port, "GET", get, headers={"Range": "bytes=-3"})
    assert st == 206 and body == b"end"
    st, h, _ = req(port, "GET", get, headers={"Range": "bytes=%d-" % len(data)})
    assert st == 416 and h["content-range"] == "bytes */%d" % len(data)
    st, h, body = req(port, "HEAD", get)
    assert st == 200 and body == b"" and int(h["content-length"]) == len(data)
    st, _, _ = req(port, "PUT", put, data, {"Content-Type": "image/png"})
    assert st == 409, "a slot is used once"
    # unknown id, right id with another name
    path = urllib.parse.urlsplit(get).path
    st, _, _ = req(port, "GET", path.rsplit("/", 2)[0] + "/" + "a" * 32 + "/x.png")
    assert st == 404
    st, _, _ = req(port, "GET", path.rsplit("/", 1)[0] + "/other.png")
    assert st == 404


def test_file_too_large_names_the_maximum(stack, new_user):
    async def go():
        x = await session(stack, new_user)
        try:
            return await slot_error(x, "big.bin", MAX + 1)
        finally:
            await close(x)
    err = run(go())
    assert err["condition"] == "not-acceptable" and err["type"] == "modify"
    ftl = err.xml.find("{%s}file-too-large" % NS_UPLOAD)
    assert ftl is not None, "no <file-too-large/>"
    assert ftl.find("{%s}max-file-size" % NS_UPLOAD).text == str(MAX)


def test_bad_requests(stack, new_user):
    async def go():
        x = await session(stack, new_user)
        try:
            conds = [(await slot_error(x, "a.txt", 0))["condition"],
                     (await slot_error(x, "a.txt", 10, "text/plain\r\nX-Evil: 1"))["condition"]]
            iq = x.make_iq_get(ito="upload." + stack.domain)
            iq.append(ET.Element("{%s}request" % NS_UPLOAD, {"size": "5"}))
            try:
                await iq.send(timeout=10)
                conds.append(None)
            except IqError as e:
                conds.append(e.iq["error"]["condition"])
            return conds
        finally:
            await close(x)
    assert run(go()) == ["bad-request", "bad-request", "bad-request"]


def test_quota_per_user(stack, new_user):
    async def go():
        x = await session(stack, new_user)
        y = await session(stack, new_user)
        try:
            for i in range(3):
                await slot(x, "part%d.bin" % i, MAX)
            err = await slot_error(x, "one-more.bin", 1)
            other = await slot(y, "mine.bin", MAX)     # another user's quota is their own
            return err, other
        finally:
            await close(x)
            await close(y)
    err, other = run(go())
    assert err["condition"] == "resource-constraint" and err["type"] == "wait"
    assert other[0].startswith("http")


def signed_put(cfg, path_tail, size, ctype, expiry, secret=None):
    """The PUT URL an sm would have signed (common/upload.c)."""
    msg = "%s\n%d\n%s\n%d" % (path_tail, size, ctype, expiry)
    sig = hmac.new((secret or cfg["secret"]).encode(), msg.encode(), hashlib.sha256).hexdigest()
    return "%s/%s?e=%d&n=%d&s=%s" % (cfg["url"], path_tail, expiry, size, sig)


def test_forged_and_expired_slots_are_403(stack, new_user):
    async def go():
        x = await session(stack, new_user)
        try:
            return await slot(x, "f.txt", 5, "text/plain")
        finally:
            await close(x)
    put, get = run(go())
    cfg, port = upload_cfg(stack), bosh_port(stack)
    h = {"Content-Type": "text/plain"}
    tail = urllib.parse.urlsplit(get).path.split("/", 2)[2]
    # the signature we compute is the server's: the check below is meaningful
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(put).query)
    assert signed_put(cfg, tail, 5, "text/plain", int(q["e"][0])) == put
    forged = put[:-1] + ("0" if put[-1] != "0" else "1")
    assert req(port, "PUT", forged, b"hello", h)[0] == 403
    assert req(port, "PUT", signed_put(cfg, tail, 5, "text/plain", int(time.time()) + 60,
                                        secret="not-the-cluster-secret"), b"hello", h)[0] == 403
    assert req(port, "PUT", signed_put(cfg, tail, 5, "text/plain", int(time.time()) - 1),
                b"hello", h)[0] == 403
    assert req(port, "PUT", put, b"hello", {"Content-Type": "text/html"})[0] == 403
    assert req(port, "PUT", put.split("?")[0], b"hello", h)[0] == 403
    # wrong sizes, then the right one
    assert req(port, "PUT", put, b"hello world", h)[0] == 413
    assert req(port, "PUT", put, b"hell", h)[0] == 400
    assert req(port, "PUT", put, b"hello", h)[0] == 201
    st, hd, body = req(port, "GET", get)
    assert (st, body, hd["content-type"]) == (200, b"hello", "text/plain")


def test_unknown_file_is_404(stack):
    cfg = upload_cfg(stack)
    st, _, _ = req(bosh_port(stack), "GET", cfg["url"] + "/" + "0" * 32 + "/nothing.txt")
    assert st == 404
    st, _, _ = req(bosh_port(stack), "GET", cfg["url"] + "/../../etc/passwd")
    assert st == 404


def test_purge_removes_expired_files(stack, new_user):
    async def go():
        x = await session(stack, new_user)
        try:
            return await slot(x, "old.txt", 3, "text/plain")
        finally:
            await close(x)
    put, get = run(go())
    port = bosh_port(stack)
    assert req(port, "PUT", put, b"old", {"Content-Type": "text/plain"})[0] == 201
    cfg = upload_cfg(stack)
    fid = urllib.parse.urlsplit(get).path.split("/")[-2]
    f = os.path.join(cfg["dir"], fid[:2], fid)
    assert os.path.exists(f)
    two_days = time.time() - 2 * 86400
    os.utime(f, (two_days, two_days))
    out = stack.sbctl("upload", "purge", "--older-than", "1").stdout
    assert "files older than 1 days deleted" in out
    assert not os.path.exists(f)
    assert req(port, "GET", get)[0] == 404


@pytest.fixture
def tiny_disk():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="sb-upload-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


def test_full_disk_is_507_and_logged(stack, new_user, tiny_disk):
    bosh = ExtraC2S(stack, "bosh7", kind="bosh", env={"SB_UPLOAD_DIR": tiny_disk})
    try:
        bosh.wait_ready()

        async def go():
            x = await session(stack, new_user)
            try:
                return await slot(x, "big.bin", 200000)
            finally:
                await close(x)
        put, get = run(go())
        st, _, _ = req(bosh.port, "PUT", put, os.urandom(200000))
        assert st == 507
        wait_until(lambda: "upload_disk_full" in bosh.log_text(), 5, "the disk-full log line")
        assert bosh.log_text().count("upload_disk_full") == 1
        assert req(bosh.port, "GET", get)[0] == 404
        assert not [n for _, _, fs in os.walk(tiny_disk) for n in fs], "a partial file was left"
    finally:
        assert bosh.stop() == 0


def uploaded_file(stack, new_user, prefix="updel"):
    """A fresh account with one stored file: (jid, path on disk, GET url)."""
    jid, pw = new_user(prefix)

    async def go():
        x = await login(stack, jid, pw, plugins=["xep_0030", "xep_0363"])
        try:
            return await slot(x, "mine.txt", 4, "text/plain")
        finally:
            await close(x)
    put, get = run(go())
    assert req(bosh_port(stack), "PUT", put, b"mine", {"Content-Type": "text/plain"})[0] == 201
    fid = urllib.parse.urlsplit(get).path.split("/")[-2]
    f = os.path.join(upload_cfg(stack)["dir"], fid[:2], fid)
    assert os.path.exists(f)
    return jid, fid, f, get


def test_user_del_removes_the_files_and_the_quota(stack, new_user):
    """sbctl sees [upload] dir on this host: the files go with the account,
    and so do the slot and quota rows (auth/account.c's table list)."""
    from test_sbctl import psql
    jid, fid, f, get = uploaded_file(stack, new_user)
    node, dom = jid.split("@")
    q = ("SELECT (SELECT count(*) FROM upload_files WHERE domain='%s' AND username='%s'),"
         " (SELECT count(*) FROM upload_quota WHERE domain='%s' AND username='%s')"
         % (dom, node, dom, node))
    assert psql(stack, q) == "1|1"
    stack.sbctl("user", "del", jid)
    assert not os.path.exists(f), "the file stayed after sbctl user del"
    assert req(bosh_port(stack), "GET", get)[0] == 404
    assert psql(stack, q) == "0|0"
    assert psql(stack, "SELECT count(*) FROM upload_trash WHERE id='%s'" % fid) == "0"


def test_trashed_files_are_removed_by_sb_bosh(stack, new_user):
    """Ids queued by a process that cannot see the directory (sb-c2s on
    XEP-0077 <remove/>, or sbctl elsewhere) are unlinked by an sb-bosh."""
    from test_sbctl import psql
    _jid, fid, f, get = uploaded_file(stack, new_user)
    log = Log(stack, "bosh1")
    psql(stack, "INSERT INTO upload_trash (id) VALUES ('%s')" % fid)
    wait_until(lambda: not os.path.exists(f), 20, "sb-bosh to unlink the queued file")
    assert req(bosh_port(stack), "GET", get)[0] == 404
    wait_until(lambda: psql(stack, "SELECT count(*) FROM upload_trash WHERE id='%s'" % fid) == "0",
               10, "the queue row to go")
    assert log.lines("event=upload_trashed")
