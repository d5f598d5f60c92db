"""Answers that wait for jobs (`?wait=` and `Prefer: wait=`), on SQLite and PostgreSQL:
an upload answered with its renditions, a job or an image answered when its jobs end or
when the wait is over, bad waits refused, and the poller shared by every waiter."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from darkroom.config import Settings
from darkroom.errors import NotFound
from darkroom.server import waiting
from darkroom.server.app import create_app
from darkroom.server.waiting import JobWatch, Wait

from catalog.databases import database_url, pg_url  # noqa: F401
from corpus_files import CORPUS
from server.helpers import OK_FILES, PHOTO, TestClient, assert_error
from .test_runs import GATE  # its `gate` kind's steps wait for it

RAW = {"content-type": "application/octet-stream"}
SIZES = {"name": "sizes", "type": "renditions", "params": {"renditions": {
    "thumb": "w=100&fm=webp", "card": "w=240"}}}
OTHER = next(f for f in OK_FILES if f["container"] == "jpeg" and f["frames"] == 1
             and f["path"] != PHOTO["path"])


@pytest.fixture
def client(tmp_path: Path, database_url):  # noqa: F811
    GATE.clear()
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url,
                        allow_unsigned=True, access_log=False, pipelines={"poll_s": 0.05})
    with TestClient(create_app(settings)) as client:
        try:
            yield client
        finally:
            GATE.set()  # before the worker stops: it waits for its runs


def _pipeline(client, *steps: dict) -> None:
    response = client.put("/v1/pipelines/p", json={"steps": list(steps)})
    assert response.status_code in (200, 201), response.text


def _upload(client, key: str = "w/a.jpg", **params) -> dict:
    response = client.post("/v1/images", params={"key": key, **params}, headers=RAW,
                           content=(CORPUS / PHOTO["path"]).read_bytes())
    assert response.status_code == 201, response.text
    return response.json()


def _later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


def test_an_upload_that_waits_is_answered_with_its_renditions(client):
    _pipeline(client, SIZES)
    body = _upload(client, wait=50)
    assert [job["status"] for job in body["jobs"]] == ["succeeded"]
    assert sorted(r["name"] for r in body["renditions"]) == ["card", "thumb"]
    assert body["version"] == 1 and body["key"] == "w/a.jpg"
    assert client.get(f"/v1/images/{body['id']}").json()["renditions"] == body["renditions"]


def test_an_upload_without_wait_answers_at_once_with_its_jobs_queued(client):
    _pipeline(client, {"name": "hold", "type": "gate"})
    body = _upload(client)
    assert [job["status"] for job in body["jobs"]] in (["queued"], ["running"])
    GATE.set()


def test_a_job_waited_on_is_answered_when_it_ends_not_when_the_wait_is_over(client):
    _pipeline(client, {"name": "hold", "type": "gate"})
    job_id = _upload(client)["jobs"][0]["id"]
    opened = _later(0.5, GATE.set)
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job_id}", params={"wait": 50})
    opened.join()
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 45  # it ended the wait, not the 50 s
    assert "preference-applied" not in response.headers


def test_a_wait_that_runs_out_answers_the_job_as_it_stands(client):
    _pipeline(client, {"name": "hold", "type": "gate"})
    job_id = _upload(client)["jobs"][0]["id"]
    response = client.get(f"/v1/jobs/{job_id}", headers={"Prefer": "respond-async, wait=0.3"})
    assert response.status_code == 200
    assert response.json()["status"] in ("queued", "running")
    assert response.headers["preference-applied"] == "wait=0.3"
    GATE.set()


def test_an_image_waited_on_waits_for_its_current_versions_jobs(client):
    _pipeline(client, {"name": "hold", "type": "gate"}, SIZES)
    image = _upload(client)
    response = client.get(f"/v1/images/{image['id']}", params={"wait": 0.2})
    assert [job["status"] for job in response.json()["jobs"]] != ["succeeded"]
    assert response.json()["renditions"] == []
    opened = _later(0.3, GATE.set)
    detail = client.get(f"/v1/images/{image['id']}", headers={"Prefer": "wait=50"})
    opened.join()
    assert detail.headers["preference-applied"] == "wait=50"
    assert [job["status"] for job in detail.json()["jobs"]] == ["succeeded"]
    assert sorted(r["name"] for r in detail.json()["renditions"]) == ["card", "thumb"]


def test_a_replace_that_waits_is_answered_with_the_new_versions_renditions(client):
    _pipeline(client, SIZES)
    image = _upload(client, wait=50)
    response = client.put(f"/v1/images/{image['id']}", params={"wait": 50}, headers=RAW,
                          content=(CORPUS / OTHER["path"]).read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    assert [j["status"] for j in body["jobs"] if j["version"] == 2] == ["succeeded"]
    assert sorted(r["name"] for r in body["renditions"]) == ["card", "thumb"]
    assert {r["key"] for r in body["renditions"]}.isdisjoint(
        r["key"] for r in image["renditions"])


@pytest.mark.parametrize("value", ["-1", "51", "abc", "nan", "inf", ""])
def test_a_bad_wait_is_refused_before_the_body_is_read(client, value):
    response = client.post("/v1/images", params={"key": "w/b.jpg", "wait": value},
                           headers=RAW, content=(CORPUS / PHOTO["path"]).read_bytes())
    assert_error(response, 400, "bad_param")
    assert client.get("/v1/images").json()["items"] == []


def test_a_job_that_has_ended_is_answered_at_once_whatever_the_wait(client):
    _pipeline(client, SIZES)
    job_id = _upload(client, wait=50)["jobs"][0]["id"]
    for header in ("wait=100000", "wait=50", "wait=soon", "handling=strict"):
        answer = client.get(f"/v1/jobs/{job_id}", headers={"Prefer": header})
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
        assert "preference-applied" not in answer.headers  # there was nothing to wait for
        assert answer.headers["vary"] == "Prefer"


def _watch(answers: list) -> tuple[JobWatch, list[list[str]]]:
    """A watch whose reads answer `answers` in turn (an exception is raised), and the ids
    each read asked for."""
    asked: list[list[str]] = []

    async def read(ids: list[str]) -> set[str]:
        asked.append(ids)
        answer = answers.pop(0) if answers else set(ids)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return JobWatch(read), asked


def test_one_read_a_tick_serves_every_waiter(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    watch, asked = _watch([set(), {"a"}, {"b", "c"}])

    async def main() -> None:
        await asyncio.gather(watch.until_ended(["a"], 10), watch.until_ended(["b", "c"], 10),
                             watch.until_ended(["a", "c"], 10))

    asyncio.run(main())
    # one query a tick for the three waiters, for what is still waited on
    assert asked == [["a", "b", "c"], ["a", "b", "c"], ["b", "c"]]


def test_a_failed_read_is_tried_again_and_the_wait_still_ends_on_time(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    watch, asked = _watch([RuntimeError("database down")] * 1000)

    async def main() -> float:
        started = time.monotonic()
        await watch.until_ended(["a"], 0.2)
        return time.monotonic() - started

    assert asyncio.run(main()) >= 0.2
    assert len(asked) > 2


def test_an_answer_whose_image_went_meanwhile_stands_only_for_a_write(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    watch, _ = _watch([])
    body = {"id": "i", "version": 1, "jobs": [{"id": "j", "version": 1, "status": "queued"}]}

    async def gone() -> dict:
        raise NotFound("no image i", "image_not_found")

    assert asyncio.run(watch.settled(Wait(None, 5), body, gone, written=True)) == (body, {})
    with pytest.raises(NotFound):
        asyncio.run(watch.settled(Wait(None, 5), body, gone))


def test_past_the_most_waiters_a_request_is_answered_at_once_and_says_so(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    monkeypatch.setattr(waiting, "MAX_WAITERS", 1)
    watch, _ = _watch([set()] * 1000)
    body = {"id": "j", "version": 1, "status": "queued"}

    async def read() -> dict:
        return body

    async def main() -> list:
        started = time.monotonic()
        ends: list = []

        async def wait() -> None:
            _, headers = await watch.settled(Wait(None, 0.3, True), body, read)
            ends.append((time.monotonic() - started, headers))

        await asyncio.gather(wait(), wait())
        return ends

    (first, refused), (second, waited) = asyncio.run(main())
    assert first < 0.3 <= second  # the second waiter went at once; the first waited
    assert refused == {} and waited == {"Preference-Applied": "wait=0.3"}


class _Client:
    """A request whose client hangs up after `seconds` (its body was read)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def receive(self) -> dict:
        await asyncio.sleep(self.seconds)
        return {"type": "http.disconnect"}


