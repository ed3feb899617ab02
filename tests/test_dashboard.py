"""The operators' Dashboard: access, queue rows, what waits and for whom, workers, the timing chart,
failures, query count."""

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from helpers import create_user

from generation import brokers, job_types, presence, queues, submission
from generation.models import JobStatus
from generation.web import dashboard
from generation.worker import heartbeats

# --- helpers ---------------------------------------------------------------------------------

class _Tables(HTMLParser):
    """Cell texts of every <table id=...> in a page: {id: [[cell, ...], ...]} (body and head rows)."""

    def __init__(self):
        super().__init__()
        self.tables, self._table, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(response):
    parser = _Tables()
    parser.feed(response.content.decode())
    return parser.tables


def body_rows(response, table_id):
    return tables(response)[table_id][1:]  # without the header row


def chart(response):
    """The inline SVG chart, parsed."""
    match = re.search(r'<svg id="timing-chart".*?</svg>', response.content.decode(), re.S)
    assert match, "no #timing-chart SVG on the page"
    return ET.fromstring(match.group(0))


def make_job(user, job_type="sdxl_image_fast", status=JobStatus.QUEUED, took=None, ended_ago=timedelta(minutes=5),
             waited=timedelta(seconds=3), error="", num_images=1):
    """A job as a worker leaves it: queued, or started and finished `ended_ago` after taking `took`."""
    job = submission.build_job(user, job_type, f"a {job_type} prompt", num_images=num_images)
    job.status = status
    job.error_message = error
    if status != JobStatus.QUEUED:
        end = timezone.now() - ended_ago
        start = end - (took or timedelta(seconds=1))
        job.created_at = start - waited
        job.started_at = start
        if status != JobStatus.PROCESSING:
            job.completed_at = end
    job.save()
    return job


def waiting_jobs(user, count, job_type="sdxl_image_fast", released=False, ago=timedelta(minutes=1)):
    """`count` queued jobs of `user`, submitted `ago`: waiting for the scheduler, or released to the broker."""
    for _ in range(count):
        job = make_job(user, job_type)
        job.created_at = timezone.now() - ago
        job.released_at = timezone.now() if released else None
        job.save()


@pytest.fixture
def staff_client(db):
    """A logged-in operator: staff, not a superuser."""
    client = Client()
    client.force_login(create_user("opsy", is_staff=True))
    return client


@pytest.fixture
def private_workers(monkeypatch):
    """Heartbeats under a key prefix of this test's own, so live workers of other tests stay invisible."""
    prefix = f"ourvidz:test-{uuid.uuid4().hex[:8]}:worker:"
    monkeypatch.setattr(presence, "KEY_PREFIX", prefix)
    yield prefix
    for key in brokers.client().scan_iter(prefix + "*"):
        brokers.client().delete(key)


# --- access ----------------------------------------------------------------------------------

