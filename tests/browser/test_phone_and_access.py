"""The pages on a phone (390×844) and for keyboard and low-vision users: every header link in reach,
the new job's card brought into view, a focus ring on the upload control, readable selected segments."""

import re

import pytest
from browser_helpers import card
from playwright.sync_api import expect

from generation import submission
from generation.models import JobStatus

PHONE = {"width": 390, "height": 844}

# Each header link or button: inside the viewport and the element at its centre (not covered).
HEADER_CONTROLS_REACHABLE = """() => [...document.querySelectorAll('.topbar a, .topbar button')].map(el => {
  const box = el.getBoundingClientRect();
  const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  return {text: el.textContent.trim(), inside: box.left >= 0 && box.top >= 0 && box.width > 0
          && box.right <= window.innerWidth && box.bottom <= window.innerHeight,
          reachable: hit !== null && (hit === el || el.contains(hit))};
})"""


@pytest.mark.parametrize("staff", [False, True], ids=["user", "staff"])
def test_the_phone_header_shows_every_link(page, charlie, log_in, screenshot, staff):
    charlie.is_staff = staff
    charlie.save()
    page.set_viewport_size(PHONE)
    log_in(charlie)
    for path in ("/", "/library/"):
        page.goto(path)
        controls = page.evaluate(HEADER_CONTROLS_REACHABLE)
        expected = {"OurVidz", "Workspace", "Library", "Log out"} | ({"Dashboard", "Admin"} if staff else set())
        assert expected <= {c["text"].replace("▶", "").strip() for c in controls}, controls
        assert all(c["inside"] and c["reachable"] for c in controls), controls
    screenshot("header", page.locator("header.topbar"))


def test_on_a_phone_the_new_jobs_card_comes_into_view(page, alice, log_in):
    for _ in range(6):  # earlier jobs below it, so that the page can scroll the new card to the top
        earlier = submission.build_job(alice, "sdxl_image_fast", "an earlier picture")
        earlier.status = JobStatus.CANCELLED
        earlier.save()
    page.set_viewport_size(PHONE)
    log_in(alice)
    page.locator("textarea[name=prompt]").fill("a lighthouse in the fog")
    expect(page.locator(".jobs-header")).not_to_be_in_viewport()  # the list lies below the form
    page.locator("textarea[name=prompt]").press("Control+Enter")  # submits from the prompt, at the top
    new_card = page.locator("#jobs div.job[data-job-id]", has_text="a lighthouse in the fog")
    expect(new_card).to_have_count(1)
    job_id = new_card.get_attribute("data-job-id")
    # Its top in sight, below the sticky header (once the smooth scroll has arrived).
    page.wait_for_function(
        """id => {
             const top = document.querySelector(`#jobs div.job[data-job-id='${id}']`).getBoundingClientRect().top;
             return top >= document.querySelector('header.topbar').getBoundingClientRect().bottom
                    && top < window.innerHeight / 2;
           }""", arg=job_id)
    expect(card(page, job_id)).to_be_in_viewport()


def test_the_upload_control_shows_keyboard_focus(page, alice, log_in, screenshot):
    log_in(alice)
    upload = page.locator("label.upload-button")
    ring = "el => { const s = getComputedStyle(el); return [s.outlineStyle, s.outlineWidth, s.boxShadow].join(' '); }"
    unfocused = upload.evaluate(ring)
    page.locator("select[name=reference_image]").focus()
    page.keyboard.press("Tab")  # a keyboard user's next stop is the upload
    expect(page.locator("#reference-upload")).to_be_focused()
    assert upload.evaluate(ring) != unfocused
    screenshot("focused", page.locator("#reference-section"))


def relative_luminance(rgb):
    """WCAG 2's relative luminance of an sRGB colour (0..255 channels)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in rgb)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(one, other):
    lighter, darker = sorted((relative_luminance(one), relative_luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_selected_segments_and_buttons_are_readable(page, alice, log_in):
    log_in(alice)
    for control in (page.locator(".segmented input:checked + label").first,
                    page.locator("#submit-job")):
        expect(control).to_be_visible()
        colours = control.evaluate("el => { const s = getComputedStyle(el); return [s.color, s.backgroundColor]; }")
        text, background = ([int(v) for v in re.findall(r"\d+", c)[:3]] for c in colours)
        assert contrast_ratio(text, background) >= 4.5, colours
