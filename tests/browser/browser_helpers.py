"""Page helpers for the browser tests (named so as not to shadow tests/helpers.py)."""

import json
import re
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from playwright.sync_api import expect

from generation import submission

JOB_CARD = "#jobs div.job[data-job-id]"


def choose(page, name, value):
    """Select a radio (or tick a checkbox) by name and value, as a person would. A radio may be visually
    hidden behind its styled label: a transparent input laid over the label takes the click itself
    (Playwright's check() handles that), one taken out of the layout is reached through its label."""
    field = page.locator(f"input[name='{name}'][value='{value}']")
    expect(field).to_have_count(1)
    expect(field).to_be_enabled()
    if field.is_visible():
        field.check()
    else:
        field_id = field.get_attribute("id")
        label = page.locator(f"label[for='{field_id}']") if field_id else field.locator("xpath=ancestor::label")
        if label.count() and label.first.is_visible():
            label.first.click()
        else:
            field.check(force=True)
    expect(field).to_be_checked()


def expect_checked(page, name, value):
    expect(page.locator(f"input[name='{name}'][value='{value}']")).to_be_checked()


def submit_job(page):
    """Click Submit and return the new job card's id (the list holds this test user's jobs only)."""
    before = set(page.locator(JOB_CARD).evaluate_all("cards => cards.map(c => c.dataset.jobId)"))
    page.locator("button#submit-job").click()
    page.wait_for_function(
        """([selector, before]) => [...document.querySelectorAll(selector)]
               .some(card => !before.includes(card.dataset.jobId))""",
        arg=[JOB_CARD, sorted(before)])
    after = page.locator(JOB_CARD).evaluate_all("cards => cards.map(c => c.dataset.jobId)")
    (job_id,) = [j for j in after if j not in before]
    return job_id


def card(page, job_id):
    return page.locator(f"#jobs div.job[data-job-id='{job_id}']")


def mark_page(page):
    """Mark this document: if the page reloads, the mark is gone."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page):
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded"


RECORDER = """() => {
  // Every state a job card goes through: its status, its progress bar's width (0..1), its time line, what
  // it says the job is doing and whether it shows a preview.
  window.__jobStates = [];
  const record = () => {
    for (const card of document.querySelectorAll('div.job[data-job-id]')) {
      const bar = card.querySelector('.progress > div');
      let width = null;
      if (bar) {
        const styled = bar.style.width;
        if (styled && styled.endsWith('%')) width = parseFloat(styled) / 100;
        else if (bar.parentElement.getBoundingClientRect().width > 0)
          width = bar.getBoundingClientRect().width / bar.parentElement.getBoundingClientRect().width;
      }
      const eta = card.querySelector('.eta') ? card.querySelector('.eta').textContent : null;
      const steps = card.querySelector('.steps');
      const phase = steps ? steps.textContent : null;
      const picture = card.querySelector('img.job-preview');
      const preview = Boolean(picture && !picture.hidden && picture.src.startsWith('data:image/webp'));
      const states = window.__jobStates;
      const last = [...states].reverse().find(s => s.id === card.dataset.jobId);
      if (!last || last.status !== card.dataset.status || last.width !== width || last.eta !== eta
          || last.phase !== phase || last.preview !== preview)
        states.push({id: card.dataset.jobId, status: card.dataset.status, width, eta, phase, preview,
                     t: performance.now()});
    }
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                       characterData: true});
  record();
}"""


def record_job_states(page):
    page.evaluate(RECORDER)


def job_states(page, job_id):
    return [s for s in page.evaluate("window.__jobStates") if s["id"] == job_id]


def images_loaded(page, selector):
    """Wait until every image matching `selector` has loaded with real pixels; return their count."""
    page.wait_for_function(
        """selector => {
             const images = [...document.querySelectorAll(selector)];
             return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
           }""", arg=selector)
    return page.locator(selector).count()


def finished_job(user, workers, **data):
    """A job submitted as the API would and finished by the real workers (for pages that show results)."""
    job, _ = submission.submit(user, data)
    done = workers.wait_for_job(job.pk)
    assert done.status == "completed", (done.status, done.error_message)
    return done


def asset_files(asset):
    """The files a stored image or video has in local storage (the asset and its thumbnail)."""
    name = getattr(asset, "image_path", None) or asset.video_path
    files = [Path(settings.MEDIA_ROOT) / asset.bucket / name]
    if asset.thumbnail_path:
        files.append(Path(settings.MEDIA_ROOT) / asset.bucket / asset.thumbnail_path)
    return files


def record_api_posts(page):
    """The page's POST requests to the API from now on (Playwright Request objects, in order)."""
    posts = []
    page.on("request", lambda request: posts.append(request)
            if request.method == "POST" and urlparse(request.url).path.startswith("/api/") else None)
    return posts


def serve_page_data(page, change):
    """From now on the Workspace ("/") comes with its JSON data (the script's) as change(data) leaves
    it: a page whose data says otherwise than the server, to see what the script reads from it."""

    def handle(route):
        response = route.fetch()
        match = PAGE_DATA.search(response.text())
        assert match, "the Workspace has no workspace-data script"
        data = json.loads(match["json"])
        change(data)
        text = json.dumps(data).translate(JSON_SCRIPT_ESCAPES)
        html = response.text()[:match.start("json")] + text + response.text()[match.end("json"):]
        route.fulfill(response=response, body=html)

    page.route(lambda url: urlparse(url).path == "/", handle)


PAGE_DATA = re.compile(r'<script id="workspace-data" type="application/json">(?P<json>.*?)</script>', re.S)
JSON_SCRIPT_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}  # as json_script writes
