#!/usr/bin/env python3
"""faultproxy_test.py - checks faultproxy.py on its own, against a tiny echo
server and a "source" server that writes a fixed amount on connect.

Each case starts a fresh proxy with its rules, talks through it with plain
blocking sockets and checks what arrived, where and when.  Prints one line per
case and "faultproxy_test: N cases passed"; exits 1 on the first failure.
"""

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(HERE, "faultproxy.py")
TMP = tempfile.mkdtemp(prefix="faultproxy-test.")
PROXIES = []  # every proxy started, stopped at exit


def check(cond, what, *operands):
    if not cond:
        raise AssertionError(what + ": " + ", ".join(repr(o) for o in operands))


class EchoServer(threading.Thread):
    """Echoes every connection; remembers how many bytes each one delivered."""

    def __init__(self):
        super().__init__(daemon=True)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.received = []  # per connection, in accept order
        self.start()

    def run(self):
        while True:
            s, _ = self.lsock.accept()
            i = len(self.received)
            self.received.append(0)
            threading.Thread(target=self.serve, args=(s, i), daemon=True).start()

    def serve(self, s, i):
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                self.received[i] += len(b)
                s.sendall(b)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            s.close()


class SourceServer(threading.Thread):
    """Writes TOTAL bytes to each connection; records when the last write returned."""

    def __init__(self, total):
        super().__init__(daemon=True)
        self.total = total
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.done_at = None
        self.start()

    def run(self):
        s, _ = self.lsock.accept()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        blob = b"x" * 65536
        sent = 0
        while sent < self.total:
            sent += s.send(blob[: min(len(blob), self.total - sent)])
        self.done_at = time.monotonic()
        s.close()


class Proxy:
    def __init__(self, target, *rules, rcvbuf=None):
        self.port_file = os.path.join(TMP, "port.%d" % random.getrandbits(32))
        self.stats = self.port_file + ".stats"
        self.log = open(self.port_file + ".log", "w+")
        cmd = [sys.executable, PROXY, "--listen", "0", "--target", str(target),
               "--port-file", self.port_file, "--stats", self.stats]
        for r in rules:
            cmd += ["--fault", r]
        if rcvbuf:
            cmd += ["--rcvbuf", str(rcvbuf)]
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        PROXIES.append(self.p)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.port_file):
            check(self.p.poll() is None, "proxy exited early", self.p.returncode, self.logtext())
            check(time.monotonic() < deadline, "proxy did not start", self.logtext())
            time.sleep(0.02)
        self.port = int(open(self.port_file).read())

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.p.terminate()
        rc = self.p.wait(10)
        check(rc == 0, "proxy exit status on SIGTERM", rc, self.logtext())
        with open(self.stats) as f:
            return json.load(f)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


def recv_all(s, timeout=5.0, want=None):
    """Reads until EOF, an error, `want` bytes, or `timeout` of silence.
    Returns (bytes, how it ended: 'eof', 'reset', 'silent' or 'want')."""
    s.settimeout(timeout)
    out = bytearray()
    while want is None or len(out) < want:
        try:
            b = s.recv(65536)
        except socket.timeout:
            return bytes(out), "silent"
        except ConnectionResetError:
            return bytes(out), "reset"
        if not b:
            return bytes(out), "eof"
        out += b
    return bytes(out), "want"


def send_bg(s, data):
    def run():
        try:
            s.sendall(data)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def case_passthrough(echo):
    px = Proxy(echo.port)
    data = os.urandom(1 << 20)
    s = px.connect()
    send_bg(s, data)
    got, how = recv_all(s, want=len(data))
    check(got == data, "echo through the proxy differs", len(got), how)
    s.close()
    time.sleep(0.2)
    st = px.stop()
    check(st["forwarded"]["up"] == len(data), "stats up", st, len(data))
    check(st["forwarded"]["down"] == len(data), "stats down", st, len(data))
    check(st["connections"] == 1, "stats connections", st)


def case_close_up_once(echo):
    px = Proxy(echo.port, "close,dir=up,at=1000")
    n0 = len(echo.received)
    s = px.connect()
    send_bg(s, os.urandom(5000))
    got, how = recv_all(s)
    check(how == "eof", "close: the client should see EOF", how)
    check(len(got) <= 1000, "close: bytes echoed", len(got), 1000)
    time.sleep(0.1)
    check(echo.received[n0] == 1000, "close: bytes the server got", echo.received[n0], 1000)
    s.close()
    # The rule fired once: the next connection passes everything.
    s = px.connect()
    data = os.urandom(5000)
    send_bg(s, data)
    got, how = recv_all(s, want=len(data))
    check(got == data, "second connection after close", len(got), how)
    s.close()
    px.stop()
    check("fault #1" in px.logtext() and "closing both sockets" in px.logtext(), "close not logged", px.logtext())


def case_reset_down(echo):
    px = Proxy(echo.port, "reset,dir=down,at=3000")
    s = px.connect()
    send_bg(s, os.urandom(10000))
    got, how = recv_all(s)
    check(how == "reset", "reset: the client should see ECONNRESET", how, len(got))
    check(len(got) == 3000, "reset: bytes before the reset", len(got), 3000)
    s.close()
    px.stop()


def case_corrupt(echo):
    px = Proxy(echo.port, "corrupt,dir=up,at=100,bit=3")
    data = os.urandom(4000)
    s = px.connect()
    send_bg(s, data)
    got, how = recv_all(s, want=len(data))
    want = bytearray(data)
    want[100] ^= 8
    check(got == bytes(want), "corrupt: exactly bit 3 of byte 100 flipped",
          [i for i in range(min(len(got), len(data))) if got[i] != data[i]], how)
    s.close()
    px.stop()


