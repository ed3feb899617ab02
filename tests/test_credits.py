"""Credits and quotas: charged with the job, refunded when the failure is not the user's, never overdrawn,
granted by admins; quotas that answer 429 and write nothing; the quote that creates nothing."""

import io
import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from helpers import create_user
from PIL import Image as PILImage
from rest_framework.test import APIClient

from generation import credits, outcomes, submission
from generation.models import Account, CreditEntry, CreditKind, Job, JobStatus

JOB = {"job_type": "sdxl_image_high", "prompt": "a lighthouse"}  # 2 credits in the job-type table


def balance(user):
    return Account.objects.get(user=user).credits


def set_balance(user, amount):
    credits.grant(user, amount - balance(user), "test balance")


def submit(client, **body):
    return client.post("/api/jobs/", {**JOB, **body}, format="json")


# --- sign-up and grants ---------------------------------------------------------------------------

def test_every_new_user_starts_with_the_sign_up_credits_however_created(db, settings):
    settings.OURVIDZ_SIGNUP_CREDITS = 750
    alice = create_user("alice")
    call_command("createsuperuser", username="root", email="", interactive=False, verbosity=0)
    root = get_user_model().objects.get(username="root")
    for user in (alice, root):
        assert balance(user) == 750
        [entry] = CreditEntry.objects.filter(user=user)
        assert (entry.kind, entry.amount, entry.balance, entry.reason) == (CreditKind.GRANT, 750, 750,
                                                                           "sign-up credits")


def test_grant_credits_adds_and_takes_back_but_never_below_zero(alice):
    out = io.StringIO()
    call_command("grant_credits", "alice", "250", stdout=out)
    assert balance(alice) == 1250 and "balance 1250" in out.getvalue()
    call_command("grant_credits", "alice", "-1000", "--reason", "refund of a test", stdout=out)
    assert balance(alice) == 250
    assert CreditEntry.objects.filter(user=alice).first().reason == "refund of a test"
    with pytest.raises(CommandError, match="alice has 250 credits; 251 cannot be taken back"):
        call_command("grant_credits", "alice", "-251")
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        call_command("grant_credits", "nobody", "5")
    assert balance(alice) == 250


def test_an_admin_grants_credits_on_the_ledger_page(admin_client, alice):
    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/")
    assert "Grant or take back credits" in page.content.decode()
    added = admin_client.post("/admin/generation/creditentry/add/", {"user": alice.pk, "amount": 40,
                                                                      "reason": "a prize"})
    assert added.status_code == 302
    assert balance(alice) == 1040 and CreditEntry.objects.filter(user=alice, reason="a prize").exists()
    refused = admin_client.post("/admin/generation/creditentry/add/", {"user": alice.pk, "amount": -2000,
                                                                        "reason": "too much"})
    assert refused.status_code == 200 and "alice has 1040 credits" in refused.content.decode()
    assert balance(alice) == 1040


# --- charges and refunds ----------------------------------------------------------------------------

def test_a_submission_is_charged_its_job_types_credits(alice, alice_api):
    response = submit(alice_api)
    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["id"])
    assert balance(alice) == 1000 - job.credits == 998
    entry = CreditEntry.objects.get(job=job)
    assert (entry.kind, entry.amount, entry.price, entry.balance) == (CreditKind.CHARGE, -2, 2, 998)


def test_without_enough_credits_the_answer_is_402_and_nothing_is_written(alice, alice_api):
    set_balance(alice, 1)
    entries = CreditEntry.objects.count()
    response = submit(alice_api)
    assert response.status_code == 402
    assert response.json() == {"detail": "This job costs 2 credits and you have 1.", "code": "insufficient_credits",
                               "balance": 1, "price": 2}
    assert not Job.objects.filter(user=alice).exists() and CreditEntry.objects.count() == entries
    assert submit(alice_api, job_type="sdxl_image_fast").status_code == 201  # 1 credit: affordable


def race(user, clients=8):
    """The status codes of `clients` submissions by `user` let go at the same instant."""
    answers = []
    start = threading.Barrier(clients)

    def client():
        api = APIClient()
        api.force_authenticate(user)
        start.wait()
        try:
            answers.append(submit(api).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers)


@pytest.mark.django_db(transaction=True)
def test_racing_submissions_never_overdraw(alice):
    set_balance(alice, 7)  # three 2-credit jobs, and one credit left
    assert race(alice) == [201] * 3 + [402] * 5
    assert balance(alice) == 1 and Job.objects.filter(user=alice).count() == 3


