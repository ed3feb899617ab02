"""The Workspace page, server side: login, the form's controls and their prefill from query
parameters, CSRF, the embedded data the script starts from (job types, recent jobs), references."""

import json
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone

from generation import job_types, submission
from generation.models import Image, JobStatus, ReferenceImage
from generation.web import workspace

pytestmark = pytest.mark.django_db


class Page(HTMLParser):
    """Every element of a page with its attributes, plus the text of textareas, options and scripts."""

    TEXT_TAGS = ("textarea", "option", "script")

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.elements, self._open = [], None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "text": "", **{name: "" if value is None else value for name, value in attrs}}
        self.elements.append(element)
        if tag in self.TEXT_TAGS:
            self._open = element

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag in self.TEXT_TAGS:
            self._open = None

    def find(self, tag=None, **attrs):
        """Elements of `tag` whose attributes equal `attrs` (data_field= matches data-field)."""
        attrs = {name.rstrip("_").replace("_", "-"): value for name, value in attrs.items()}
        return [e for e in self.elements if (tag is None or e["tag"] == tag)
                and all(e.get(name) == value for name, value in attrs.items())]

    def one(self, tag=None, **attrs):
        found = self.find(tag, **attrs)
        assert len(found) == 1, f"expected one {tag} {attrs}, found {len(found)}"
        return found[0]

    def checked(self, name):
        """The value of the checked radio called `name`."""
        return [e["value"] for e in self.elements if e.get("name") == name and "checked" in e]

    def selected(self, name):
        select = self.elements.index(self.one("select", name=name))
        options = []
        for element in self.elements[select + 1:]:
            if element["tag"] != "option":
                break
            options.append(element)
        return [o["value"] for o in options if "selected" in o], [o["value"] for o in options]

    def data(self):
        return json.loads(self.one("script", id="workspace-data")["text"])


def get_page(client, query=""):
    response = client.get("/" + query)
    assert response.status_code == 200
    return Page(response.content.decode())


def make_job(user, prompt, minutes_ago=0, job_type="sdxl_image_fast", **fields):
    job = submission.build_job(user, job_type, prompt)
    job.created_at = timezone.now() - timedelta(minutes=minutes_ago)
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(force_insert=True)
    return job


def test_login_required():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_page_renders_the_form_controls(alice_client):
    page = get_page(alice_client)
    page.one("form", id="job-form")
    page.one("textarea", name="prompt")
    page.one("textarea", name="negative_prompt")
    for name, values in {"kind": ["image", "video"], "model": ["sdxl", "wan"], "quality": ["fast", "high"],
                         "num_images": ["1", "3", "6"], "seed_mode": ["random", "fixed"]}.items():
        assert [e["value"] for e in page.find("input", type="radio", name=name)] == values
    page.one("input", type="checkbox", name="enhanced")
    page.one("input", type="number", name="seed")
    page.one("input", type="file", id="reference-upload")
    strength = page.one("input", type="range", name="reference_strength")
    assert (strength["min"], strength["max"], strength["step"]) == ("0.1", "1.0", "0.1")
    assert page.selected("aspect_ratio") == (["1:1"], ["1:1", "16:9", "9:16"])
    assert page.selected("reference_image") == ([], [""])  # "none" and no uploads yet
    assert page.selected("reference_type")[1] == ["style", "composition", "character"]
    for element_id in ("expected-time", "negative-preview", "form-errors", "jobs"):
        page.one(id=element_id)
    page.one("button", id="submit-job", type="submit")
    # Defaults: a fast SDXL image, one, random seed.
    assert [page.checked(n) for n in ("kind", "model", "quality", "num_images", "seed_mode")] == \
           [["image"], ["sdxl"], ["fast"], ["1"], ["random"]]
    assert "checked" not in page.one("input", name="enhanced")
    # One error slot per field the API may name.
    for field in ("prompt", "negative_prompt", "job_type", "num_images", "seed", "aspect_ratio",
                  "reference_image", "reference_type", "reference_strength", "file"):
        page.one(class_="field-error", data_field=field)
    page.one(id="jobs-empty")
    page.one("script", src="/static/ourvidz/workspace/main.js", type="module")
    page.one("link", href="/static/ourvidz/workspace.css")


