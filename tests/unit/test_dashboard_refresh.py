"""When a dashboard session refreshes and what a hidden tab sends: the feed tells sessions of news
(a real PUB socket), the pacer turns news into refreshes (pure timing logic, with a stand-in that
records what it asks of the Bokeh document), and hidden parts write their models only when shown."""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

from dtf_bus.testing.cluster import wait_for
from dtf_dashboard.feed import Feed
from dtf_dashboard.jobs_page import LIMIT, JobsPage
from dtf_dashboard.options import REFRESH_ENV, parse
from dtf_dashboard.pacer import Pacer
from dtf_dashboard.queue_depth import QueueThroughput
from dtf_dashboard.task_stream import MAX_PX, MIN_PX, TaskStream

pytestmark = pytest.mark.unit


class RecordingDoc:
    """What the pacer asks of a Bokeh document: next-tick and timeout callbacks, run by the test."""

    def __init__(self) -> None:
        self.next_ticks: list = []
        self.timeouts: list = []

    def add_next_tick_callback(self, callback) -> None:
        self.next_ticks.append(callback)

    def add_timeout_callback(self, callback, ms: int) -> None:
        self.timeouts.append((callback, ms))


def test_news_refreshes_once_per_burst_after_a_settle_and_at_a_bounded_rate():
    doc, runs = RecordingDoc(), []
    pacer = Pacer(doc, lambda: runs.append(1), settle_ms=10, rate=0.001, burst=2)  # a refresh back every 1000 s
    nudges = [threading.Thread(target=pacer.nudge) for _ in range(5)]  # the feed's thread calls it
    for thread in nudges:
        thread.start()
    for thread in nudges:
        thread.join()
    assert len(doc.next_ticks) == 1  # a burst of news: one refresh
    for expected in (1, 2):  # news after a quiet spell: only the settle, each time the bucket allows
        doc.next_ticks.pop()()
        [(run, ms)] = doc.timeouts
        doc.timeouts.clear()
        assert ms == 10 and len(runs) == expected - 1
        run()
        assert len(runs) == expected
        pacer.nudge()
    doc.next_ticks.pop()()
    [(run, ms)] = doc.timeouts
    assert 900_000 < ms <= 1_000_000  # the bucket is empty: news waits for a refresh to be free again
    run()
    assert len(runs) == 3


def test_news_for_a_closed_session_is_dropped_quietly():
    class Closed:
        def add_next_tick_callback(self, callback) -> None:
            raise RuntimeError("no session")

    Pacer(Closed(), lambda: None).nudge()  # raises nothing on the feed's thread


def publish(pub: zmq.Socket, topic: str, payload: dict) -> None:
    pub.send_multipart([topic.encode(), msgpack.packb(payload, use_bin_type=True)])


def test_the_feed_tells_sessions_of_news_but_not_of_per_worker_metrics():
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    feed = Feed(f"tcp://127.0.0.1:{port}")
    told: list[int] = []
    try:
        feed.listen(lambda: told.append(feed.seq))
        beat = {"worker_id": "w1", "cpu_percent": 1.0}

        def metrics_arrived() -> bool:  # a SUB joins late: publish until the feed has one
            publish(pub, "metrics.worker.w1", beat)
            return feed.received > 0

        wait_for(metrics_arrived, 10, "per-worker metrics at the feed", 0.05)
        assert not told and feed.workers()["w1"]["cpu_percent"] == 1.0
        publish(pub, "events.task", {"event": "job_submitted", "job_id": "j1", "total": 1})
        wait_for(lambda: told, 10, "the feed to tell of the job", 0.01)
        seq, news = feed.since(0)
        assert news[-1][1:] == ("events.task", {"event": "job_submitted", "job_id": "j1", "total": 1})
        assert told == [seq]  # told once, with the news already in the buffer for the session to take
        feed.unlisten(told.append)  # not registered: ignored
    finally:
        feed.stop()
        pub.close()


def task(event: str, task_id: str, ts: float, worker: str) -> tuple:
    return (0, "events.task", {"event": event, "task_id": task_id, "worker_id": worker, "name": "unit", "ts": ts})


def test_a_hidden_tab_writes_nothing_and_catches_up_at_once_when_shown():
    stream, queue = TaskStream(), QueueThroughput(None)
    for part in (stream, queue):
        part.set_shown(False)
    for i in range(3):
        stream.update([task("running", f"t{i}", 1.0, f"w{i}"), task("succeeded", f"t{i}", 2.0, f"w{i}")])
    queue.update([(0, "metrics.system", {"ts": 5.0, "queued": 2}), (1, "metrics.system", {"ts": 6.0, "queued": 1})])
    assert stream.source.data["start"] == [] and not stream.figure.visible and stream.figure.height == MIN_PX
    assert queue.source.data["queued"] == []
    for part in (stream, queue):
        part.set_shown(True)
    assert stream.source.data["worker"] == ["w0", "w1", "w2"] and stream.figure.visible
    assert stream.figure.height == MAX_PX and stream.ticker.ticks == [0, 1, 2]  # one height change, not three
    assert queue.source.data["queued"] == [2, 1]


def test_the_jobs_tab_shows_feed_news_only_while_shown():
    page = JobsPage(RecordingDoc(), None, lambda job: None)
    page.set_shown(False)
    page.absorb([(1, "events.task", {"event": "job_submitted", "job_id": "j1", "total": 2, "ts": 1.0})])
    assert page.source.data["job_id"] == []
    page.set_shown(True)
    assert page.source.data["job_id"] == ["j1"] and page.source.data["total"] == [2]
    page.absorb([(2, "events.task", {"event": "job_done", "job_id": "j1", "counts": {"succeeded": 2}})])
    assert page.source.data["done"] == [True]  # shown: at once
    page.set_shown(False)  # hidden for a long campaign: no API read clears the feed's news, it stays bounded
    for i in range(3 * LIMIT):
        submitted = {"event": "job_submitted", "job_id": f"k{i}", "total": 1, "ts": 2.0 + i}
        done = {"event": "job_done", "job_id": f"k{i}", "counts": {"succeeded": 1}}
        page.absorb([(3 + i, "events.task", submitted), (3 + i, "events.task", done)])
    assert len(page.submitted) == len(page.done) == LIMIT and f"k{3 * LIMIT - 1}" in page.submitted
    page.set_shown(True)
    assert page.source.data["job_id"][0] == f"k{3 * LIMIT - 1}" and len(page.source.data["job_id"]) == LIMIT


def test_the_periodic_refresh_can_be_set_where_the_launcher_passes_no_flag(monkeypatch, capsys):
    monkeypatch.setenv(REFRESH_ENV, "60000")
    assert parse([]).refresh_ms == 60000 and parse(["--refresh-ms", "50"]).refresh_ms == 50
    monkeypatch.setenv(REFRESH_ENV, "soon")
    with pytest.raises(SystemExit):
        parse([])
    assert "--refresh-ms: the periodic refresh must be whole milliseconds > 0, got 'soon'" in capsys.readouterr().err