@pytest.mark.django_db(transaction=True)
def test_racing_submissions_never_pass_the_active_jobs_limit(alice, settings):
    settings.QUOTA_ACTIVE_JOBS = [3]
    assert race(alice) == [201] * 3 + [429] * 5
    assert Job.objects.filter(user=alice).count() == 3 and balance(alice) == 1000 - 3 * 2


def test_staff_unlimited_users_and_an_installation_without_credits_are_not_charged(alice, bob, settings):
    staff = create_user("root", is_staff=True)
    Account.objects.filter(user=bob).update(unlimited=True)
    for user in (staff, bob):
        set_balance(user, 0)
        job, _ = submission.submit(user, JOB)
        entry = CreditEntry.objects.get(job=job)
        assert (entry.amount, entry.price, balance(user)) == (0, 2, 0)  # the ledger still records the use
    assert CreditEntry.objects.get(user=staff, kind=CreditKind.CHARGE).reason == "not charged (staff)"
    assert CreditEntry.objects.get(user=bob, kind=CreditKind.CHARGE).reason == "not charged (unlimited)"
    settings.OURVIDZ_CREDITS = False
    set_balance(alice, 0)
    job, _ = submission.submit(alice, JOB)
    assert CreditEntry.objects.get(job=job).reason == "not charged (credits are off)" and balance(alice) == 0


def test_a_failure_not_the_users_is_refunded_once(alice):
    job, _ = submission.submit(alice, JOB)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)
    assert outcomes.record_failure(job.pk, "The GPU ran out of memory.", {}, {})
    assert balance(alice) == 1000
    refund = CreditEntry.objects.get(job=job, kind=CreditKind.REFUND)
    assert (refund.amount, refund.reason) == (2, "the job failed: The GPU ran out of memory.")
    assert not credits.refund(job, "again")  # once
    assert balance(alice) == 1000


def test_a_failure_of_the_users_own_doing_is_not_refunded(alice):
    job, _ = submission.submit(alice, JOB)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)
    assert outcomes.record_failure(job.pk, "The reference image was deleted before the job ran.", {}, {},
                                   refund=False)
    assert balance(alice) == 998 and not CreditEntry.objects.filter(job=job, kind=CreditKind.REFUND).exists()


def test_cancelling_before_the_start_is_refunded_and_after_it_is_not(alice, alice_api):
    waiting = submit(alice_api).json()["id"]
    running = submit(alice_api).json()["id"]
    Job.objects.filter(pk=running).update(status=JobStatus.PROCESSING)
    assert alice_api.post(f"/api/jobs/{waiting}/cancel/").status_code == 200
    assert alice_api.post(f"/api/jobs/{running}/cancel/").status_code == 200
    assert balance(alice) == 998  # 1000 - 2 - 2 + 2
    assert CreditEntry.objects.get(job_id=waiting, kind=CreditKind.REFUND).reason == "cancelled before it started"
    assert not CreditEntry.objects.filter(job_id=running, kind=CreditKind.REFUND).exists()


# --- what users see ----------------------------------------------------------------------------------

def test_a_quote_tells_the_price_and_the_start_and_creates_nothing(alice, alice_api, sandbox):
    sandbox.worker("sdxl")
    set_balance(alice, 1)
    response = alice_api.post("/api/jobs/quote/", JOB, format="json")
    assert response.status_code == 200
    quote = response.json()
    assert (quote["price"], quote["charged"], quote["balance"]) == (2, True, 1)
    assert quote["refused"] == "This job costs 2 credits and you have 1."
    assert quote["queue_position"] == 1 and quote["estimated_start_seconds"] is not None
    assert quote["expected_generation_seconds"] > 0
    assert not Job.objects.exists() and balance(alice) == 1
    assert alice_api.post("/api/jobs/quote/", {"job_type": "nope", "prompt": "x"}, format="json").status_code == 400


def test_the_account_shows_balance_tier_limits_and_usage(alice, alice_api, settings):
    settings.QUOTA_ACTIVE_JOBS = [7]
    job, _ = submission.submit(alice, JOB)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.COMPLETED, gpu_seconds=12.5)
    account = alice_api.get("/api/account/").json()
    assert account["credits"] == 998 and account["charged"] and account["tier"] == "standard"
    assert account["limits"]["active_jobs"] == 7
    assert account["usage"] == [{"job_type": "sdxl_image_high", "jobs": 1, "credits": 2, "gpu_seconds": 12.5}]
    ledger = alice_api.get("/api/account/ledger/").json()["results"]
    assert [(e["kind"], e["amount"]) for e in ledger] == [("charge", -2), ("grant", 1000)]


