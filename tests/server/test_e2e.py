"""Real HTTP end to end: `darkroom serve --workers 2` as a subprocess, as an operator runs it.

Each test starts its own server in its own session (process group), so that a failing
test can still kill everything it started, and nothing else.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import image_size

DARKROOM = str(Path(sys.executable).with_name("darkroom"))
WAIT_S = 60  # an upper bound for things to happen, never an assertion on speed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_for(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Server:
    """`darkroom serve` in a subprocess, its stdout (JSON lines) and stderr collected."""

    def __init__(self, data_dir: Path, workers: int = 2, env: dict | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
        environment.update({"DARKROOM_DATA_DIR": str(data_dir), **(env or {})})
        self.process = subprocess.Popen(
            [DARKROOM, "serve", "--workers", str(workers), "--port", str(self.port)],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, sink in ((self.process.stdout, self.stdout),
                             (self.process.stderr, self.stderr)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line.decode(errors="replace"))

    def logs(self) -> list[dict]:
        """stdout, every line of which must be a JSON object."""
        records = []
        for line in list(self.stdout):
            record = json.loads(line)
            assert isinstance(record, dict)
            records.append(record)
        return records

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, "".join(self.stderr)
            try:
                return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, "/healthz")

    def fresh_get(self, path: str, **headers: str) -> httpx.Response:
        """A GET on a new TCP connection (the kernel picks a worker per connection)."""
        return httpx.get(f"{self.base}{path}", headers={"Connection": "close", **headers},
                         timeout=30)

    def workers(self) -> list[int]:
        return [pid for pid in children(self.process.pid) if "spawn_main" in cmdline(pid)]

    def request_pids(self, path_prefix: str) -> set[int]:
        return {r["pid"] for r in self.logs()
                if r.get("event") == "request" and r["path"].startswith(path_prefix)}

    def kill_all(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=WAIT_S)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path / "data")
    try:
        started.wait_healthy()
        yield started
    finally:
        started.kill_all()


def test_sample_url_json_logs_and_two_workers(server, tmp_path):
    stderr = "".join(server.stderr)
    sample = re.search(r"try: (\S+)", stderr)
    assert sample, stderr
    assert (tmp_path / "data" / "storage" / "sample.jpg").is_file()
    response = httpx.get(sample.group(1), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert image_size(response.content)[0] == 400

    tagged = server.fresh_get("/img/sample.jpg?w=64", **{"X-Request-Id": "e2e-trace-1"})
    assert tagged.headers["x-request-id"] == "e2e-trace-1"
    record = wait_for(lambda: next((r for r in server.logs()
                                    if r.get("request_id") == "e2e-trace-1"), None),
                      "the access log line")
    assert record["event"] == "request" and record["status"] == 200
    assert record["path"] == "/img/sample.jpg" and record["method"] == "GET"

    served = 2  # /img answers with 200 so far
    for _ in range(40):
        assert server.fresh_get("/img/sample.jpg?w=32").status_code == 200
        served += 1
    assert len(server.workers()) == 2
    pids = wait_for(lambda: len(found := server.request_pids("/img/")) >= 2 and found,
                    "requests served by both workers")
    assert pids == set(server.workers())
    assert all("request_id" in r and "pid" in r for r in server.logs())

    # /metrics sums the workers' counters (counted just after each answer is sent).
    def counted() -> float:
        text = server.fresh_get("/metrics").text
        line = re.search(r'darkroom_requests_total\{route="/img",status="200"\} (\S+)', text)
        return float(line.group(1)) if line else 0.0

    wait_for(lambda: counted() == served, f"/metrics to count {served} /img answers")
    assert counted() == served


def test_http_details_over_a_real_socket(server):
    """Raw paths reach the server as sent (no client normalisation), HEAD has no body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for raw in ("/img/../storage/sample.jpg", "/img/a/../../x", "/img/%2e%2e/sample.jpg",
                "/img/..%2F..%2Fetc%2Fpasswd", "/img/a%5Cb", "/img/a%00b", "/img//etc/passwd"):
        connection.request("GET", raw)
        answer = connection.getresponse()
        body = json.loads(answer.read())
        assert (answer.status, body["error"]["code"]) == (400, "bad_key"), raw
    connection.request("GET", "/img/sample.jpg?w=50")
    get = connection.getresponse()
    data = get.read()
    connection.request("HEAD", "/img/sample.jpg?w=50")
    head = connection.getresponse()
    assert head.status == 200 and head.read() == b""
    assert head.getheader("content-length") == str(len(data))
    assert head.getheader("etag") == get.getheader("etag")
    assert head.getheader("server") is None  # no server banner
    connection.close()


