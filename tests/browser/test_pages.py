"""The web pages in a real browser (Debian's Chromium through Playwright) against a live server with
real worker processes of both pools on the tiny models: log in, submit and watch jobs, the Library,
reuse, video playback, cancel, delete, the operators' Dashboard. Any JavaScript error fails a test
(see conftest.py); screenshots of every page land in test-artifacts/screenshots/."""

import re
import uuid
from dataclasses import replace

from browser_helpers import (
    assert_not_reloaded,
    asset_files,
    card,
    choose,
    expect_checked,
    finished_job,
    images_loaded,
    job_states,
    mark_page,
    record_job_states,
    submit_job,
)
from helpers import Stack, sdxl_worker_command, worker_env
from playwright.sync_api import expect

from generation import brokers, job_types, presence, submission
from generation.models import Image, Job, Video
from ourvidz.celery import app

FINISH_MS = 90_000  # a job on the tiny models takes about a second; leave room for a slow machine
STATUS_ORDER = {"queued": 0, "processing": 1, "completed": 2}


def test_image_job_progress_and_three_results_without_reload(page, alice, log_in, screenshot):
    log_in(alice)
    screenshot("workspace")
    choose(page, "kind", "image")
    choose(page, "model", "sdxl")
    choose(page, "quality", "fast")
    choose(page, "num_images", "3")
    page.locator("textarea[name=prompt]").fill("three lighthouses on a rocky coast at dusk")
    mark_page(page)
    record_job_states(page)

    job_id = submit_job(page)
    job = card(page, job_id)
    expect(job).to_have_attribute("data-status", "completed", timeout=FINISH_MS)
    results = f"#jobs div.job[data-job-id='{job_id}'] .results img.result-image"
    assert images_loaded(page, results) == 3
    assert_not_reloaded(page)  # the card went from submission to results by live updates alone
    screenshot("completed")

    states = job_states(page, job_id)
    statuses = [s["status"] for s in states]
    assert statuses[-1] == "completed" and set(statuses) <= set(STATUS_ORDER), statuses
    assert statuses[0] != "completed", f"the card never showed the job before it finished: {statuses}"
    ranks = [STATUS_ORDER[s] for s in statuses]
    assert ranks == sorted(ranks), f"the card's status went backwards: {statuses}"
    widths = [s["width"] for s in states if s["width"] is not None]
    assert widths == sorted(widths), f"the progress bar shrank: {widths}"
    # Each denoising step reaches the bar while the job runs (a step takes about half a second here).
    partial = [s["width"] for s in states if s["status"] == "processing" and s["width"] and s["width"] < 1]
    assert partial, f"the bar showed no step between start and finish: {states}"
    # Queued, the card says when the job should start and finish; running, how long it has left (the
    # scheduler's estimates, counted down between updates).
    queued = [s["eta"] for s in states if s["status"] == "queued"]
    assert queued and all(re.match(r"(starts in about \d.*|starts shortly) · done in about \d", eta)
                          for eta in queued), states
    running = [s for s in states if s["status"] == "processing"]
    assert running and all(re.fullmatch(r"about \d+ (s|min)( \d+ s)? left|a few seconds left|taking longer than usual|"
                                        r"finishing…", s["eta"]) for s in running), states
    # It names what the worker does, in the order the worker does it, and says "finishing" only once the
    # last step is done.
    said = [s["phase"] for s in states]
    assert said[0] == "Waiting for a worker", said
    order = ["Waiting for a worker", "Loading the model…", "Encoding the prompt…", "Step", "Decoding…",
             "Encoding the images…", "Saving…"]
    ranks = [next(i for i, p in enumerate(order) if phase.startswith(p)) for phase in said if phase]
    assert ranks == sorted(ranks) and order.index("Step") in ranks, said
    for s in running:
        if s["eta"] == "finishing…":
            assert not s["phase"].startswith(("Step", "Loading", "Starting")), s
    steps_seen = [int(m.group(1)) for s in running if (m := re.fullmatch(r"Step (\d+) of 3", s["phase"]))]
    assert steps_seen == sorted(steps_seen) and steps_seen, said
    # A picture of the job while it renders, before its results.
    assert any(s["preview"] for s in running), states
    final = [s["width"] for s in states if s["status"] == "completed" and s["width"] is not None]
    assert not final or final[-1] > 0.99, f"a completed job's bar is not full: {final}"
    row = Job.objects.get(pk=job_id)
    assert (row.job_type, row.num_images, row.status) == ("sdxl_image_fast", 3, "completed")
    assert row.images.count() == 3
    print(f"states seen by the page: {states}")


