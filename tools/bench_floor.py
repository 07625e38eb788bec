"""The floor under a linger-0 record on this host: what a Python pipeline that does nothing but
the per-record system calls costs, so that rillet's own figures (`rillet-bench --workload W3`)
can be read against it.

    .venv/bin/python -m rillet.tools.bench_floor [--records 20000] [--interval-us 100]

Three processes, as in W3: a client sends one 100 B request every ``interval`` over a Unix
socket (paced as W3 paces: it sleeps until ~20 us before the send time, then spins) and waits
for a 16 B answer; a server takes each request with one ``recv``, appends it to a file with one
``pwrite``, wakes a consumer (one byte down a pipe) and answers with one ``send``; the consumer
sleeps in ``read`` until woken. No framing, no validation, no offsets: rillet's SPU does all the
server's system calls and more. One JSON line: each process's CPU per record (the client's
without its pacing), measured with ``time.process_time`` in each process, kernel side included.
Where idle vCPUs halt at once (cpuidle-haltpoll, ``guest_halt_poll_ns`` 0) most of it is
waking up: see README, Tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

REQUEST = b"x" * 100
ANSWER = b"0123456789abcdef"
SPIN_NS = 20_000                 # as rillet-bench's W3 and the peers' harness pace


def _server(sock: socket.socket, wake_fd: int, records: int, directory: str, report_fd: int) -> None:
    fd = os.open(os.path.join(directory, "log"), os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, len(REQUEST) * records)
    recv, pwrite, send, write = sock.recv, os.pwrite, sock.send, os.write
    pos, cpu = 0, time.process_time()
    for _ in range(records):
        data = recv(4096)
        pwrite(fd, data, pos)
        pos += len(data)
        write(wake_fd, b"x")
        send(ANSWER)
    os.write(report_fd, b"%.3f\n" % ((time.process_time() - cpu) / records * 1e6))
    os.close(fd)


def _consumer(wake_fd: int, records: int, report_fd: int) -> None:
    seen, cpu = 0, time.process_time()
    while seen < records:
        seen += len(os.read(wake_fd, 4096))
    os.write(report_fd, b"%.3f\n" % ((time.process_time() - cpu) / records * 1e6))


def _client(sock: socket.socket, records: int, interval_ns: int) -> float:
    """CPU per record in the client, its pacing's sleeps and spins left out."""
    try:                         # prctl(PR_SET_TIMERSLACK, 1 ns): short sleeps otherwise overshoot by 50 us
        import ctypes
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    now, thread_time = time.perf_counter_ns, time.thread_time
    pacing, cpu = 0.0, time.process_time()
    next_t = now()
    for _ in range(records):
        p0 = thread_time()
        t = now()
        if next_t - t > 2 * SPIN_NS:
            time.sleep((next_t - t - SPIN_NS) / 1e9)
        while now() < next_t:
            pass
        pacing += thread_time() - p0
        sock.send(REQUEST)
        sock.recv(64)
        next_t += interval_ns
    return (time.process_time() - cpu - pacing) / records * 1e6


def _child(target, *args) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            target(*args)
            code = 0
        finally:
            os._exit(code)
    return pid


def measure(records: int, interval_us: float) -> dict:
    client_sock, server_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    wake_r, wake_w = os.pipe()
    server_report, consumer_report = os.pipe(), os.pipe()
    with tempfile.TemporaryDirectory(prefix="rillet-floor-") as directory:
        consumer = _child(_consumer, wake_r, records, consumer_report[1])
        server = _child(_server, server_sock, wake_w, records, directory, server_report[1])
        for fd in (wake_r, wake_w, server_report[1], consumer_report[1]):
            os.close(fd)
        server_sock.close()
        try:
            client_us = _client(client_sock, records, int(interval_us * 1000))
        finally:
            client_sock.close()
            codes = [os.waitpid(pid, 0)[1] for pid in (server, consumer)]
        figures = []
        for fd in (server_report[0], consumer_report[0]):
            with os.fdopen(fd) as report:
                figures.append(report.read().strip())
    if any(codes) or not all(figures):
        raise RuntimeError(f"a child failed (wait statuses {codes})")
    server_us, consumer_us = map(float, figures)
    return {"records": records, "interval_us": interval_us, "client_cpu_us_per_record": round(client_us, 1),
            "server_cpu_us_per_record": round(server_us, 1), "consumer_cpu_us_per_record": round(consumer_us, 1),
            "idle_driver": _read("/sys/devices/system/cpu/cpuidle/current_driver"),
            "guest_halt_poll_ns": _read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--interval-us", type=float, default=100.0)
    args = parser.parse_args(argv)
    if args.records < 1 or args.interval_us <= 0:
        parser.error("--records must be at least 1 and --interval-us positive")
    print(json.dumps(measure(args.records, args.interval_us)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