def split_of_new_connections(server: Server, count: int = 8) -> dict[int, int]:
    """Open `count` keep-alive connections one after the other, one request each; how many
    each worker pid served (read from the access log by request id)."""
    ids = [f"split{os.getpid()}x{time.monotonic_ns()}x{i}" for i in range(count)]
    clients = [httpx.Client(base_url=server.base, timeout=10) for _ in ids]
    try:
        for client, request_id in zip(clients, ids):
            assert client.get("/healthz", headers={"X-Request-Id": request_id}).status_code == 200
        records = wait_for(lambda: (found := [r for r in server.logs()
                                              if r.get("request_id") in ids]) and
                           len(found) == count and found, "the access log of every request")
    finally:
        for client in clients:
            client.close()
    return Counter(r["pid"] for r in records)


def test_new_connections_take_turns_between_the_workers(server):
    assert "connection_round_robin" in {r.get("event") for r in server.logs()}
    split = split_of_new_connections(server)
    assert sorted(split.values()) == [4, 4] and set(split) == set(server.workers())


def test_killed_worker_is_replaced(server):
    before = server.workers()
    assert len(before) == 2
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: len(now := server.workers()) == 2 and victim not in now and now,
                        "a replacement worker")
    newcomer = (set(replaced) - set(before)).pop()
    died = wait_for(lambda: next((r for r in server.logs() if r.get("event") == "worker_died"),
                                 None), "the worker_died log line")
    assert died["pid"] == victim and died["exitcode"] == -signal.SIGKILL

    def newcomer_answers() -> bool:
        server.fresh_get("/img/sample.jpg?w=20")
        return newcomer in server.request_pids("/img/")

    wait_for(newcomer_answers, "a request served by the new worker")
    assert server.process.poll() is None
    split = split_of_new_connections(server)  # the newcomer's socket took the dead one's turn
    assert sorted(split.values()) == [4, 4] and newcomer in split


def lock_holders() -> dict[int, int]:
    """inode -> pid of every `flock` lock on this host (from /proc/locks)."""
    holders = {}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and fields[2] != "->":
            holders[int(fields[5].rsplit(":", 1)[1])] = int(fields[4])
    return holders


def test_an_upload_cut_short_by_kill_9_leaves_no_staged_file(server, tmp_path):
    """A worker killed mid-upload never removes its staged file: the worker that replaces
    it does, at its start, and leaves the staged upload another worker receives alone."""
    staged, uploads = tmp_path / "data" / "tmp", []

    def receivers() -> dict[int, list[Path]]:
        """The staged uploads with bytes in them, by the worker receiving them."""
        held, found = lock_holders(), {}
        for part in staged.glob("staged-*.part"):
            if part.stat().st_size > 0 and part.stat().st_ino in held:
                found.setdefault(held[part.stat().st_ino], []).append(part)
        return found

    while len(receivers()) < 2:  # until both workers receive one
        assert len(uploads) < 16, "new connections never reached the second worker"
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        connection.sendall(b"POST /v1/images?key=cut.jpg HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: image/jpeg\r\nContent-Length: 4000000\r\n\r\n"
                           + b"\xff" * 300_000)
        uploads.append(connection)
        wait_for(lambda: sum(map(len, receivers().values())) == len(uploads),
                 "the upload staged and locked")
    found = receivers()
    assert set(found) == set(server.workers())
    victim = min(found)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not any(p.exists() for p in found[victim]),
             "the dead worker's staged uploads to go")
    swept = wait_for(lambda: next((r for r in server.logs()
                                   if r.get("event") == "staged_uploads_swept"), None),
                     "the staged_uploads_swept log line")
    assert swept["count"] == len(found[victim]) and swept["pid"] not in found
    survivors = [p for pid, parts in found.items() if pid != victim for p in parts]
    assert survivors and all(p.exists() for p in survivors)  # still being received
    for connection in uploads:
        connection.close()
    wait_for(lambda: not any(staged.glob("staged-*")), "the live uploads' own cleanup")


