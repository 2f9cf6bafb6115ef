#!/usr/bin/env python3
"""faultproxy.py - a TCP proxy that injects faults at chosen byte offsets.

It listens on 127.0.0.1:LISTEN and forwards every accepted connection to
127.0.0.1:TARGET.  "up" is the client-to-server direction (the side that
connected to the proxy towards TARGET), "down" the other.  Faults are given as
rules, one --fault each:

    --fault 'ACTION[,key=value...]'

ACTION is one of

    close     forward up to the offset, then close both sockets (FIN)
    reset     forward up to the offset, then reset both sockets (RST, via
              SO_LINGER 0); the proxy first waits (up to 1 s) for its own
              socket buffers to drain so the peers see exactly the offset
    stall     hold the stream at the offset for secs=S seconds (forever
              without secs): nothing past the offset is forwarded, and the
              proxy stops reading that side, so its writer backs up
    stopread  stop reading from the source side at the offset for secs=S
              seconds (forever without secs); bytes already read are still
              forwarded.  With --rcvbuf small the source backs up quickly
    throttle  from the offset on, forward at most rate=R bytes per second
              (for secs=S seconds, or until the connection ends)
    truncate  forward up to the offset, then read and drop everything else in
              that direction: the socket stays open and silent
    corrupt   flip bit=B (default 0) of the byte at the offset

keys:

    dir=up|down     the direction the offset counts in (default up)
    at=N            the byte offset in that direction (default 0); suffixes
                    k/M/G (powers of 1000) and Ki/Mi/Gi (powers of 1024)
    frame=K         instead of at: the offset is the start of frame K (from 0)
                    of the 2-byte big-endian length framing of that direction,
                    counted from the first byte of the connection.  In shoal's
                    stream everything is framed (docs/protocol.md): "up" frame
                    0 is the cipher-suite offer, 1 Noise message 1, 2 message
                    3, 3 the first transport frame; "down" frame 0 is the
                    choice, 1 message 2, 2 the first transport frame
    plus=N          with frame: add N bytes (plus=2 is the frame's first
                    ciphertext byte)
    conn=N          only connection N (counted from 1 in accept order);
                    without it the first connection that reaches the offset
    count=N         fire on N connections (default 1; 0 = every connection)
    secs=S          duration for stall, stopread and throttle
    rate=R          bytes per second for throttle (same suffixes as at)
    bit=B           the bit to flip for corrupt (0..7)

Each rule fires once by default, so a reconnect after the fault goes through
untouched.  Every connection and every fault applied is logged to stderr with
a timestamp.  On SIGTERM (or SIGINT) the proxy prints the bytes forwarded per
direction, over all connections, and exits 0; with --stats FILE it also writes
them there as JSON.  SIGUSR1 prints the same totals without exiting.

Example: reset the first connection 3 MiB into the server's answer stream:

    faultproxy.py --listen 4000 --target 22100 --fault reset,dir=down,at=3Mi
"""

import argparse
import asyncio
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import time

ACTIONS = ("close", "reset", "stall", "stopread", "throttle", "truncate", "corrupt")
BUFSIZE = 65536
T0 = time.monotonic()


def log(msg):
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + ".%03d" % (int(now * 1000) % 1000)
    sys.stderr.write("[%s +%.3f faultproxy] %s\n" % (stamp, time.monotonic() - T0, msg))
    sys.stderr.flush()


