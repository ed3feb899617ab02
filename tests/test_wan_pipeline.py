"""The WAN pool run in-process (no Celery) on the tiny development models."""

import io

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from generation import storage
from generation.models import Image, Job, JobStatus, Video
from generation.submission import build_job, cancel
from generation.worker import pipelines, runtime
from wan_tasks import devmodels, enhancer, pipeline, tasks, video


@pytest.fixture(autouse=True)
def wan_settings(settings, tmp_path, monkeypatch):
    settings.ENHANCER_MAX_NEW_TOKENS = 40
    settings.TORCH_DEVICE = "cpu"
    settings.STORAGE_BACKEND = "local"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.OURVIDZ_PROFILE = "dev"
    settings.PROGRESS_INTERVAL = 0
    # Keep this test run's model info out of a Redis that a running stack may share.
    published = []
    monkeypatch.setattr("generation.worker.heartbeats.publish_loaded", published.append)
    storage._storage.cache_clear()
    yield published
    storage._storage.cache_clear()


def make_job(user, job_type="video_fast", prompt="a cat", seed=7, **kwargs):
    job = build_job(user, job_type, prompt, seed=seed, **kwargs)
    job.save()
    return job


def run_job(job):
    runtime.run(job.pk, "wan", pipeline.generate)
    return Job.objects.get(pk=job.pk)


def stored(asset):
    return storage.get_storage().get(asset.bucket, asset.path)


def png_pixels(image):
    return np.asarray(PILImage.open(io.BytesIO(stored(image))).convert("RGB"))


def decode_mp4(data, tmp_path):
    """Every frame and the stream facts, read back by ffmpeg's own decoder."""
    path = tmp_path / "readback.mp4"
    path.write_bytes(data)
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([frame for frame in reader.iter_data()]), reader.get_meta_data()


def test_video_job_stores_an_h264_mp4(alice, tiny_models, tmp_path):
    job = run_job(make_job(alice))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert (job.width, job.height, job.frames, job.steps) == (32, 48, 9, 5)  # the dev profile
    assert (job.current_step, job.total_steps, job.progress) == (5, 5, 1.0)
    row = Video.objects.get(job=job)
    data = stored(row)
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # +faststart
    frames, meta = decode_mp4(data, tmp_path)
    assert frames.shape == (job.frames, job.height, job.width, 3)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == 16
    assert frames.std() > 0  # a rendered picture, not a blank one
    assert (row.fps, row.frame_count, row.duration, row.width, row.height) == (16, 9, 0.5625, 32, 48)
    assert row.metadata["codec"] == "h264" and row.size_bytes == len(data)
    assert storage.get_storage().exists(row.bucket, row.thumbnail_path)
    assert row.bucket == "video-fast" and row.video_path == f"{alice.pk}/{job.pk}.mp4"
    assert {key: job.metadata[key] for key in ("model", "sampler", "device", "dtype")} == {
        "model": "wan-tiny", "sampler": "UniPC", "device": "cpu", "dtype": "float32"}
    assert {"load", "denoise", "encode", "generate", "store"} <= set(job.metadata["timings"])
    assert "enhancement" not in job.metadata and job.enhanced_prompt == ""


def test_image_job_stores_one_png_with_parameters(alice, tiny_models):
    job = run_job(make_job(alice, "image_fast", negative_prompt="blurry"))

    assert job.status == JobStatus.COMPLETED, job.error_message
    (row,) = Image.objects.filter(job=job)
    picture = PILImage.open(io.BytesIO(stored(row)))
    assert picture.format == "PNG" and picture.size == (job.width, job.height) == (row.width, row.height)
    assert picture.info["parameters"] == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 5, Sampler: UniPC, CFG scale: 6.5, Seed: 7, Size: 32x48, Model: wan-tiny, "
        "Job type: image_fast")
    assert row.seed == 7 and row.image_path == f"{alice.pk}/{job.pk}_0.png"


def test_same_seed_gives_identical_pixels(alice, tiny_models):
    first, second, other = (run_job(make_job(alice, "image_fast", seed=seed)) for seed in (7, 7, 8))

    assert np.array_equal(png_pixels(first.images.get()), png_pixels(second.images.get()))
    assert not np.array_equal(png_pixels(first.images.get()), png_pixels(other.images.get()))


def test_enhanced_job_records_original_and_enhanced_prompt(alice, tiny_models):
    job = run_job(make_job(alice, "image7b_fast_enhanced"))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.prompt == "a cat" and job.enhanced_prompt not in ("", "a cat")
    assert job.metadata["enhancement"] == {"original": "a cat", "enhanced": job.enhanced_prompt,
                                           "error": None, "model": "enhancer-tiny"}
    assert "enhance" in job.metadata["timings"]
    parameters = PILImage.open(io.BytesIO(stored(job.images.get()))).info["parameters"]
    assert parameters.startswith(job.enhanced_prompt)  # the picture shows the prompt it was made from
    assert enhancer.enhance("a cat") == job.enhanced_prompt  # greedy: same prompt, same rewrite


