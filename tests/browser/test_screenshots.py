"""Every page at a desktop and at a phone size: nothing wider than the screen, its heading in view, no
JavaScript error (the page fixture), and a screenshot of each under test-artifacts/screenshots/pages/
(`<page>-<size>.png`; the README's screenshot is the Workspace's)."""

from pathlib import Path

from browser_helpers import finished_job, images_loaded
from playwright.sync_api import expect

from generation.models import Image

SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
PAGES = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots" / "pages"

WIDER_THAN_THE_SCREEN = """() => [...document.querySelectorAll('body *')].filter(el => {
  const box = el.getBoundingClientRect();
  // Inside a box that scrolls sideways on purpose (a code block, a wide table's wrapper) or cuts its text
  // with an ellipsis, overflow is meant.
  for (let up = el.parentElement; up; up = up.parentElement) {
    if (getComputedStyle(up).overflowX !== 'visible') return false;
  }
  return box.width > 0 && box.right > window.innerWidth + 1;
}).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : ''))"""


def visit(page, path, name, heading="h1"):
    """Open `path` at each size; check it fits the screen, then save its screenshot."""
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        page.goto(path)
        expect(page.locator(heading).first).to_be_visible()
        if page.locator("img").count():
            page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{path} scrolls sideways"
        assert page.evaluate(WIDER_THAN_THE_SCREEN) == [], f"{path} at {size}: cut off on the right"
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(PAGES / f"{name}-{size}.png"), full_page=True)


def test_every_page_fits_a_desktop_and_a_phone(page, charlie, log_in, live_workers, live_server,
                                               allow_console_errors):
    PAGES.mkdir(parents=True, exist_ok=True)
    allow_console_errors(r"404 \(Not Found\).*/library/image/999999/")  # the not-found page, on purpose
    charlie.is_staff = True
    charlie.save()
    # The images last: their card comes first in the Workspace (newest first), in view.
    video = finished_job(charlie, live_workers, job_type="video_fast", prompt="waves rolling onto a beach").video
    job = finished_job(charlie, live_workers, job_type="sdxl_image_fast", num_images=3, seed=11,
                       prompt="three lighthouses on a rocky coast at dusk")
    image = Image.objects.get(job=job, image_index=0)

    visit(page, "/accounts/login/", "login")
    log_in(charlie)
    images_loaded(page, "#jobs .results img.result-image")
    visit(page, "/", "workspace", heading="#jobs .job")
    visit(page, "/library/", "library")
    visit(page, f"/library/image/{image.pk}/", "image-detail")
    visit(page, f"/library/video/{video.pk}/", "video-detail")
    visit(page, f"/library/image/{image.pk}/delete/", "delete")
    visit(page, "/account/", "account")
    visit(page, "/dashboard/", "dashboard")
    visit(page, "/library/image/999999/", "not-found")
    visit(page, "/admin/", "admin")
    visit(page, "/api/jobs/", "api", heading=".content-main h1, h1")
    assert len(list(PAGES.glob("*.png"))) >= 2 * 11
