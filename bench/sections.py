"""The sections of the benchmark (engine, http, cached, rss, grammars) and their summaries."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import select
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    HERE, NCPU, CpuWindow, Policy, Raw, Server, check_url, clean_rounds, cmdline, fmt, free_port,
    geomean, http_get, http_point, log, measured, median, pct, spread, vm_field,
)

WORKLOADS = json.loads((HERE / "workloads.json").read_text())["workloads"]
WL = {w["name"]: w for w in WORKLOADS}
SOURCES = sorted({w["source"] for w in WORKLOADS})
ENGINES = ["darkroom", "sharp", "pyvips", "pillow"]
ENGINE_LABEL = {"darkroom": "darkroom", "sharp": "sharp", "pyvips": "pyvips t1", "pillow": "Pillow"}
HTTP_SERVERS = ["darkroom", "ref-pyvips", "ref-darkroom", "thumbor-p2", "thumbor-2rp"]
HTTP_LABEL = {
    "darkroom": "darkroom (2 workers, no result cache)",
    "ref-pyvips": "bare pyvips server (2 procs)",
    "ref-darkroom": "bare server + darkroom engine (2 procs)",
    "thumbor-p2": "Thumbor --processes 2",
    "thumbor-2rp": "Thumbor 2 procs, own SO_REUSEPORT sockets",
}
CACHED_URL = "/img/12mp.jpg?w=800&fm=jpeg&q=80"
RSS_WORKLOADS = ["12mp/jpeg800", "12mp/webp800", "12mp/cover300"]
GRAMMARS = ["native", "thumbor", "sih"]
GRAMMAR_LABEL = {"native": "native /img/", "thumbor": "Thumbor", "sih": "SIH"}
GRAMMAR_REGIMES = {"uncached": False, "cached": True}  # regime -> result cache on
GRAMMAR_TARGET = 0.95  # each grammar's req/s >= 0.95x native's
RSS_BUDGET_MB = 300


@dataclass
class Ctx:
    bench_dir: Path
    images: Path
    dv_python: str
    darkroom_bin: str
    thumbor_bin: str
    sharp_dir: Path
    out: Path  # this run's results directory
    policy: Policy
    rounds: dict
    duration: float
    engine_seconds: float
    min_time: float
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    workloads: list[str] = field(default_factory=lambda: [w["name"] for w in WORKLOADS])
    darkroom_env: dict = field(default_factory=dict)

    def raw(self, section: str) -> Raw:
        return Raw(self.out / f"{section}.jsonl")


def rotate(xs: list, k: int) -> list:
    k %= len(xs) or 1
    return xs[k:] + xs[:k]


# =========================================== engine ==============================================

def _engine_cmd(ctx: Ctx, engine: str, wl: str, mode: str) -> tuple[list[str], dict]:
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    common = ["--workload", wl, "--mode", mode, "--images", str(ctx.images),
              "--min-time", str(ctx.min_time)]
    if engine == "sharp":
        env["NODE_PATH"] = str(ctx.sharp_dir / "node_modules")
        return ["node", str(HERE / "engine_sharp.js"), *common], env
    return [ctx.dv_python, str(HERE / "engine_worker.py"), "--engine", engine, *common], env


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def engine_latency_point(ctx: Ctx, engine: str, wl: str) -> dict:
    cmd, env = _engine_cmd(ctx, engine, wl, "latency")
    with CpuWindow() as w:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    d = _last_json(p.stdout)
    if p.returncode != 0 or d is None or "error" in d:
        err = (d or {}).get("error") or p.stderr.strip()[-400:] or f"exit {p.returncode}"
        return {"error": err, **w.summary()}
    walls, cpus = d.pop("wall_ms"), d.pop("cpu_ms")
    return {**d, **w.summary(), "n": len(walls), "p50_ms": pct(walls, 50), "p90_ms": pct(walls, 90),
            "min_ms": min(walls), "mean_ms": sum(walls) / len(walls), "cpu_ms": pct(cpus, 50)}


def engine_throughput_point(ctx: Ctx, engine: str, wl: str, nproc: int = 2) -> dict:
    cmd, env = _engine_cmd(ctx, engine, wl, "throughput")
    procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(nproc)]
    try:
        deadline = time.monotonic() + 120
        for p in procs:  # wait until every worker has loaded and done its warm-up op
            while True:
                r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not r:
                    raise RuntimeError("worker not ready after 120 s")
                line = p.stdout.readline()
                if not line:
                    raise RuntimeError(p.stderr.read().strip()[-400:] or f"exit {p.wait()}")
                d = _last_json(line)
                if d and d.get("ready"):
                    break
                if d and "error" in d:
                    raise RuntimeError(d["error"])
        with CpuWindow([p.pid for p in procs]) as w:
            for p in procs:
                p.stdin.write(f"go {ctx.engine_seconds}\n")
                p.stdin.flush()
            results = []
            for p in procs:
                d = _last_json(p.stdout.readline())
                if d is None or "error" in d:
                    raise RuntimeError((d or {}).get("error") or p.stderr.read()[-400:])
                results.append(d)
    except Exception as exc:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        return {"error": f"{type(exc).__name__}: {exc}"}
    for p in procs:
        p.stdin.close()
        p.wait()
    s = w.summary()
    imgs = sum(r["images"] for r in results)
    return {
        **s, "engine": engine, "workload": wl, "version": results[0]["version"], "procs": nproc,
        "img_per_s": sum(r["images"] / r["seconds"] for r in results),
        "cpu_ms_per_img": 1000 * sum(r["cpu_s"] for r in results) / imgs,
        "per_proc_img_per_s": [round(r["images"] / r["seconds"], 2) for r in results],
        "bytes": results[0]["bytes"], "out_w": results[0]["out_w"], "out_h": results[0]["out_h"],
        "hwm_kb": max(r["hwm_kb"] for r in results),
    }


def run_engine(ctx: Ctx) -> None:
    raw = ctx.raw("engine")
    rounds = ctx.rounds["engine"]
    failed: set[str] = set()
    for rnd in range(1, rounds + 1):
        for mode in ("latency", "throughput"):
            for wi, wl in enumerate(ctx.workloads):
                for engine in rotate(ctx.engines, rnd + wi):
                    if engine in failed:
                        continue
                    label = f"engine r{rnd} {mode} {wl} {engine}"
                    fn = (lambda e=engine, w=wl: engine_latency_point(ctx, e, w)) if mode == "latency" \
                        else (lambda e=engine, w=wl: engine_throughput_point(ctx, e, w))
                    kept, attempts = measured(fn, ctx.policy, label)
                    for a in attempts:
                        raw.write({"section": "engine", "round": rnd, "mode": mode, "workload": wl,
                                   "engine": engine, **a, "kept": a["attempt"] == kept["attempt"]})
                    if kept.get("error"):
                        log(f"{label}: FAILED: {kept['error']}")
                        if engine == "darkroom" or "cannot load" in kept["error"]:
                            failed.add(engine)  # an import error will not fix itself this run
                        continue
                    v = (f"p50 {kept['p50_ms']:.1f} ms" if mode == "latency"
                         else f"{kept['img_per_s']:.1f} img/s")
                    log(f"{label}: {v}, other {kept['other_pct']:.0f}%")


def summarize_engine(recs: list[dict], policy: Policy) -> tuple[str, dict]:
    recs = [r for r in recs if r.get("section") == "engine" and r.get("kept")]
    facts: dict = {}
    if not recs:
        return "", facts

    def pts(mode: str, engine: str, wl: str) -> list[dict]:
        return clean_rounds([r for r in recs if r["mode"] == mode and r["engine"] == engine
                             and r["workload"] == wl], policy.max_other)

    def errors(engine: str) -> str | None:
        errs = [r["error"] for r in recs if r["engine"] == engine and r.get("error")]
        return errs[0] if errs else None

    wls = [w["name"] for w in WORKLOADS if any(r["workload"] == w["name"] for r in recs)]
    engines = [e for e in ENGINES if any(r["engine"] == e for r in recs)]
    med = {}
    for mode, key in (("latency", "p50_ms"), ("latency", "cpu_ms"), ("throughput", "img_per_s"),
                      ("throughput", "cpu_ms_per_img")):
        for e in engines:
            for wl in wls:
                vals = [p[key] for p in pts(mode, e, wl)]
                med[(key, e, wl)] = (median(vals) if vals else float("nan"), vals)

    def ratio(key: str, a: str, b: str, wl: str) -> float:
        x, y = med.get((key, a, wl), (math.nan,))[0], med.get((key, b, wl), (math.nan,))[0]
        return x / y if y and not math.isnan(x) and not math.isnan(y) else math.nan

    out = []
    out.append("### Engine: latency, p50 ms of one op at a time (1 process, VIPS_CONCURRENCY=1, "
               "buffer → buffer); median over rounds [min-max]\n")
    out.append("Time ratios: below 1.00 means the first engine is faster.\n")
    hdr = ["workload"] + [ENGINE_LABEL[e] for e in engines]
    ratios = [("darkroom", "sharp"), ("darkroom", "pyvips"), ("sharp", "pyvips"), ("pillow", "pyvips")]
    ratios = [(a, b) for a, b in ratios if a in engines and b in engines]
    hdr += [f"{ENGINE_LABEL[a]} / {ENGINE_LABEL[b]}" for a, b in ratios]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for wl in wls:
        row = [wl] + [spread(med[("p50_ms", e, wl)][1]) for e in engines]
        row += [fmt(ratio("p50_ms", a, b, wl), 2) for a, b in ratios]
        out.append("| " + " | ".join(row) + " |")
        for a, b in ratios:
            facts[f"engine.p50.{a}/{b}.{wl}"] = ratio("p50_ms", a, b, wl)
        for e in engines:
            v = med[("p50_ms", e, wl)][1]
            if v:
                facts[f"engine.p50range.{e}.{wl}"] = (min(v), max(v))
    out.append("")
    out.append("### Engine: throughput, 2 processes × 1 op at a time (img/s); median over rounds [min-max]\n")
    out.append("Throughput ratios: above 1.00 means the first engine is faster.\n")
    hdr = ["workload"] + [ENGINE_LABEL[e] for e in engines]
    tr = [(a, b) for a, b in [("darkroom", "sharp"), ("darkroom", "pyvips"), ("sharp", "pyvips"),
                              ("pillow", "pyvips")] if a in engines and b in engines]
    hdr += [f"{ENGINE_LABEL[a]} / {ENGINE_LABEL[b]}" for a, b in tr]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for wl in wls:
        row = [wl] + [spread(med[("img_per_s", e, wl)][1]) for e in engines]
        row += [fmt(ratio("img_per_s", a, b, wl), 2) for a, b in tr]
        out.append("| " + " | ".join(row) + " |")
        for a, b in tr:
            facts[f"engine.tput.{a}/{b}.{wl}"] = ratio("img_per_s", a, b, wl)
        for e in engines:
            facts[f"engine.tput.{e}.{wl}"] = med[("img_per_s", e, wl)][0]
    out.append("")
    out.append("### Engine: CPU per op, output, memory\n")
    out.append("| workload | engine | version | CPU ms/op (latency) | CPU ms/img (2 procs) | output | bytes | "
               "VmHWM MB (latency proc) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for wl in wls:
        for e in engines:
            lat = pts("latency", e, wl)
            if not lat:
                continue
            last = lat[-1]
            out.append(f"| {wl} | {ENGINE_LABEL[e]} | {last.get('version', '-')} | "
                       f"{fmt(med[('cpu_ms', e, wl)][0])} | {fmt(med[('cpu_ms_per_img', e, wl)][0])} | "
                       f"{last.get('out_w')}×{last.get('out_h')} | {last.get('bytes')} | "
                       f"{fmt(max(p.get('hwm_kb', 0) for p in lat) / 1024, 0)} |")
    for e in engines:
        err = errors(e)
        if err:
            out.append(f"\n**{ENGINE_LABEL[e]} FAILED**: `{err}`")
    out.append("\n" + disturbance_line(recs, policy))
    return "\n".join(out) + "\n", facts


def disturbance_line(recs: list[dict], policy: Policy) -> str:
    ok = [r for r in recs if not r.get("error")]
    others = [r.get("other_pct", 0.0) for r in ok]
    # runs before attempts/disturbed were recorded on the kept attempt: a kept retry was repeated
    repeated = sum(1 for r in ok if r.get("attempts", r.get("attempt", 1)) > 1)
    disturbed = [r for r in ok if r.get("other_pct", 0.0) > policy.max_other]
    line = (f"Other processes' CPU while a kept point ran (% of the {NCPU}-core machine): median "
            f"{fmt(median(others))}, max {fmt(max(others) if others else math.nan)}; points repeated "
            f"because disturbed (> {policy.max_other:.0f}%): {repeated}; still disturbed after "
            f"{policy.retries} retries: {len(disturbed)}")
    if disturbed:
        line += " (" + ", ".join(
            f"{r.get('workload', r.get('conc', ''))}/{r.get('engine', r.get('server', r.get('grammar', '')))}"
            f"{' ' + r['regime'] if r.get('regime') else ''} r{r.get('round')}"
            f" {r['other_pct']:.0f}%" for r in disturbed[:8]) + ")"
    return line + "."


# ============================================ servers ============================================

def darkroom_server(ctx: Ctx, name: str, cache: bool, workers: int = 2) -> Server:
    data = ctx.bench_dir / "work" / f"darkroom-{name}"
    if data.exists():
        shutil.rmtree(data)
    (data / "storage").mkdir(parents=True)
    for f in SOURCES:
        shutil.copy2(ctx.images / f, data / "storage" / f)
    env = {
        "DARKROOM_DATA_DIR": str(data), "DARKROOM_WORKERS": str(workers), "DARKROOM_ACCESS_LOG": "false",
        "DARKROOM_ALLOW_UNSIGNED": "true", "DARKROOM_LOG_LEVEL": "warning",
        "DARKROOM_HOST": "127.0.0.1",
    }
    if not cache:
        env["DARKROOM_RESULT_CACHE"] = "false"
    env.update(ctx.darkroom_env)
    port = free_port()
    return Server(name, [[ctx.darkroom_bin, "serve", "--port", str(port)]], port, env=env, cwd=str(data),
                  log_path=ctx.out / f"server-{name}.log", health="/healthz")


def ref_server(ctx: Ctx, name: str, engine: str, nproc: int = 2) -> Server:
    port = free_port()
    cmd = [ctx.dv_python, str(HERE / "ref_server.py"), "--port", str(port), "--root", str(ctx.images),
           "--engine", engine]
    return Server(name, [cmd] * nproc, port, env={"VIPS_CONCURRENCY": "1"},
                  log_path=ctx.out / f"server-{name}.log", health="/healthz")


def thumbor_conf(ctx: Ctx) -> Path:
    conf = ctx.bench_dir / "thumbor.conf"
    conf.write_text(
        "# written by darkroom bench/sections.py\n"
        "LOADER = 'thumbor.loaders.file_loader'\n"
        f"FILE_LOADER_ROOT_PATH = '{ctx.images}'\n"
        "STORAGE = 'thumbor.storages.no_storage'\n"
        "RESULT_STORAGE = None\n"
        "ENGINE = 'thumbor.engines.pil'\n"
        "QUALITY = 80\n"
        "WEBP_QUALITY = 80\n"
        "PROGRESSIVE_JPEG = False\n"
        "AUTO_WEBP = False\n"
        "ALLOW_UNSAFE_URL = True\n"
        "PRESERVE_EXIF_INFO = False\n"
        "NON_BLOCKING_SOCKETS = True  # for --fd sockets (thumbor-2rp)\n"
    )
    return conf


class ThumborReuseport(Server):
    """Thumbor, N single processes, each on its own SO_REUSEPORT socket passed with --fd."""

    def start(self, timeout: float = 90.0, check_port: bool = True) -> None:
        socks = []
        for _ in self.cmds:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(128)
            s.setblocking(False)  # Tornado's loop must never block in accept()
            socks.append(s)
        self.cmds = [c + ["--fd", str(s.fileno())] for c, s in zip(self.cmds, socks)]
        self.pass_fds = [(s.fileno(),) for s in socks]
        try:
            super().start(timeout, check_port=False)
        finally:
            for s in socks:
                s.close()


def thumbor_server(ctx: Ctx, name: str) -> Server:
    conf = thumbor_conf(ctx)
    port = free_port()
    base = [ctx.thumbor_bin, "--conf", str(conf), "--log-level", "error"]
    if name == "thumbor-2rp":
        return ThumborReuseport(name, [list(base), list(base)], port,
                                log_path=ctx.out / f"server-{name}.log", health="/healthcheck")
    return Server(name, [base + ["--ip", "127.0.0.1", "--port", str(port), "--processes", "2"]], port,
                  log_path=ctx.out / f"server-{name}.log", health="/healthcheck")


def make_server(ctx: Ctx, name: str) -> Server:
    if name == "darkroom":
        return darkroom_server(ctx, "darkroom-uncached", cache=False)
    if name == "ref-pyvips":
        return ref_server(ctx, name, "pyvips")
    if name == "ref-darkroom":
        return ref_server(ctx, name, "darkroom")
    return thumbor_server(ctx, name)


def url_for(server: str, wl: str) -> str:
    return WL[wl]["thumbor"] if server.startswith("thumbor") else WL[wl]["darkroom"]


# ============================================= http ==============================================

def run_http(ctx: Ctx, conc: int = 8) -> None:
    raw = ctx.raw("http")
    names = list(HTTP_SERVERS)
    for rnd in range(1, ctx.rounds["http"] + 1):
        servers: dict[str, Server] = {}
        for name in names:
            srv = make_server(ctx, name)
            try:
                srv.start()
                for wl in ctx.workloads:
                    w = WL[wl]
                    info = check_url(srv.base + url_for(name, wl), (w["format"], *w["out"]))
                    raw.write({"section": "http", "round": rnd, "server": name, "workload": wl,
                               "check": info})
                servers[name] = srv
                log(f"http r{rnd}: {name} up on :{srv.port}")
            except Exception as exc:
                srv.stop()
                log(f"http r{rnd}: {name} FAILED to start or answer: {exc}")
                raw.write({"section": "http", "round": rnd, "server": name, "kept": True,
                           "error": f"{type(exc).__name__}: {exc}"[:1500]})
        try:
            for wi, wl in enumerate(ctx.workloads):
                for name in rotate([n for n in names if n in servers], rnd + wi):
                    srv = servers[name]
                    url = srv.base + url_for(name, wl)
                    label = f"http r{rnd} {wl} {name} c={conc}"
                    kept, attempts = measured(lambda: http_point(srv, url, conc, ctx.duration), ctx.policy, label)
                    for a in attempts:
                        raw.write({"section": "http", "round": rnd, "server": name, "workload": wl,
                                   "conc": conc, "url": url_for(name, wl), **a,
                                   "kept": a["attempt"] == kept["attempt"]})
                    if kept.get("error"):
                        log(f"{label}: FAILED: {kept['error']}")
                    else:
                        log(f"{label}: {kept['req_s']:.1f} req/s p50 {kept['lat_p50_us'] / 1000:.0f} ms, "
                            f"server {kept['server_cpu_pct']:.0f}% {kept['worker_cpu_pct']}, "
                            f"other {kept['other_pct']:.0f}%, errors {kept['errors']}")
        finally:
            for srv in servers.values():
                srv.stop()


def _http_rows(recs: list[dict], policy: Policy, server: str, wl: str, conc: int | None = None) -> list[dict]:
    return clean_rounds([r for r in recs if r.get("server") == server and r.get("workload") == wl
                         and "req_s" in r and (conc is None or r.get("conc") == conc)], policy.max_other)


def summarize_http(recs: list[dict], policy: Policy, engine_facts: dict) -> tuple[str, dict]:
    recs = [r for r in recs if r.get("section") == "http"]
    facts: dict = {}
    kept = [r for r in recs if r.get("kept")]
    if not kept:
        return "", facts
    servers = [s for s in HTTP_SERVERS if any(r.get("server") == s for r in kept)]
    wls = [w["name"] for w in WORKLOADS if any(r.get("workload") == w["name"] for r in kept)]
    rs = {}
    for s in servers:
        for wl in wls:
            rows = _http_rows(kept, policy, s, wl)
            rs[(s, wl)] = ([r["req_s"] for r in rows], rows)

    def m(s: str, wl: str) -> float:
        return median(rs.get((s, wl), ([], []))[0])

    dur = median([r["duration_us"] / 1e6 for r in kept if r.get("duration_us")])
    out = ["### HTTP, uncached: req/s at concurrency 8 (wrk -t1, keep-alive, "
           f"{fmt(dur, 0)} s per point); median over rounds [min-max]\n",
           "Ratios above 1.00 mean darkroom serves more requests per second. Targets: darkroom ≥ 0.90× the "
           "bare-engine server on every workload, ≥ 2× Thumbor (geometric mean).\n"]
    cmp_to = [s for s in ("ref-pyvips", "ref-darkroom", "thumbor-p2", "thumbor-2rp") if s in servers]
    hdr = ["workload"] + [HTTP_LABEL[s] for s in servers]
    if "darkroom" in servers:
        hdr += [f"darkroom / {s}" for s in cmp_to]
        if engine_facts:
            hdr += ["darkroom HTTP / darkroom engine 2-proc img/s"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    ratios: dict[str, list[float]] = {s: [] for s in cmp_to}
    for wl in wls:
        row = [wl] + [spread(rs[(s, wl)][0]) for s in servers]
        if "darkroom" in servers:
            for s in cmp_to:
                r = m("darkroom", wl) / m(s, wl) if m(s, wl) else math.nan
                ratios[s].append(r)
                facts[f"http.darkroom/{s}.{wl}"] = r
                row.append(fmt(r, 2))
            if engine_facts:
                e = engine_facts.get(f"engine.tput.darkroom.{wl}", math.nan)
                r = m("darkroom", wl) / e if e and not math.isnan(e) else math.nan
                facts[f"http.darkroom/engine.{wl}"] = r
                row.append(fmt(r, 2))
        out.append("| " + " | ".join(row) + " |")
    if "darkroom" in servers:
        row = ["**geometric mean**"] + [fmt(geomean([m(s, wl) for wl in wls])) for s in servers]
        for s in cmp_to:
            g = geomean(ratios[s])
            facts[f"http.darkroom/{s}.geomean"] = g
            row.append(f"**{fmt(g, 2)}**")
        if engine_facts:
            row.append(fmt(geomean([facts.get(f"http.darkroom/engine.{wl}") for wl in wls]), 2))
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("#### HTTP details (kept attempt per round; CPU in % of one core)\n")
    out.append("| workload | server | req/s | p50 ms | p99 ms | server CPU % | CPU ms/req | per-worker CPU % "
               "(each round) | worker share % (each round) | other % (max) | bytes/resp | non-2xx+errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for wl in wls:
        for s in servers:
            reqs, rows = rs[(s, wl)]
            if not rows:
                continue
            bpr = [r["bytes"] / r["requests"] for r in rows if r["requests"]]
            out.append(
                f"| {wl} | {s} | {spread(reqs)} | {fmt(median([r['lat_p50_us'] / 1000 for r in rows]), 0)} | "
                f"{fmt(median([r['lat_p99_us'] / 1000 for r in rows]), 0)} | "
                f"{fmt(median([r['server_cpu_pct'] for r in rows]), 0)} | "
                f"{fmt(median([r['cpu_ms_per_req'] for r in rows]))} | "
                f"{' '.join('/'.join(fmt(c, 0) for c in r['worker_cpu_pct']) for r in rows)} | "
                f"{' '.join('/'.join(fmt(c, 0) for c in r['worker_share']) for r in rows)} | "
                f"{fmt(max(r['other_pct'] for r in rows), 0)} | {fmt(median(bpr), 0)} | "
                f"{sum(r['errors'] for r in rows)} |")
    # sanity: an uncached darkroom request must cost engine-scale CPU
    for wl in wls:
        d, ref = rs.get(("darkroom", wl), ([], []))[1], rs.get(("ref-pyvips", wl), ([], []))[1]
        if d and ref:
            dc = median([r["cpu_ms_per_req"] for r in d])
            rc = median([r["cpu_ms_per_req"] for r in ref])
            if dc < 0.3 * rc:
                out.append(f"\n**WARNING**: darkroom used {dc:.1f} ms CPU per request on {wl} against "
                           f"{rc:.1f} for the bare engine: the result cache was probably not defeated "
                           "(DARKROOM_RESULT_CACHE=false).")
    for r in kept:
        if r.get("error") and r.get("server"):
            out.append(f"\n**{r['server']} FAILED** (round {r.get('round')}): `{r['error'][:600]}`")
    out.append("\n" + disturbance_line([r for r in kept if "req_s" in r], policy))
    return "\n".join(out) + "\n", facts


# ============================================ cached =============================================

def nginx_server(ctx: Ctx, body: bytes) -> Server:
    root = ctx.bench_dir / "nginx"
    www = root / "www"
    www.mkdir(parents=True, exist_ok=True)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / "tmp" / d).mkdir(parents=True, exist_ok=True)
    (www / "12mp_w800.jpg").write_bytes(body)
    os.chmod(www, 0o755)
    os.chmod(www / "12mp_w800.jpg", 0o644)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(f"""# written by darkroom bench/sections.py
worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    # no tcp_nopush: with it, ~10% of keep-alive responses of this 100 kB body stalled ~40 ms
    # (p90 30 ms, p99 42 ms against 0.2 ms without it; measured here, nginx 1.22.1)
    tcp_nodelay on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    types {{ image/jpeg jpg; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return Server("nginx", [[nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]], port,
                  log_path=ctx.out / "server-nginx.log", health="/12mp_w800.jpg")


def run_cached(ctx: Ctx, concs: tuple[int, ...] = (8, 16)) -> None:
    raw = ctx.raw("cached")
    for rnd in range(1, ctx.rounds["cached"] + 1):
        servers: dict[str, Server] = {}
        dr = darkroom_server(ctx, "darkroom-cached", cache=True)
        try:
            dr.start()
            check_url(dr.base + CACHED_URL, ("jpeg", 800, 600))  # miss: renders, fills the cache
            time.sleep(0.5)
            status, headers, body = http_get(dr.base + CACHED_URL)
            if status != 200:
                raise RuntimeError(f"darkroom {CACHED_URL} -> {status}")
            servers["darkroom"] = dr
        except Exception as exc:
            dr.stop()
            log(f"cached r{rnd}: darkroom FAILED: {exc}")
            raw.write({"section": "cached", "round": rnd, "server": "darkroom", "kept": True,
                       "error": f"{type(exc).__name__}: {exc}"[:1500]})
            # nginx still gets measured, serving pyvips' bytes for the same URL
            _, _, body = http_get_ref_bytes(ctx)
            headers = {}
        ng = nginx_server(ctx, body)
        ng.start()
        servers["nginx"] = ng
        _, _, nb = http_get(ng.base + "/12mp_w800.jpg")
        same = hashlib.sha256(nb).hexdigest() == hashlib.sha256(body).hexdigest()
        raw.write({"section": "cached", "round": rnd, "check": {
            "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "nginx_same_bytes": same,
            "darkroom_headers": headers}})
        if not same:
            raise RuntimeError("nginx does not serve the bytes darkroom returned")
        urls = {"darkroom": CACHED_URL, "nginx": "/12mp_w800.jpg"}
        try:
            for ci, conc in enumerate(concs):
                for name in rotate([n for n in ("nginx", "darkroom") if n in servers], rnd + ci):
                    srv = servers[name]
                    label = f"cached r{rnd} {name} c={conc}"
                    kept, attempts = measured(
                        lambda: http_point(srv, srv.base + urls[name], conc, ctx.duration, warmup=2.0),
                        ctx.policy, label)
                    for a in attempts:
                        raw.write({"section": "cached", "round": rnd, "server": name, "conc": conc,
                                   "body_bytes": len(body), **a, "kept": a["attempt"] == kept["attempt"]})
                    if kept.get("error"):
                        log(f"{label}: FAILED: {kept['error']}")
                    else:
                        log(f"{label}: {kept['req_s']:.0f} req/s p50 {kept['lat_p50_us'] / 1000:.2f} ms "
                            f"p99 {kept['lat_p99_us'] / 1000:.2f} ms, workers {kept['worker_cpu_pct']}, "
                            f"other {kept['other_pct']:.0f}%")
        finally:
            for srv in servers.values():
                srv.stop()


def http_get_ref_bytes(ctx: Ctx) -> tuple[int, dict, bytes]:
    srv = ref_server(ctx, "ref-pyvips-cachedbytes", "pyvips", nproc=1)
    srv.start()
    try:
        return http_get(srv.base + CACHED_URL)
    finally:
        srv.stop()


def summarize_cached(recs: list[dict], policy: Policy) -> tuple[str, dict]:
    recs = [r for r in recs if r.get("section") == "cached"]
    kept = [r for r in recs if r.get("kept") and "req_s" in r]
    facts: dict = {}
    if not kept and not recs:
        return "", facts
    checks = [r["check"] for r in recs if "check" in r]
    concs = sorted({r["conc"] for r in kept})
    out = ["### Cached hits: darkroom (2 workers, result cache on) vs nginx serving the same bytes\n"]
    if checks:
        c = checks[-1]
        out.append(f"Body: {c['bytes']} bytes (sha256 {c['sha256'][:12]}…), nginx serves the same bytes: "
                   f"{c['nginx_same_bytes']}. Targets: darkroom ≥ 0.4× nginx req/s; at c=16 darkroom p99 ≤ 3× "
                   "its p50; each worker serves 40-60% (CPU share below).\n")
    out.append("| conc | server | req/s | / nginx | p50 ms | p99 ms | p99 / p50 | server CPU % | CPU µs/req | "
               "per-worker CPU % (each round) | busiest worker share % (each round) | other % (max) | errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for conc in concs:
        rows = {s: clean_rounds([r for r in kept if r["server"] == s and r["conc"] == conc], policy.max_other)
                for s in ("nginx", "darkroom")}
        ng = median([r["req_s"] for r in rows["nginx"]])
        for s in ("nginx", "darkroom"):
            rr = rows[s]
            if not rr:
                continue
            rq = median([r["req_s"] for r in rr])
            p50 = median([r["lat_p50_us"] / 1000 for r in rr])
            p99 = median([r["lat_p99_us"] / 1000 for r in rr])
            shares = [max(r["worker_share"]) if r["worker_share"] else math.nan for r in rr]
            if s == "darkroom":
                facts[f"cached.darkroom/nginx.c{conc}"] = rq / ng if ng else math.nan
                facts[f"cached.darkroom.p99/p50.c{conc}"] = p99 / p50 if p50 else math.nan
                facts[f"cached.darkroom.maxshare.c{conc}"] = max(shares) if shares else math.nan
                facts[f"cached.darkroom.nworkers.c{conc}"] = max(r["n_workers"] for r in rr)
            out.append(
                f"| {conc} | {s} | {spread([r['req_s'] for r in rr], 0)} | {fmt(rq / ng if ng else math.nan, 2)} | "
                f"{fmt(p50, 2)} | {fmt(p99, 2)} | {fmt(p99 / p50 if p50 else math.nan, 1)} | "
                f"{fmt(median([r['server_cpu_pct'] for r in rr]), 0)} | "
                f"{fmt(median([r['cpu_ms_per_req'] * 1000 for r in rr]), 0)} | "
                f"{' '.join('/'.join(fmt(c, 0) for c in r['worker_cpu_pct']) for r in rr)} | "
                f"{' '.join(fmt(x, 0) for x in shares)} | {fmt(max(r['other_pct'] for r in rr), 0)} | "
                f"{sum(r['errors'] for r in rr)} |")
    ngx = [r for r in kept if r["server"] == "nginx"]
    if ngx:
        cpu = median([r["cpu_ms_per_req"] * 1000 for r in ngx])
        out.append(f"\nnginx used {fmt(median([r['server_cpu_pct'] for r in ngx]), 0)}% of a core at its "
                   f"peak rate ({fmt(cpu, 0)} µs/req): on this 2-core machine wrk and the server share the "
                   "cores, so for nginx the ceiling is partly wrk's; CPU µs/req compares the servers' own cost.")
    for r in recs:
        if r.get("error") and r.get("kept"):
            out.append(f"\n**{r.get('server')} FAILED** (round {r.get('round')}): `{r['error'][:600]}`")
    out.append("\n" + disturbance_line(kept, policy))
    return "\n".join(out) + "\n", facts


# ============================================ grammars ===========================================

def grammar_url(wl: str, grammar: str) -> str:
    """The workload's request in darkroom's native, Thumbor or SIH grammar."""
    w = WL[wl]
    if grammar == "native":
        return w["darkroom"]
    if grammar == "thumbor":
        return w["darkroom_thumbor"]
    body = json.dumps(w["darkroom_sih"], separators=(",", ":"))  # as JSON.stringify writes it
    return "/" + base64.b64encode(body.encode()).decode()


def run_grammars(ctx: Ctx, conc: int = 8) -> None:
    """One darkroom server per regime and round; the three grammars interleaved on it."""
    raw = ctx.raw("grammars")
    for rnd in range(1, ctx.rounds["grammars"] + 1):
        for regime in rotate(list(GRAMMAR_REGIMES), rnd - 1):
            cache = GRAMMAR_REGIMES[regime]
            # cached hits on ONE worker: with two, the kernel's split of wrk's connections
            # moves req/s by +-20% from round to round, which would bury a 5% difference
            srv = darkroom_server(ctx, f"darkroom-grammars-{regime}", cache=cache,
                                  workers=1 if cache else 2)
            try:
                srv.start()
            except Exception as exc:
                log(f"grammars r{rnd} {regime}: darkroom FAILED to start: {exc}")
                raw.write({"section": "grammars", "round": rnd, "regime": regime, "kept": True,
                           "error": f"{type(exc).__name__}: {exc}"[:1500]})
                continue
            try:
                ok: dict[str, list[str]] = {}
                for wl in ctx.workloads:
                    w, native = WL[wl], None
                    for g in GRAMMARS:
                        try:  # cached: this first GET renders and fills the cache, the second must hit
                            info = check_url(srv.base + grammar_url(wl, g), (w["format"], *w["out"]))
                            _, headers, body = http_get(srv.base + grammar_url(wl, g))
                        except Exception as exc:
                            log(f"grammars r{rnd} {regime} {wl} {g}: FAILED: {exc}")
                            raw.write({"section": "grammars", "round": rnd, "regime": regime, "workload": wl,
                                       "grammar": g, "kept": True, "error": f"{type(exc).__name__}: {exc}"[:1500]})
                            continue
                        native = body if g == "native" else native
                        raw.write({"section": "grammars", "round": rnd, "regime": regime, "workload": wl,
                                   "grammar": g, "check": {**info, "x_cache": headers.get("x-cache"),
                                                           "sha256": hashlib.sha256(body).hexdigest(),
                                                           "same_bytes_as_native": body == native}})
                        ok.setdefault(wl, []).append(g)
                for wi, wl in enumerate(ctx.workloads):
                    for g in rotate(ok.get(wl, []), rnd + wi):
                        url = grammar_url(wl, g)
                        label = f"grammars r{rnd} {regime} {wl} {g} c={conc}"
                        kept, attempts = measured(
                            lambda: http_point(srv, srv.base + url, conc, ctx.duration, warmup=2.0 if cache else 1.0),
                            ctx.policy, label)
                        for a in attempts:
                            raw.write({"section": "grammars", "round": rnd, "regime": regime, "workload": wl,
                                       "grammar": g, "conc": conc, "url": url, **a,
                                       "kept": a["attempt"] == kept["attempt"]})
                        if kept.get("error"):
                            log(f"{label}: FAILED: {kept['error']}")
                        else:
                            log(f"{label}: {kept['req_s']:.1f} req/s, {kept['cpu_ms_per_req'] * 1000:.0f} µs "
                                f"CPU/req, workers {kept['worker_cpu_pct']}, other {kept['other_pct']:.0f}%, "
                                f"errors {kept['errors']}")
            finally:
                srv.stop()


def summarize_grammars(recs: list[dict], policy: Policy) -> tuple[str, dict]:
    recs = [r for r in recs if r.get("section") == "grammars"]
    kept = [r for r in recs if r.get("kept") and "req_s" in r]
    facts: dict = {}
    if not recs:
        return "", facts
    checks = [r for r in recs if "check" in r]
    wls = [w["name"] for w in WORKLOADS if any(r.get("workload") == w["name"] for r in kept)]
    others = [g for g in GRAMMARS if g != "native"]
    out = ["### Grammars: one darkroom server (2 workers), the same requests as native, Thumbor and SIH "
           f"URLs (c=8, interleaved); median req/s over rounds [min-max]\n",
           f"Ratios are grammar / native req/s (median of each); [min-max] of the same ratio within each "
           f"round. Target: ≥ {GRAMMAR_TARGET:.2f} (parsing costs ≤ 5%). *uncached*: result cache off, every "
           "request renders; *cached*: result cache on, every request a hit (primed), where parsing weighs "
           "most. Requests: native `" + WL[wls[0]]["darkroom"] + "`, Thumbor `" + grammar_url(wls[0], "thumbor")
           + "`, SIH `/base64(" + json.dumps(WL[wls[0]]["darkroom_sih"], separators=(",", ":")) + ")`; the "
           "other workloads' in `bench/workloads.json`.\n" if wls else ""]
    if checks:
        diff = sorted({f"{r['workload']} {r['grammar']}" for r in checks
                       if r["grammar"] != "native" and not r["check"]["same_bytes_as_native"]})
        miss = sorted({f"{r['workload']} {r['grammar']}" for r in checks
                       if r["regime"] == "cached" and r["check"]["x_cache"] != "HIT"})
        out.append("Outputs: " + ("every grammar's answer byte-identical to native's on every workload"
                                  if not diff else "**not the same bytes as native**: " + ", ".join(diff))
                   + "; cached regime, second request a hit: " + ("all" if not miss else "**no** for "
                                                                   + ", ".join(miss)) + ".\n")
    for regime in GRAMMAR_REGIMES:
        rows = {(g, wl): clean_rounds([r for r in kept if r["regime"] == regime and r["grammar"] == g
                                       and r["workload"] == wl], policy.max_other)
                for g in GRAMMARS for wl in wls}
        if not any(rows.values()):
            continue
        m = {k: median([r["req_s"] for r in v]) for k, v in rows.items()}
        out.append(f"#### {regime}\n")
        hdr = (["workload"] + [f"{GRAMMAR_LABEL[g]} req/s" for g in GRAMMARS]
               + [f"{GRAMMAR_LABEL[g]} / native" for g in others] + ["CPU µs/req native / Thumbor / SIH"]
               + [f"{GRAMMAR_LABEL[g]} ≥ {GRAMMAR_TARGET:.2f}" for g in others])
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        ratios: dict[str, list[float]] = {g: [] for g in others}
        for wl in wls:
            row = [wl] + [spread([r["req_s"] for r in rows[(g, wl)]], 0) for g in GRAMMARS]
            verdicts = []
            for g in others:
                n = m[("native", wl)]
                x = m[(g, wl)] / n if n and not math.isnan(n) else math.nan
                ratios[g].append(x)
                facts[f"grammars.{regime}.{g}/native.{wl}"] = x
                paired = [a["req_s"] / b["req_s"] for a in rows[(g, wl)] for b in rows[("native", wl)]
                          if a["round"] == b["round"] and b["req_s"]]
                row.append(fmt(x, 2) + (f" [{fmt(min(paired), 2)}-{fmt(max(paired), 2)}]" if len(paired) > 1 else ""))
                verdicts.append("-" if math.isnan(x) else "meets" if x >= GRAMMAR_TARGET else "**misses**")
            row.append(" / ".join(fmt(median([r["cpu_ms_per_req"] * 1000 for r in rows[(g, wl)]]), 0)
                                  for g in GRAMMARS))
            out.append("| " + " | ".join(row + verdicts) + " |")
        row = ["**geometric mean**"] + [fmt(geomean([m[(g, wl)] for wl in wls]), 0) for g in GRAMMARS]
        verdicts = []
        for g in others:
            x = geomean(ratios[g])
            facts[f"grammars.{regime}.{g}/native.geomean"] = x
            facts[f"grammars.{regime}.{g}/native.worst"] = min(ratios[g]) if ratios[g] else math.nan
            row.append(f"**{fmt(x, 2)}**")
            verdicts.append("-" if math.isnan(x) else "meets" if x >= GRAMMAR_TARGET else "**misses**")
        cpu = [geomean([median([r["cpu_ms_per_req"] * 1000 for r in rows[(g, wl)]]) for wl in wls]) for g in GRAMMARS]
        out.append("| " + " | ".join(row + [" / ".join(fmt(c, 0) for c in cpu)] + verdicts) + " |")
        out.append("")
    unc = [r for r in kept if r["regime"] == "uncached"]
    hit = [r for r in kept if r["regime"] == "cached"]
    if unc and hit and median([r["cpu_ms_per_req"] for r in hit]) > 0.3 * median([r["cpu_ms_per_req"] for r in unc]):
        out.append("**WARNING**: cached requests cost more than 0.3× the CPU of uncached ones: the cache was not hit.\n")
    for r in recs:
        if r.get("error") and r.get("kept"):
            out.append(f"**{r.get('grammar', 'darkroom')} FAILED** ({r.get('regime')}, {r.get('workload', '')} round "
                       f"{r.get('round')}): `{r['error'][:600]}`\n")
    out.append(disturbance_line(kept, policy))
    return "\n".join(out) + "\n", facts


# ============================================== rss ==============================================

def rss_point(ctx: Ctx, srv: Server, seconds: float, conc: int = 16) -> dict:
    procs = srv.all_pids()
    before = {p: (vm_field(p, "VmRSS"), vm_field(p, "VmHWM")) for p in procs}
    paths = [WL[w]["darkroom"] for w in RSS_WORKLOADS]
    r = http_point(srv, srv.base + paths[0], conc, seconds, warmup=0, paths=paths)
    workers = set(srv.workers())
    per = []
    for p in srv.all_pids():
        per.append({"pid": p, "worker": p in workers, "cmd": cmdline(p)[:120],
                    "rss_before_kb": before.get(p, (None, None))[0],
                    "hwm_kb": vm_field(p, "VmHWM"), "rss_after_kb": vm_field(p, "VmRSS")})
    return {**r, "procs": per}


def run_rss(ctx: Ctx, seconds: float = 10.0) -> None:
    raw = ctx.raw("rss")
    for rnd in range(1, ctx.rounds["rss"] + 1):
        for name in rotate(["darkroom", "ref-pyvips"], rnd - 1):
            srv = darkroom_server(ctx, "darkroom-rss", cache=False) if name == "darkroom" \
                else ref_server(ctx, "ref-pyvips-rss", "pyvips")
            try:
                srv.start()
                for w in RSS_WORKLOADS:
                    check_url(srv.base + WL[w]["darkroom"], (WL[w]["format"], *WL[w]["out"]))
            except Exception as exc:
                srv.stop()
                log(f"rss r{rnd}: {name} FAILED: {exc}")
                raw.write({"section": "rss", "round": rnd, "server": name, "kept": True,
                           "error": f"{type(exc).__name__}: {exc}"[:1500]})
                continue
            try:
                kept, attempts = measured(lambda: rss_point(ctx, srv, seconds), ctx.policy, f"rss r{rnd} {name}")
                for a in attempts:
                    raw.write({"section": "rss", "round": rnd, "server": name, "conc": 16, **a,
                               "kept": a["attempt"] == kept["attempt"]})
                if not kept.get("error"):
                    hw = [p["hwm_kb"] / 1024 for p in kept["procs"] if p["worker"] and p["hwm_kb"]]
                    log(f"rss r{rnd} {name}: worker VmHWM MB {[round(h) for h in hw]}, "
                        f"{kept['req_s']:.1f} req/s, other {kept['other_pct']:.0f}%")
            finally:
                srv.stop()


def summarize_rss(recs: list[dict], policy: Policy) -> tuple[str, dict]:
    recs = [r for r in recs if r.get("section") == "rss" and r.get("kept")]
    facts: dict = {}
    if not recs:
        return "", facts
    out = ["### Peak RSS under load: 2 workers, concurrency 16, uncached 12 MP renders "
           f"(wrk cycling {', '.join(RSS_WORKLOADS)})\n",
           f"VmHWM of each process after the run (`/proc/<pid>/status`). Target: ≤ {RSS_BUDGET_MB} MB per "
           "worker.\n",
           "| server | round | req/s | errors | process | RSS at start MB | VmHWM MB | RSS after MB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in recs:
        if r.get("error"):
            out.append(f"| {r['server']} | {r['round']} | FAILED: `{r['error'][:300]}` | | | | | |")
            continue
        for p in r["procs"]:
            role = "worker" if p["worker"] else "parent/other"
            out.append(f"| {r['server']} | {r['round']} | {fmt(r['req_s'])} | {r['errors']} | {role} {p['pid']} "
                       f"`{p['cmd'][:60]}` | {fmt((p['rss_before_kb'] or 0) / 1024, 0)} | "
                       f"{fmt((p['hwm_kb'] or 0) / 1024, 0)} | {fmt((p['rss_after_kb'] or 0) / 1024, 0)} |")
    for s in ("darkroom", "ref-pyvips"):
        hw = [p["hwm_kb"] / 1024 for r in recs if r.get("server") == s and not r.get("error")
              for p in r["procs"] if p["worker"] and p["hwm_kb"]]
        if hw:
            facts[f"rss.{s}.max_worker_mb"] = max(hw)
    if "rss.darkroom.max_worker_mb" in facts and "rss.ref-pyvips.max_worker_mb" in facts:
        facts["rss.darkroom/ref"] = facts["rss.darkroom.max_worker_mb"] / facts["rss.ref-pyvips.max_worker_mb"]
        out.append(f"\ndarkroom's largest worker peak is {fmt(facts['rss.darkroom.max_worker_mb'], 0)} MB = "
                   f"{fmt(facts['rss.darkroom/ref'], 2)}× the bare pyvips server's "
                   f"({fmt(facts['rss.ref-pyvips.max_worker_mb'], 0)} MB) under the same load.")
    out.append("\n" + disturbance_line([r for r in recs if not r.get("error")], policy))
    return "\n".join(out) + "\n", facts


# ============================================ targets ============================================

def targets_table(f: dict) -> str:
    def verdict(x: float, ok: bool) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "not measured"
        return "meets" if ok else "**misses**"

    rows = []

    def add(name: str, x, target: str, ok_fn, nd: int = 2, tie: bool = False):
        ok = x is not None and not (isinstance(x, float) and math.isnan(x)) and ok_fn(x)
        v = verdict(x, ok)
        if tie and not ok and v != "not measured":
            v = "misses narrowly: round ranges overlap (a tie within the noise)"
        rows.append(f"| {name} | {fmt(x, nd) if x is not None else '-'} | {target} | {v} |")

    def tie(wl: str) -> bool:  # darkroom's and sharp's round p50s overlap: equal within the noise
        a, b = f.get(f"engine.p50range.darkroom.{wl}"), f.get(f"engine.p50range.sharp.{wl}")
        return bool(a and b and a[0] <= b[1] and b[0] <= a[1])

    add("engine 12mp→800 JPEG: darkroom p50 / sharp p50", f.get("engine.p50.darkroom/sharp.12mp/jpeg800"),
        "≤ 1.00", lambda x: x <= 1.0, tie=tie("12mp/jpeg800"))
    sp = f.get("engine.p50.sharp/pyvips.12mp/jpeg800")
    add("engine 12mp→800 JPEG: darkroom p50 / pyvips p50", f.get("engine.p50.darkroom/pyvips.12mp/jpeg800"),
        f"≤ sharp / pyvips in this run = {fmt(sp, 2)} (anchors: 0.86)",
        lambda x: sp is not None and not math.isnan(sp) and x <= sp, tie=tie("12mp/jpeg800"))
    add("engine 12mp→800 WebP: darkroom p50 / sharp p50", f.get("engine.p50.darkroom/sharp.12mp/webp800"),
        "≤ 1.00", lambda x: x <= 1.0, tie=tie("12mp/webp800"))
    for w in WORKLOADS:
        add(f"HTTP {w['name']}: darkroom / bare engine 2-proc (req/s)",
            f.get(f"http.darkroom/ref-pyvips.{w['name']}"), "≥ 0.90", lambda x: x >= 0.9)
    add("HTTP: darkroom / Thumbor --processes 2, geometric mean", f.get("http.darkroom/thumbor-p2.geomean"),
        "≥ 2.0", lambda x: x >= 2.0)
    add("HTTP: darkroom / Thumbor 2 procs with own sockets (balanced), geomean",
        f.get("http.darkroom/thumbor-2rp.geomean"), "≥ 2.0 (stricter reading)", lambda x: x >= 2.0)
    for c in (8, 16):
        add(f"cached c={c}: darkroom / nginx (req/s)", f.get(f"cached.darkroom/nginx.c{c}"), "≥ 0.40",
            lambda x: x >= 0.4)
    add("cached c=16: darkroom p99 / p50", f.get("cached.darkroom.p99/p50.c16"), "≤ 3.0", lambda x: x <= 3.0, 1)
    for c in (8, 16):
        add(f"cached c={c}: busiest darkroom worker's CPU share (%, worst round)",
            f.get(f"cached.darkroom.maxshare.c{c}"), "40-60 (2 workers)", lambda x: 40 <= x <= 60, 0)
    add("RSS: largest darkroom worker VmHWM (MB), c=16, 12 MP", f.get("rss.darkroom.max_worker_mb"),
        f"≤ {RSS_BUDGET_MB}", lambda x: x <= RSS_BUDGET_MB, 0)
    for regime in GRAMMAR_REGIMES:
        for g in ("thumbor", "sih"):
            add(f"grammars {regime}: {GRAMMAR_LABEL[g]} / native req/s, geomean (worst workload "
                f"{fmt(f.get(f'grammars.{regime}.{g}/native.worst'), 2)})",
                f.get(f"grammars.{regime}.{g}/native.geomean"), f"≥ {GRAMMAR_TARGET:.2f}",
                lambda x: x >= GRAMMAR_TARGET)
    return ("### Targets (issue's speed section)\n\n| criterion | measured | target | verdict |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