def test_csrf_token_and_the_api_accepts_it(alice):
    """The page hands out the CSRF token the script sends back; without it a session POST fails."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = get_page(client)
    start = page.elements.index(page.one("form", id="job-form"))
    assert page.elements[start + 1]["name"] == "csrfmiddlewaretoken" and page.elements[start + 1]["value"]
    token = client.cookies["csrftoken"].value
    body = {"job_type": "sdxl_image_fast", "prompt": "two women on a beach", "negative_prompt": "blurry"}
    assert client.post("/api/jobs/", body, content_type="application/json").status_code == 403
    response = client.post("/api/jobs/", body, content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 201, response.content
    # The preview the page shows is what the submission used.
    preview = client.get("/api/negative-prompt/", {"job_type": "sdxl_image_fast", "prompt": body["prompt"],
                                                  "negative_prompt": "blurry"}).json()
    assert preview["negative_prompt"] == response.json()["negative_prompt"]
    assert preview["multi_party"]


@pytest.mark.parametrize("job_type", list(job_types.JOB_TYPES))
def test_prefill_selects_the_controls_of_each_job_type(alice_client, job_type):
    jt = job_types.get(job_type)
    page = get_page(alice_client, f"?job_type={job_type}")
    assert page.checked("kind") == [jt.kind]
    assert page.checked("model") == [jt.pool]
    assert page.checked("quality") == [jt.quality]
    assert ("checked" in page.one("input", name="enhanced")) == jt.enhanced
    assert workspace.type_keys()[workspace.control_key(jt.kind, jt.pool, jt.quality, jt.enhanced)] == job_type


def test_prefill_from_the_library_link(alice_client):
    query = ("?job_type=sdxl_image_high&prompt=%3Cb%3Ecats+%26+dogs%3C%2Fb%3E&negative_prompt=blurry%2C+text"
             "&seed=4294967295&num_images=6&aspect_ratio=9%3A16")
    response = alice_client.get("/" + query)
    assert b"<b>cats" not in response.content  # escaped, not markup
    page = Page(response.content.decode())
    assert page.one("textarea", name="prompt")["text"] == "<b>cats & dogs</b>"
    assert page.one("textarea", name="negative_prompt")["text"] == "blurry, text"
    assert page.checked("model") == ["sdxl"] and page.checked("quality") == ["high"]
    assert page.checked("num_images") == ["6"]
    assert page.checked("seed_mode") == ["fixed"]
    assert page.one("input", name="seed")["value"] == "4294967295"
    assert page.selected("aspect_ratio")[0] == ["9:16"]


def test_prefill_falls_back_on_bad_values(alice_client):
    page = get_page(alice_client, "?job_type=nonsense&seed=-5&num_images=4&aspect_ratio=2:1")
    assert [page.checked(n) for n in ("kind", "model", "quality", "num_images", "seed_mode")] == \
           [["image"], ["sdxl"], ["fast"], ["1"], ["random"]]
    assert page.one("input", name="seed")["value"] == ""
    assert page.selected("aspect_ratio")[0] == ["1:1"]
    # Several images are SDXL only; WAN's own size is portrait; a seed past 2**32-1 is not kept.
    page = get_page(alice_client, "?job_type=video_fast&num_images=3&seed=4294967296")
    assert page.checked("num_images") == ["1"] and page.checked("seed_mode") == ["random"]
    assert page.selected("aspect_ratio")[0] == ["9:16"]


def test_embedded_job_types(alice_client, settings):
    settings.SDXL_IP_ADAPTER_PATH = "/models/sdxl-ip-adapter"
    data = get_page(alice_client).data()
    assert [row["name"] for row in data["job_types"]] == list(job_types.JOB_TYPES)
    sdxl = next(row for row in data["job_types"] if row["name"] == "sdxl_image_fast")
    assert sdxl["num_images"] == [1, 3, 6] and sdxl["expected_seconds"] == 4
    assert set(sdxl["reference_types"]) == {"style", "composition", "character"}  # an IP-Adapter is configured
    image_fast = next(row for row in data["job_types"] if row["name"] == "image_fast")
    assert image_fast["num_images"] == [1] and image_fast["reference_types"] == []
    assert sorted(data["type_keys"].values()) == sorted(job_types.JOB_TYPES)
    assert data["urls"] == {"jobs": "/api/jobs/", "events": "/events/jobs", "negative_prompt": "/api/negative-prompt/",
                            "references": "/api/references/", "images": "/api/images/",
                            "library_detail": "/library/KIND/0/", "account": "/api/account/",
                            "library_download": "/library/KIND/0/download/", "videos": "/api/videos/",
                            "cancel_waiting": "/api/jobs/cancel-waiting/",
                            "clear_finished": "/api/jobs/clear-finished/"}


def test_recent_jobs_are_the_users_own(alice_client, alice, bob, sandbox, settings):
    sandbox.worker("sdxl")
    settings.SCHEDULER_AGEING_SECONDS = 3600  # alice's twelve minutes of waiting do not lift her yet
    mine = [make_job(alice, f"mine {i}", minutes_ago=i) for i in range(12)]
    theirs = make_job(bob, "not yours")
    response = alice_client.get("/")
    data = Page(response.content.decode()).data()
    # Every one of them: past the latest RECENT_JOBS, those still waiting or running are listed too (My queue).
    assert [job["id"] for job in data["jobs"]] == [str(job.pk) for job in mine]
    assert str(theirs.pk).encode() not in response.content and b"not yours" not in response.content
    first = data["jobs"][0]
    # The newest of alice's twelve: after her eleven others and bob's one, which the fair order takes early.
    assert first["status"] == "queued" and first["queue_position"] == 13
    assert first["expected_generation_seconds"] == 4


def test_recent_prompts_are_the_users_own_newest_first_each_once(alice_client, alice, bob):
    for minutes_ago, prompt in [(9, "a red door"), (8, "a harbour at dawn"), (7, "a red door"), (6, "a fox")]:
        make_job(alice, prompt, minutes_ago=minutes_ago)
    make_job(bob, "bob's secret prompt")
    data = get_page(alice_client).data()
    assert data["recent_prompts"] == ["a fox", "a red door", "a harbour at dawn"]
    assert data["user_id"] == alice.pk

    for i in range(workspace.RECENT_PROMPTS + 5):
        make_job(alice, f"prompt {i}", minutes_ago=-i)
    data = get_page(alice_client).data()
    assert data["recent_prompts"] == [f"prompt {i}" for i in reversed(range(5, workspace.RECENT_PROMPTS + 5))]


def test_form_defaults_and_pool_names_for_the_script(alice_client, alice):
    """What "Reset form" goes back to (whatever the address prefilled), and the models' display names."""
    data = get_page(alice_client, "?job_type=video_high&prompt=waves&seed=5").data()
    assert data["form_defaults"] == {
        "job_type": "sdxl_image_fast", "prompt": "", "negative_prompt": "", "seed_mode": "random", "seed": "",
        "num_images": 1, "aspect_ratio": "1:1", "reference_image": "", "reference_type": "style",
        "reference_strength": job_types.REFERENCE_STRENGTH_DEFAULT}
    assert data["pool_labels"] == {"sdxl": "SDXL", "wan": "WAN"}


