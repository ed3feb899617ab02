"""/metrics for Prometheus: who may read it, the figures against the database and Redis (with and without real
workers), and the Grafana dashboard and Prometheus configuration in deploy/."""

import json
import re
from datetime import timedelta

import pytest
import torch
import yaml
from django.test import Client
from django.utils import timezone
from helpers import ROOT, create_user
from prometheus_client.parser import text_string_to_metric_families

from generation import brokers, job_types, metrics, submission, webhooks
from generation.models import Job, JobStatus, WebhookDelivery, WebhookEvent, WebhookStatus
from generation.worker import heartbeats

TOKEN = "scrape-me-7f3a"


# --- helpers ---------------------------------------------------------------------------------

def scrape(client=None, token=TOKEN):
    """What /metrics answers the scraper holding `token`: {(sample name, labels as a sorted tuple): value}."""
    client = client or Client()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    return samples(response.content.decode())


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels):
    return found[(name, tuple(sorted(labels.items())))]


def series(found, name, *keys, **where):
    """{the values of labels `keys` (one: the value alone): sample value} of `name`'s samples matching `where`."""
    result = {}
    for (sample, labels), number in found.items():
        labels = dict(labels)
        if sample == name and all(labels.get(k) == v for k, v in where.items()):
            key = tuple(labels[k] for k in keys)
            result[key if len(keys) > 1 else key[0]] = number
    return result


def labelled(found, name):
    """The label sets of `name`'s samples."""
    return [dict(labels) for sample, labels in found if sample == name]