# --- quotas -------------------------------------------------------------------------------------------

def test_too_many_jobs_waiting_is_a_429_naming_the_limit_and_nothing_is_written(alice, alice_api, bob_api,
                                                                                   settings):
    settings.QUOTA_ACTIVE_JOBS = [2, 5]
    assert [submit(alice_api).status_code for _ in range(2)] == [201, 201]
    refused = submit(alice_api)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert refused.json()["code"] == "active_jobs"
    assert refused.json()["detail"].startswith("You have 2 jobs waiting or running, the most allowed at once")
    assert Job.objects.filter(user=alice).count() == 2 and balance(alice) == 996
    assert submit(bob_api).status_code == 201  # one user's limit, not everyone's
    Account.objects.filter(user=alice).update(tier=1)  # priority: 5
    assert submit(alice_api).status_code == 201


def picture(color):
    out = io.BytesIO()
    PILImage.new("RGB", (64, 64), color).save(out, "PNG")
    out.seek(0)
    out.name = f"{color}.png"
    return out


def test_reference_uploads_are_limited_per_day_and_in_bytes_kept(alice_api, settings):
    settings.QUOTA_REFERENCES_PER_DAY = [2]
    assert [alice_api.post("/api/references/", {"file": picture(c)}).status_code for c in ("red", "blue")] == \
        [201, 201]
    refused = alice_api.post("/api/references/", {"file": picture("green")})
    assert refused.status_code == 429 and refused.json()["code"] == "references_per_day"
    assert int(refused["Retry-After"]) > 80000  # tomorrow
    settings.QUOTA_REFERENCES_PER_DAY = [100]
    settings.QUOTA_REFERENCE_BYTES = [1]
    refused = alice_api.post("/api/references/", {"file": picture("green")})
    assert refused.status_code == 429 and refused.json()["code"] == "reference_bytes"
    assert alice_api.get("/api/references/").json()["count"] == 2


def test_the_schema_documents_402_and_429(alice_api):
    schema = alice_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    answers = schema["paths"]["/api/jobs/"]["post"]["responses"]
    assert {"201", "402", "429"} <= set(answers)
    assert "/api/jobs/quote/" in schema["paths"] and "/api/account/" in schema["paths"]
    assert "429" in schema["paths"]["/api/references/"]["post"]["responses"]


def test_submissions_per_minute_are_throttled_per_user_and_tier(alice, alice_api, bob_api, settings):
    settings.QUOTA_SUBMISSIONS_PER_MINUTE = [3, 6]
    assert [submit(alice_api).status_code for _ in range(3)] == [201] * 3
    refused = submit(alice_api)
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["code"] == "submissions_per_minute"
    assert refused.json()["detail"].startswith("You submitted 3 jobs in the last minute, the most allowed")
    assert Job.objects.filter(user=alice).count() == 3
    assert submit(bob_api).status_code == 201
    assert alice_api.post("/api/jobs/quote/", JOB, format="json").status_code == 200  # a quote is no submission
    Account.objects.filter(user=alice).update(tier=1)
    assert submit(alice_api).status_code == 201


def test_with_redis_down_submissions_are_not_throttled(alice_api, settings, monkeypatch):
    from django.core.cache.backends.redis import RedisCache

    from generation.api import throttles

    settings.QUOTA_SUBMISSIONS_PER_MINUTE = [1]
    closed = RedisCache("redis://127.0.0.1:9/0", {"OPTIONS": {"socket_connect_timeout": 1}})
    monkeypatch.setattr(throttles.SubmissionThrottle, "cache", closed)
    assert [submit(alice_api).status_code for _ in range(2)] == [201, 201]


def test_the_account_page_shows_balance_limits_usage_and_the_ledger(alice, alice_client):
    submission.submit(alice, JOB)
    page = alice_client.get("/account/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="credits-balance">998 credits<' in html  # the top bar, on every page
    assert "<strong>998</strong> credits" in html
    # Job types by the names people read (usage table and ledger), never the internal ones.
    assert "<td>SDXL image · high</td>" in html and "charge · SDXL image · high" in html
    assert "sdxl_image_high" not in html
    assert "Jobs waiting or running at once</th><td>50<" in html
    assert "sign-up credits" in html and "-2" in html


def test_the_workspace_knows_the_balance_and_whether_the_user_pays(alice, alice_client):
    data = alice_client.get("/").context["data"]
    assert data["account"] == {"credits": 1000, "charged": True} and data["urls"]["account"] == "/api/account/"
