"""The lightbox, favourites and the job zip in a real browser, on results the real workers made: from a Workspace
card (its batch) and from the Library (the page's items), by keyboard, on a phone."""

import io
import re
import zipfile

from browser_helpers import card, images_loaded
from browser_helpers import finished_job as finished
from playwright.sync_api import expect

from generation import storage
from generation.models import Image, ReferenceImage, Video

LIGHTBOX = "dialog.lightbox"


def stored(asset):
    return storage.get_storage().get(asset.bucket, asset.path)


def focused_matches(page, selector):
    return page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector)


def test_a_cards_batch_in_the_lightbox_a_favourite_and_the_zip(page, alice, log_in, live_workers, screenshot):
    job = finished(alice, live_workers, job_type="sdxl_image_fast", prompt="three kites over a hill", num_images=3)
    batch = list(job.images.order_by("image_index"))
    log_in(alice)
    results = card(page, job.pk).locator(".results")
    images_loaded(page, f"#jobs div.job[data-job-id='{job.pk}'] img.result-image")

    # The first picture opens the batch large; the arrows step through it, round at either end.
    opener = results.locator("a.result-open").first
    opener.click()
    lightbox = page.locator(LIGHTBOX)
    expect(lightbox).to_be_visible()
    expect(lightbox.locator(".lightbox-count")).to_have_text("1 of 3")
    expect(lightbox.locator(".lightbox-media img")).to_have_attribute("src", re.compile(re.escape(batch[0].path)))
    images_loaded(page, f"{LIGHTBOX} .lightbox-media img")
    screenshot("workspace-lightbox")
    for key, index in [("ArrowRight", 1), ("ArrowRight", 2), ("ArrowRight", 0), ("ArrowLeft", 2)]:
        page.keyboard.press(key)
        expect(lightbox).to_have_attribute("data-index", str(index))
        expect(lightbox.locator(".lightbox-media img")).to_have_attribute(
            "src", re.compile(re.escape(batch[index].path)))
    expect(lightbox.locator(".lightbox-count")).to_have_text("3 of 3")
    expect(lightbox.locator("a.lightbox-download")).to_have_attribute(
        "href", f"/library/image/{batch[2].pk}/download/")

    # Its star makes the third image a favourite: kept in the database, starred on the card too.
    star = lightbox.locator("button.star")
    expect(star).to_have_attribute("aria-pressed", "false")
    star.click()
    expect(star).to_have_attribute("aria-pressed", "true")
    assert Image.objects.get(pk=batch[2].pk).keep
    assert not Image.objects.get(pk=batch[0].pk).keep

    # Escape closes it, and the focus is back on what opened it.
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    assert focused_matches(page, "a.result-open[data-index='0']")
    stars = results.locator("figure.result button.star")
    expect(stars.nth(2)).to_have_attribute("aria-pressed", "true")
    expect(stars.nth(0)).to_have_attribute("aria-pressed", "false")
    stars.nth(2).click()  # and off again, from the card
    expect(stars.nth(2)).to_have_attribute("aria-pressed", "false")
    assert not Image.objects.get(pk=batch[2].pk).keep

    # "Download all (zip)": every image as stored, and their parameters.
    with page.expect_download() as download:
        results.locator("a.download-zip").click()
    assert download.value.suggested_filename == f"ourvidz-sdxl_image_fast-{job.seed}.zip"
    archive = zipfile.ZipFile(io.BytesIO(open(download.value.path(), "rb").read()))
    names = [f"ourvidz-sdxl_image_fast-{image.seed}-{image.image_index + 1}.png" for image in batch]
    assert archive.namelist() == [*names, "parameters.txt"]
    for name, image in zip(names, batch, strict=True):
        assert archive.read(name) == stored(image)
    assert all(f"{name}\nthree kites over a hill\n" in archive.read("parameters.txt").decode() for name in names)

    # "Use as reference" in the lightbox: the second image becomes the form's reference image.
    results.locator("a.result-open").nth(1).click()
    lightbox.locator("button.lightbox-reference").click()
    expect(lightbox).to_be_hidden()
    expect(page.locator("#upload-status")).to_have_text("Reference set.")
    reference = ReferenceImage.objects.get(user=alice)
    expect(page.locator("select[name=reference_image]")).to_have_value(str(reference.pk))
    assert storage.get_storage().get(ReferenceImage.BUCKET, reference.path) == stored(batch[1])