def test_sigterm_stops_every_process(server):
    # The supervisor's children: two workers and multiprocessing's resource tracker.
    family = children(server.process.pid)
    assert len(server.workers()) == 2
    assert server.fresh_get("/img/sample.jpg?w=10").status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=WAIT_S) == 0
    wait_for(lambda: not any(alive(pid) for pid in family), "every child to exit")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base}/healthz", timeout=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_port_exits_with_a_clear_message(tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
        env["DARKROOM_DATA_DIR"] = str(tmp_path / "data")
        process = subprocess.Popen(
            [DARKROOM, "serve", "--workers", str(workers), "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _out, err = process.communicate(timeout=WAIT_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
    assert "Traceback" not in err.decode()


def test_workers_that_keep_dying_at_start_stop_the_server(tmp_path):
    """A configuration that only fails inside the workers (S3 without a bucket) must not
    leave the supervisor restarting them forever."""
    server = Server(tmp_path / "data", env={"DARKROOM_STORAGE": "s3"})
    try:
        server.process.wait(timeout=WAIT_S * 2)
    finally:
        server.kill_all()
    assert server.process.returncode != 0
    assert any('"workers_keep_dying"' in line for line in server.stdout)
    assert "workers keep dying" in "".join(server.stderr)


def test_health_endpoints_answer_head(server):
    for path in ("/healthz", "/readyz"):
        response = httpx.head(server.base + path)
        assert response.status_code == 200


def test_an_upload_waits_for_a_pipeline_run_by_either_worker(server):
    """`?wait=` over a real socket, with two processes: the job runs in whichever worker's
    queue took it, and the answer waits for it through the database."""
    from .helpers import CORPUS, PHOTO

    definition = {"steps": [{"name": "sizes", "type": "renditions", "params": {
        "renditions": {"thumb": "w=120&fm=webp"}}}]}
    assert httpx.put(f"{server.base}/v1/pipelines/p", json=definition).status_code == 201
    body = (CORPUS / PHOTO["path"]).read_bytes()
    for n in range(4):  # new connections: each worker answers some of them
        response = httpx.post(f"{server.base}/v1/images", params={"key": f"e2e/{n}.jpg"},
                              headers={"content-type": "image/jpeg", "prefer": "wait=50",
                                       "connection": "close"}, content=body, timeout=WAIT_S)
        assert response.status_code == 201, response.text
        assert response.headers["preference-applied"] == "wait=50"
        answer = response.json()
        assert [job["status"] for job in answer["jobs"]] == ["succeeded"]
        assert [r["name"] for r in answer["renditions"]] == ["thumb"]
        thumb = httpx.get(f"{server.base}/img/{answer['renditions'][0]['key']}")
        assert thumb.status_code == 200 and image_size(thumb.content)[0] == 120


def test_a_server_that_stops_answers_its_waiting_uploads_at_once(tmp_path):
    """A committed upload still waiting for its jobs when the server is stopped is answered
    201 as it stands, not cut off with an error after the graceful shutdown."""
    from .helpers import CORPUS, PHOTO

    server = Server(tmp_path / "data", workers=1,
                    env={"DARKROOM_PIPELINES__IN_PROCESS": "false"})  # jobs stay queued
    try:
        server.wait_healthy()
        definition = {"steps": [{"name": "sizes", "type": "renditions", "params": {
            "renditions": {"thumb": "w=120"}}}]}
        assert httpx.put(f"{server.base}/v1/pipelines/p", json=definition).status_code == 201
        answers: list[httpx.Response] = []
        upload = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{server.base}/v1/images", params={"key": "stop/a.jpg", "wait": 50},
            headers={"content-type": "image/jpeg"},
            content=(CORPUS / PHOTO["path"]).read_bytes(), timeout=WAIT_S)))
        upload.start()
        wait_for(lambda: httpx.get(f"{server.base}/v1/images").json()["items"],
                 "the upload's commit")  # it waits for its job from then on
        os.kill(server.process.pid, signal.SIGTERM)
        upload.join(WAIT_S)
        server.process.wait(WAIT_S)  # it stops (uvicorn ends by SIGTERM's own status)
        (answer,) = answers
        assert answer.status_code == 201, answer.text
        assert [job["status"] for job in answer.json()["jobs"]] == ["queued"]
    finally:
        server.kill_all()