def test_broken_enhancer_falls_back_to_the_original_prompt(alice, tiny_models, settings, tmp_path):
    settings.ENHANCER_MODEL_PATH = str(tmp_path / "no-such-model")
    job = run_job(make_job(alice, "image7b_fast_enhanced"))
    plain = run_job(make_job(alice, "image_fast"))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.enhanced_prompt == ""
    record = job.metadata["enhancement"]
    assert (record["original"], record["enhanced"], record["model"]) == ("a cat", None, "no-such-model")
    missing = tmp_path / "no-such-model"
    assert record["error"] == f"FileNotFoundError: no prompt enhancer model at {missing} " \
                              "(ENHANCER_MODEL_PATH)"
    assert np.array_equal(png_pixels(job.images.get()), png_pixels(plain.images.get()))


def test_empty_enhancement_is_an_error_and_falls_back(alice, tiny_models, monkeypatch):
    loaded = enhancer.get_enhancer()
    model, tokenizer = loaded.model, loaded.tokenizer

    def says_nothing(input_ids, **kwargs):
        return torch.cat([input_ids, torch.tensor([[tokenizer.eos_token_id]])], dim=1)

    monkeypatch.setattr(model, "generate", says_nothing)
    with pytest.raises(enhancer.EnhancementError, match="no text"):
        enhancer.enhance("a cat")
    job = run_job(make_job(alice, "image7b_fast_enhanced"))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.enhanced_prompt == "" and job.metadata["enhancement"]["enhanced"] is None
    assert job.metadata["enhancement"]["error"].startswith("EnhancementError: ")


def test_cancelling_mid_run_leaves_the_job_cancelled(alice, tiny_models, monkeypatch):
    job = make_job(alice)
    original_step = runtime.JobRun.step

    def step(self, current, total):
        if current == 2:
            cancel(self.job)  # what the API does while the worker renders
        return original_step(self, current, total)

    monkeypatch.setattr(runtime.JobRun, "step", step)
    job = run_job(job)

    assert job.status == JobStatus.CANCELLED
    assert job.current_step == 1 and not Video.objects.filter(job=job).exists()
    assert not storage.get_storage().exists(job.type.bucket, storage.video_name(alice.pk, job.pk))


def test_nan_output_fails_the_job(alice, tiny_models, monkeypatch):
    pipe = pipeline.get_pipeline()
    decode = pipe.vae.decode

    def overflowing_decode(*args, **kwargs):  # what a VAE overflowing in half precision returns
        return (torch.full_like(decode(*args, **kwargs)[0], float("nan")),)

    monkeypatch.setattr(pipe.vae, "decode", overflowing_decode)
    job = run_job(make_job(alice, "image_fast"))

    assert job.status == JobStatus.FAILED
    assert job.error_message == "The model produced invalid pixels (NaN); nothing was stored."
    assert not Image.objects.filter(job=job).exists()


def test_timings_split_enhance_denoise_decode_encode_store(alice, tiny_models):
    job = run_job(make_job(alice, "video7b_fast_enhanced"))

    timings = job.metadata["timings"]
    assert {"load", "enhance", "denoise", "decode", "encode", "generate", "store"} <= set(timings)
    assert all(timings[phase] > 0 for phase in ("enhance", "denoise", "decode", "encode", "store"))


def test_out_of_memory_retries_once_with_vae_tiling(alice, tiny_models, monkeypatch, tmp_path):
    normal = run_job(make_job(alice))
    real_call = pipeline.call
    attempts = []

    def first_call_runs_out(run, pipe, kwargs, seed):
        attempts.append(pipe.vae.use_tiling)
        if len(attempts) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_call(run, pipe, kwargs, seed)

    monkeypatch.setattr(pipeline, "call", first_call_runs_out)
    job = run_job(make_job(alice))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert attempts == [False, True]  # the retry decodes in tiles
    assert job.metadata["out_of_memory"][0]["retry"] == "VAE tiling and slicing"
    assert not pipeline.get_pipeline().vae.use_tiling  # later jobs decode as before
    first, again = (decode_mp4(stored(Video.objects.get(job=j)), tmp_path) for j in (normal, job))
    assert first[0].shape == again[0].shape


def test_out_of_memory_twice_fails_clearly(alice, tiny_models, monkeypatch):
    def no_memory(run, pipe, kwargs, seed):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(pipeline, "call", no_memory)
    job = run_job(make_job(alice))

    assert job.status == JobStatus.FAILED
    assert job.error_message == ("The GPU ran out of memory rendering 32×48 with 9 frames, even with VAE "
                                 "tiling.")


def test_late_steps_can_skip_guidance(alice, tiny_models, settings):
    calls = []
    hook = pipeline.get_pipeline().transformer.register_forward_hook(lambda *args: calls.append(1))
    try:
        full = run_job(make_job(alice, seed=3))
        full_calls = len(calls)
        settings.WAN_GUIDANCE_STOP = 0.6
        calls.clear()
        cut = run_job(make_job(alice, seed=3))
        cut_calls = len(calls)
        again = run_job(make_job(alice, seed=3))
    finally:
        hook.remove()

    assert (full_calls, cut_calls) == (2 * 5, 2 * 3 + 2)  # 5 steps; guidance stops after step 3
    assert cut.metadata["guidance_stop_step"] == 3 and "guidance_stop_step" not in full.metadata
    videos = [stored(Video.objects.get(job=j)) for j in (full, cut, again)]
    assert videos[1] == videos[2] and videos[0] != videos[1]


