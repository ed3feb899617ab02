"""The Library pages: a user's own images and videos, filters, pagination, detail, delete."""

import re
from datetime import datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image as PILImage

from generation import storage, submission
from generation.models import Image, Job, JobStatus, ReferenceImage, Video
from generation.worker import images, runtime

pytestmark = pytest.mark.django_db

TILE = re.compile(r'<div class="tile" data-kind="(image|video)" data-id="(\d+)">')


def generate(kind="image", enhanced=None):
    """A plain `generate` for the shared runtime: flat pictures (one per image), or one fake MP4."""
    def run_it(run):
        job = run.job
        run.metadata.update(sampler="TestScheduler", model="test-model", device="cpu", dtype="float32")
        if enhanced:
            run.fields["enhanced_prompt"] = enhanced
        picture = PILImage.new("RGB", (job.width, job.height), "purple")
        if kind == "video":
            meta = {"fps": 16, "frame_count": 9, "duration": 0.5625, "codec": "h264", "seed": job.seed}
            return [runtime.Output(b"not really an mp4", "mp4", picture, job.width, job.height, metadata=meta)]
        return [runtime.Output(images.encode_png(picture, "p"), "png", picture, picture.width, picture.height,
                               index=i, metadata={"seed": job.seed + i}) for i in range(job.num_images)]
    return run_it


def generated(user, job_type="sdxl_image_fast", prompt="a lighthouse at dusk", enhanced=None, **kwargs):
    """Run a job through the shared runtime (rows, files and thumbnails as workers make them)."""
    job = submission.build_job(user, job_type, prompt, **kwargs)
    job.save()
    kind = "video" if job.format == "mp4" else "image"
    runtime.run(job.pk, "sdxl" if job_type.startswith("sdxl") else "wan", generate(kind, enhanced))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    return job


def bulk_assets(user, specs):
    """Rows only (no files), fast: one job and one image or video per spec (kind, quality, prompt, created_at)."""
    jobs, assets = [], []
    for spec in specs:
        kind, quality = spec.get("kind", "image"), spec.get("quality", "fast")
        job = submission.build_job(user, f"{kind}_{quality}", spec.get("prompt", "a prompt"))
        job.status, job.created_at = JobStatus.COMPLETED, spec["created_at"]
        jobs.append(job)
    Job.objects.bulk_create(jobs)
    images_, videos = [], []
    for job in jobs:
        common = {"user": user, "job": job, "prompt": job.prompt, "bucket": job.type.bucket,
                  "quality": job.quality, "format": job.format, "width": 32, "height": 48,
                  "created_at": job.created_at}
        if job.format == "mp4":
            videos.append(Video(**common, video_path=f"{user.pk}/{job.pk}.mp4",
                                thumbnail_path=f"{user.pk}/{job.pk}.thumb.webp", duration=5.06, fps=16,
                                frame_count=81))
        else:
            images_.append(Image(**common, image_path=f"{user.pk}/{job.pk}_0.png",
                                 thumbnail_path=f"{user.pk}/{job.pk}_0.thumb.webp", seed=job.seed))
    Image.objects.bulk_create(images_)
    Video.objects.bulk_create(videos)
    assets.extend(images_ + videos)
    return assets


def tiles(response):
    assert response.status_code == 200
    return [(kind, int(pk)) for kind, pk in TILE.findall(response.content.decode())]


def key(asset):
    return ("video" if isinstance(asset, Video) else "image", asset.pk)


def at(day, hour=12):
    return timezone.make_aware(datetime(2026, 3, day, hour))