def parse_size(text):
    """An integer with an optional k/M/G or Ki/Mi/Gi suffix (fractions allowed)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix in ("Ki", "Mi", "Gi", "k", "K", "M", "G"):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * units[suffix])
    return int(text)


class Rule:
    """One --fault: where it fires and what it does."""

    def __init__(self, index, spec):
        self.index = index
        self.spec = spec
        parts = spec.split(",")
        self.action = parts[0].strip()
        if self.action not in ACTIONS:
            raise ValueError("unknown action %r (want one of %s)" % (self.action, ", ".join(ACTIONS)))
        self.dir = "up"
        self.at = 0
        self.frame = None
        self.plus = 0
        self.conn = None
        self.count = 1
        self.secs = None
        self.rate = None
        self.bit = 0
        for p in parts[1:]:
            if "=" not in p:
                raise ValueError("bad key=value %r" % p)
            k, v = (x.strip() for x in p.split("=", 1))
            if k == "dir":
                if v not in ("up", "down"):
                    raise ValueError("dir must be up or down")
                self.dir = v
            elif k == "at":
                self.at = parse_size(v)
            elif k == "frame":
                self.frame = int(v)
            elif k == "plus":
                self.plus = parse_size(v)
            elif k == "conn":
                self.conn = int(v)
            elif k == "count":
                self.count = int(v)
            elif k == "secs":
                self.secs = float(v)
            elif k == "rate":
                self.rate = parse_size(v)
            elif k == "bit":
                self.bit = int(v)
                if not 0 <= self.bit <= 7:
                    raise ValueError("bit must be 0..7")
            else:
                raise ValueError("unknown key %r" % k)
        if self.action == "throttle" and not self.rate:
            raise ValueError("throttle needs rate=R")
        if self.at < 0 or self.plus < 0 or (self.frame is not None and self.frame < 0):
            raise ValueError("negative offset")
        self.remaining = self.count  # 0: unlimited

    def armed_for(self, conn_no):
        if self.conn is not None and self.conn != conn_no:
            return False
        return self.count == 0 or self.remaining > 0

    def consume(self):
        if self.count:
            self.remaining -= 1

    def where(self):
        if self.frame is not None:
            return "frame %d%s" % (self.frame, " + %d" % self.plus if self.plus else "")
        return "offset %d" % self.at

    def __str__(self):
        return "#%d (%s)" % (self.index, self.spec)


class Totals:
    def __init__(self):
        self.connections = 0
        self.forwarded = {"up": 0, "down": 0}
        self.read = {"up": 0, "down": 0}
        self.dropped = {"up": 0, "down": 0}
        self.faults = 0

    def as_dict(self):
        return {
            "connections": self.connections,
            "forwarded": dict(self.forwarded),
            "read": dict(self.read),
            "dropped": dict(self.dropped),
            "faults_applied": self.faults,
        }

    def report(self):
        log(
            "totals: %d connections, %d faults; up: forwarded %d bytes (read %d, dropped %d); "
            "down: forwarded %d bytes (read %d, dropped %d)"
            % (
                self.connections,
                self.faults,
                self.forwarded["up"],
                self.read["up"],
                self.dropped["up"],
                self.forwarded["down"],
                self.read["down"],
                self.dropped["down"],
            )
        )


class Closed(Exception):
    """The connection was closed by a fault or by the other direction."""


def outq(sock):
    """Bytes not yet acknowledged in the socket's send queue (Linux SIOCOUTQ)."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]
    except OSError:
        return 0


