"""Shared machinery of the benchmark: CPU accounting, disturbance handling, servers, wrk.

stdlib only (bench/run runs under any python3 >= 3.9). Every measured point records how much
CPU *other* processes used while it ran:

    other = /proc/stat busy time  -  our own CPU (this process + reaped children such as wrk
            and engine workers)  -  the CPU of the server process tree being measured

expressed in % of the whole machine (100 = all cores). A point above `max_other` is repeated
after a pause; the least disturbed attempt is kept, and every attempt is written to the raw file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

CLK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- CPU accounting ------------------------------------------------------------------------------

def machine_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs since boot. Steal counts as idle."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (vals + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    total = busy + idle + iowait + steal
    return busy / CLK, total / CLK


def proc_stat(pid: int) -> dict | None:
    """utime+stime (s), ppid and comm of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    return {"ppid": int(rest[1]), "cpu": (int(rest[11]) + int(rest[12])) / CLK, "comm": comm}


def proc_cpu(pid: int) -> float | None:
    st = proc_stat(pid)
    return None if st is None else st["cpu"]


def descendants(root: int) -> list[int]:
    """All descendants of `root` (not root itself), parents before children."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                kids.setdefault(st["ppid"], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop(0)
        for c in sorted(kids.get(p, [])):
            out.append(c)
            todo.append(c)
    return out


def own_cpu() -> float:
    """CPU seconds of this process plus its reaped children (wrk, engine workers, ...)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def vm_field(pid: int, name: str) -> int | None:
    """VmHWM / VmRSS of a process in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class CpuWindow:
    """Measure machine, own and tracked-process CPU over a window."""

    def __init__(self, tracked: Iterable[int] = ()):
        self.tracked = list(tracked)

    def __enter__(self) -> "CpuWindow":
        self.t0 = time.monotonic()
        self.m0 = machine_cpu()
        self.o0 = own_cpu()
        self.p0 = {p: proc_cpu(p) for p in self.tracked}
        return self

    def __exit__(self, *exc) -> None:
        self.p1 = {p: proc_cpu(p) for p in self.tracked}
        self.o1 = own_cpu()
        self.m1 = machine_cpu()
        self.t1 = time.monotonic()

    @property
    def wall(self) -> float:
        return self.t1 - self.t0

    def per_process(self) -> dict[int, float]:
        """CPU seconds of each tracked process over the window (gone processes: skipped)."""
        return {p: self.p1[p] - self.p0[p] for p in self.tracked
                if self.p0.get(p) is not None and self.p1.get(p) is not None}

    def summary(self) -> dict:
        busy = self.m1[0] - self.m0[0]
        total = self.m1[1] - self.m0[1] or 1e-9
        ours = self.o1 - self.o0
        tracked = sum(self.per_process().values())
        other = max(0.0, busy - ours - tracked)
        return {
            "wall_s": round(self.wall, 3),
            "machine_busy_pct": round(100 * busy / total, 1),
            "own_cpu_s": round(ours, 3),
            "tracked_cpu_s": round(tracked, 3),
            "other_pct": round(100 * other / total, 1),
        }


def sample_other_load(seconds: float = 3.0) -> tuple[float, list[tuple[float, int, str]]]:
    """Machine busy % (excluding us) over a short sample, and the top consumers."""
    before = {int(d): proc_cpu(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    with CpuWindow() as w:
        time.sleep(seconds)
    s = w.summary()
    top = []
    now = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    for pid in now:  # processes born during the sample count from zero
        c0 = before.get(pid, 0.0)
        c1 = proc_cpu(pid)
        if c0 is not None and c1 is not None and c1 - c0 > 0.02 * seconds:
            top.append((round(100 * (c1 - c0) / seconds, 1), pid, cmdline(pid)[:100]))
    top.sort(reverse=True)
    return s["other_pct"], top[:5]


def wait_quiet(threshold: float, max_wait: float, check_every: float = 30.0) -> dict:
    """Wait until other processes use less than `threshold`% of the machine (or give up)."""
    t_start = time.monotonic()
    while True:
        other, top = sample_other_load()
        if other <= threshold:
            return {"other_pct": other, "waited_s": round(time.monotonic() - t_start)}
        waited = time.monotonic() - t_start
        log(f"machine busy: other processes use {other:.0f}% (limit {threshold:.0f}%); top: "
            + ("; ".join(f"{c}% {cmd}" for c, _, cmd in top[:3]) or "short-lived processes"))
        if waited >= max_wait:
            log(f"still busy after {waited:.0f}s: going on; disturbed points will be retried")
            return {"other_pct": other, "waited_s": round(waited), "gave_up": True}
        time.sleep(check_every)


@dataclass
class Policy:
    max_other: float = 15.0  # % of the machine
    retries: int = 2
    pause: float = 10.0


def measured(fn: Callable[[], dict], policy: Policy, label: str) -> tuple[dict, list[dict]]:
    """Run a point; repeat it while disturbed. Returns (kept attempt, all attempts)."""
    attempts = []
    for i in range(policy.retries + 1):
        r = fn()
        r["attempt"] = i + 1
        attempts.append(r)
        if r.get("error") or r.get("other_pct", 0.0) <= policy.max_other:
            break
        log(f"{label}: other processes used {r['other_pct']:.0f}% > {policy.max_other:.0f}%; "
            f"repeating in {policy.pause:.0f}s")
        time.sleep(policy.pause)
    kept = min(attempts, key=lambda a: (bool(a.get("error")), a.get("other_pct", 0.0)))
    # marked on the attempt itself: the sections write every attempt, and the summary reads these
    kept["attempts"] = len(attempts)
    kept["disturbed"] = kept.get("other_pct", 0.0) > policy.max_other
    return dict(kept), attempts


# -- stats ---------------------------------------------------------------------------------------

def median(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def geomean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x and x > 0 and not math.isnan(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def clean_rounds(points: list[dict], max_other: float) -> list[dict]:
    """Drop disturbed rounds when at least 2 clean ones remain."""
    ok = [p for p in points if not p.get("error")]
    clean = [p for p in ok if p.get("other_pct", 0.0) <= max_other]
    return clean if len(clean) >= 2 else ok


def fmt(x: float | None, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}"


def spread(vals: list[float], nd: int = 1) -> str:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt(vals[0], nd)
    return f"{fmt(median(vals), nd)} [{fmt(min(vals), nd)}-{fmt(max(vals), nd)}]"


# -- ports, HTTP, image headers ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Accept": "*/*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def image_info(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from JPEG / WebP / PNG bytes, without decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 ":
            return ("webp", int.from_bytes(data[26:28], "little") & 0x3FFF,
                    int.from_bytes(data[28:30], "little") & 0x3FFF)
        if chunk == b"VP8L":
            b = int.from_bytes(data[21:25], "little")
            return "webp", (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return ("webp", int.from_bytes(data[24:27], "little") + 1,
                    int.from_bytes(data[27:30], "little") + 1)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            seg = int.from_bytes(data[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                return "jpeg", int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + seg
    return None


def check_url(url: str, want: tuple[str, int, int] | None = None) -> dict:
    """GET once: status, size, decoded header. Raises if the answer is not what the bench expects."""
    status, headers, body = http_get(url, timeout=60)
    info = image_info(body)
    res = {"status": status, "bytes": len(body), "content_type": headers.get("content-type"),
           "image": list(info) if info else None}
    if status != 200:
        raise RuntimeError(f"GET {url} -> {status}: {body[:300]!r}")
    if want and (info is None or tuple(info) != tuple(want)):
        raise RuntimeError(f"GET {url} -> {info}, expected {want}")
    return res


# -- servers -------------------------------------------------------------------------------------

@dataclass
class Server:
    """One or more processes started in their own sessions, stopped as groups."""

    name: str
    cmds: list[list[str]]
    port: int
    env: dict = field(default_factory=dict)
    cwd: str | None = None
    log_path: Path | None = None
    health: str = "/healthz"
    pass_fds: list[tuple[int, ...]] = field(default_factory=list)  # per command
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0, check_port: bool = True) -> None:
        if check_port and port_busy(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already in use; not benchmarking "
                               "someone else's server")
        logf = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, **self.env}
        for i, cmd in enumerate(self.cmds):
            fds = self.pass_fds[i] if i < len(self.pass_fds) else ()
            self.procs.append(subprocess.Popen(
                cmd, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, start_new_session=True, pass_fds=fds))
        if logf is not subprocess.DEVNULL:
            logf.close()
        deadline = time.monotonic() + timeout
        while True:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                self.stop()
                raise RuntimeError(f"{self.name}: exited with {dead[0].returncode} at start; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            try:
                status, _, _ = http_get(self.base + self.health, timeout=2)
                if status < 500:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name}: not answering {self.health} after {timeout:.0f}s;"
                                   f" see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    def roots(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def all_pids(self) -> list[int]:
        pids = []
        for r in self.roots():
            pids.append(r)
            pids.extend(descendants(r))
        return pids

    def workers(self) -> list[int]:
        """The processes that serve: each root's children if it has any, else the root."""
        out = []
        for r in self.roots():
            kids = [k for k in descendants(r) if proc_stat(k) and proc_stat(k)["ppid"] == r
                    and "resource_tracker" not in cmdline(k)]  # multiprocessing's helper
            out.extend(kids or [r])
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


