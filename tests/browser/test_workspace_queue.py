"""My queue in the Workspace, in a real browser: the waiting jobs with their places, live as jobs are added,
"Cancel all waiting", and clearing finished cards off the Workspace for good while the Library keeps them."""

import json
import os
import uuid
from dataclasses import replace

from browser_helpers import card, choose, finished_job, submit_job
from playwright.sync_api import expect

from generation import brokers, job_types, presence, submission
from generation.models import Image, Job

PHONE = {"width": 390, "height": 844}


def test_my_queue_cancel_all_waiting_and_clear_finished(page, alice, log_in, live_workers, live_server, monkeypatch,
                                                        screenshot):
    done = finished_job(alice, live_workers, job_type="sdxl_image_fast", prompt="a lighthouse kept in the Library")
    image = Image.objects.get(job=done)
    # The SDXL pool gets a queue of this test's own and a worker that is online for the scheduler but takes
    # nothing from it: jobs are released and get their places, and none starts.
    tag = uuid.uuid4().hex[:8]
    queue = f"sdxl_queue.test-{tag}"
    monkeypatch.setitem(job_types.POOLS, "sdxl", replace(job_types.POOLS["sdxl"], queue=queue))
    idle = presence.KEY_PREFIX + f"idle-{tag}"
    brokers.client().set(idle, json.dumps({"name": f"idle-{tag}", "queues": [queue], "pid": os.getpid()}), ex=300)
    try:
        waiting = [submission.submit(alice, {"job_type": "sdxl_image_fast", "prompt": f"waiting job {i}"})[0]
                   for i in range(3)]
        log_in(alice)
        panel = page.locator("#my-queue")
        entries = panel.locator("#my-queue-list li")
        expect(panel).to_be_visible()
        expect(panel.locator("#my-queue-count")).to_have_text("3 waiting")
        expect(entries.locator(".badge")).to_have_text(["position 1", "position 2", "position 3"])
        expect(entries.locator(".my-queue-prompt")).to_have_text([job.prompt for job in waiting])

        # A job submitted here joins the list at once, from the same update as its card.
        choose(page, "kind", "image")
        choose(page, "model", "sdxl")
        choose(page, "quality", "fast")
        page.locator("textarea[name=prompt]").fill("one more for the queue")
        added = submit_job(page)
        expect(panel.locator("#my-queue-count")).to_have_text("4 waiting")
        expect(entries.nth(3)).to_contain_text("position 4")
        expect(card(page, added).locator("button.clear-job")).to_be_hidden()  # not finished: it cannot be cleared
        screenshot("my queue")

        # An entry leads to its card, with the keyboard focus.
        entries.nth(0).locator(".my-queue-prompt").click()
        expect(card(page, str(waiting[0].pk))).to_be_focused()

        page.set_viewport_size(PHONE)
        expect(panel.locator("#cancel-waiting")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot("phone", panel)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.once("dialog", lambda dialog: dialog.accept())  # "Cancel your 4 waiting jobs?"
        panel.locator("#cancel-waiting").click()
        for job_id in [*(str(job.pk) for job in waiting), added]:
            expect(card(page, job_id)).to_have_attribute("data-status", "cancelled")
        expect(panel).to_be_hidden()
        expect(page.locator("#jobs-note")).to_have_text("Cancelled 4 waiting jobs.")
        assert {job.status for job in Job.objects.filter(user=alice).exclude(pk=done.pk)} == {"cancelled"}
    finally:
        brokers.client().delete(idle, queue)

    # One card cleared by its own button, then the rest with "Clear finished": gone, and still gone after a
    # reload; the Library keeps the result.
    card(page, str(done.pk)).locator("button.clear-job").click()
    expect(card(page, str(done.pk))).to_have_count(0)
    expect(page.locator("#jobs div.job")).to_have_count(4)
    page.locator("#clear-finished").click()
    expect(page.locator("#jobs div.job")).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#clear-finished")).to_be_hidden()
    assert not Job.objects.filter(user=alice, cleared=False).exists()
    page.reload()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#jobs div.job")).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_be_visible()
    page.goto("/library/")
    expect(page.locator(f".tile[data-kind=image][data-id='{image.pk}']")).to_have_count(1)