def test_a_client_that_hangs_up_ends_its_wait_and_frees_its_place(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    watch, _ = _watch([set()] * 1000)

    async def main() -> tuple[bool, float, int]:
        started = time.monotonic()
        waited = await watch.until_ended(["a"], 30, _Client(0.1))
        return waited, time.monotonic() - started, len(watch._waiting)

    waited, took, left = asyncio.run(main())
    assert (waited, left) == (False, 0) and took < 30


def test_a_server_that_stops_ends_every_wait_and_no_new_one_starts(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    watch, _ = _watch([set()] * 1000)

    async def main() -> tuple[bool, bool]:
        later = asyncio.get_running_loop().call_later(0.1, waiting.release_all)
        first = await watch.until_ended(["a"], 30)
        later.cancel()
        return first, await watch.until_ended(["a"], 30)

    assert asyncio.run(main()) == (True, False)


def test_a_server_that_stops_releases_only_the_waits_of_its_own_loop():
    mine, _ = _watch([])
    other, _ = _watch([])
    elsewhere = asyncio.new_event_loop()
    other.loop = elsewhere  # another app's, served by another loop in this process

    async def main() -> None:
        mine.loop = asyncio.get_running_loop()
        waiting.release_all()

    asyncio.run(main())
    elsewhere.close()
    assert (mine._released, other._released) == (True, False)


def test_a_writes_wait_ends_when_another_client_writes_a_newer_version(monkeypatch):
    monkeypatch.setattr(waiting, "TICK_S", 0.01)
    watch, _ = _watch([])  # every job waited on has ended at the first tick
    written = {"id": "i", "version": 2, "jobs": [{"id": "j2", "version": 2, "status": "queued"}]}
    newer = {"id": "i", "version": 3, "jobs": [{"id": "j3", "version": 3, "status": "queued"},
                                               {"id": "j2", "version": 2, "status": "cancelled"}]}

    async def read() -> dict:
        return newer

    body, headers = asyncio.run(watch.settled(Wait(None, 5, True), written, read, written=True))
    assert body == written and headers == {"Preference-Applied": "wait=5"}
    body, _ = asyncio.run(watch.settled(Wait(None, 0.3), written, read))  # a GET follows
    assert body == newer


class _Headers:
    def __init__(self, *fields: str) -> None:
        self.fields = list(fields)

    def getlist(self, name: str) -> list[str]:
        return self.fields if name == "prefer" else []


@pytest.mark.parametrize(("fields", "expected"), [
    (["wait=10"], 10), (["WAIT = 2.5"], 2.5), (['wait="7"'], 7), (["wait=100000"], 50),
    (["respond-async, wait=3"], 3), (["handling=lenient", "wait=4"], 4),
    (["wait=2, wait=3"], 2), (['foo="a, wait=1", wait=6'], 6), (["return=minimal; x=y, wait=5"], 5),
    (["respond-async; wait=1"], None), (['foo="x wait=1"'], None), (["nowait=5"], None),
    (["wait=1e3"], None), (["wait=1abc"], None), (["wait=1.23456"], None), (["wait=-3"], None),
    (["wait"], None), (["wait=soon, wait=5"], None), ([], None),
    (["a=b;" * 1100 + ", wait=5"], None),
])
def test_the_wait_preference_is_read_as_rfc_7240_has_it(fields, expected):
    request = type("R", (), {"headers": _Headers(*fields)})()
    wait = waiting.asked(None, request)
    assert (wait.seconds, wait.preferred) == ((expected, True) if expected else (0.0, False))


def test_an_image_waited_on_through_a_replace_waits_for_the_new_versions_jobs(client):
    _pipeline(client, {"name": "hold", "type": "gate"}, SIZES)
    image = _upload(client)
    answers: list = []
    waiter = threading.Thread(target=lambda: answers.append(
        client.get(f"/v1/images/{image['id']}", params={"wait": 50})))
    waiter.start()
    time.sleep(0.3)
    replaced = client.put(f"/v1/images/{image['id']}", headers=RAW,
                          content=(CORPUS / OTHER["path"]).read_bytes())
    assert replaced.status_code == 200, replaced.text
    time.sleep(0.3)  # the first job is cancelled: the wait goes on for the second
    GATE.set()
    waiter.join()
    body = answers[0].json()
    assert body["version"] == 2
    assert [j["status"] for j in body["jobs"] if j["version"] == 2] == ["succeeded"]
    assert sorted(r["name"] for r in body["renditions"]) == ["card", "thumb"]