def test_anonymous_users_are_sent_to_login(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/dashboard/"


def test_users_who_are_not_staff_get_403(alice_client):
    assert alice_client.get("/dashboard/").status_code == 403
    assert b'href="/dashboard/"' not in alice_client.get("/").content  # no nav link either


def test_staff_get_the_page_with_links_to_flower_and_admin(staff_client, settings, private_workers):
    settings.FLOWER_URL = "http://flower.example:5555/"
    response = staff_client.get("/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'<a class="[^"]*flower-link[^"]*" href="http://flower.example:5555/"', html)
    assert re.search(r'<a class="[^"]*admin-link[^"]*" href="/admin/"', html)
    assert 'href="/dashboard/" class="active"' in html  # the nav marks the section
    assert "dashboard.css" in html


# --- queues and workers ----------------------------------------------------------------------

def test_queue_rows_without_workers(staff_client, alice, private_workers):
    make_job(alice, "sdxl_image_fast")
    make_job(alice, "sdxl_image_fast")
    make_job(alice, "video_fast", status=JobStatus.PROCESSING)
    response = staff_client.get("/dashboard/")
    rows = {row[0].split()[0]: row for row in body_rows(response, "queues")}
    assert set(rows) == {pool.queue for pool in job_types.POOLS.values()}
    sdxl, wan = rows["sdxl_queue"], rows["wan_queue"]
    assert sdxl[1] == str(brokers.client().llen("sdxl_queue"))  # the broker's own length
    assert (sdxl[2], sdxl[3]) == ("2", "0") and (wan[2], wan[3]) == ("0", "1")
    assert sdxl[4] == wan[4] == "No workers online"
    assert response.content.decode().count('class="badge failed no-workers"') == 2
    assert "0" == re.search(r'id="workers-online">(\d+)<', response.content.decode()).group(1)


def test_workers_show_per_pool_with_what_they_loaded(staff_client, private_workers, monkeypatch):
    # What a running SDXL worker does: name and queues on worker_ready, then its pool reports the load.
    monkeypatch.setitem(heartbeats.status, "name", "sdxl@gpu-box-1")
    monkeypatch.setitem(heartbeats.status, "queues", ["maintenance", "sdxl_queue"])
    heartbeats.publish()
    heartbeats.publish_loaded({"pool": "sdxl", "model": "sdxl-base-1.0", "device": "cuda:0", "dtype": "float16",
                            "compiled": True, "ip_adapter": "ip-adapter_sdxl",
                            "reference_types": ["character", "composition", "style"]})
    # A WAN worker that has not finished loading yet.
    monkeypatch.setitem(heartbeats.status, "name", "wan@gpu-box-2")
    monkeypatch.setitem(heartbeats.status, "queues", ["maintenance", "wan_queue"])
    heartbeats.publish()

    response = staff_client.get("/dashboard/")
    rows = {row[0].split()[0]: row for row in body_rows(response, "queues")}
    sdxl_workers, wan_workers = rows["sdxl_queue"][4], rows["wan_queue"][4]
    for text in ["sdxl@gpu-box-1", "sdxl-base-1.0", "cuda:0", "float16", "compiled",
                 "references: character, composition, style"]:
        assert text in sdxl_workers
    assert "wan@gpu-box-2" not in sdxl_workers
    assert "wan@gpu-box-2" in wan_workers and "loading" in wan_workers
    assert "No workers online" not in response.content.decode()
    assert re.search(r'id="workers-online">2<', response.content.decode())


def test_queue_figures_and_totals(staff_client, alice, private_workers):
    for _ in range(3):
        make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED, took=timedelta(seconds=4), waited=timedelta(seconds=10))
    make_job(alice, "sdxl_image_fast", JobStatus.FAILED, error="CUDA out of memory", waited=timedelta(seconds=30))
    make_job(alice, "video_fast", JobStatus.COMPLETED, took=timedelta(seconds=100), waited=timedelta(seconds=40))
    make_job(alice, "video_fast", JobStatus.COMPLETED, ended_ago=timedelta(hours=3))  # outside the hour

    total = dashboard.totals()
    assert (total["completed"], total["failed"]) == (4, 1)
    assert total["jobs_per_hour"] == 4 and total["error_rate"] == 0.2
    assert total["average_wait_seconds"] == pytest.approx((3 * 10 + 30 + 40) / 5, abs=0.01)

    response = staff_client.get("/dashboard/")
    html = response.content.decode()
    assert re.search(r'id="jobs-per-hour">4<', html)
    assert re.search(r'id="error-rate">20.0 %<', html)
    assert re.search(r'id="avg-wait">20 s<', html)
    rows = {row[0].split()[0]: row for row in body_rows(response, "queues")}
    assert rows["sdxl_queue"][5:] == ["15 s", "3", "25.0 %"]  # wait (3×10+30)/4, jobs per hour, 1 of 4 failed
    assert rows["wan_queue"][5:] == ["40 s", "1", "0.0 %"]


def test_load_of_each_pool_counts_waiting_released_and_running_per_user(alice, bob, charlie, private_workers):
    waiting_jobs(alice, 5, ago=timedelta(minutes=10))
    waiting_jobs(alice, 1, released=True)
    make_job(bob, "sdxl_image_fast", JobStatus.PROCESSING)
    waiting_jobs(charlie, 1, ago=timedelta(minutes=3))
    make_job(charlie, "sdxl_image_fast", JobStatus.COMPLETED)  # finished jobs are no load
    waiting_jobs(bob, 2, job_type="video_fast", ago=timedelta(seconds=30))

    stats = {q["queue"]: q for q in queues.queue_stats()}
    sdxl, wan = stats["sdxl_queue"], stats["wan_queue"]
    assert (sdxl["waiting_jobs"], sdxl["released_jobs"], sdxl["running_jobs"]) == (6, 1, 1)
    assert (sdxl["queued_jobs"], sdxl["processing_jobs"]) == (7, 1)  # the keys of before, as they were
    assert sdxl["heaviest_users"] == [{"user": "alice", "waiting": 5, "in_flight": 1},
                                      {"user": "bob", "waiting": 0, "in_flight": 1},
                                      {"user": "charlie", "waiting": 1, "in_flight": 0}]
    assert sdxl["oldest_waiting_seconds"] == pytest.approx(600, abs=5)
    assert (wan["waiting_jobs"], wan["released_jobs"], wan["running_jobs"]) == (2, 0, 0)
    assert wan["heaviest_users"] == [{"user": "bob", "waiting": 2, "in_flight": 0}]
    assert wan["oldest_waiting_seconds"] == pytest.approx(30, abs=5)


def test_heaviest_users_are_the_five_with_the_most_jobs_waiting_or_in_flight(db, private_workers):
    for i in range(7):
        waiting_jobs(create_user(f"user{i}"), i + 1, job_type="video_fast")
    (wan,) = [q for q in queues.queue_stats() if q["queue"] == "wan_queue"]
    assert [u["user"] for u in wan["heaviest_users"]] == ["user6", "user5", "user4", "user3", "user2"]
    assert wan["waiting_jobs"] == sum(range(1, 8))


def test_an_empty_pool_has_no_oldest_waiting_job(alice, private_workers):
    waiting_jobs(alice, 1, released=True)
    (sdxl,) = [q for q in queues.queue_stats() if q["queue"] == "sdxl_queue"]
    assert (sdxl["waiting_jobs"], sdxl["released_jobs"], sdxl["oldest_waiting_seconds"]) == (0, 1, None)


def test_dashboard_shows_what_waits_and_for_whom(staff_client, alice, bob, private_workers):
    waiting_jobs(alice, 5, ago=timedelta(minutes=10))
    waiting_jobs(alice, 1, released=True)
    make_job(bob, "sdxl_image_fast", JobStatus.PROCESSING)
    response = staff_client.get("/dashboard/")
    rows = {row[0]: row for row in body_rows(response, "queue-load")}
    assert rows["sdxl_queue"][1:4] == ["5", "1", "1"]
    assert re.fullmatch(r"10 min 0\d s", rows["sdxl_queue"][4])  # the oldest waiting job's age
    assert rows["sdxl_queue"][5] == "alice 5 waiting · 1 in flight bob 0 waiting · 1 in flight"
    assert rows["wan_queue"][1:] == ["0", "0", "0", "–", "–"]
    # The queues table keeps its columns: queued counts released jobs too.
    sdxl = {row[0].split()[0]: row for row in body_rows(response, "queues")}["sdxl_queue"]
    assert (sdxl[2], sdxl[3]) == ("6", "1")


def test_broker_down_still_renders(staff_client, monkeypatch):
    import redis

    def down(*args, **kwargs):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(dashboard.queues, "queue_stats", down)
    response = staff_client.get("/dashboard/")
    assert response.status_code == 200
    assert "The broker could not be reached" in response.content.decode()


# --- generation time chart -------------------------------------------------------------------

def test_timings_by_type_median_p90_and_expected(alice):
    for seconds in (2, 4, 6, 8, 10):
        make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED, took=timedelta(seconds=seconds))
    make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED, took=timedelta(seconds=60),
             ended_ago=timedelta(hours=30))  # older than the window
    for seconds in (100, 200):
        make_job(alice, "video_fast", JobStatus.COMPLETED, took=timedelta(seconds=seconds))
    make_job(alice, "image_fast", JobStatus.FAILED, error="boom")  # failures are not timings
    make_job(alice, "image_high", JobStatus.PROCESSING)

    rows = dashboard.timings_by_type()
    assert [r["job_type"] for r in rows] == ["sdxl_image_fast", "video_fast"]  # the job-type table's order
    sdxl, video = rows
    assert sdxl["jobs"] == 5 and video["jobs"] == 2
    assert sdxl["median_seconds"] == pytest.approx(6, abs=0.01)
    assert sdxl["p90_seconds"] == pytest.approx(9.2, abs=0.01)  # continuous percentile
    assert sdxl["expected_seconds"] == job_types.get("sdxl_image_fast").expected_seconds
    assert sdxl["median_ratio"] == pytest.approx(6 / 4, abs=0.01)
    assert video["median_seconds"] == pytest.approx(150, abs=0.01)
    assert video["p90_seconds"] == pytest.approx(190, abs=0.01)
    assert video["expected_seconds"] == job_types.get("video_fast").expected_seconds