# -- wrk -----------------------------------------------------------------------------------------

def run_wrk(url: str, conc: int, duration: float, paths: list[str] | None = None) -> dict:
    """wrk -t1, keep-alive, fixed duration. Returns its numbers plus its own CPU seconds."""
    env = dict(os.environ)
    if paths:
        env["WRK_PATHS"] = ",".join(paths)
    else:
        env.pop("WRK_PATHS", None)
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{duration:g}s", "--timeout", "10s",
           "-s", str(HERE / "wrk_report.lua"), url]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        return {"error": f"wrk exited {p.returncode}: {err.decode()[-300:]} {out.decode()[-300:]}"}
    r = json.loads(line[len("WRKJSON "):])
    dur = r["duration_us"] / 1e6
    r["req_s"] = r["requests"] / dur if dur else 0.0
    r["wrk_cpu_s"] = ru.ru_utime + ru.ru_stime
    r["errors"] = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return r


def http_point(server: Server, url: str, conc: int, duration: float, warmup: float = 1.0,
               paths: list[str] | None = None) -> dict:
    """One wrk point against `server`, with the server tree's CPU and everyone else's."""
    if warmup > 0:
        run_wrk(url, conc, warmup, paths)
    pids = server.all_pids()
    workers = set(server.workers())
    with CpuWindow(pids) as w:
        r = run_wrk(url, conc, duration, paths)
    if "error" in r:
        return {**r, **w.summary()}
    s = w.summary()
    per = w.per_process()
    wall = s["wall_s"]
    server_cpu = sum(per.values())
    split = sorted(((round(100 * c / wall, 1), pid) for pid, c in per.items() if pid in workers), reverse=True)
    wsum = sum(c for pid, c in per.items() if pid in workers) or 1e-9
    res = {
        **r, **s,
        "server_cpu_pct": round(100 * server_cpu / wall, 1),  # % of one core
        "cpu_ms_per_req": round(1000 * server_cpu / r["requests"], 3) if r["requests"] else None,
        "worker_cpu_pct": [c for c, _ in split],
        "worker_share": [round(100 * per[pid] / wsum, 1) for _, pid in split],
        "non_worker_cpu_pct": round(100 * sum(c for pid, c in per.items() if pid not in workers) / wall, 1),
        "n_workers": len(workers),
    }
    return res


# -- results -------------------------------------------------------------------------------------

class Raw:
    """Append-only JSONL of every attempt."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]


@contextlib.contextmanager
def exclusive(lock_path: Path):
    """Refuse to run two benchmark sections at once (from two shells)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock_path, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another bench run holds {lock_path}; run one at a time")
    try:
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