def test_login_required(client):
    response = client.get("/library/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_index_lists_only_the_users_assets_newest_first_with_thumbnails(alice_client, alice, bob):
    batch = generated(alice, num_images=3, prompt="three foxes in snow")
    movie = generated(alice, "video_fast", prompt="waves on a rock")
    generated(bob, prompt="someone else's picture")
    response = alice_client.get("/library/")
    shown = tiles(response)
    mine = [("video", movie.video.pk)] + [("image", i.pk) for i in batch.images.order_by("-created_at", "-id")]
    assert shown == mine
    html = response.content.decode()
    assert "someone else" not in html and "three foxes in snow" in html and "waves on a rock" in html
    assert html.count('class="tile-link"') == 4 and "video-marker" in html
    assert "WAN video · fast" in html and "video_fast" not in html  # the job type as people read it
    # Every thumbnail is a signed URL of the asset's own thumbnail, and it serves.
    thumbs = [unescape(src) for src in re.findall(r'<img src="([^"]+)"', html)]
    assert len(thumbs) == 4
    for image in batch.images.all():
        assert any(f"/{image.bucket}/{image.thumbnail_path}?" in src for src in thumbs)
    for src in thumbs:
        served = alice_client.get(urlsplit(src).path + "?" + urlsplit(src).query)
        assert served.status_code == 200 and served["Content-Type"] == "image/webp"


def test_empty_library_points_to_the_workspace(alice_client):
    html = alice_client.get("/library/").content.decode()
    assert "Your library is empty" in html and 'id="library-filters"' in html


def test_each_filter_narrows(alice_client, alice, bob):
    assets = bulk_assets(alice, [
        {"kind": "image", "quality": "fast", "prompt": "A Red Fox", "created_at": at(1)},
        {"kind": "image", "quality": "high", "prompt": "a blue whale", "created_at": at(5)},
        {"kind": "video", "quality": "fast", "prompt": "red sunset timelapse", "created_at": at(10, 23)},
        {"kind": "video", "quality": "high", "prompt": "city at night", "created_at": at(20)},
        {"kind": "image", "quality": "fast", "prompt": "100%_literal", "created_at": at(21)},
    ])
    bulk_assets(bob, [{"kind": "image", "prompt": "red fox too", "created_at": at(5)}])
    fox, whale, sunset, city, literal = (key(a) for a in sorted(assets, key=lambda a: a.created_at))

    def shown(**params):
        return set(tiles(alice_client.get("/library/", params)))

    everything = {fox, whale, sunset, city, literal}
    assert shown() == everything == shown(kind="all", quality="any")
    assert shown(kind="image") == {fox, whale, literal}
    assert shown(kind="video") == {sunset, city}
    assert shown(quality="high") == {whale, city}
    assert shown(quality="fast", kind="video") == {sunset}
    # Whole days, both ends included (23:00 on the 10th is on the 10th).
    assert shown(**{"from": "2026-03-05"}) == {whale, sunset, city, literal}
    assert shown(to="2026-03-10") == {fox, whale, sunset}
    assert shown(**{"from": "2026-03-05", "to": "2026-03-10"}) == {whale, sunset}
    assert shown(**{"from": "2026-03-11", "to": "2026-03-19"}) == set()
    # Prompt contains, case-insensitively; LIKE wildcards are literal.
    assert shown(q="RED") == {fox, sunset}
    assert shown(q="red", kind="image") == {fox}
    assert shown(q="%_") == {literal} and shown(q="0%") == {literal}
    assert shown(q="nothing like this") == set()
    # The form shows what is applied.
    html = alice_client.get("/library/", {"kind": "video", "quality": "high", "q": "city", "from": "2026-03-02"}) \
        .content.decode()
    assert '<option value="video" selected>' in html and '<option value="high" selected>' in html
    assert 'name="q" value="city"' in html and 'name="from" value="2026-03-02"' in html


def test_bad_filter_values_are_ignored(alice_client, alice):
    bulk_assets(alice, [{"created_at": at(3)}, {"kind": "video", "created_at": at(4)}])
    response = alice_client.get("/library/", {"kind": "sound", "quality": "ultra", "from": "yesterday",
                                              "to": "2026-13-40"})
    assert len(tiles(response)) == 2
    assert "ignored" in response.content.decode()


def test_pagination_splits_and_keeps_the_filters(alice_client, alice):
    start = at(1)
    specs = [{"kind": "video" if i % 3 == 0 else "image", "prompt": f"cat number {i}",
              "created_at": start + timedelta(minutes=i)} for i in range(60)]
    specs += [{"kind": "image", "prompt": f"dog number {i}", "created_at": start + timedelta(minutes=i, seconds=30)}
              for i in range(10)]
    assets = bulk_assets(alice, specs)
    cats = sorted((a for a in assets if "cat" in a.prompt), key=lambda a: a.created_at, reverse=True)

    first = alice_client.get("/library/", {"q": "cat"})
    second = alice_client.get("/library/", {"q": "cat", "page": 2})
    assert tiles(first) == [key(a) for a in cats[:48]]
    assert tiles(second) == [key(a) for a in cats[48:]]
    assert "Page 1 of 2" in first.content.decode() and "Page 2 of 2" in second.content.decode()
    next_link = unescape(re.search(r'href="([^"]+)" rel="next"', first.content.decode()).group(1))
    assert parse_qs(urlsplit(next_link).query) == {"q": ["cat"], "page": ["2"]}
    assert tiles(alice_client.get("/library/" + next_link)) == tiles(second)

    # Filters and page together: videos among the cats, on one page.
    videos = alice_client.get("/library/", {"q": "cat", "kind": "video", "page": 1})
    assert tiles(videos) == [key(a) for a in cats if isinstance(a, Video)]
    assert "rel=\"next\"" not in videos.content.decode()

    # Everything (70): 48 + 22; a page past the end shows the last page.
    everything = tiles(alice_client.get("/library/")) + tiles(alice_client.get("/library/", {"page": 2}))
    assert len(everything) == len(set(everything)) == 70
    assert tiles(alice_client.get("/library/", {"page": 99})) == tiles(alice_client.get("/library/", {"page": 2}))
    assert tiles(alice_client.get("/library/", {"page": "x"})) == everything[:48]
    prev_link = unescape(re.search(r'href="([^"]+)" rel="prev"', second.content.decode()).group(1))
    assert parse_qs(urlsplit(prev_link).query) == {"q": ["cat"], "page": ["1"]}


def test_thousands_of_assets_render_with_few_queries(alice_client, alice, bob, django_assert_max_num_queries):
    start = timezone.now() - timedelta(days=400)
    specs = [{"kind": "video" if i % 4 == 0 else "image", "quality": "high" if i % 2 else "fast",
              "prompt": f"asset {i} {'sunrise' if i % 10 == 0 else 'noon'}",
              "created_at": start + timedelta(hours=3 * i)} for i in range(3000)]
    assets = bulk_assets(alice, specs)
    bulk_assets(bob, specs[:200])
    newest = sorted(assets, key=lambda a: a.created_at, reverse=True)

    alice_client.get("/library/")  # warm (templates, URL resolver)
    for params in [{}, {"page": 40}, {"kind": "video", "page": 3}, {"quality": "high", "q": "sunrise"},
                   {"from": (start + timedelta(days=100)).date().isoformat(), "page": 5}]:
        # However many assets, a page costs the same few queries (its speed is a benchmark's business).
        with django_assert_max_num_queries(6):  # session, user, count, the page's rows, their job types, the balance
            response = alice_client.get("/library/", params)
        assert len(tiles(response)) == 48 or params.get("q")
    assert tiles(alice_client.get("/library/", {"page": 40}))[0] == key(newest[39 * 48])
    assert "3000 items" in alice_client.get("/library/").content.decode()


def test_detail_shows_every_parameter_the_seed_and_a_reuse_link(alice_client, alice):
    job = generated(alice, "sdxl_image_high", prompt="two women walking on a beach", negative_prompt="blurry",
                    num_images=3, seed=1000, aspect_ratio="16:9")
    second = job.images.get(image_index=1)
    response = alice_client.get(f"/library/image/{second.pk}/")
    html = response.content.decode()
    params = dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", html, re.S))
    assert params["Prompt"] == "two women walking on a beach"
    assert params["Seed"] == "1001" and params["Job seed"] == "1000"  # the image's own seed
    assert params["Negative prompt"] == "blurry"
    assert unescape(params["Negative prompt used"]) == job.negative_prompt and job.negative_prompt != "blurry"
    assert params["Job type"] == "SDXL image · high" and params["Quality"] == "high"
    assert "Image · SDXL image · high ·" in html  # the subtitle
    assert params["Model"] == "test-model" and params["Sampler"] == "TestScheduler"
    assert params["Steps"] == str(job.steps) and params["Guidance"] == str(job.guidance)
    assert params["Size"] == f"{second.width} × {second.height}" and params["Aspect ratio"] == "16:9"
    assert params["Batch"] == "image 2 of 3"
    assert "generate" in params["Timings"] and "store" in params["Timings"]
    assert params["Created"].startswith(timezone.localtime(second.created_at).strftime("%Y-%m-%d"))
    assert 'id="asset-image"' in html and f"/{second.bucket}/{second.image_path}?" in html

    # "Use these settings again" renders this image again: its own seed, one image; the batch's link, all three.
    reuse = unescape(re.search(r'<a class="button reuse-settings" href="([^"]+)"', html).group(1))
    url = urlsplit(reuse)
    assert url.path == "/" and parse_qs(url.query, keep_blank_values=True) == {
        "job_type": ["sdxl_image_high"], "prompt": ["two women walking on a beach"],
        "negative_prompt": ["blurry"], "seed": ["1001"], "num_images": ["1"], "aspect_ratio": ["16:9"]}
    batch = unescape(re.search(r'<a class="button secondary reuse-batch" href="([^"]+)"', html).group(1))
    assert {k: v for k, v in parse_qs(urlsplit(batch).query).items() if k in ("seed", "num_images")} == {
        "seed": ["1000"], "num_images": ["3"]}
    note = unescape(re.search(r'<p class="small muted seed-note" id="seed-note">(.*?)</p>', html, re.S).group(1))
    assert note == ("Seed 1001 is this image's own: image 2 of a batch of 3 whose job seed, 1000, is the first "
                    "image's; each next image takes the next seed. “Use these settings again” takes this image's "
                    "seed with one image, which renders this image again; “Use the batch's settings” takes the job "
                    "seed with all 3.")

    download = re.search(r'<a class="button secondary download" href="([^"]+)" download="([^"]+)"', html)
    assert download.group(2) == "ourvidz-sdxl_image_high-1001-2.png"
    fetched = alice_client.get(unescape(download.group(1)))
    assert fetched.status_code == 200 and b"".join(fetched.streaming_content).startswith(b"\x89PNG")
    assert f'href="/library/image/{second.pk}/delete/"' in html
    # The batch's other images are linked.
    for image in job.images.all():
        assert f'href="/library/image/{image.pk}/"' in html


def test_video_detail_plays_and_lists_video_parameters(alice_client, alice):
    job = generated(alice, "video7b_fast_enhanced", prompt="a cat", enhanced="a fluffy ginger cat, cinematic",
                    seed=77, negative_prompt="")
    video = job.video
    html = alice_client.get(f"/library/video/{video.pk}/").content.decode()
    assert re.search(r'<video id="asset-video" src="[^"]+" controls', html)
    params = dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", html, re.S))
    assert params["Seed"] == "77" and "Job seed" not in params
    assert params["Enhanced prompt"] == "a fluffy ginger cat, cinematic"
    assert params["Frames"] == "9" and params["FPS"] == "16" and params["Duration"] == "0.56 s"
    assert params["Codec"] == "h264" and params["Negative prompt"] == "—"
    reuse = unescape(re.search(r'class="button reuse-settings" href="([^"]+)"', html).group(1))
    assert parse_qs(urlsplit(reuse).query, keep_blank_values=True)["seed"] == ["77"]
    assert "reuse-batch" not in html and "Seed 77 starts this video's noise" in unescape(html)
    assert 'download="ourvidz-video7b_fast_enhanced-77.mp4"' in html
    src = unescape(re.search(r'<video id="asset-video" src="([^"]+)"', html).group(1))
    assert video.video_path in src and alice_client.get(src).status_code == 200  # signed for this page view


def test_detail_shows_the_reference(alice_client, alice):
    reference = ReferenceImage.objects.create(user=alice, path="1/ref.png", content_type="image/png", width=8,
                                              height=8, size_bytes=10)
    job = generated(alice, "sdxl_image_fast", reference_image=reference, reference_type="composition",
                    reference_strength=0.6)
    html = alice_client.get(f"/library/image/{job.images.get().pk}/").content.decode()
    assert "<dt>Reference</dt><dd>composition, strength 0.6</dd>" in html


def test_another_users_asset_and_unknown_kinds_are_404(alice_client, alice, bob):
    theirs = generated(bob, "video_fast").video
    their_image = generated(bob).images.get()
    mine = generated(alice).images.get()
    for url in [f"/library/video/{theirs.pk}/", f"/library/video/{theirs.pk}/delete/",
                f"/library/image/{their_image.pk}/", f"/library/image/{their_image.pk}/delete/",
                f"/library/audio/{mine.pk}/", f"/library/audio/{mine.pk}/delete/",
                f"/library/video/{mine.pk}/", "/library/image/999999/"]:
        assert alice_client.get(url).status_code == 404, url
    assert alice_client.post(f"/library/image/{their_image.pk}/delete/").status_code == 404
    assert alice_client.post(f"/library/video/{theirs.pk}/delete/").status_code == 404
    assert Image.objects.filter(pk=their_image.pk).exists() and Video.objects.filter(pk=theirs.pk).exists()
    assert alice_client.get(f"/library/image/{mine.pk}/").status_code == 200


def test_delete_asks_first_and_only_post_with_csrf_deletes(alice, django_capture_on_commit_callbacks):
    job = generated(alice, "video_fast", prompt="a storm over the sea")
    video = job.video
    backend = storage.get_storage()
    assert backend.exists(video.bucket, video.path) and backend.exists(video.bucket, video.thumbnail_path)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = f"/library/video/{video.pk}/delete/"

    page = client.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and "a storm over the sea" in html
    assert 'name="csrfmiddlewaretoken"' in html and 'id="confirm-delete"' in html
    assert f'href="/library/video/{video.pk}/"' in html  # cancel goes back
    assert f"/{video.bucket}/{video.thumbnail_path}?" in html
    assert Video.objects.filter(pk=video.pk).exists()

    assert client.post(url).status_code == 403  # no CSRF token
    assert client.put(url).status_code in (403, 405)
    assert Video.objects.filter(pk=video.pk).exists() and backend.exists(video.bucket, video.path)

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/library/"
    assert not Video.objects.filter(pk=video.pk).exists()
    assert not backend.exists(video.bucket, video.path) and not backend.exists(video.bucket, video.thumbnail_path)
    after = client.get("/library/").content.decode()
    assert "Deleted." in after and "a storm over the sea" not in after


def test_deleting_one_image_of_a_batch_keeps_the_others(alice_client, alice, django_capture_on_commit_callbacks):
    job = generated(alice, num_images=3)
    first, *rest = job.images.order_by("image_index")
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_client.post(f"/library/image/{first.pk}/delete/").status_code == 302
    backend = storage.get_storage()
    assert not backend.exists(first.bucket, first.image_path)
    assert all(backend.exists(i.bucket, i.image_path) for i in rest)
    assert set(tiles(alice_client.get("/library/"))) == {("image", i.pk) for i in rest}


def test_reuse_link_carries_the_reference(alice_client, alice):
    reference = ReferenceImage.objects.create(user=alice, path="1/ref.png", content_type="image/png", width=8,
                                              height=8, size_bytes=10, original_name="pose.png")
    job = generated(alice, "sdxl_image_fast", reference_image=reference, reference_type="character",
                    reference_strength=0.4)
    html = alice_client.get(f"/library/image/{job.images.get().pk}/").content.decode()
    reuse = unescape(re.search(r'class="button reuse-settings" href="([^"]+)"', html).group(1))
    query = parse_qs(urlsplit(reuse).query)
    assert (query["reference_image"], query["reference_type"], query["reference_strength"]) == (
        [str(reference.pk)], ["character"], ["0.4"])
    workspace = alice_client.get(reuse).content.decode()
    assert re.search(rf'<option value="{reference.pk}" data-url="[^"]+" selected>pose.png', workspace)
    assert '<option value="character" selected>' in workspace
    assert re.search(r'name="reference_strength"[^>]* value="0.4"', workspace)


def test_an_image_becomes_a_reference_once(alice, alice_client, bob, bob_client):
    image = generated(alice, prompt="a red door").images.get()
    first = alice_client.post(f"/api/images/{image.pk}/reference/")
    assert first.status_code == 201, first.content
    body = first.json()
    ref = ReferenceImage.objects.get(pk=body["id"], user=alice)
    backend = storage.get_storage()
    assert backend.get(ReferenceImage.BUCKET, ref.path) == backend.get(image.bucket, image.image_path)
    assert (ref.width, ref.height, ref.content_type) == (image.width, image.height, "image/png")
    assert body["original_name"] == f"a red door (seed {image.seed})" and body["url"]
    # Asked again: the same reference, no second copy.
    assert alice_client.post(f"/api/images/{image.pk}/reference/").json()["id"] == ref.pk
    assert ReferenceImage.objects.filter(user=alice).count() == 1
    # Only the owner's images; the API names only POST.
    assert bob_client.post(f"/api/images/{image.pk}/reference/").status_code == 404
    assert alice_client.get(f"/api/images/{image.pk}/reference/").status_code == 405
    assert not ReferenceImage.objects.filter(user=bob).exists()


def test_library_detail_opens_the_workspace_with_the_image_as_reference(alice, bob, bob_client):
    image = generated(alice, prompt="a blue boat").images.get()
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    html = client.get(f"/library/image/{image.pk}/").content.decode()
    form = re.search(r'<form method="post" action="(/library/image/\d+/reference/)"[^>]*>\s*'
                     r'<input type="hidden" name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert form and form.group(1) == f"/library/image/{image.pk}/reference/"
    assert client.post(form.group(1)).status_code == 403  # no CSRF token
    assert not ReferenceImage.objects.exists()
    response = client.post(form.group(1), {"csrfmiddlewaretoken": form.group(2)})
    ref = ReferenceImage.objects.get(user=alice)
    assert response.status_code == 302 and response["Location"] == f"/?reference_image={ref.pk}"
    workspace = client.get(response["Location"]).content.decode()
    assert re.search(rf'<option value="{ref.pk}" data-url="[^"]+" selected>a blue boat', workspace)
    # A video has no such button; someone else's image is not found.
    video = generated(alice, "video_fast").video
    assert "library-reference" not in client.get(f"/library/video/{video.pk}/").content.decode()
    assert 'action="/library/image/' not in client.get(f"/library/video/{video.pk}/").content.decode()
    theirs = generated(bob).images.get()
    assert bob_client.post(f"/library/image/{image.pk}/reference/").status_code == 404
    assert Client().post(f"/library/image/{theirs.pk}/reference/").status_code == 302  # to the login page
    assert ReferenceImage.objects.count() == 1