def test_the_librarys_lightbox_and_its_favourites(page, alice, log_in, live_workers, live_server, screenshot):
    pictures = finished(alice, live_workers, job_type="sdxl_image_fast", prompt="boats at anchor", num_images=3)
    movie = finished(alice, live_workers, job_type="video_fast", prompt="rain on a window")
    video = Video.objects.get(job=movie)
    log_in(alice)
    page.goto("/library/")
    tiles = page.locator(".gallery .tile")
    expect(tiles).to_have_count(4)
    order = tiles.evaluate_all("ts => ts.map(t => `${t.dataset.kind}:${t.dataset.id}`)")
    assets = {f"video:{video.pk}": video, **{f"image:{image.pk}": image for image in pictures.images.all()}}
    assert sorted(order) == sorted(assets) and order[0] == f"video:{video.pk}"  # newest first
    starred, *others = (assets[item] for item in order[1:])

    # The page's items, in its order, one after another; the video plays in the lightbox.
    views = page.locator(".tile button.tile-view")
    views.nth(0).click()
    lightbox = page.locator(LIGHTBOX)
    expect(lightbox).to_be_visible()
    for index, item in [*enumerate(order), (0, order[0])]:
        expect(lightbox).to_have_attribute("data-index", str(index))
        expect(lightbox.locator(".lightbox-media > *")).to_have_attribute(
            "src", re.compile(re.escape(assets[item].path)))
        page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")  # back to the first: the video
    expect(lightbox.locator(".lightbox-media video")).to_have_attribute("src", re.compile(re.escape(video.path)))
    lightbox.locator(".lightbox-media video").evaluate("""v => new Promise((ok, fail) => {
        v.muted = true;
        v.addEventListener('playing', ok, {once: true});
        v.addEventListener('error', () => fail(new Error('video error')), {once: true});
        v.play().catch(fail);
    })""")
    expect(lightbox.locator("button.lightbox-reference")).to_be_hidden()  # a video is no reference
    page.keyboard.press("ArrowLeft")
    expect(lightbox).to_have_attribute("data-index", "3")
    expect(lightbox.locator("button.lightbox-reference")).to_be_visible()
    expect(lightbox.locator("a.lightbox-details")).to_have_attribute(
        "href", "/library/{}/{}/".format(*order[3].split(":")))
    screenshot("library-lightbox")
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    assert focused_matches(page, ".tile:first-child button.tile-view")

    # Stars on two tiles: the Favourites filter shows exactly those, and the database keeps them.
    page.locator(f".tile[data-kind=video][data-id='{video.pk}'] button.star").click()
    image_star = page.locator(f".tile[data-kind=image][data-id='{starred.pk}'] button.star")
    image_star.click()
    expect(image_star).to_have_attribute("aria-pressed", "true")
    expect(page.locator(f".tile[data-kind=video][data-id='{video.pk}'] button.star")).to_have_attribute(
        "aria-pressed", "true")
    assert Video.objects.get(pk=video.pk).keep and Image.objects.get(pk=starred.pk).keep
    assert not any(Image.objects.filter(pk__in=[other.pk for other in others], keep=True))
    page.locator("a.show-favourites").click()
    page.wait_for_url(re.compile(r"/library/\?favourites=1$"))
    expect(page.locator("a.show-favourites")).to_have_attribute("aria-current", "page")
    expect(tiles).to_have_count(2)
    assert sorted(tiles.evaluate_all("ts => ts.map(t => `${t.dataset.kind}:${t.dataset.id}`)")) == sorted(
        [f"video:{video.pk}", f"image:{starred.pk}"])
    screenshot("favourites")

    # Unstarred in the lightbox: no longer a favourite, here and in the database.
    views.nth(0).click()
    star = lightbox.locator("button.star")
    expect(star).to_have_attribute("aria-pressed", "true")
    star.click()
    expect(star).to_have_attribute("aria-pressed", "false")
    assert not Video.objects.get(pk=video.pk).keep
    page.keyboard.press("Escape")
    page.reload()
    expect(tiles).to_have_count(1)

    # On a phone the lightbox fills the screen and its close button is at hand.
    page.set_viewport_size({"width": 390, "height": 844})
    views.nth(0).click()
    expect(lightbox).to_be_visible()
    box = lightbox.bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844
    close = lightbox.locator("button.lightbox-close").bounding_box()
    assert close["width"] >= 40 and close["height"] >= 40 and close["x"] + close["width"] <= 390 and close["y"] >= 0
    screenshot("phone-lightbox")
    lightbox.locator("button.lightbox-close").click()
    expect(lightbox).to_be_hidden()

    # "Use as reference" from the Library's lightbox opens the Workspace with it as the reference.
    views.nth(0).click()
    lightbox.locator("button.lightbox-reference").click()
    page.wait_for_url(re.compile(re.escape(live_server.url) + r"/\?reference_image=\d+$"))
    reference = ReferenceImage.objects.get(user=alice)
    expect(page.locator("select[name=reference_image]")).to_have_value(str(reference.pk))

