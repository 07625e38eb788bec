"""ATTACK campaign: issue 10's memory and connection attacks on one SPU, with a normal client timed throughout.

One 1-SPU cluster with the default limits (ipc/transport.py). A normal client, a process of its own,
sends one record every ``ROUND_S`` (linger 0, acknowledged by the leader) and reads it back over
the SPU's socket (direct reads off, so the SPU serves the read), and each round also opens a fresh
connection and greets (the path a new client takes). Each phase's figures are the SPU's RSS (idle
before the phase, peak sampled every 20 ms, and after the attackers closed) and the normal client's
round trip (p50, p99, max) and failures while the phase ran:

    fetch-unread   one socket sends ``fetches`` FetchRequest(max_bytes=32 MiB) for a partition
                   holding more than 32 MiB, and never reads an answer
    big-prefixes   ``prefixes`` connections each announce a 64 MiB frame and send 60 MiB of it
    idle-crowd     ``crowd`` connections greet as clients and then idle, from several processes
                   (one process may hold 512); the admin CLI must still answer (reserved slots)
    backlog-flood  ``flood`` connects at once from several processes, none greeting

The bound checked is the one README states: the SPU's peak RSS at most its idle RSS plus
``RSS_BOUND_MIB`` (the 256 MiB budget for unfinished requests, plus answers held for a reader that
stopped: 8 MiB of asyncio buffer and the 4 MiB socket buffer, plus the interpreter's own slack).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import threading
import time

from dataclasses import dataclass

import msgspec

from rillet.ipc import messages as m
from rillet.ipc.framing import encode_message

from .campaign_fuzz import RssSampler, _mib

SPU = 5001
ROUND_S = 0.02
FETCH_MAX_BYTES = 32 << 20
PREFIX_BYTES, PREFIX_BODY = 64 << 20, 60 << 20
CROWD_PER_PROCESS, FLOOD_PER_PROCESS = 400, 500     # one process may hold 512 connections
RSS_BOUND_MIB = 320


@dataclass(frozen=True)
class Sizes:
    fetches: int = 100          # unread FetchRequest(max_bytes=32 MiB) on one socket
    prefixes: int = 20          # connections announcing 64 MiB and sending 60 MiB
    crowd: int = 1100           # idle greeted connections
    flood: int = 4000           # connects at once, none greeting
    hold_s: float = 3.0         # how long each attack is held before its sockets close
    fill: bool = True           # fill the fetched partition past 32 MiB first

    def scaled(self, scale: float, hold_s: float) -> "Sizes":
        return Sizes(max(1, int(self.fetches * scale)), max(1, int(self.prefixes * scale)),
                     max(1, int(self.crowd * scale)), max(1, int(self.flood * scale)), hold_s, fill=scale >= 1)
_ENC = msgspec.msgpack.Encoder()


def _hello(client_id: str = "rillet-attack") -> bytes:
    payload = _ENC.encode(m.Hello(1, m.PROTOCOL_VERSION, client_id))
    return struct.pack("<I", len(payload)) + payload


# --- the normal client (a process of its own) -------------------------------------------------

def _normal_client(cluster: str, home: str, socket_path: str, stop, ready, results) -> None:
    os.environ["RILLET_DIRECT_READS"] = "0"         # the SPU serves the reads: they share its loop
    from rillet import Fluvio, Offset, TopicProducerConfigBuilder
    rounds, fresh = [], []
    try:
        fluvio = Fluvio.connect(cluster, home=home)
        producer = fluvio.topic_producer_with_config("normal", TopicProducerConfigBuilder().linger(0).build())
        stream = iter(fluvio.partition_consumer("normal", 0).stream(Offset.end()))
        producer.send(None, b"warm-up").wait(timeout=30)
        next(stream)
        ready.set()
        n = 0
        while not stop.is_set():
            t0 = time.monotonic()
            ok = True
            try:
                value = b"round-%d" % n
                producer.send(None, value).wait(timeout=30)
                ok = next(stream).value() == value
            except Exception:       # noqa: BLE001 - a failed round is a figure, not the end of the run
                ok = False
            rounds.append((t0, time.monotonic() - t0, ok))
            fresh.append((t0, *_fresh_connect(socket_path)))
            n += 1
            time.sleep(max(0.0, ROUND_S - (time.monotonic() - t0)))
        producer.close()
        fluvio.close()
    finally:
        results.put({"rounds": rounds, "fresh": fresh})


def _fresh_connect(path: str) -> tuple[float, bool]:
    """Connect, greet, get HelloOk: what a client starting now goes through."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(_hello("rillet-py"))
        data = s.recv(4096)
        ok = len(data) > 4 and isinstance(msgspec.msgpack.decode(data[4:4 + struct.unpack_from("<I", data)[0]],
                                                                 type=m.Message), m.HelloOk)
    except (OSError, msgspec.DecodeError):
        ok = False
    finally:
        s.close()
    return time.monotonic() - t0, ok


