#!/usr/bin/env python3
"""Runtime helper of tests/bench/compare.sh (polling, probes, socket counters).

Every subcommand prints one line (JSON unless noted) and exits 0 on success,
1 on timeout/failure. Times are epoch seconds (time.time()), the same clock
as `date +%s.%N` in the shell script.

  Syncthing (REST on 127.0.0.1, API key):
    st-config CONFIG_XML GUI_PORT KEY SYNC_PORT LOW_PRIO
    st-check-options BASE KEY SYNC_PORT
    st-wait-connected BASE KEY PEER_ID TIMEOUT
    st-wait-status BASE KEY FOLDER FILES BYTES TIMEOUT POLL
    st-file-version BASE KEY FOLDER NAME
    st-wait-version BASE KEY FOLDER NAME WANT_JSON TIMEOUT POLL
    st-wire BASE KEY                      -> B's total inBytesTotal (plain int)
  shoal (CLI `status --json`):
    sh-wait-connected BIN HOME PEER_ID TIMEOUT
    sh-wait-status BIN HOME FOLDER ITEMS BYTES TIMEOUT POLL
    sh-wire BIN HOME PEER_ID              -> that device's in_bytes (plain int)
    sh-file-token PATH                    -> "SIZE MTIME_NS" (plain)
    sh-wait-file BIN HOME FOLDER PATH_B SIZE MTIME_NS TIMEOUT POLL
  Waits give up at once when a PID of $WATCH_PIDS has exited.
  generic:
    latency SRC DST SEED GEN TIMEOUT POLL  rewrite SRC (4 KiB) in place, wait
                                          until DST has the same bytes
    tcp-snap PID LOCAL_PORT PEER_PORT     per-socket TCP bytes_received
    tcp-delta BEFORE_JSON AFTER_JSON      -> int, or "N(conn-changed)"
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


def out(d):
    print(json.dumps(d))
    sys.stdout.flush()


def dead_agent():
    """The first PID of $WATCH_PIDS (the agents of the system being waited
    for) that has exited, or None: a wait gives up at once then."""
    for pid in os.environ.get("WATCH_PIDS", "").split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return pid
        except OSError:
            return pid
    return None


def gave_up(extra):
    """Prints the failure line if an agent died; returns True then."""
    pid = dead_agent()
    if pid:
        out(dict(extra, agent_exited=int(pid)))
        return True
    return False


# ----------------------------------------------------------------- Syncthing
def api(base, key, path, method="GET", timeout=60):
    req = urllib.request.Request(base + path, method=method, headers={"X-API-Key": key})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def st_config(path, gui_port, key, sync_port, low_prio):
    """Switch off, before the first start, everything in a freshly generated
    config.xml that would talk to anything but 127.0.0.1 (the same settings
    as the anchor harness, /work/shared/anchors/syncthing-bench.sh)."""
    t = ET.parse(path)
    r = t.getroot()
    g = r.find("gui")
    g.find("address").text = f"127.0.0.1:{gui_port}"
    g.find("apikey").text = key
    o = r.find("options")

    def set1(name, val):
        els = o.findall(name) or [ET.SubElement(o, name)]
        for e in els[1:]:
            o.remove(e)
        els[0].text = str(val)

    def setlist(name, vals):
        for e in o.findall(name):
            o.remove(e)
        for v in vals:
            ET.SubElement(o, name).text = v

    setlist("listenAddress", [f"tcp://127.0.0.1:{sync_port}"])
    setlist("globalAnnounceServer", ["https://127.0.0.1:9/disabled"])
    setlist("stunServer", ["127.0.0.1:9"])
    for k, v in [("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                 ("relaysEnabled", "false"), ("natEnabled", "false"),
                 ("startBrowser", "false"), ("urAccepted", "-1"), ("urSeen", "3"),
                 ("urURL", "https://127.0.0.1:9/disabled"),
                 ("releasesURL", "https://127.0.0.1:9/disabled"),
                 ("crashReportingURL", "https://127.0.0.1:9/disabled"),
                 ("autoUpgradeIntervalH", "0"), ("crashReportingEnabled", "false"),
                 ("announceLANAddresses", "false"),
                 ("stunKeepaliveStartS", "0"), ("stunKeepaliveMinS", "0"),
                 ("setLowPriority", low_prio)]:
        set1(k, v)
    t.write(path)


def st_check_options(base, key, sync_port):
    o = api(base, key, "/rest/config/options")
    want = {"globalAnnounceEnabled": False, "localAnnounceEnabled": False,
            "relaysEnabled": False, "natEnabled": False, "urAccepted": -1,
            "autoUpgradeIntervalH": 0, "crashReportingEnabled": False,
            "startBrowser": False, "listenAddresses": [f"tcp://127.0.0.1:{sync_port}"]}
    bad = {k: o.get(k) for k, v in want.items() if o.get(k) != v}
    out({"ok": not bad, "bad": bad})
    return 0 if not bad else 1


def st_wait_connected(base, key, peer, timeout):
    dl = time.time() + float(timeout)
    while time.time() < dl:
        try:
            c = api(base, key, "/rest/system/connections")["connections"].get(peer, {})
            if c.get("connected"):
                out({"connected": True, "address": c.get("address"), "crypto": c.get("crypto")})
                return 0
        except Exception:
            pass
        time.sleep(0.2)
    out({"connected": False})
    return 1


def st_wait_status(base, key, folder, files, nbytes, timeout, poll):
    """Idle, nothing needed, exactly FILES files of BYTES bytes (Syncthing
    counts each directory as 128 bytes in localBytes; those are taken out)."""
    files, nbytes = int(files), int(nbytes)
    dl = time.time() + float(timeout)
    s = None
    while True:
        try:
            s = api(base, key, "/rest/db/status?folder=" + folder)
        except Exception as e:
            s = {"error": str(e)}
        if (s.get("state") == "idle" and s.get("needTotalItems") == 0
                and s.get("localFiles") == files
                and s.get("localBytes", -1) - 128 * s.get("localDirectories", 0) == nbytes):
            out({"t_done": time.time()})
            return 0
        if gave_up({"last_state": s.get("state")}):
            return 1
        if time.time() > dl:
            out({"timeout": True, "last": {k: s.get(k) for k in (
                "state", "error", "needTotalItems", "localFiles", "globalFiles", "localBytes")}})
            return 1
        time.sleep(float(poll))


def st_file_version(base, key, folder, name):
    f = api(base, key, f"/rest/db/file?folder={folder}&file={urllib.parse.quote(name)}")
    out({"version": f["local"]["version"]})


def st_wait_version(base, key, folder, name, want_json, timeout, poll):
    want = json.loads(want_json)["version"]
    dl = time.time() + float(timeout)
    s = None
    while True:
        try:
            f = api(base, key, f"/rest/db/file?folder={folder}&file={urllib.parse.quote(name)}")
            if f["local"]["version"] == want:
                s = api(base, key, "/rest/db/status?folder=" + folder)
                if s.get("state") == "idle" and s.get("needTotalItems") == 0:
                    out({"t_done": time.time()})
                    return 0
        except Exception as e:
            s = {"error": str(e)}
        if gave_up({}):
            return 1
        if time.time() > dl:
            out({"timeout": True, "last": s})
            return 1
        time.sleep(float(poll))


def st_wire(base, key):
    print(api(base, key, "/rest/system/connections")["total"]["inBytesTotal"])


# --------------------------------------------------------------------- shoal
def sh_status(binary, home):
    p = subprocess.run([binary, "--home", home, "status", "--json"], capture_output=True,
                       text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"status exited {p.returncode}: {p.stderr.strip()[:200]}")
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    return json.loads(lines[-1])


def sh_folder(st, fid):
    return next((f for f in st.get("folders") or [] if f.get("id") == fid), None)


def sh_brief(f):
    if not f:
        return None
    return {k: f.get(k) for k in ("state", "error", "local", "global", "need", "progress")}


def sh_wait_connected(binary, home, peer, timeout):
    dl = time.time() + float(timeout)
    while time.time() < dl:
        try:
            st = sh_status(binary, home)
            if any(d.get("id") == peer and d.get("connected") for d in st.get("devices") or []):
                out({"connected": True})
                return 0
        except Exception:
            pass
        time.sleep(0.1)
    out({"connected": False})
    return 1


def sh_wait_status(binary, home, fid, items, nbytes, timeout, poll):
    """Idle, nothing needed, local == global, exactly ITEMS items (files +
    directories, as `shoal status` counts them) of BYTES bytes."""
    items, nbytes = int(items), int(nbytes)
    dl = time.time() + float(timeout)
    f = err = None
    while True:
        try:
            f = sh_folder(sh_status(binary, home), fid)
            err = None
        except Exception as e:
            err = str(e)
        if (f and f.get("state") == "idle" and f["need"]["files"] == 0
                and f["local"] == f["global"]
                and f["local"]["files"] == items and f["local"]["bytes"] == nbytes):
            out({"t_done": time.time()})
            return 0
        if gave_up({"last": sh_brief(f)}):
            return 1
        if time.time() > dl:
            out({"timeout": True, "last": sh_brief(f), "error": err})
            return 1
        time.sleep(float(poll))


def sh_wire(binary, home, peer):
    st = sh_status(binary, home)
    print(sum(d.get("in_bytes", 0) for d in st.get("devices") or [] if d.get("id") == peer))


def sh_file_token(path):
    s = os.stat(path)
    print(s.st_size, s.st_mtime_ns)


def sh_wait_file(binary, home, fid, path_b, size, mtime_ns, timeout, poll):
    """B's copy carries A's size and mtime (shoal keeps mtimes to the ns and
    installs a file by rename, so this is the new content), and B's folder is
    idle with nothing needed. The bytes are compared afterwards, untimed."""
    size, mtime_ns = int(size), int(mtime_ns)
    dl = time.time() + float(timeout)
    f = None
    seen = None
    while True:
        try:
            s = os.stat(path_b)
            seen = (s.st_size, s.st_mtime_ns)
            if seen == (size, mtime_ns):
                f = sh_folder(sh_status(binary, home), fid)
                if (f and f.get("state") == "idle" and f["need"]["files"] == 0
                        and f["local"] == f["global"]):
                    out({"t_done": time.time()})
                    return 0
        except (OSError, RuntimeError, ValueError):
            pass
        if gave_up({"b_file": seen}):
            return 1
        if time.time() > dl:
            out({"timeout": True, "b_file": seen, "want": (size, mtime_ns), "last": sh_brief(f)})
            return 1
        time.sleep(float(poll))


# ------------------------------------------------------------------- generic
def latency(src, dst, seed, gen, timeout, poll):
    """Rewrite SRC in place with fresh bytes (pwrite, same inode, like an
    editor that saves in place); time until DST holds the same bytes."""
    size = os.path.getsize(src)
    data = hashlib.shake_256(f"{seed}:latency:{gen}".encode()).digest(size)
    fd = os.open(src, os.O_WRONLY)
    os.pwrite(fd, data, 0)
    os.close(fd)
    t0 = time.time()
    dl = t0 + float(timeout)
    while True:
        try:
            with open(dst, "rb") as f:
                if f.read() == data:
                    t1 = time.time()
                    out({"t0": t0, "t_done": t1, "latency_s": t1 - t0})
                    return 0
        except FileNotFoundError:
            pass
        if gave_up({"t0": t0}):
            return 1
        if time.time() > dl:
            out({"timeout": True, "t0": t0})
            return 1
        time.sleep(float(poll))


def tcp_snap(pid, local_port, peer_port):
    """bytes_received of every established TCP socket of PID whose local port
    is its listen port or whose remote port is the peer's listen port, keyed
    by socket inode (a reconnect on the same 4-tuple is a new socket)."""
    txt = subprocess.run(["ss", "-tinpeH", "state", "established"], capture_output=True,
                         text=True).stdout
    socks = {}
    cur = None
    for line in txt.splitlines():
        if line and not line[0].isspace():
            cur = None
            m = re.search(r"(\S+):(\d+)\s+(\S+):(\d+)\s+users:.*?pid=(\d+),", line)
            ino = re.search(r"\bino:(\d+)", line)
            if m and m.group(5) == str(pid) and (m.group(2) == str(local_port)
                                                 or m.group(4) == str(peer_port)):
                cur = f"{m.group(2)}-{m.group(4)}/ino{ino.group(1) if ino else '?'}"
                socks[cur] = 0
        elif cur:
            m = re.search(r"bytes_received:(\d+)", line)
            if m:
                socks[cur] = int(m.group(1))
    out(socks)


def tcp_delta(before_json, after_json):
    b, a = json.loads(before_json), json.loads(after_json)
    d = sum(v - b.get(k, 0) for k, v in a.items())
    print(d if all(k in a for k in b) else f"{d}(conn-changed)")


CMDS = {
    "st-config": st_config, "st-check-options": st_check_options,
    "st-wait-connected": st_wait_connected, "st-wait-status": st_wait_status,
    "st-file-version": st_file_version, "st-wait-version": st_wait_version,
    "st-wire": st_wire,
    "sh-wait-connected": sh_wait_connected, "sh-wait-status": sh_wait_status,
    "sh-wire": sh_wire, "sh-file-token": sh_file_token, "sh-wait-file": sh_wait_file,
    "latency": latency, "tcp-snap": tcp_snap, "tcp-delta": tcp_delta,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        sys.exit(__doc__)
    sys.exit(CMDS[sys.argv[1]](*sys.argv[2:]) or 0)
