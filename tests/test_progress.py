"""Honest progress: the phases a running job goes through, its seconds per step, the remaining time
estimated from the steps done, and the previews sent while it renders (real tiny pipelines, in-process)."""

import io
from datetime import timedelta

import pytest
import torch
from django.utils import timezone
from PIL import Image as PILImage

from generation import events, scheduler, storage
from generation.models import Job, JobPhase, JobStatus
from generation.submission import build_job
from generation.worker import pipelines, previews, runtime
from sdxl_tasks import pipeline as sdxl_pipeline
from wan_tasks import pipeline as wan_pipeline


@pytest.fixture(autouse=True)
def worker_settings(settings, tmp_path):
    settings.TORCH_DEVICE = "cpu"
    settings.STORAGE_BACKEND = "local"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.OURVIDZ_PROFILE = "dev"
    settings.PROGRESS_INTERVAL = 0
    settings.PREVIEW_INTERVAL = 0
    storage._storage.cache_clear()
    yield
    storage._storage.cache_clear()


@pytest.fixture
def reports(monkeypatch):
    """What the pages are told while a job runs: ("job", phase, step, total) for each change, as the database
    holds it when published, and ("preview", WebP bytes, step, total) for each preview."""
    told = []

    def job_changed(job):
        row = Job.objects.get(pk=job.pk)
        told.append(("job", row.phase, row.current_step, row.total_steps))

    def preview(job, webp, step, total):
        told.append(("preview", webp, step, total))

    monkeypatch.setattr(events, "publish_on_commit", job_changed)
    monkeypatch.setattr(events, "publish_preview", preview)
    return told


def phases(told):
    """The phases in the order the pages saw them, each once."""
    seen = []
    for kind, phase, *_ in told:
        if kind == "job" and phase and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def webp_size(data):
    picture = PILImage.open(io.BytesIO(data))
    assert picture.format == "WEBP"
    return picture.size


def test_sdxl_job_goes_through_its_phases_in_order_with_a_preview_per_step(alice, tiny_models, reports):
    job = build_job(alice, "sdxl_image_fast", "a lighthouse at dusk", num_images=3, seed=5)
    job.save()
    runtime.run(job.pk, "sdxl", sdxl_pipeline.generate)
    job.refresh_from_db()

    assert job.status == JobStatus.COMPLETED and job.phase == ""  # a finished job does nothing
    assert phases(reports) == ["loading", "steps", "decoding", "encoding", "saving"]
    steps = [(step, total) for kind, phase, step, total in reports if kind == "job" and phase == "steps"]
    # The pipeline call starts (the prompt is encoded), then each step but the last, after which it decodes.
    assert steps == [(0, 0)] + [(k, job.steps) for k in range(1, job.steps)]
    assert job.step_seconds > 0
    shown = [(step, total, webp_size(webp)) for kind, webp, step, total in reports if kind == "preview"]
    # One per step (PREVIEW_INTERVAL 0), the first image of the batch, one pixel per latent pixel.
    latent_side = job.width // sdxl_pipeline.load().pipe.vae_scale_factor
    assert shown == [(k, job.steps, (latent_side, latent_side)) for k in range(1, job.steps + 1)]
    # Each preview follows its step's report: a page never sees a picture ahead of its progress.
    assert [r[0] for r in reports].index("preview") > [r[:2] for r in reports].index(("job", "steps"))