# --- attackers ------------------------------------------------------------------------------

def _hold_connections(path: str, count: int, greet: bool, hold: float, results) -> None:
    """A crowd member: open ``count`` connections (greeting or not), hold them, report what happened."""
    socks, admitted, refused, failed = [], 0, 0, 0
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(path)
        except OSError:
            failed += 1
            s.close()
            continue
        socks.append(s)
        if greet:
            s.sendall(_hello("rillet-py"))
    if greet:
        for s in socks:
            try:
                data = s.recv(4096)
                msg = msgspec.msgpack.decode(data[4:4 + struct.unpack_from("<I", data)[0]], type=m.Message)
                admitted += isinstance(msg, m.HelloOk)
                refused += isinstance(msg, m.ErrorResponse)
            except (OSError, struct.error, msgspec.DecodeError):
                refused += 1
    results.put("in")
    time.sleep(hold)
    for s in socks:
        s.close()
    outcome = {"connected": len(socks), "connect_failed": failed}
    if greet:                               # without a Hello the server's verdict is not read
        outcome.update(admitted=admitted, refused=refused)
    results.put(outcome)


def _crowd(ctx, path: str, total: int, per_process: int, greet: bool, hold_s: float, during=None) -> dict:
    """Crowd processes hold ``total`` connections; ``during()`` runs once all are in (its result: "during")."""
    results = ctx.Queue()
    procs = []
    left = total
    while left > 0:
        n = min(per_process, left)
        left -= n
        procs.append(ctx.Process(target=_hold_connections, args=(path, n, greet, hold_s, results), daemon=True))
    for p in procs:
        p.start()
    for _ in procs:
        assert results.get(timeout=60) == "in"
    extra = during() if during is not None else None
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    out = {k: sum(g[k] for g in got) for k in got[0]}
    if during is not None:
        out["during"] = extra
    return out


def _fetch_unread(path: str, sizes: Sizes) -> dict:
    fetches = b"".join(bytes(encode_message(_ENC, m.FetchRequest(cid, "big", 0, 0, FETCH_MAX_BYTES, 0, 0)))
                       for cid in range(2, 2 + sizes.fetches))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(sizes.hold_s + 5)
    sent = 0
    try:
        s.sendall(_hello() + fetches)
        sent = sizes.fetches
        time.sleep(sizes.hold_s)
    finally:
        s.close()
    return {"fetches_sent": sent}