def frames(lengths):
    out = bytearray()
    for n in lengths:
        out += struct.pack(">H", n) + os.urandom(n)
    return bytes(out)


def case_frames(echo):
    lengths = [10, 300, 5, 70000 % 65536, 1, 65535, 7]
    data = frames(lengths)
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + 2 + n)
    px = Proxy(echo.port, "corrupt,dir=up,frame=2,plus=2,bit=0", "close,dir=down,frame=5,conn=2")
    # Connection 1: the first byte of frame 2's body is flipped; the stream is
    # sent in odd-sized pieces so that headers straddle reads.
    s = px.connect()

    def dribble():
        i = 0
        while i < len(data):
            n = random.randint(1, 5000)
            s.sendall(data[i : i + n])
            i += n
    threading.Thread(target=dribble, daemon=True).start()
    got, how = recv_all(s, want=len(data))
    diff = [i for i in range(min(len(got), len(data))) if got[i] != data[i]]
    check(diff == [starts[2] + 2], "frame corrupt: flipped offsets", diff, starts[2] + 2)
    s.close()
    # Connection 2: closed at the start of frame 5 of the echo.
    s = px.connect()
    send_bg(s, data)
    got, how = recv_all(s)
    check(how == "eof" and len(got) == starts[5], "frame close: bytes before EOF", len(got), starts[5], how)
    s.close()
    px.stop()


def case_truncate(echo):
    px = Proxy(echo.port, "truncate,dir=up,at=500")
    n0 = len(echo.received)
    s = px.connect()
    send_bg(s, os.urandom(200000))
    got, how = recv_all(s, timeout=1.5)
    check(how == "silent" and len(got) == 500, "truncate: 500 bytes then silence, socket open", len(got), how)
    check(echo.received[n0] == 500, "truncate: server got", echo.received[n0])
    s.close()
    st = px.stop()
    check(st["dropped"]["up"] == 200000 - 500, "truncate: dropped", st)


def case_stall(echo):
    px = Proxy(echo.port, "stall,dir=up,at=100,secs=1.5")
    s = px.connect()
    t0 = time.monotonic()
    send_bg(s, os.urandom(1000))
    got, how = recv_all(s, want=100)
    t_first = time.monotonic() - t0
    got2, how2 = recv_all(s, want=900)
    t_rest = time.monotonic() - t0
    check(len(got) == 100 and t_first < 1.0, "stall: first 100 bytes at once", len(got), t_first)
    check(len(got2) == 900 and t_rest >= 1.4, "stall: the rest after 1.5 s", len(got2), t_rest)
    s.close()
    px.stop()


def case_throttle(echo):
    px = Proxy(echo.port, "throttle,dir=down,rate=200k")
    data = os.urandom(400000)
    s = px.connect()
    t0 = time.monotonic()
    send_bg(s, data)
    got, how = recv_all(s, want=len(data))
    dt = time.monotonic() - t0
    check(got == data, "throttle: data", len(got), how)
    check(1.7 <= dt <= 4.0, "throttle: 400 kB at 200 kB/s should take about 2 s", dt)
    s.close()
    px.stop()


def case_stopread(_echo):
    total = 16 << 20
    src = SourceServer(total)
    px = Proxy(src.port, "stopread,dir=down,at=1Mi,secs=2", rcvbuf=65536)
    s = px.connect()
    t0 = time.monotonic()
    got, how = recv_all(s, timeout=10, want=total)
    dt = time.monotonic() - t0
    check(len(got) == total, "stopread: all bytes after reading resumes", len(got), how)
    check(src.done_at is not None and src.done_at - t0 >= 1.9,
          "stopread: the source's writes should back up for 2 s", None if src.done_at is None else src.done_at - t0)
    check(dt >= 1.9, "stopread: elapsed", dt)
    s.close()
    log = px.logtext()
    px.stop()
    check("reading stopped after byte" in log, "stopread not logged", log)


def case_conn_n(echo):
    px = Proxy(echo.port, "close,dir=up,at=10,conn=2")
    res = []
    n0 = len(echo.received)
    for _ in range(3):
        s = px.connect()
        send_bg(s, b"y" * 100)
        got, how = recv_all(s, timeout=2, want=100)
        res.append(how)
        s.close()
    time.sleep(0.1)
    check(echo.received[n0:] == [100, 10, 100], "conn=2: bytes the server got per connection",
          echo.received[n0:], [100, 10, 100])
    check(res == ["want", "eof", "want"], "conn=2: how each connection ended", res)
    px.stop()


def main():
    echo = EchoServer()
    cases = [case_passthrough, case_close_up_once, case_reset_down, case_corrupt, case_frames,
             case_truncate, case_stall, case_throttle, case_stopread, case_conn_n]
    only = sys.argv[1:]
    n = 0
    for c in cases:
        if only and c.__name__[5:] not in only:
            continue
        t0 = time.monotonic()
        try:
            c(echo)
        except AssertionError as e:
            print("FAIL: faultproxy_test %s: %s" % (c.__name__[5:], e), file=sys.stderr)
            return 1
        print("ok %s (%.2f s)" % (c.__name__[5:], time.monotonic() - t0))
        n += 1
    print("faultproxy_test: %d cases passed" % n)
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        for p in PROXIES:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