def test_library_detail_and_reuse_settings(page, alice, log_in, live_workers, screenshot):
    job = finished_job(alice, live_workers, job_type="sdxl_image_fast", prompt="a red fox in the snow",
                       num_images=3, seed=4242)
    first = Image.objects.get(job=job, image_index=0)  # its seed is the job's: reuse reproduces it
    log_in(alice)

    page.goto("/library/")
    tiles = page.locator(".tile[data-kind=image]")
    expect(tiles).to_have_count(3)
    assert sorted(tiles.evaluate_all("ts => ts.map(t => t.dataset.id)")) == sorted(
        str(pk) for pk in job.images.values_list("pk", flat=True))
    if page.locator(".tile img").count():
        images_loaded(page, ".tile img")
    screenshot("library")

    page.locator(f".tile[data-kind=image][data-id='{first.pk}'] a.tile-link").click()
    expect(page.locator("img#asset-image")).to_be_visible()
    images_loaded(page, "img#asset-image")
    expect(page.locator("dl.params")).to_contain_text(str(first.seed))
    expect(page.locator("dl.params")).to_contain_text("a red fox in the snow")
    expect(page.locator("a.download")).to_have_count(1)
    screenshot("detail")

    expect(page.locator("#seed-note")).to_contain_text("image 1 of a batch of 3")
    page.locator("a.reuse-settings").click()  # this image again: its seed, one image
    page.wait_for_url(re.compile(r"/\?"))
    expect_checked(page, "num_images", "1")
    expect(page.locator("textarea[name=prompt]")).to_have_value("a red fox in the snow")
    expect(page.locator("input[name=seed]")).to_have_value(str(first.seed))
    expect_checked(page, "seed_mode", "fixed")
    expect_checked(page, "kind", "image")
    expect_checked(page, "model", "sdxl")
    expect_checked(page, "quality", "fast")
    screenshot("workspace-reused")


def test_video_job_plays_in_the_page(page, alice, log_in, screenshot):
    log_in(alice)
    choose(page, "kind", "video")
    choose(page, "model", "wan")
    choose(page, "quality", "fast")
    page.locator("textarea[name=prompt]").fill("waves rolling onto a beach")
    mark_page(page)

    job_id = submit_job(page)
    expect(card(page, job_id)).to_have_attribute("data-status", "completed", timeout=FINISH_MS)
    video = card(page, job_id).locator(".results video.result-video")
    expect(video).to_have_count(1)
    expect(video).to_have_attribute("controls", re.compile(".*"))
    playback = video.evaluate("""async v => {
        v.muted = true;
        const failed = () => new Error('video error ' + (v.error ? v.error.code + ' ' + v.error.message : ''));
        if (v.error) throw failed();
        await Promise.race([
          v.play(),
          new Promise((_, reject) => setTimeout(() => reject(new Error('play() did not start')), 15000)),
        ]);
        const start = performance.now();
        while (!(v.currentTime > 0 || v.ended) && performance.now() - start < 10000)
          await new Promise(r => setTimeout(r, 20));
        return {duration: v.duration, currentTime: v.currentTime, ended: v.ended, readyState: v.readyState,
                width: v.videoWidth, height: v.videoHeight, error: v.error && v.error.code};
    }""")
    assert playback["error"] is None, playback
    assert playback["duration"] > 0, playback
    assert playback["currentTime"] > 0 or playback["ended"] or playback["readyState"] >= 2, playback
    assert playback["width"] > 0 and playback["height"] > 0, playback
    assert_not_reloaded(page)
    screenshot("completed")
    row = Job.objects.get(pk=job_id)
    assert row.job_type == "video_fast" and Video.objects.filter(job=row).exists()
    assert (playback["width"], playback["height"]) == (row.width, row.height)


