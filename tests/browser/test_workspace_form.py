"""The Workspace form in a real browser: errors next to their fields (worded from the API's error codes
and the page's limits), controls that follow the job type (expected time, quantity, enhance,
references), the negative-prompt preview, reference images (upload, a previous result, use and
strength), reusing a result's seed, and the script itself (ES modules, no build step)."""

import io
import json
import re
from pathlib import Path
from urllib.parse import urlparse

from browser_helpers import (
    card,
    choose,
    expect_checked,
    finished_job,
    record_api_posts,
    serve_page_data,
    submit_job,
)
from PIL import Image as PILImage
from playwright.sync_api import expect

from generation import job_types, negative_prompts, references, storage, submission
from generation.models import Job, JobStatus, ReferenceImage

FINISH_MS = 90_000
MODULES = Path(__file__).resolve().parents[2] / "generation" / "static" / "ourvidz" / "workspace"


def field_error(page, name):
    return page.locator(f"#job-form .field-error[data-field='{name}']")


def png(size=(48, 32), color=(30, 120, 200)):
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def expected(page):
    box = page.locator("#expected-time")
    return box.get_attribute("data-job-type"), float(box.get_attribute("data-seconds"))


# Chromium logs each 400 answer as a console error: the ones these tests provoke are expected.
BAD_REQUEST = r"status of 400 \(Bad Request\) \(http://[^/]+/api/(jobs|references|images/\d+/reference)/:"


def assert_asked_for_error_codes(posts):
    """Each POST asked for coded errors (X-Error-Codes: 1), which the page words itself."""
    assert posts, "no POST to the API"
    for request in posts:
        assert request.all_headers().get("x-error-codes") == "1", (request.url, request.all_headers())


def test_errors_show_next_to_their_fields(page, alice, log_in, screenshot, allow_console_errors):
    allow_console_errors(BAD_REQUEST)
    log_in(alice)
    page.locator("button#submit-job").click()
    expect(field_error(page, "prompt")).to_have_text("Describe what you want to generate.")
    expect(page.locator("textarea[name=prompt]")).to_have_attribute("aria-invalid", "true")

    page.locator("textarea[name=prompt]").fill("a quiet harbour at dawn")
    expect(field_error(page, "prompt")).to_have_text("")  # typing clears the field's error
    choose(page, "seed_mode", "fixed")
    page.locator("button#submit-job").click()
    expect(field_error(page, "seed")).to_have_text("Enter a seed, or choose Random.")

    page.locator("input[name=seed]").fill("99999999999")
    page.locator("button#submit-job").click()  # the server's answer, reworded for people
    expect(field_error(page, "seed")).to_have_text("Must be 4294967295 or less.")
    expect(page.locator("input[name=seed]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-errors")).to_be_hidden()
    screenshot("errors", page.locator("#job-form"))
    assert not Job.objects.exists()

    page.locator("input[name=seed]").fill("42")
    job_id = submit_job(page)
    expect(field_error(page, "seed")).to_have_text("")
    assert Job.objects.get(pk=job_id).seed == 42


def test_no_credits_left_is_said_next_to_the_button_and_the_balance_follows(page, alice, log_in,
                                                                           allow_console_errors):
    from generation import credits

    allow_console_errors(r"status of 402")
    credits.grant(alice, -999, "test")  # one credit left: one sdxl_image_fast job
    log_in(alice)
    expect(page.locator("#credits-balance")).to_have_text("1 credit")
    page.locator("textarea[name=prompt]").fill("a quiet harbour at dawn")
    submit_job(page)
    expect(page.locator("#credits-balance")).to_have_text("0 credits")
    page.locator("button#submit-job").click()
    expect(page.locator("#form-errors")).to_have_text(
        "This job costs 1 credit and you have 0. Ask an administrator for more credits; your balance is on the "
        "Account page.")
    assert Job.objects.filter(user=alice).count() == 1