def _big_prefixes(path: str, sizes: Sizes) -> dict:
    outcome = {"sent_whole_body": 0, "cut_off": 0}
    lock = threading.Lock()
    body = bytes(PREFIX_BODY)

    def one() -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(sizes.hold_s * 4 + 5)
        try:
            s.connect(path)
            s.sendall(_hello() + struct.pack("<I", PREFIX_BYTES))
            s.sendall(body)
            key = "sent_whole_body"
            time.sleep(sizes.hold_s)
        except OSError:
            key = "cut_off"             # the SPU refused it (Busy) and closed: memory follows a budget
        finally:
            s.close()
        with lock:
            outcome[key] += 1

    threads = [threading.Thread(target=one) for _ in range(sizes.prefixes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def _cli_partition_list(cluster) -> bool:
    done = subprocess.run([sys.executable, "-m", "rillet.tools.cli", "partition", "list"], env=cluster.env,
                          capture_output=True, timeout=60)
    return done.returncode == 0 and b"normal" in done.stdout


# --- the run ----------------------------------------------------------------------------------

def _fill_big(cluster) -> None:
    from rillet import TopicProducerConfigBuilder
    fluvio = cluster.fluvio()
    config = TopicProducerConfigBuilder().batch_size(1 << 20).max_request_size(2 << 20).linger(0).build()
    with fluvio.topic_producer_with_config("big", config) as producer:
        chunk = os.urandom(1000_000)
        for _ in range(FETCH_MAX_BYTES // len(chunk) + 4):
            producer.send(None, chunk)
        producer.flush(timeout=60)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _client_figures(rounds, fresh, t0: float, t1: float) -> dict:
    inside = [(d, ok) for t, d, ok in rounds if t0 <= t < t1]
    fresh_in = [(d, ok) for t, d, ok in fresh if t0 <= t < t1]
    ms = [d * 1000 for d, ok in inside if ok]
    return {"rounds": len(inside), "failed": sum(not ok for _, ok in inside),
            "p50_ms": _r(_percentile(ms, 0.5)), "p99_ms": _r(_percentile(ms, 0.99)), "max_ms": _r(max(ms, default=None)),
            "fresh_connects": len(fresh_in), "fresh_refused": sum(not ok for _, ok in fresh_in),
            "fresh_max_ms": _r(max((d * 1000 for d, _ in fresh_in), default=None))}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_attack(cluster, sizes: Sizes = Sizes()) -> dict:
    """Run the four phases (after a quiet baseline); a test runs ``Sizes().scaled(...)``."""
    ctx = mp.get_context("spawn")
    cluster.create_topic("normal")
    cluster.create_topic("big")
    if sizes.fill:
        _fill_big(cluster)
    path = str(cluster.paths.spu_socket(SPU))
    pid = cluster.spu_pid(SPU)
    stop, ready, results = ctx.Event(), ctx.Event(), ctx.Queue()
    client = ctx.Process(target=_normal_client, args=(cluster.name, str(cluster.home), path, stop, ready, results),
                         daemon=True)
    client.start()
    phases: list[tuple[str, float, float, dict]] = []
    try:
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if not client.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the normal client did not start")
        attacks = [("baseline", lambda: (time.sleep(sizes.hold_s), {})[1]),
                   ("fetch-unread", lambda: _fetch_unread(path, sizes)),
                   ("big-prefixes", lambda: _big_prefixes(path, sizes)),
                   ("idle-crowd", lambda: _idle_crowd(ctx, cluster, path, sizes)),
                   ("backlog-flood", lambda: _crowd(ctx, path, sizes.flood, FLOOD_PER_PROCESS, False, sizes.hold_s))]
        for name, attack in attacks:
            sampler = RssSampler({"spu": pid})
            t0 = time.monotonic()
            detail = attack()
            time.sleep(min(1.0, sizes.hold_s))  # the attackers are gone: memory must come back
            last = sampler.stop()
            detail.update(rss_mib={"before": _mib(sampler.first["spu"]), "peak": _mib(sampler.peak["spu"]),
                                   "after": _mib(last["spu"])},
                          anon_mib={"before": _mib(sampler.first["spu-anon"]), "peak": _mib(sampler.peak["spu-anon"]),
                                    "after": _mib(last["spu-anon"])})
            phases.append((name, t0, time.monotonic(), detail))
    finally:
        stop.set()
        try:
            got = results.get(timeout=60)
        finally:
            client.join(10)
            if client.is_alive():
                client.kill()
    idle = phases[0][3]["rss_mib"]["before"]
    report = {"campaign": "ATTACK", "spu_pid_unchanged": cluster.spu_pid(SPU) == pid,
              "rss_bound_mib": round(idle + RSS_BOUND_MIB, 1), "phases": {}}
    for name, t0, t1, detail in phases:
        report["phases"][name] = {**detail, "normal_client": _client_figures(got["rounds"], got["fresh"], t0, t1)}
    report["peak_rss_mib"] = max(p[3]["rss_mib"]["peak"] for p in phases)
    report["normal_client_failed_rounds"] = sum(p["normal_client"]["failed"] for p in report["phases"].values())
    return report


def _idle_crowd(ctx, cluster, path: str, sizes: Sizes) -> dict:
    """The crowd holds its slots; meanwhile the admin CLI (a reserved slot) must be served."""
    out = _crowd(ctx, path, sizes.crowd, CROWD_PER_PROCESS, True, sizes.hold_s,
                 during=lambda: _cli_partition_list(cluster))
    out["admin_cli_served"] = out.pop("during")
    return out


def clean(report: dict) -> bool:
    return (report["spu_pid_unchanged"] and report["peak_rss_mib"] <= report["rss_bound_mib"]
            and report["normal_client_failed_rounds"] == 0
            and report["phases"]["idle-crowd"]["admin_cli_served"])