def test_cancel_a_queued_job(page, alice, log_in, live_workers, screenshot):
    log_in(alice)
    page.on("dialog", lambda dialog: dialog.accept())  # should the page ask "are you sure?"
    # An operator stops the WAN worker consuming its queue: the next video job stays queued. (Only that
    # worker: a broadcast add_consumer afterwards would make the SDXL worker take WAN tasks too.)
    wan = [w["name"] for w in presence.online() if "wan_queue" in w["queues"]]
    replies = app.control.cancel_consumer("wan_queue", destination=wan, reply=True)
    assert sorted(name for r in replies for name, reply in r.items() if "ok" in reply) == sorted(wan), replies
    try:
        choose(page, "kind", "video")
        choose(page, "model", "wan")
        choose(page, "quality", "fast")
        page.locator("textarea[name=prompt]").fill("a job nobody will see")
        job_id = submit_job(page)
        job = card(page, job_id)
        expect(job).to_have_attribute("data-status", "queued")
        # Its pool has a worker online, so the scheduler released it to the broker: it is next, and the
        # card says when it should start and finish rather than why it waits.
        expect(job.locator(".queue-position")).to_have_text("Position 1 in queue")
        expect(job.locator(".eta")).to_have_text(
            re.compile(r"^(starts in about \d.*|starts shortly) · done in about \d+ (s|min)"))
        expect(job.locator(".waiting-reason")).to_be_hidden()
        assert Job.objects.get(pk=job_id).released_at is not None
        screenshot("queued")
        job.locator("button.cancel-job").click()
        expect(job).to_have_attribute("data-status", "cancelled")
        expect(job.locator("button.cancel-job")).to_be_hidden()
        screenshot("cancelled")
    finally:
        app.control.add_consumer("wan_queue", destination=wan, reply=True)
    # The WAN worker consumes its queue again, in order: once a later job has run, the cancelled
    # one's task has been taken off the queue and skipped.
    later, _ = submission.submit(alice, {"job_type": "image_fast", "prompt": "after the cancel"})
    assert live_workers.wait_for_job(later.pk).status == "completed"
    cancelled = Job.objects.get(pk=job_id)
    assert cancelled.status == "cancelled" and cancelled.started_at is None
    assert not Video.objects.filter(job=cancelled).exists()
    assert f"job {job_id} is not runnable (cancelled, finished or released again); skipped" in live_workers.output()
    assert brokers.client().llen("wan_queue") == 0
    expect(card(page, job_id)).to_have_attribute("data-status", "cancelled")


def test_a_job_whose_pool_has_no_worker_says_why_it_waits(page, alice, log_in, monkeypatch, tmp_path, screenshot):
    # The SDXL pool gets a queue of this test's own, which the session's SDXL worker does not serve: for
    # the server no SDXL worker is online (as when an operator's are all down) until this test starts one.
    tag = uuid.uuid4().hex[:8]
    queue = f"sdxl_queue.test-{tag}"
    monkeypatch.setitem(job_types.POOLS, "sdxl", replace(job_types.POOLS["sdxl"], queue=queue))
    log_in(alice)
    choose(page, "kind", "image")
    choose(page, "model", "sdxl")
    choose(page, "quality", "fast")
    page.locator("textarea[name=prompt]").fill("a lighthouse waiting for its keeper")
    job_id = submit_job(page)
    job = card(page, job_id)
    expect(job).to_have_attribute("data-status", "queued")
    expect(job.locator(".waiting-reason")).to_have_text("No SDXL worker is online; the job starts when one is.")
    expect(job.locator(".queue-position")).to_be_hidden()  # no place in a queue that does not move
    expect(job.locator(".eta")).to_have_text(re.compile(r"^takes about \d"))
    screenshot("waiting")
    assert Job.objects.get(pk=job_id).released_at is None and brokers.client().llen(queue) == 0

    # A worker of the pool comes online: the scheduler releases the job to it, and the card follows it
    # over the live stream to its result.
    worker = Stack([], worker_env(), tmp_path / "worker.log", command=sdxl_worker_command(queue, f"waiting-{tag}"))
    try:
        expect(job).to_have_attribute("data-status", "completed", timeout=FINISH_MS)
    finally:
        worker.stop()
    expect(job.locator(".waiting-reason")).to_be_hidden()
    expect(job.locator(".results img.result-image")).to_have_count(1)
    screenshot("completed")


def test_another_tab_shows_a_queued_job_at_once(page, alice, log_in, monkeypatch, screenshot):
    # As above, the SDXL pool gets a queue no worker serves: the job waits, and no worker's event announces it.
    queue = f"sdxl_queue.test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(job_types.POOLS, "sdxl", replace(job_types.POOLS["sdxl"], queue=queue))
    log_in(alice)
    other = page.context.new_page()  # a second tab of the same logged-in browser
    other.goto("/")
    expect(other.locator("#live-status")).to_have_attribute("data-state", "live")
    choose(page, "kind", "image")
    choose(page, "model", "sdxl")
    page.locator("textarea[name=prompt]").fill("a kite seen from another tab")
    job_id = submit_job(page)
    expect(card(other, job_id)).to_have_attribute("data-status", "queued")
    expect(card(other, job_id)).to_contain_text("a kite seen from another tab")
    expect(card(other, job_id)).to_contain_text("SDXL image · fast")  # the job type as people read it
    screenshot("submitting tab")
    assert Job.objects.get(pk=job_id).status == "queued"