def test_expected_time_of_a_batch_counts_every_image(alice):
    make_job(alice, "sdxl_image_high", JobStatus.COMPLETED, took=timedelta(seconds=30), num_images=6)
    (row,) = dashboard.timings_by_type()
    assert row["expected_seconds"] == 6 * job_types.get("sdxl_image_high").expected_seconds
    assert row["median_ratio"] == pytest.approx(30 / 48, abs=0.01)


def test_chart_has_one_bar_group_per_job_type_with_expected_and_actual(staff_client, alice, private_workers):
    for seconds in (2, 4, 6, 8, 10):
        make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED, took=timedelta(seconds=seconds))
    for seconds in (100, 200):
        make_job(alice, "video_fast", JobStatus.COMPLETED, took=timedelta(seconds=seconds))
    make_job(alice, "image_fast", JobStatus.FAILED, error="boom")

    response = staff_client.get("/dashboard/")
    svg = chart(response)
    groups = [g for g in svg.iter("g") if "bar-group" in g.get("class", "").split()]
    assert [g.get("data-job-type") for g in groups] == ["sdxl_image_fast", "video_fast"]
    for group, expected, median, p90 in [(groups[0], 4, 6, 9.2), (groups[1], 135, 150, 190)]:
        bars = {r.get("class").split()[1]: r for r in group.iter("rect")}
        assert set(bars) == {"expected", "median", "p90"}
        assert float(bars["expected"].get("data-seconds")) == pytest.approx(expected)
        assert float(bars["median"].get("data-seconds")) == pytest.approx(median, abs=0.01)
        assert float(bars["p90"].get("data-seconds")) == pytest.approx(p90, abs=0.01)
        assert group.find("text").text == group.get("data-job-type")
        assert "expected" in group.find("title").text and "median" in group.find("title").text
    # One linear scale: bar lengths are proportional to their seconds.
    video = {r.get("class").split()[1]: float(r.get("width")) for r in groups[1].iter("rect")}
    assert video["median"] / video["expected"] == pytest.approx(150 / 135, rel=0.02)
    assert video["p90"] > video["median"] > video["expected"]
    # The same figures as a table, for reading exact numbers.
    rows = {row[0]: row for row in body_rows(response, "timings")}
    assert rows["sdxl_image_fast"][1:] == ["5", "4.0 s", "6.0 s", "9.2 s", "1.50×"]
    assert rows["video_fast"][1:] == ["2", "2 min 15 s", "2 min 30 s", "3 min 10 s", "1.11×"]