def test_enhancer_offload_decision():
    cuda, cpu, gb = torch.device("cuda"), torch.device("cpu"), 2**30
    # An H100 holds WAN 1.3B + UMT5 (about 14 GB), Qwen2.5-7B (15 GB) and 20 GB of working memory.
    assert not enhancer.should_offload("auto", cuda, 80 * gb, 14 * gb, 15 * gb, 20 * gb)
    # A 24 GB card does not: the enhancer waits on the CPU between uses.
    assert enhancer.should_offload("auto", cuda, 24 * gb, 14 * gb, 15 * gb, 20 * gb)
    assert not enhancer.should_offload("auto", cpu, 0, 14 * gb, 15 * gb, 20 * gb)
    assert enhancer.should_offload("always", cpu, 0, 0, 0, 0)
    assert not enhancer.should_offload("never", cuda, 1, 14 * gb, 15 * gb, 20 * gb)


def test_offloaded_enhancer_goes_back_to_the_cpu_after_each_rewrite(settings, tiny_models):
    model = enhancer.get_enhancer().model
    try:
        enhancer.place(torch.device("cpu"), offload=True)
        assert enhancer.enhance("a cat") and model.device.type == "cpu"
    finally:
        enhancer.place(torch.device("cpu"), offload=False)


def test_wrong_model_paths_are_refused_before_loading(settings, tiny_models, tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    pipeline.check_models()  # the configured tiny models pass
    for path, message in [(tmp_path / "missing", "no such folder"),
                          (tiny_models["sdxl"], "describes 'StableDiffusionXLPipeline', not WanPipeline")]:
        settings.WAN_MODEL_PATH = str(path)
        with pytest.raises(ImproperlyConfigured, match=message) as error:
            pipeline.check_models()
        assert str(error.value).startswith("WAN_MODEL_PATH=")
    settings.WAN_MODEL_PATH = str(tiny_models["wan"])
    settings.ENHANCER_MODEL_PATH = str(tmp_path)
    with pytest.raises(ImproperlyConfigured, match="ENHANCER_MODEL_PATH=.*no config.json"):
        pipeline.check_models()


@pytest.mark.django_db(transaction=True)
def test_worker_with_a_wrong_model_path_stops_at_start(tmp_path, tiny_models):
    import subprocess
    import sys

    from helpers import ROOT, worker_env

    # A node name of its own: the session's workers may be live under `wan`.
    result = subprocess.run([sys.executable, "-m", "ourvidz.supervise", "wan"], cwd=ROOT,
                            env=worker_env(WAN_MODEL_PATH=tmp_path / "missing", WAN_WORKER_NAME="wan-wrong-path"),
                            capture_output=True, text=True, timeout=90)
    assert result.returncode != 0
    assert "wan worker not started: WAN_MODEL_PATH=" in result.stdout + result.stderr


def test_celery_task_renders_and_worker_init_loads_models(alice, tiny_models, wan_settings, settings):
    pipelines.forget_loaded()
    tasks.load_models()
    (info,) = wan_settings
    assert {key: info[key] for key in ("pool", "model", "device", "dtype", "vae_dtype", "enhancer")} == {
        "pool": "wan", "model": "wan-tiny", "device": "cpu", "dtype": "float32", "vae_dtype": "float32",
        "enhancer": "enhancer-tiny"}
    assert tasks.generate.name == "wan.generate"

    job = make_job(alice, "image_fast")
    tasks.generate(str(job.pk))  # the task body, called directly: no broker involved
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED

    assert info["warmup_seconds"] > 0 and info["enhancer_offloaded"] is False and info["compiled"] is False

    settings.WAN_MODEL_PATH = str(settings.ENHANCER_MODEL_PATH)  # not a diffusers pipeline
    with pytest.raises(OSError, match="model_index.json"):
        tasks.load_models()


def test_publish_failure_does_not_stop_loading(monkeypatch, tiny_models):
    def unreachable(info):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("generation.worker.heartbeats.publish_loaded", unreachable)
    pipelines.forget_loaded()
    assert pipeline.get_pipeline().transformer is not None


def test_encode_mp4_pads_odd_sizes_to_even(tmp_path):
    y, x = np.mgrid[0:17, 0:15]
    frames = np.stack([np.stack([y * 15, x * 17, np.full_like(y, 40 * t)], axis=-1) for t in range(5)])
    decoded, meta = decode_mp4(video.encode_mp4(frames.astype(np.uint8), 16), tmp_path)

    assert decoded.shape == (5, 18, 16, 3) and meta["codec"] == "h264"
    assert np.abs(decoded[:, :17, :15].astype(int) - frames).mean() < 8  # lossy, but the same picture


def test_dev_models_are_deterministic(tmp_path):
    devmodels.build_enhancer(tmp_path / "a")
    devmodels.build_enhancer(tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