def test_delete_an_asset_from_the_library(page, alice, log_in, live_workers, screenshot, live_server):
    video_job = finished_job(alice, live_workers, job_type="video_fast", prompt="a candle flickering")
    kept_job = finished_job(alice, live_workers, job_type="sdxl_image_fast", prompt="a picture to keep")
    video = Video.objects.get(job=video_job)
    kept = Image.objects.get(job=kept_job)
    files = asset_files(video)
    assert all(f.is_file() for f in files), files
    log_in(alice)

    page.goto("/library/")
    video_tile = page.locator(f".tile[data-kind=video][data-id='{video.pk}']")
    kept_tile = page.locator(f".tile[data-kind=image][data-id='{kept.pk}']")
    expect(video_tile).to_have_count(1)
    expect(kept_tile).to_have_count(1)
    video_tile.locator("a.tile-link").click()
    expect(page.locator("video#asset-video")).to_have_count(1)
    page.locator("video#asset-video").evaluate("""v => new Promise((ok, fail) => {
        if (v.readyState >= 1) return ok();
        v.addEventListener('loadedmetadata', ok, {once: true});
        v.addEventListener('error', () => fail(new Error('video error')), {once: true});
        if (v.preload === 'none') v.load();
    })""")
    screenshot("detail")

    page.locator("a.delete").click()
    expect(page.locator("button#confirm-delete")).to_be_visible()
    screenshot("confirm")
    page.locator("button#confirm-delete").click()
    page.wait_for_url(re.compile(re.escape(live_server.url) + r"/library/(\?.*)?$"))
    expect(video_tile).to_have_count(0)
    expect(kept_tile).to_have_count(1)
    screenshot("library-after")
    assert not Video.objects.filter(pk=video.pk).exists()
    assert not any(f.exists() for f in files), [f for f in files if f.exists()]
    assert all(f.is_file() for f in asset_files(kept))


def test_dashboard_for_staff(page, charlie, log_in, live_workers, screenshot):
    staff = charlie  # who runs the service
    staff.is_staff = True
    staff.save()
    finished_job(staff, live_workers, job_type="sdxl_image_fast", prompt="a figure for the charts")
    finished_job(staff, live_workers, job_type="image_fast", prompt="another figure")
    log_in(staff)

    page.goto("/dashboard/")
    queues = page.locator("table#queues")
    expect(queues).to_be_visible()
    online = presence.online()
    for queue in ("sdxl_queue", "wan_queue"):
        row = queues.locator("tr", has_text=queue)
        expect(row).to_have_count(1)
        names = [w["name"] for w in online if queue in w["queues"]]
        assert names, f"no worker online for {queue}"
        for name in names:
            expect(row).to_contain_text(name)
    load = page.locator("table#queue-load")
    expect(load).to_be_visible()
    for queue in ("sdxl_queue", "wan_queue"):
        expect(load.locator(f"tr[data-queue='{queue}'] td.waiting")).to_have_text("0")  # the jobs have finished
    chart = page.locator("#timing-chart")
    expect(chart).to_be_visible()
    assert chart.evaluate("e => e.tagName.toLowerCase() === 'svg' || !!e.querySelector('svg')")
    for figure in ("#jobs-per-hour", "#error-rate", "#avg-wait"):
        expect(page.locator(figure)).to_be_visible()
    expect(page.locator("table#failures")).to_have_count(1)
    expect(page.locator("a.flower-link")).to_have_count(1)
    expect(page.locator("a.admin-link")).to_have_count(1)
    screenshot("dashboard")


def test_admin_and_api_pages_keep_to_the_content_security_policy(page, charlie, log_in, screenshot):
    # Any script, style or image the policy refused would be a console error, which fails the test.
    staff = charlie
    staff.is_staff = staff.is_superuser = True
    staff.save()
    log_in(staff)
    for path in ("/admin/", "/admin/generation/job/", f"/admin/auth/user/{staff.pk}/change/",
                 "/admin/generation/creditentry/", "/api/", "/api/jobs/", "/api/account/", "/account/",
                 "/dashboard/", "/library/"):
        response = page.goto(path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    screenshot("browsable-api")