def test_enhanced_wan_job_says_it_enhances_the_prompt_first(alice, tiny_models, reports):
    job = build_job(alice, "video7b_fast_enhanced", "a fox runs", seed=3)
    job.save()
    runtime.run(job.pk, "wan", wan_pipeline.generate)
    job.refresh_from_db()

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert phases(reports) == ["loading", "enhancing", "steps", "decoding", "encoding", "saving"]
    shown = [webp_size(webp) for kind, webp, *_ in reports if kind == "preview"]
    scale = wan_pipeline.get_pipeline().vae_scale_factor_spatial
    assert shown and all(size == (job.width // scale, job.height // scale) for size in shown), shown


def test_previews_can_be_turned_off(alice, tiny_models, reports, settings):
    settings.PREVIEWS = "off"
    job = build_job(alice, "sdxl_image_fast", "no pictures please", num_images=1, seed=1)
    job.save()
    runtime.run(job.pk, "sdxl", sdxl_pipeline.generate)
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED
    assert not [r for r in reports if r[0] == "preview"]


def test_previews_come_at_most_once_per_interval_and_always_for_the_last_step(alice, tiny_models, reports,
                                                                              settings):
    settings.PREVIEW_INTERVAL = 3600
    job = build_job(alice, "sdxl_image_fast", "a slow preview", num_images=1, seed=2)
    job.save()
    runtime.run(job.pk, "sdxl", sdxl_pipeline.generate)
    steps = Job.objects.get(pk=job.pk).steps
    assert [(step, total) for kind, _, step, total in reports if kind == "preview"] == [(1, steps), (steps, steps)]


def test_a_failing_preview_costs_only_the_picture(alice, tiny_models, reports, monkeypatch):
    def broken(job, webp, step, total):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(events, "publish_preview", broken)
    job = build_job(alice, "sdxl_image_fast", "still rendered", num_images=1, seed=2)
    job.save()
    runtime.run(job.pk, "sdxl", sdxl_pipeline.generate)
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_tiny_autoencoder_decodes_sdxl_previews_when_configured(alice, tiny_models, reports, settings, tmp_path):
    from diffusers import AutoencoderTiny

    # A TAESD-shaped decoder from config (random weights; the real one is madebyollin/taesdxl).
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                    latent_channels=4).save_pretrained(tmp_path / "taesdxl")
    settings.SDXL_PREVIEW_DECODER_PATH = str(tmp_path / "taesdxl")
    settings.PREVIEW_SIZE = 48
    pipelines.forget_loaded()
    try:
        job = build_job(alice, "sdxl_image_fast", "decoded by taesd", num_images=1, seed=2)
        job.save()
        runtime.run(job.pk, "sdxl", sdxl_pipeline.generate)
    finally:
        pipelines.forget_loaded()
    shown = [webp_size(webp) for kind, webp, *_ in reports if kind == "preview"]
    # The decoder gives full-size pixels (8× the latents), cut down to PREVIEW_SIZE.
    assert shown and all(size == (48, 48) for size in shown), shown


def test_latent_map_turns_channels_into_colours():
    # Zero latents are the map's bias; one channel lights up as its row of factors.
    factors, bias = previews.LATENT_RGB["sdxl"]
    assert list(previews.latent_rgb(torch.zeros(4, 2, 3), "sdxl").getpixel((0, 0))) == [
        round((b + 1) * 127.5) for b in bias]
    one = torch.zeros(4, 1, 1)
    one[0] = 1.0
    assert list(previews.latent_rgb(one, "sdxl").getpixel((0, 0))) == [
        round((f + b + 1) * 127.5) for f, b in zip(factors[0], bias, strict=True)]
    with pytest.raises(ValueError, match="16 latent channels"):
        previews.latent_rgb(torch.zeros(4, 2, 2), "wan")


def test_video_previews_show_the_latest_frame_of_the_first_video():
    latents = torch.zeros(2, 16, 3, 4, 5)
    latents[0, :, 2] = 1.0
    picked = previews.first_picture(latents)
    assert picked.shape == (16, 4, 5) and picked.eq(1.0).all()


# --- the remaining time ---------------------------------------------------------------------------------

def running(user, **fields):
    job = build_job(user, "sdxl_image_fast", "running", num_images=1)
    job.status, job.started_at = JobStatus.PROCESSING, timezone.now()
    for name, value in fields.items():
        setattr(job, name, value)
    job.save()
    return job


def finish_seconds(job):
    scheduler._durations["expires"] = 0.0  # measure anew
    return scheduler.outlooks([Job.objects.get(pk=job.pk)])[job.pk].finish_seconds


def test_remaining_time_comes_from_the_steps_done_and_the_measured_time_after_them(alice):
    done = running(alice)
    Job.move(done.pk, JobStatus.COMPLETED, metadata={"timings": {"denoise": 9.0, "decode": 1.5, "encode": 0.3,
                                                                 "store": 0.2}})
    job = running(alice, phase=JobPhase.STEPS, current_step=5, total_steps=20, step_seconds=2.0)
    assert finish_seconds(job) == 15 * 2.0 + 2.0


def test_remaining_time_is_not_counted_from_the_expected_duration_once_steps_are_known(alice):
    # Expected to take seconds and started ten minutes ago, but 10 steps of 3 s remain: 30 s left, not
    # "finishing".
    job = running(alice, phase=JobPhase.STEPS, current_step=10, total_steps=20, step_seconds=3.0,
                  started_at=timezone.now() - timedelta(minutes=10))
    assert finish_seconds(job) == pytest.approx(30.0, abs=1.0)


def test_no_remaining_time_is_made_up_before_the_steps_or_after_the_last(alice):
    expected = scheduler.expected_seconds("sdxl_image_fast", 1, {})  # nothing measured yet: the table's
    late = running(alice, phase=JobPhase.LOADING, started_at=timezone.now() - timedelta(seconds=expected + 30))
    assert finish_seconds(late) is None  # taking longer than expected: no countdown past zero
    loading = running(alice, phase=JobPhase.LOADING)
    assert expected - 1 <= finish_seconds(loading) <= expected
    assert finish_seconds(running(alice, phase=JobPhase.DECODING, current_step=20, total_steps=20)) is None


def test_a_job_leaving_processing_forgets_its_phase(alice):
    job = running(alice, phase=JobPhase.SAVING)
    assert Job.move(job.pk, JobStatus.QUEUED)
    assert Job.objects.get(pk=job.pk).phase == ""


def test_a_misspelt_previews_setting_is_refused(settings):
    from generation import checks

    settings.PREVIEWS = "latents"
    assert [e.id for e in checks.previews(None)] == ["ourvidz.E002"]
    settings.PREVIEWS = "off"
    assert checks.previews(None) == []