def test_chart_without_completed_jobs_says_so(staff_client, private_workers):
    response = staff_client.get("/dashboard/")
    svg = chart(response)
    assert not [g for g in svg.iter("g") if "bar-group" in g.get("class", "")]
    assert "No completed jobs in the last 24 h" in ET.tostring(svg, encoding="unicode")


def test_chart_geometry_stays_inside_its_box():
    rows = [{"job_type": "video_high", "jobs": 1, "median_seconds": 900.0, "p90_seconds": 1000.0,
             "expected_seconds": 180.0, "median_ratio": 5.0},
            {"job_type": "image_fast", "jobs": 1, "median_seconds": 0.01, "p90_seconds": 0.02,
             "expected_seconds": 25.0, "median_ratio": 0.0004}]
    geometry = dashboard.timing_chart(rows)
    assert geometry["maximum_seconds"] == 1000
    for group in geometry["groups"]:
        for bar in group["bars"]:
            assert bar["width"] > 0  # a tiny time still shows
            assert bar["x"] + bar["width"] <= geometry["plot_right"] + 0.01
            assert bar["y"] + bar["height"] <= geometry["height"]


# --- failures --------------------------------------------------------------------------------

def test_failures_table_lists_latest_failed_jobs_with_their_error(staff_client, alice, private_workers):
    old = make_job(alice, "video_fast", JobStatus.FAILED, error="worker lost", ended_ago=timedelta(hours=2))
    new = make_job(alice, "sdxl_image_high", JobStatus.FAILED, ended_ago=timedelta(minutes=1),
                   error="CUDA out of memory: one image of 1024×1024 does not fit <b>")
    make_job(alice, "image_fast", JobStatus.COMPLETED)
    response = staff_client.get("/dashboard/")
    rows = body_rows(response, "failures")
    assert len(rows) == 2
    assert [row[2] for row in rows] == ["sdxl_image_high", "video_fast"]  # newest first
    assert rows[0][1] == "alice" and rows[0][3] == "CUDA out of memory: one image of 1024×1024 does not fit <b>"
    assert rows[1][3] == "worker lost"
    html = response.content.decode()
    assert "does not fit &lt;b&gt;" in html  # escaped
    for job in (new, old):
        assert f'href="/admin/generation/job/{job.pk}/change/"' in html