class Pipe:
    """One direction of one proxied connection."""

    def __init__(self, conn, name, reader, writer):
        self.conn = conn
        self.name = name
        self.reader = reader
        self.writer = writer
        self.pos = 0  # bytes read from the source (and examined)
        self.forwarded = 0
        self.dropped = 0
        self.rate = None  # throttle: bytes per second
        self.rate_until = None
        self.rate_t0 = 0.0
        self.rate_sent = 0
        self.pause = None  # stopread: the rule to apply after this chunk
        self.discard = False  # truncate: drop everything from here on
        self.held = False  # stalled or not reading, for good
        self.done = False
        self.fired = set()
        # Frame parser: the start offset of every frame seen so far.
        self.frame_starts = [0]
        self.hdr = b""  # partial length header of the frame at frame_starts[-1]

    def tag(self):
        return "conn %d %s" % (self.conn.no, self.name)

    def parse_frames(self, data):
        """Records the start of every frame whose predecessor's header is in data."""
        base = self.pos
        end = base + len(data)
        while True:
            start = self.frame_starts[-1]
            have = len(self.hdr)
            hdr_at = start + have  # next header byte we need
            if hdr_at >= end:
                return
            take = data[hdr_at - base : min(end, start + 2) - base]
            self.hdr += take
            if len(self.hdr) < 2:
                return
            (length,) = struct.unpack(">H", self.hdr)
            self.frame_starts.append(start + 2 + length)
            self.hdr = b""

    def resolve(self, rule):
        if rule.frame is None:
            return rule.at
        if rule.frame < len(self.frame_starts):
            return self.frame_starts[rule.frame] + rule.plus
        return None

    def next_trigger(self, lo, hi):
        """The earliest rule of this direction that fires at an offset in [lo, hi)."""
        best = None
        for rule in self.conn.proxy.rules:
            if rule.dir != self.name or rule.index in self.fired or not rule.armed_for(self.conn.no):
                continue
            at = self.resolve(rule)
            if at is None or not lo <= at < hi:
                continue
            if best is None or at < best[0]:
                best = (at, rule)
        return best

    async def emit(self, piece):
        if not piece:
            return
        if self.discard:
            self.dropped += len(piece)
            self.conn.proxy.totals.dropped[self.name] += len(piece)
            return
        off = 0
        while off < len(piece):
            n = len(piece) - off
            if self.rate:
                if self.rate_until is not None and time.monotonic() >= self.rate_until:
                    log("%s: throttle ends after its %g s" % (self.tag(), self.rate_until - self.rate_t0))
                    self.rate = None
                    continue
                n = min(n, max(1, self.rate // 20))
                due = self.rate_t0 + (self.rate_sent + n) / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.rate_sent += n
            self.writer.write(bytes(piece[off : off + n]))
            await self.writer.drain()
            off += n
            self.forwarded += n
            self.conn.proxy.totals.forwarded[self.name] += n

    async def fire(self, rule, data, off):
        """Applies rule at data[off] (absolute offset self.pos + off)."""
        at = self.pos + off
        rule.consume()
        self.fired.add(rule.index)
        self.conn.proxy.totals.faults += 1
        what = "%s: fault %s: %s at %s (byte %d)" % (self.tag(), rule, rule.action, rule.where(), at)
        a = rule.action
        if a == "close":
            log(what + ": closing both sockets")
            await self.conn.close("fault %s" % rule, rst=False)
            raise Closed()
        if a == "reset":
            log(what + ": resetting both sockets")
            await self.conn.close("fault %s" % rule, rst=True)
            raise Closed()
        if a == "corrupt":
            old = data[off]
            data[off] ^= 1 << rule.bit
            log(what + ": byte 0x%02x -> 0x%02x" % (old, data[off]))
            return
        if a == "truncate":
            log(what + ": dropping everything from here on, socket kept open")
            self.discard = True
            self.held = True
            return
        if a == "throttle":
            log(what + ": %d bytes/s%s" % (rule.rate, " for %g s" % rule.secs if rule.secs else ""))
            self.rate = rule.rate
            self.rate_t0 = time.monotonic()
            self.rate_sent = 0
            self.rate_until = self.rate_t0 + rule.secs if rule.secs else None
            return
        if a == "stopread":
            # Bytes already read still go out (run() pauses after this chunk).
            log(what + ": no more reads from the source%s"
                % (" for %g s" % rule.secs if rule.secs is not None else ", for good"))
            self.pause = rule
            return
        if a == "stall":
            log(what + (": for %g s" % rule.secs if rule.secs is not None else ": for good"))
            await self.hold(rule)
            return
        raise AssertionError(a)

    async def hold(self, rule):
        """Waits rule.secs seconds, or until the connection closes."""
        if rule.secs is None:
            self.held = True
            self.conn.check_held()
            await asyncio.Event().wait()  # cancelled when the connection closes
        await asyncio.sleep(rule.secs)
        log("%s: %s %s over, resuming" % (self.tag(), rule.action, rule))

    async def run(self):
        try:
            while True:
                n = BUFSIZE
                if self.rate:
                    n = max(1, min(n, self.rate // 20))
                try:
                    chunk = await self.reader.read(n)
                except (ConnectionResetError, OSError) as e:
                    log("%s: read error: %s" % (self.tag(), e))
                    await self.conn.close("%s read error" % self.name, rst=True)
                    return
                if not chunk:
                    break
                self.conn.proxy.totals.read[self.name] += len(chunk)
                data = bytearray(chunk)
                self.parse_frames(data)
                off = 0
                while off < len(data):
                    trig = self.next_trigger(self.pos + off, self.pos + len(data))
                    end = trig[0] - self.pos if trig else len(data)
                    await self.emit(data[off:end])
                    off = end
                    if trig:
                        await self.fire(trig[1], data, off)
                self.pos += len(chunk)
                if self.pause is not None:
                    rule, self.pause = self.pause, None
                    log("%s: reading stopped after byte %d" % (self.tag(), self.pos))
                    await self.hold(rule)
            log("%s: end of stream after %d bytes" % (self.tag(), self.pos))
            self.done = True
            try:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
            except OSError:
                pass
            self.conn.check_held()
        except Closed:
            return
        except (ConnectionResetError, BrokenPipeError, OSError) as e:
            log("%s: write error: %s" % (self.tag(), e))
            await self.conn.close("%s write error" % self.name, rst=True)


class Conn:
    def __init__(self, proxy, no, creader, cwriter):
        self.proxy = proxy
        self.no = no
        self.creader = creader
        self.cwriter = cwriter
        self.swriter = None
        self.pipes = []
        self.tasks = []
        self.closed = False
        self.t0 = time.monotonic()

    def check_held(self):
        """A direction that ended while the other is held for good closes the connection."""
        if any(p.done for p in self.pipes) and any(p.held for p in self.pipes):
            asyncio.ensure_future(self.close("one side ended while the other is held", rst=False))
        elif self.pipes and all(p.done for p in self.pipes):
            asyncio.ensure_future(self.close("both sides ended", rst=False))

    async def close(self, why, rst):
        if self.closed:
            return
        self.closed = True
        writers = [w for w in (self.cwriter, self.swriter) if w is not None]
        if rst:
            # Let what was written reach the peers (bounded), then reset.
            deadline = time.monotonic() + 1.0
            for w in writers:
                try:
                    await asyncio.wait_for(w.drain(), max(0.0, deadline - time.monotonic()))
                except Exception:
                    pass
                sock = w.get_extra_info("socket")
                while sock is not None and outq(sock) > 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            for w in writers:
                sock = w.get_extra_info("socket")
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except (OSError, AttributeError):
                    pass
                w.transport.abort()
        else:
            for w in writers:
                try:
                    await asyncio.wait_for(w.drain(), 1.0)
                except Exception:
                    pass
                w.close()
        me = asyncio.current_task()
        for t in self.tasks:
            if t is not me:
                t.cancel()
        up = self.pipes[0] if self.pipes else None
        down = self.pipes[1] if len(self.pipes) > 1 else None
        log(
            "conn %d closed after %.3f s (%s): up forwarded %d, down forwarded %d%s"
            % (
                self.no,
                time.monotonic() - self.t0,
                why,
                up.forwarded if up else 0,
                down.forwarded if down else 0,
                ", dropped up %d down %d" % (up.dropped, down.dropped) if up and (up.dropped or down.dropped) else "",
            )
        )

    async def hold(self, rule):
        """Waits rule.secs seconds, or until the connection closes."""
        if rule.secs is None:
            self.held = True
            self.conn.check_held()
            await asyncio.Event().wait()  # cancelled when the connection closes
        await asyncio.sleep(rule.secs)
        log("%s: %s %s over, resuming" % (self.tag(), rule.action, rule))

    async def run(self):
        peer = self.cwriter.get_extra_info("peername")
        log("conn %d: accepted from %s:%d" % (self.no, peer[0], peer[1]))
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if self.proxy.rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.proxy.rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.proxy.target))
            sreader, swriter = await asyncio.open_connection(sock=sock, limit=BUFSIZE)
        except OSError as e:
            log("conn %d: cannot connect to 127.0.0.1:%d: %s; closing the client" % (self.no, self.proxy.target, e))
            self.closed = True
            self.cwriter.transport.abort()
            return
        self.swriter = swriter
        for w in (self.cwriter, swriter):
            w.transport.set_write_buffer_limits(high=BUFSIZE)
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log("conn %d: connected to 127.0.0.1:%d" % (self.no, self.proxy.target))
        self.pipes = [Pipe(self, "up", self.creader, swriter), Pipe(self, "down", sreader, self.cwriter)]
        self.tasks = [asyncio.ensure_future(p.run()) for p in self.pipes]
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Proxy:
    def __init__(self, args):
        self.target = args.target
        self.rcvbuf = args.rcvbuf
        self.rules = [Rule(i + 1, s) for i, s in enumerate(args.fault or [])]
        self.totals = Totals()
        self.stats_file = args.stats
        self.next_no = 1

    async def on_client(self, reader, writer):
        no = self.next_no
        self.next_no += 1
        self.totals.connections += 1
        await Conn(self, no, reader, writer).run()

    def write_stats(self):
        self.totals.report()
        if self.stats_file:
            tmp = self.stats_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.totals.as_dict(), f)
                f.write("\n")
            os.replace(tmp, self.stats_file)


async def main_async(args):
    proxy = Proxy(args)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.rcvbuf:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    lsock.bind(("127.0.0.1", args.listen))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    server = await asyncio.start_server(proxy.on_client, sock=lsock, limit=BUFSIZE)
    for r in proxy.rules:
        log("rule %s: %s, dir %s, at %s%s" % (r, r.action, r.dir, r.where(),
                                               ", connection %d" % r.conn if r.conn else ""))
    log("listening on 127.0.0.1:%d, forwarding to 127.0.0.1:%d" % (port, args.target))
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(args.port_file + ".tmp", args.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, proxy.write_stats)
    await stop.wait()
    server.close()
    proxy.write_stats()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1 (0: any; see --port-file)")
    ap.add_argument("--target", type=int, required=True, help="port on 127.0.0.1 to forward to")
    ap.add_argument("--fault", action="append", metavar="RULE", help="a fault rule (repeatable)")
    ap.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF for both sockets of each connection")
    ap.add_argument("--stats", metavar="FILE", help="write the totals as JSON here on SIGTERM/SIGUSR1")
    ap.add_argument("--port-file", metavar="FILE", help="write the listening port here once listening")
    args = ap.parse_args()
    try:
        Proxy(args)  # validate the rules before listening
    except ValueError as e:
        ap.error(str(e))
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
