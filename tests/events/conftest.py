"""Real peers for the sinks: an HTTP receiver, an SMTP server, moto's SNS/SQS, NATS."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from darkroom.errors import Forbidden
from darkroom.events.webhook import SIGNATURE_HEADER
from darkroom.signing import verify_webhook

NATS_URL = "nats://127.0.0.1:4222"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Receiver:
    """A webhook endpoint that checks signatures with `verify_webhook`, as a user's would.

    It answers `status` to a well-signed request and 400 to any other; with `hold` set it
    keeps the request waiting until the test ends (for timeouts). `arrived` is set by the
    first request. `peak` is the most requests it was answering at once."""

    url: str
    keys: list[str]
    status: int = 204
    hold: bool = False
    requests: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as state:
        yield state


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    with serve_receiver() as state:
        yield state


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    """A `Receiver` on a loopback port for the duration."""
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            with state.lock:
                state.in_flight += 1
                state.peak = max(state.peak, state.in_flight)
            try:
                self._answer()
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                verify_webhook(state.keys, self.headers[SIGNATURE_HEADER] or "", body)
                verdict = "ok"
            except Forbidden as error:
                verdict = error.code
            state.requests.append({"headers": self.headers, "body": body,
                                   "verdict": verdict})
            state.arrived.set()
            if state.hold:
                state.release.wait(10)
            self.send_response(state.status if verdict == "ok" else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Quiet."""

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # a real endpoint's backlog, not socketserver's 5
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    state = Receiver(url=f"http://127.0.0.1:{server.server_port}/hooks/darkroom",
                     keys=["whsec-current"])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@dataclass
class Aws:
    """Clients for moto's SNS and SQS, and a topic subscribed by a queue."""

    endpoint: str
    sns: object
    sqs: object

    def topic_with_queue(self, fifo: bool = False) -> tuple[str, str]:
        """A new topic and a queue subscribed to it (raw delivery off): (topic ARN, queue URL)."""
        suffix = ".fifo" if fifo else ""
        name = f"darkroom-{uuid.uuid4().hex[:12]}"
        topic = self.sns.create_topic(Name=name + suffix, Attributes={"FifoTopic": "true"}
                                      if fifo else {})["TopicArn"]
        queue = self.sqs.create_queue(QueueName=name + suffix, Attributes={"FifoQueue": "true"}
                                      if fifo else {})["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=queue,
                                            AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        return topic, queue

    def received(self, queue: str, expected: int) -> list[dict]:
        """The SNS envelopes in `queue`, waiting (a few seconds at most) for `expected`."""
        found: list[dict] = []
        for _ in range(5):
            answer = self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=1)
            found += [json.loads(m["Body"]) for m in answer.get("Messages", [])]
            if len(found) >= expected:
                break
        return found


@pytest.fixture
def aws(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    options = {"endpoint_url": s3_server, "region_name": "us-east-1",
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return Aws(s3_server, boto3.client("sns", **options), boto3.client("sqs", **options))


@pytest.fixture
def nats_server() -> str:
    """The loopback NATS JetStream server; a test fails (never skips) when it is down."""
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as error:
        pytest.fail(f"NATS JetStream is not reachable at {NATS_URL} ({error}); start it with "
                    "`nats-server -a 127.0.0.1 -p 4222 -js`", pytrace=False)
    return NATS_URL