def test_failures_show_only_the_latest_twenty(alice):
    for minutes in range(25):
        make_job(alice, "image_fast", JobStatus.FAILED, error=f"error {minutes}", ended_ago=timedelta(minutes=minutes))
    failures = dashboard.latest_failures()
    assert len(failures) == 20
    assert [f["error"] for f in failures] == [f"error {m}" for m in range(20)]


# --- efficiency ------------------------------------------------------------------------------

def test_query_count_does_not_grow_with_jobs(staff_client, alice, private_workers):
    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get("/dashboard/").status_code == 200
        return len(queries)

    make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED)
    make_job(alice, "image_fast", JobStatus.FAILED, error="x")
    few = count_queries()
    others = [get_user_model().objects.create_user(f"user{i}") for i in range(5)]
    for i in range(60):
        job_type = list(job_types.JOB_TYPES)[i % len(job_types.JOB_TYPES)]
        status = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.PROCESSING][i % 4]
        make_job(others[i % 5], job_type, status, took=timedelta(seconds=i + 1), error="e")
    many = count_queries()
    assert many == few
    assert many <= 20


def test_queue_load_takes_a_fixed_number_of_queries_whatever_the_users(alice, private_workers):
    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            queues.queue_stats()
        return len(queries)

    waiting_jobs(alice, 1)
    few = count_queries()
    for i in range(12):
        user = create_user(f"user{i}")
        waiting_jobs(user, 2, job_type=list(job_types.JOB_TYPES)[i % len(job_types.JOB_TYPES)])
        waiting_jobs(user, 1, job_type="video_fast", released=True)
        make_job(user, "sdxl_image_fast", JobStatus.PROCESSING)
    assert count_queries() == few == 2 * len(job_types.POOLS)  # per pool: the hour's figures, the load now