def test_controls_follow_the_job_type(page, alice, log_in):
    log_in(alice)
    assert expected(page) == ("sdxl_image_fast", job_types.get("sdxl_image_fast").expected_total(1))
    choose(page, "num_images", "3")
    assert expected(page) == ("sdxl_image_fast", job_types.get("sdxl_image_fast").expected_total(3))
    expect(page.locator("#expected-time")).to_contain_text("About 12 s")
    price = job_types.get("sdxl_image_fast").credits
    expect(page.locator("button#submit-job")).to_have_text(f"Generate 3 images · {price} credit{'s' * (price != 1)}")
    expect(page.locator("input[name=enhanced]")).to_be_disabled()  # enhancing is WAN's

    choose(page, "model", "wan")  # WAN makes one image per job
    expect_checked(page, "num_images", "1")
    for n in ("3", "6"):
        expect(page.locator(f"input[name=num_images][value='{n}']")).to_be_disabled()
    expect(page.locator("#num-images-hint")).to_have_text("WAN makes one image per job.")
    assert expected(page) == ("image_fast", job_types.get("image_fast").expected_seconds)
    page.locator("label.switch[for=enhanced]").click()
    expect(page.locator("input[name=enhanced]")).to_be_checked()
    assert expected(page) == ("image7b_fast_enhanced", job_types.get("image7b_fast_enhanced").expected_seconds)

    choose(page, "kind", "video")
    expect(page.locator("input[name=model][value=sdxl]")).to_be_disabled()
    choose(page, "quality", "high")
    assert expected(page) == ("video7b_high_enhanced", job_types.get("video7b_high_enhanced").expected_seconds)
    price = job_types.get("video7b_high_enhanced").credits
    expect(page.locator("button#submit-job")).to_have_text(f"Generate video · {price} credits")


def test_negative_prompt_preview_is_what_submission_uses(page, alice, log_in):
    log_in(alice)
    prompt = "two women walking on a beach at sunset"
    page.locator("textarea[name=prompt]").fill(prompt)
    page.locator("textarea[name=negative_prompt]").fill("watermark")
    built = negative_prompts.build(prompt, "watermark")
    preview = page.locator("#negative-preview")
    expect(preview.locator(".np-text")).to_have_text(built.text)
    expect(preview.locator(".np-group")).to_contain_text(built.multi_party[0])

    job_id = submit_job(page)
    assert Job.objects.get(pk=job_id).negative_prompt == built.text

    choose(page, "model", "wan")  # WAN jobs carry only the user's own negative prompt
    expect(preview.locator(".np-note").first).to_have_text("WAN uses only your own negative prompt.")
    expect(preview.locator(".np-text")).to_have_text("watermark")