def test_completed_job_carries_its_images(alice_client, alice):
    job = make_job(alice, "done", num_images=1, status=JobStatus.COMPLETED)
    Image.objects.create(user=alice, job=job, image_index=0, image_path="a/b.png", thumbnail_path="a/b.webp",
                         seed=job.seed, prompt=job.prompt, bucket=job.type.bucket, quality="fast", format="png",
                         width=64, height=64)
    data = get_page(alice_client).data()
    [image] = data["jobs"][0]["images"]
    assert image["seed"] == job.seed
    assert image["url"].startswith("http://testserver/media/") and image["thumbnail_url"]


def test_reference_picker_lists_the_users_uploads(alice_client, alice, bob):
    ref = ReferenceImage.objects.create(user=alice, path="alice/ref.png", content_type="image/png", width=40,
                                        height=30, size_bytes=100, original_name="beach.png")
    other = ReferenceImage.objects.create(user=bob, path="bob/ref.png", content_type="image/png", width=40,
                                          height=30, size_bytes=100, original_name="secret.png")
    page = get_page(alice_client)
    assert page.selected("reference_image")[1] == ["", str(ref.pk)]
    option = page.one("option", value=str(ref.pk))
    assert option["text"] == "beach.png · 40×30" and option["data-url"].startswith("http://testserver/media/")
    assert not page.find("option", value=str(other.pk))


def test_prefill_selects_the_users_reference_with_its_use_and_strength(alice_client, alice, bob):
    refs = [ReferenceImage.objects.create(user=alice, path=f"alice/{i}.png", content_type="image/png", width=40,
                                          height=30, size_bytes=100, original_name=f"{i}.png",
                                          created_at=timezone.now() - timedelta(minutes=i))
            for i in range(workspace.REFERENCE_CHOICES + 1)]
    oldest = refs[-1]  # past the picker's newest 50: listed all the same, since it is asked for
    page = get_page(alice_client, f"?reference_image={oldest.pk}&reference_type=character&reference_strength=0.4")
    selected, listed = page.selected("reference_image")
    assert selected == [str(oldest.pk)] and len(listed) == workspace.REFERENCE_CHOICES + 2
    assert page.selected("reference_type")[0] == ["character"]
    assert page.one("input", name="reference_strength")["value"] == "0.4"

    theirs = ReferenceImage.objects.create(user=bob, path="bob/ref.png", content_type="image/png", width=40,
                                           height=30, size_bytes=100, original_name="secret.png")
    page = get_page(alice_client, f"?reference_image={theirs.pk}&reference_type=sideways&reference_strength=7")
    assert page.selected("reference_image")[0] == [] and not page.find("option", value=str(theirs.pk))
    assert page.selected("reference_type")[0] == ["style"]
    assert page.one("input", name="reference_strength")["value"] == "0.7"