def exposed_names(text):
    """Every sample name the families in `text` can have, those without samples now included."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_count", "_sum"],
                "summary": ["", "_count", "_sum"]}
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in suffixes[family.type]}


@pytest.fixture
def token(settings, db):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.fixture
def operator_client(db):
    client = Client()
    client.force_login(create_user("opsy", is_staff=True))
    return client


def finish(user, job_type, status, waited=None, took=None, gpu_seconds=None):
    """A job submitted (and charged) by `user`, then left by a worker as `status`: started after `waited`,
    ended after `took` (not started when `waited` is None)."""
    job, _ = submission.submit(user, {"job_type": job_type, "prompt": f"a {job_type} prompt"})
    end = timezone.now() - timedelta(minutes=5)
    fields = {"status": status, "completed_at": end, "gpu_seconds": gpu_seconds}
    if waited is not None:
        fields.update(started_at=end - took, created_at=end - took - waited)
    Job.objects.filter(pk=job.pk).update(**fields)
    return Job.objects.get(pk=job.pk)


# --- who may read it ---------------------------------------------------------------------------

def test_metrics_refuse_anyone_without_the_token_or_a_staff_login(client, alice_client, token):
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Token {TOKEN}"}).status_code == 401
    assert alice_client.get("/metrics").status_code == 403  # logged in, not staff
    assert b"ourvidz_" not in anonymous.content + alice_client.get("/metrics").content


def test_without_a_token_configured_no_bearer_token_is_accepted(client, settings, db):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401


def test_the_token_reads_the_metrics_in_prometheus_text(client, token):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert value(samples(response.content.decode()), "ourvidz_jobs_submitted_total", job_type="video_fast") == 0


def test_a_scraper_asking_for_openmetrics_gets_it(client, token):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}",
                                               "Accept": "application/openmetrics-text;version=1.0.0"})
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def test_staff_read_the_metrics_with_their_session(operator_client):
    found = scrape(operator_client, token=None)
    assert value(found, "ourvidz_broker_up") == 1


def test_metrics_are_no_part_of_the_api_schema(alice_api):
    schema = json.loads(alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    assert not [path for path in schema["paths"] if "metrics" in path]


# --- the figures -------------------------------------------------------------------------------

def test_job_counts_times_and_credits_are_those_of_the_database(alice, bob, token):
    fast = job_types.get("sdxl_image_fast")
    quick = finish(alice, "sdxl_image_fast", JobStatus.COMPLETED, timedelta(seconds=3), timedelta(seconds=4), 3.5)
    slow = finish(bob, "sdxl_image_fast", JobStatus.COMPLETED, timedelta(seconds=40), timedelta(seconds=12), 11.0)
    finish(alice, "sdxl_image_fast", JobStatus.FAILED, timedelta(seconds=3), timedelta(seconds=1))
    video, _ = submission.submit(alice, {"job_type": "video_fast", "prompt": "a river"})
    submission.cancel(video)  # before it started: refunded
    submission.submit(bob, {"job_type": "image_fast", "prompt": "a lake"})  # still waiting

    found = scrape()
    submitted = series(found, "ourvidz_jobs_submitted_total", "job_type")
    assert set(submitted) == set(job_types.JOB_TYPES)  # every type has its series, 0 until used
    assert {t: n for t, n in submitted.items() if n} == {"sdxl_image_fast": 3, "video_fast": 1, "image_fast": 1}
    finished = series(found, "ourvidz_jobs_finished_total", "job_type", "status")
    assert {key: n for key, n in finished.items() if n} == {
        ("sdxl_image_fast", "completed"): 2, ("sdxl_image_fast", "failed"): 1, ("video_fast", "cancelled"): 1}

    # Waits of the three finished jobs that started: 3, 40 and 3 seconds.
    wait = series(found, "ourvidz_job_wait_seconds_bucket", "le", job_type=fast.name)
    assert (wait["2.0"], wait["5.0"], wait["30.0"], wait["60.0"], wait["+Inf"]) == (0, 2, 2, 3, 3)
    assert value(found, "ourvidz_job_wait_seconds_sum", job_type=fast.name) == pytest.approx(46)
    # Generation times of the two completed ones: 4 and 12 seconds.
    generation = series(found, "ourvidz_job_generation_seconds_bucket", "le", job_type=fast.name)
    assert (generation["2.0"], generation["5.0"], generation["10.0"], generation["20.0"]) == (0, 1, 1, 2)
    assert value(found, "ourvidz_job_generation_seconds_count", job_type=fast.name) == 2
    assert value(found, "ourvidz_job_generation_seconds_sum", job_type=fast.name) == pytest.approx(16)
    assert value(found, "ourvidz_job_generation_ratio_count", job_type=fast.name) == 2
    assert value(found, "ourvidz_job_generation_ratio_sum", job_type=fast.name) == pytest.approx(
        4 / quick.expected_seconds + 12 / slow.expected_seconds)
    assert value(found, "ourvidz_job_gpu_seconds_total", job_type=fast.name) == pytest.approx(14.5)

    assert value(found, "ourvidz_credits_charged_total", job_type=fast.name) == 3 * fast.credits
    video_credits = job_types.get("video_fast").credits
    assert value(found, "ourvidz_credits_charged_total", job_type="video_fast") == video_credits
    assert value(found, "ourvidz_credits_refunded_total", job_type="video_fast") == video_credits
    assert value(found, "ourvidz_credits_refunded_total", job_type=fast.name) == 0


def test_queue_figures_are_the_schedulers_and_workers_show_their_model_and_gpu(alice, sandbox, monkeypatch, token):
    sandbox.private_queues()
    sdxl, wan = job_types.POOLS["sdxl"].queue, job_types.POOLS["wan"].queue
    for released in (None, None, timezone.now()):
        job = submission.build_job(alice, "sdxl_image_fast", "a fox")
        job.released_at = released
        job.save()
    running = submission.build_job(alice, "video_fast", "a river")
    running.status, running.started_at = JobStatus.PROCESSING, timezone.now()
    running.save()
    brokers.client().lpush(sdxl, "a message")
    # An SDXL worker on a GPU, as its processes report themselves; a WAN worker still loading.
    monkeypatch.setitem(heartbeats.status, "name", "sdxl@gpu-box-1")
    monkeypatch.setitem(heartbeats.status, "queues", ["maintenance", sdxl])
    heartbeats.publish()
    heartbeats.publish_loaded({"pool": "sdxl", "model": "sdxl-base-1.0", "device": "cuda:0",
                               "gpu_memory_used_bytes": 9 * 2**30, "gpu_memory_total_bytes": 48 * 2**30})
    loading = sandbox.worker("wan")

    found = scrape()
    assert value(found, "ourvidz_broker_up") == 1
    assert series(found, "ourvidz_queue_jobs", "pool", "state") == {
        ("sdxl", "waiting"): 2, ("sdxl", "released"): 1, ("sdxl", "running"): 0,
        ("wan", "waiting"): 0, ("wan", "released"): 0, ("wan", "running"): 1}
    assert value(found, "ourvidz_queue_broker_messages", pool="sdxl", queue=sdxl) == 1
    assert value(found, "ourvidz_queue_broker_messages", pool="wan", queue=wan) == 0
    assert value(found, "ourvidz_queue_oldest_waiting_seconds", pool="sdxl", queue=sdxl) >= 0
    assert series(found, "ourvidz_workers_online", "pool") == {"sdxl": 1, "wan": 1}
    assert series(found, "ourvidz_workers_ready", "pool") == {"sdxl": 1, "wan": 0}
    assert sorted(labelled(found, "ourvidz_worker_online"), key=lambda w: w["pool"]) == [
        {"pool": "sdxl", "worker": "sdxl@gpu-box-1", "model": "sdxl-base-1.0"},
        {"pool": "wan", "worker": loading, "model": ""}]
    assert value(found, "ourvidz_worker_gpu_memory_used_bytes", pool="sdxl", worker="sdxl@gpu-box-1") == 9 * 2**30
    assert value(found, "ourvidz_worker_gpu_memory_total_bytes", pool="sdxl", worker="sdxl@gpu-box-1") == 48 * 2**30
    assert labelled(found, "ourvidz_worker_gpu_memory_used_bytes") == [{"pool": "sdxl", "worker": "sdxl@gpu-box-1"}]


def test_with_the_broker_down_the_database_figures_are_still_served(alice, settings, token):
    finish(alice, "image_fast", JobStatus.COMPLETED, timedelta(seconds=2), timedelta(seconds=3))
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there: the broker is down
    brokers.client.cache_clear()
    try:
        found = scrape()
    finally:
        brokers.client.cache_clear()
    assert value(found, "ourvidz_broker_up") == 0
    assert value(found, "ourvidz_jobs_finished_total", job_type="image_fast", status="completed") == 1
    assert not labelled(found, "ourvidz_queue_jobs") and not labelled(found, "ourvidz_workers_online")


def test_webhook_deliveries_are_counted_by_event_and_status(alice, token):
    job = submission.build_job(alice, "sdxl_image_fast", "a fox")
    job.webhook, job.webhook_events_filter = "https://hooks.example.com/ourvidz", ["start", "completed"]
    job.save()
    started = webhooks.queue(job, WebhookEvent.START)
    ended = webhooks.queue(job, WebhookEvent.COMPLETED)
    retried = webhooks.queue(job, WebhookEvent.COMPLETED)
    # As the webhooks worker leaves them: one delivered, one given up, one pending for two minutes now.
    WebhookDelivery.objects.filter(pk=started.pk).update(status=WebhookStatus.DELIVERED)
    WebhookDelivery.objects.filter(pk=ended.pk).update(status=WebhookStatus.FAILED)
    WebhookDelivery.objects.filter(pk=retried.pk).update(created_at=timezone.now() - timedelta(minutes=2))

    found = scrape()
    deliveries = series(found, "ourvidz_webhook_deliveries", "event", "status")
    assert len(deliveries) == len(WebhookEvent.values) * len(WebhookStatus.values)
    assert {key: n for key, n in deliveries.items() if n} == {
        ("start", "delivered"): 1, ("completed", "failed"): 1, ("completed", "pending"): 1}
    assert 120 <= value(found, "ourvidz_webhook_oldest_pending_seconds") < 3600


def test_a_cpu_worker_reports_no_gpu_memory():
    assert heartbeats.gpu_memory(torch.device("cpu")) == {}


def test_the_figures_take_a_fixed_number_of_queries(alice, django_assert_max_num_queries, token):
    for _ in range(5):
        finish(alice, "sdxl_image_fast", JobStatus.COMPLETED, timedelta(seconds=3), timedelta(seconds=4))
    with django_assert_max_num_queries(3 + len(job_types.POOLS)):
        list(metrics.Collector().collect())


# --- with real workers -------------------------------------------------------------------------

def test_the_figures_after_real_jobs_on_real_workers(alice_api, live_workers, token):
    submitted = [("sdxl_image_fast", 1), ("sdxl_image_fast", 3), ("image_fast", 1)]
    ids = []
    for job_type, num_images in submitted:
        response = alice_api.post("/api/jobs/", {"job_type": job_type, "prompt": "a red fox in the snow",
                                                 "num_images": num_images}, format="json")
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    done = [live_workers.wait_for_job(job_id) for job_id in ids]
    assert [job.status for job in done] == ["completed"] * 3, [job.error_message for job in done]

    found = scrape()
    assert value(found, "ourvidz_jobs_submitted_total", job_type="sdxl_image_fast") == 2
    assert value(found, "ourvidz_jobs_submitted_total", job_type="image_fast") == 1
    assert value(found, "ourvidz_jobs_finished_total", job_type="sdxl_image_fast", status="completed") == 2
    assert value(found, "ourvidz_jobs_finished_total", job_type="image_fast", status="completed") == 1
    assert value(found, "ourvidz_jobs_finished_total", job_type="image_fast", status="failed") == 0
    for job_type in ("sdxl_image_fast", "image_fast"):
        jobs = [job for job in done if job.job_type == job_type]
        assert value(found, "ourvidz_job_generation_seconds_count", job_type=job_type) == len(jobs)
        assert value(found, "ourvidz_job_wait_seconds_count", job_type=job_type) == len(jobs)
        assert value(found, "ourvidz_job_generation_seconds_sum", job_type=job_type) == pytest.approx(
            sum(job.duration for job in jobs), abs=1e-3)
        assert value(found, "ourvidz_job_gpu_seconds_total", job_type=job_type) == pytest.approx(
            sum(job.gpu_seconds for job in jobs), abs=1e-3)
        assert value(found, "ourvidz_credits_charged_total", job_type=job_type) == sum(job.credits for job in jobs)
    assert series(found, "ourvidz_workers_online", "pool") == {"sdxl": 1, "wan": 1}
    assert series(found, "ourvidz_workers_ready", "pool") == {"sdxl": 1, "wan": 1}
    models = {w["pool"]: w["model"] for w in labelled(found, "ourvidz_worker_online")}
    assert models == {"sdxl": done[0].metadata["model"], "wan": done[2].metadata["model"]}
    assert not labelled(found, "ourvidz_worker_gpu_memory_used_bytes")  # CPU workers
    assert value(found, "ourvidz_queue_jobs", pool="sdxl", queue="sdxl_queue", state="running") == 0


# --- deploy/ -----------------------------------------------------------------------------------

def dashboard_expressions():
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return dashboard, panels, [t["expr"] for p in panels for t in p["targets"]]


def test_the_grafana_dashboard_reads_only_metrics_that_are_exposed(token):
    dashboard, panels, expressions = dashboard_expressions()
    assert dashboard["title"] and dashboard["uid"] and len(panels) >= 10
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    exposed = exposed_names(response.content.decode())
    used = {name for expr in expressions for name in re.findall(r"\bourvidz_\w+", expr)}
    assert used and used <= exposed, used - exposed
    # The main figures each have a panel.
    for name in ["ourvidz_jobs_submitted_total", "ourvidz_jobs_finished_total", "ourvidz_queue_jobs",
                 "ourvidz_job_wait_seconds_bucket", "ourvidz_job_generation_seconds_bucket",
                 "ourvidz_job_generation_ratio_sum", "ourvidz_workers_online", "ourvidz_worker_online",
                 "ourvidz_worker_gpu_memory_used_bytes", "ourvidz_credits_charged_total",
                 "ourvidz_webhook_deliveries"]:
        assert name in used, name


def test_prometheus_scrapes_metrics_with_the_bearer_token():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["scheme"] == "https"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