def test_upload_a_reference_and_use_it(page, alice, log_in, screenshot, allow_console_errors):
    allow_console_errors(BAD_REQUEST)
    log_in(alice)
    posts = record_api_posts(page)
    picker = page.locator("select[name=reference_image]")  # disabled with its fieldset where unsupported
    expect(picker).to_be_enabled()

    page.locator("#reference-upload").set_input_files(
        files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not a picture"}])
    expect(page.locator("#job-form .field-error[data-field='file']")).to_have_text(
        "That file is not an image we can read. Upload a PNG, JPEG or WebP picture.")  # code "unreadable"
    assert not ReferenceImage.objects.exists()
    assert_asked_for_error_codes(posts)

    page.locator("#reference-upload").set_input_files(
        files=[{"name": "harbour.png", "mimeType": "image/png", "buffer": png()}])
    expect(picker.locator("option:checked")).to_have_text("harbour.png · 48×32")
    expect(page.locator("#job-form .field-error[data-field='file']")).to_have_text("")
    expect(page.locator("img#reference-preview")).to_be_visible()
    ref = ReferenceImage.objects.get(user=alice)
    assert picker.input_value() == str(ref.pk)

    page.locator("select[name=reference_type]").select_option("style")
    page.locator("input[name=reference_strength]").fill("0.5")
    expect(page.locator("#strength-value")).to_have_text("0.5")
    page.locator("textarea[name=prompt]").fill("a harbour in the style of the reference")
    screenshot("reference", page.locator("#reference-section"))
    job_id = submit_job(page)
    expect(card(page, job_id)).to_have_attribute("data-status", "completed", timeout=FINISH_MS)
    expect(card(page, job_id).locator(".job-meta")).to_contain_text("style reference")
    job = Job.objects.get(pk=job_id)
    assert (job.reference_image_id, job.reference_type, job.reference_strength) == (ref.pk, "style", 0.5)
    assert job.images.count() == 1
    assert_asked_for_error_codes(posts)

    # Offered only where the pool takes references: not for WAN images; only as the first frame of a video.
    choose(page, "model", "wan")
    expect(picker).to_be_disabled()
    expect(page.locator("#reference-hint")).to_contain_text("WAN images can't start from a reference image")
    choose(page, "kind", "video")
    expect(picker).to_be_enabled()
    reference_types = page.locator("select[name=reference_type]")
    expect(reference_types).to_have_value("composition")
    for unavailable in ("style", "character"):
        expect(reference_types.locator(f"option[value={unavailable}]")).to_be_disabled()


def test_reuse_a_results_seed_and_use_it_as_reference(page, alice, log_in, live_workers, screenshot,
                                                      settings, allow_console_errors):
    allow_console_errors(BAD_REQUEST)
    job = finished_job(alice, live_workers, job_type="sdxl_image_fast", prompt="a lantern on a table",
                       num_images=3)
    second = job.images.get(image_index=1)
    log_in(alice)
    result = card(page, job.pk).locator("figure.result").nth(1)
    expect(result.locator("img.result-image")).to_be_visible()

    result.locator("button.reuse-seed").click()
    expect_checked(page, "seed_mode", "fixed")
    expect(page.locator("input[name=seed]")).to_have_value(str(second.seed))

    result.hover()
    screenshot("result-actions", card(page, job.pk))
    posts = record_api_posts(page)
    pixels = settings.REFERENCE_MAX_PIXELS
    settings.REFERENCE_MAX_PIXELS = 16  # the server refuses it (code "too_many_pixels"), the page says why
    result.locator("button.use-reference").click()
    expect(field_error(page, "reference_image")).to_have_text("That image has too many pixels to use as a reference.")
    assert not ReferenceImage.objects.exists()
    settings.REFERENCE_MAX_PIXELS = pixels
    result.locator("button.use-reference").click()
    expect(page.locator("#upload-status")).to_have_text("Reference set.")
    ref = ReferenceImage.objects.get(user=alice)
    expect(page.locator("select[name=reference_image]")).to_have_value(str(ref.pk))
    expect(page.locator("select[name=reference_image] option:checked")).to_contain_text("a lantern on a table")
    backend = storage.get_storage()
    assert backend.get(ReferenceImage.BUCKET, ref.path) == backend.get(second.bucket, second.image_path)
    expect(field_error(page, "reference_image")).to_have_text("")
    assert_asked_for_error_codes(posts)


def test_errors_of_crafted_requests_are_worded_from_their_codes(page, alice, log_in, allow_console_errors):
    """What the form cannot ask for (a WAN job with 3 outputs, a style reference for a video) comes back
    as codes (single_output, unsupported) that the page words from its job types and limits, not the
    server's messages (which name job types and fields by their identifiers)."""
    allow_console_errors(BAD_REQUEST)
    ref = references.store_reference(alice, png(), "harbour.png")
    log_in(alice)
    sent = []

    def craft(route):  # the quantity controls offer a video 1 only
        body = {**route.request.post_data_json, "num_images": 3}
        sent.append((route.request.all_headers(), body))
        route.continue_(post_data=json.dumps(body))

    page.route(lambda url: urlparse(url).path == "/api/jobs/", craft)
    choose(page, "kind", "video")
    page.locator("textarea[name=prompt]").fill("waves rolling onto a beach")
    page.locator("select[name=reference_image]").select_option(str(ref.pk))
    reference_types = page.locator("select[name=reference_type]")
    expect(reference_types.locator("option[value=style]")).to_be_disabled()  # so: chosen behind the page's back
    reference_types.evaluate("select => { select.value = 'style'; }")
    page.locator("button#submit-job").click()
    expect(field_error(page, "num_images")).to_have_text(
        "WAN video · fast makes one video per job; only SDXL types make 3 or 6.")
    expect(field_error(page, "reference_type")).to_have_text(
        "Style references are not available for WAN video · fast on this server now; use composition.")
    expect(page.locator("#form-errors")).to_be_hidden()
    [(headers, body)] = sent
    assert headers.get("x-error-codes") == "1"
    assert (body["job_type"], body["reference_image"], body["reference_type"]) == ("video_fast", ref.pk, "style")
    assert not Job.objects.exists()


def test_too_long_prompt_and_seed_limits_come_from_the_page_data(page, alice, log_in, allow_console_errors):
    allow_console_errors(BAD_REQUEST)
    log_in(alice)
    prompt = page.locator("textarea[name=prompt]")
    expect(page.locator("#prompt-counter")).to_have_text(f"0 / {job_types.PROMPT_MAX_LENGTH}")
    prompt.evaluate("t => t.removeAttribute('maxlength')")  # the server decides, whatever a browser lets through
    prompt.fill("a" * (job_types.PROMPT_MAX_LENGTH + 1))
    page.locator("button#submit-job").click()
    expect(field_error(page, "prompt")).to_have_text(f"Too long: {job_types.PROMPT_MAX_LENGTH} characters at most.")

    # The numbers are the page data's, not the script's: a page whose data says otherwise says otherwise.
    serve_page_data(page, lambda data: data["limits"].update(prompt_max_length=1234, max_seed=5678))
    page.goto("/")
    expect(page.locator("#prompt-counter")).to_have_text("1234 / 1234")  # the draft, cut to this page's limit
    prompt.evaluate("t => t.removeAttribute('maxlength')")
    prompt.fill("a" * (job_types.PROMPT_MAX_LENGTH + 1))
    choose(page, "seed_mode", "fixed")
    page.locator("input[name=seed]").fill(str(job_types.MAX_SEED + 1))
    page.locator("button#submit-job").click()
    expect(field_error(page, "prompt")).to_have_text("Too long: 1234 characters at most.")
    expect(field_error(page, "seed")).to_have_text("Must be 5678 or less.")
    assert not Job.objects.exists()


def test_a_long_paste_cut_to_the_prompt_limit_says_so(page, alice, log_in):
    log_in(alice)
    prompt = page.locator("textarea[name=prompt]")
    prompt.fill("a" * 9200)  # as a paste: all of it at once
    expect(prompt).to_have_value("a" * job_types.PROMPT_MAX_LENGTH)
    expect(field_error(page, "prompt")).to_have_text(
        f"Cut to {job_types.PROMPT_MAX_LENGTH} characters: a prompt holds {job_types.PROMPT_MAX_LENGTH} at most, "
        "and this one would have had 9200.")
    prompt.fill("a short prompt again")  # what fits says nothing
    expect(field_error(page, "prompt")).to_have_text("")

    # A real paste from the clipboard, into a box that already holds some text.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.evaluate("text => navigator.clipboard.writeText(text)", "b" * 9200)
    prompt.press("End")
    prompt.press("ControlOrMeta+V")
    expect(prompt).to_have_value("a short prompt again" + "b" * (job_types.PROMPT_MAX_LENGTH - 20))
    expect(field_error(page, "prompt")).to_contain_text("and this one would have had 9220.")

    # Into a box already full, a paste changes nothing (and sends no input event): it still says so.
    prompt.press("Backspace")
    prompt.press("x")
    expect(field_error(page, "prompt")).to_have_text("")
    page.evaluate("text => navigator.clipboard.writeText(text)", "ccc")
    prompt.press("ControlOrMeta+V")
    expect(field_error(page, "prompt")).to_contain_text(
        f"and this one would have had {job_types.PROMPT_MAX_LENGTH + 3}.")
    expect(prompt).to_have_value("a short prompt again" + "b" * (job_types.PROMPT_MAX_LENGTH - 21) + "x")


def test_too_large_upload_says_both_sizes(page, alice, log_in, settings, allow_console_errors):
    allow_console_errors(BAD_REQUEST)
    settings.REFERENCE_MAX_BYTES = 300_000  # the page data tells the script the same limit
    log_in(alice)
    posts = record_api_posts(page)
    page.locator("#reference-upload").set_input_files(
        files=[{"name": "big.png", "mimeType": "image/png", "buffer": bytes(600_000)}])
    expect(field_error(page, "file")).to_have_text("That file is too large (0.6 MB); the limit is 0.3 MB.")
    assert not ReferenceImage.objects.exists()
    assert_asked_for_error_codes(posts)


def test_the_script_runs_as_modules(page, alice, log_in):
    """The Workspace loads its script as ES modules from static/ourvidz/workspace/ (no build step): every
    module there arrives as JavaScript, the old single file is not asked for, and the page comes alive.
    A module that fails to load or to link shows as a console error, which fails the test too."""
    answers = {}
    page.on("response", lambda response: answers.setdefault(
        urlparse(response.url).path, (response.status, response.headers.get("content-type", ""))))
    log_in(alice)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#expected-time")).to_have_attribute("data-job-type", "sdxl_image_fast")
    scripts = page.locator("script[src]")
    assert scripts.evaluate_all("ss => ss.map(s => [s.getAttribute('src'), s.type])") == [
        ["/static/ourvidz/workspace/main.js", "module"]]
    assert "/static/ourvidz/workspace.js" not in answers
    modules = {f"/static/ourvidz/workspace/{path.name}" for path in MODULES.glob("*.js")}
    assert "/static/ourvidz/workspace/main.js" in modules
    loaded = {path: answer for path, answer in answers.items() if path.startswith("/static/ourvidz/workspace/")}
    assert set(loaded) == modules, "every module is used, and only those"
    for path, (status, content_type) in loaded.items():
        assert status == 200 and "javascript" in content_type, (path, status, content_type)


def test_the_form_is_remembered_across_reloads_per_user_and_resets(page, alice, bob, log_in, settings):
    settings.EVENT_STREAMS_PER_USER = 20  # a closed page's stream ends at its next heartbeat: many loads here
    ref = references.store_reference(alice, png(), "harbour.png")
    log_in(alice)
    choose(page, "kind", "video")  # so WAN
    choose(page, "quality", "high")
    page.locator("label.switch[for=enhanced]").click()
    page.locator("select[name=aspect_ratio]").select_option("16:9")
    page.locator("input[name=seed]").fill("1234")  # typing a seed chooses "Fixed"
    page.locator("textarea[name=negative_prompt]").fill("blurry")
    page.locator("select[name=reference_image]").select_option(str(ref.pk))
    page.locator("input[name=reference_strength]").fill("0.4")
    page.locator("textarea[name=prompt]").fill("a draft not sent yet")

    def expect_remembered():
        for name, value in [("kind", "video"), ("model", "wan"), ("quality", "high"), ("seed_mode", "fixed")]:
            expect_checked(page, name, value)
        expect(page.locator("input[name=enhanced]")).to_be_checked()
        expect(page.locator("select[name=aspect_ratio]")).to_have_value("16:9")
        expect(page.locator("input[name=seed]")).to_have_value("1234")
        expect(page.locator("textarea[name=negative_prompt]")).to_have_value("blurry")
        expect(page.locator("select[name=reference_image]")).to_have_value(str(ref.pk))
        expect(page.locator("#strength-value")).to_have_text("0.4")
        expect(page.locator("#expected-time")).to_have_attribute("data-job-type", "video7b_high_enhanced")

    page.reload()
    expect(page.locator("textarea[name=prompt]")).to_have_value("a draft not sent yet")
    expect_remembered()

    # The Library's links fill in what they carry; the rest is as it was left.
    page.goto("/?prompt=from+the+library&seed=7")
    expect(page.locator("textarea[name=prompt]")).to_have_value("from the library")
    expect(page.locator("input[name=seed]")).to_have_value("7")
    expect_checked(page, "quality", "high")
    expect(page.locator("textarea[name=negative_prompt]")).to_have_value("blurry")

    # What the page no longer offers is not restored (a retired job type, a ratio or seed out of range).
    page.evaluate("""key => localStorage.setItem(key, JSON.stringify({version: 1, form: {
        job_type: 'retired_type', aspect_ratio: '4:3', seed: '-5', seed_mode: 'fixed', prompt: 'kept'}}))""",
                  f"ourvidz.workspace.form.{alice.pk}")
    page.goto("/")
    expect(page.locator("textarea[name=prompt]")).to_have_value("kept")
    expect(page.locator("#expected-time")).to_have_attribute("data-job-type", "sdxl_image_fast")
    expect(page.locator("select[name=aspect_ratio]")).to_have_value("1:1")
    expect(page.locator("input[name=seed]")).to_have_value("")

    # "Reset form": the defaults and an empty prompt, which a reload keeps.
    page.locator("textarea[name=prompt]").fill("a draft")
    choose(page, "model", "wan")
    page.locator("#reset-form").click()
    expect(page.locator("textarea[name=prompt]")).to_have_value("")
    expect(page.locator("textarea[name=prompt]")).to_be_focused()
    page.reload()
    expect(page.locator("#expected-time")).to_have_attribute("data-job-type", "sdxl_image_fast")
    expect_checked(page, "seed_mode", "random")
    expect(page.locator("textarea[name=prompt]")).to_have_value("")

    # Kept per user: another user in this browser starts from the defaults.
    page.locator("textarea[name=prompt]").fill("alice's draft")
    serve_page_data(page, lambda data: data.update(user_id=bob.pk))
    page.goto("/")
    expect(page.locator("#expected-time")).to_have_attribute("data-job-type", "sdxl_image_fast")
    expect(page.locator("textarea[name=prompt]")).to_have_value("")


def test_logging_out_forgets_the_remembered_form(page, alice, log_in):
    # On a shared computer, the next person must not find alice's draft.
    log_in(alice)
    page.locator("textarea[name=prompt]").fill("alice's private draft")
    key = f"ourvidz.workspace.form.{alice.pk}"
    page.wait_for_function("key => (localStorage.getItem(key) || '').includes('private draft')", arg=key)
    page.locator("form.account button[type=submit]").click()
    page.wait_for_url("**/accounts/login/")
    assert page.evaluate("key => localStorage.getItem(key)", key) is None


def test_reuse_settings_from_a_card_overrides_and_is_remembered(page, alice, log_in):
    job = submission.build_job(alice, "image_high", "a lighthouse in fog", seed=31337, aspect_ratio="16:9")
    job.status = JobStatus.COMPLETED
    job.save(force_insert=True)
    log_in(alice)
    page.locator("textarea[name=prompt]").fill("my draft")
    choose(page, "num_images", "6")
    card(page, job.pk).locator("button.reuse-settings").click()
    expect(page.locator("textarea[name=prompt]")).to_have_value("a lighthouse in fog")
    page.reload()
    expect(page.locator("textarea[name=prompt]")).to_have_value("a lighthouse in fog")
    expect(page.locator("#expected-time")).to_have_attribute("data-job-type", "image_high")
    expect(page.locator("input[name=seed]")).to_have_value("31337")
    expect(page.locator("select[name=aspect_ratio]")).to_have_value("16:9")
    expect_checked(page, "num_images", "1")


def test_recent_prompts_are_chosen_with_the_keyboard(page, alice, bob, log_in, screenshot):
    for user, prompt in [(alice, "a red door"), (bob, "bob's own prompt"), (alice, "a harbour at dawn")]:
        job = submission.build_job(user, "sdxl_image_fast", prompt)
        job.status = JobStatus.COMPLETED
        job.save(force_insert=True)
    log_in(alice)
    button = page.locator("#recent-prompts-button")
    listbox = page.get_by_role("listbox", name="Recent prompts")
    expect(listbox).to_be_hidden()
    button.focus()
    page.keyboard.press("Enter")
    expect(listbox).to_be_focused()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(listbox.get_by_role("option")).to_have_text(["a harbour at dawn", "a red door"])  # not bob's
    expect(listbox.get_by_role("option", selected=True)).to_have_text("a harbour at dawn")
    screenshot("recent-prompts", page.locator("#job-form"))
    page.keyboard.press("Escape")
    expect(listbox).to_be_hidden()
    expect(button).to_be_focused()

    page.keyboard.press("ArrowDown")  # opens it too
    page.keyboard.press("ArrowDown")
    expect(listbox.get_by_role("option", selected=True)).to_have_text("a red door")
    page.keyboard.press("Enter")
    expect(listbox).to_be_hidden()
    prompt = page.locator("textarea[name=prompt]")
    expect(prompt).to_have_value("a red door")
    expect(prompt).to_be_focused()
    expect(page.locator("#prompt-counter")).to_have_text(f"10 / {job_types.PROMPT_MAX_LENGTH}")

    # A prompt sent from here comes first.
    prompt.fill("a lantern on a table")
    submit_job(page)
    button.click()
    expect(listbox.get_by_role("option")).to_have_text(["a lantern on a table", "a harbour at dawn", "a red door"])
    listbox.get_by_role("option", name="a harbour at dawn").click()
    expect(prompt).to_have_value("a harbour at dawn")


# A file given to the page as a drop or a paste would give it (DataTransfer and ClipboardEvent).
GIVE_FILE = """([how, bytes, name]) => {
  const data = new DataTransfer();
  data.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/png'}));
  const section = document.querySelector('#reference-section');
  const options = {dataTransfer: data, bubbles: true, cancelable: true};
  if (how === 'drag') {
    section.dispatchEvent(new DragEvent('dragenter', options));
    section.dispatchEvent(new DragEvent('dragover', options));
    window.__dragged = data;
  } else if (how === 'drop') {
    // The data dragged over before, else this file.
    section.dispatchEvent(new DragEvent('drop', {...options, dataTransfer: bytes.length ? data : window.__dragged}));
  } else {
    document.activeElement.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                                                      cancelable: true}));
  }
}"""


def test_drop_or_paste_an_image_to_set_the_reference(page, alice, log_in, screenshot, allow_console_errors):
    allow_console_errors(BAD_REQUEST)
    log_in(alice)
    section = page.locator("#reference-section")
    picker = page.locator("select[name=reference_image]")

    page.evaluate(GIVE_FILE, ["drag", list(png()), "dropped.png"])
    expect(section).to_have_class(re.compile(r"\bdrop-target\b"))  # lit up while dragged over
    screenshot("drop-target", section)
    page.evaluate(GIVE_FILE, ["drop", [], ""])
    expect(section).not_to_have_class(re.compile(r"\bdrop-target\b"))
    expect(picker.locator("option:checked")).to_have_text("dropped.png · 48×32")
    expect(page.locator("img#reference-preview")).to_be_visible()
    dropped = ReferenceImage.objects.get(user=alice)

    page.evaluate(GIVE_FILE, ["drop", list(b"this is not a picture"), "notes.png"])  # checked as uploads are
    expect(field_error(page, "file")).to_have_text(
        "That file is not an image we can read. Upload a PNG, JPEG or WebP picture.")
    expect(picker).to_have_value(str(dropped.pk))

    # Pasted while no text box has the focus (here: the Generate button); a text box keeps its own pastes.
    page.locator("textarea[name=prompt]").focus()
    page.evaluate(GIVE_FILE, ["paste", list(png(color=(10, 200, 10))), "ignored.png"])
    page.locator("textarea[name=prompt]").fill("a harbour like the pasted one")
    page.locator("button#submit-job").focus()
    page.evaluate(GIVE_FILE, ["paste", list(png(color=(200, 40, 40))), "image.png"])
    expect(picker.locator("option:checked")).to_have_text("image.png · 48×32")
    expect(field_error(page, "file")).to_have_text("")
    pasted = ReferenceImage.objects.exclude(pk=dropped.pk).get(user=alice)
    assert picker.input_value() == str(pasted.pk)
    job_id = submit_job(page)
    assert Job.objects.get(pk=job_id).reference_image_id == pasted.pk

    choose(page, "model", "wan")  # WAN images take no reference: no drop target then
    page.evaluate(GIVE_FILE, ["drag", list(png()), "dropped.png"])
    expect(section).not_to_have_class(re.compile(r"\bdrop-target\b"))
    page.evaluate(GIVE_FILE, ["drop", [], ""])
    assert ReferenceImage.objects.filter(user=alice).count() == 2


def test_rules_are_said_in_words_beside_the_controls_they_turn_off(page, alice, log_in, screenshot):
    log_in(alice)
    rules = {name: page.locator(f"#{name}") for name in (
        "kind-rule", "model-rule", "enhance-rule", "num-images-hint", "reference-hint", "reference-type-rule")}

    def expect_rules(**texts):
        for name, rule in rules.items():
            text = texts.get(name.replace("-", "_"), "")
            if text:
                expect(rule).to_be_visible()
                expect(rule).to_have_text(text)
            else:
                expect(rule).to_be_hidden()

    enhanced = page.locator("input[name=enhanced]")
    expect_rules(kind_rule="SDXL makes images only.", enhance_rule="Enhance is for WAN jobs.")
    expect(enhanced).to_be_disabled()
    expect(enhanced).to_have_accessible_description("Enhance is for WAN jobs.")
    screenshot("rules-sdxl", page.locator("#job-form"))

    choose(page, "model", "wan")
    expect_rules(num_images_hint="WAN makes one image per job.",
                 reference_hint="WAN images can't start from a reference image. Choose SDXL, or make a video.")
    expect(page.locator("input[name=num_images][value='3']")).to_have_accessible_description(
        "WAN makes one image per job.")
    expect(page.locator("select[name=reference_image]")).to_have_accessible_description(
        "WAN images can't start from a reference image. Choose SDXL, or make a video.")

    choose(page, "kind", "video")
    expect_rules(model_rule="SDXL makes images only.", num_images_hint="WAN makes one video per job.",
                 reference_type_rule="WAN video · fast takes composition references only.")
    expect(page.locator("input[name=model][value=sdxl]")).to_have_accessible_description("SDXL makes images only.")
    screenshot("rules-video", page.locator("#job-form"))

    choose(page, "kind", "image")
    choose(page, "model", "sdxl")
    expect_rules(kind_rule="SDXL makes images only.", enhance_rule="Enhance is for WAN jobs.")
