"""The SDXL pool run in-process (no Celery) on the tiny development model."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from generation import negative_prompts, references, storage
from generation.models import Image, Job, JobStatus
from generation.submission import build_job, cancel
from generation.worker import pipelines, runtime
from sdxl_tasks import devmodel, pipeline


@pytest.fixture(scope="session")
def sdxl_model(tiny_models):
    return tiny_models["sdxl"]


@pytest.fixture(autouse=True)
def sdxl_settings(settings, tmp_path):
    settings.TORCH_DEVICE = "cpu"
    settings.STORAGE_BACKEND = "local"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.OURVIDZ_PROFILE = "dev"
    storage._storage.cache_clear()
    yield
    storage._storage.cache_clear()


def make_job(user, prompt="a red house by the sea", **kwargs):
    kwargs.setdefault("num_images", 3)
    kwargs.setdefault("seed", 123)
    job = build_job(user, "sdxl_image_fast", prompt, **kwargs)
    job.save()
    return job


def run_job(job):
    runtime.run(job.pk, "sdxl", pipeline.generate)
    return Job.objects.get(pk=job.pk)


def stored_bytes(image):
    return storage.get_storage().get(image.bucket, image.image_path)


def pixels(image):
    return np.asarray(PILImage.open(io.BytesIO(stored_bytes(image))).convert("RGB"), dtype=np.int16)


def test_job_renders_all_images_in_one_batch(alice, tiny_models):
    job = run_job(make_job(alice))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert (job.width, job.height, job.steps) == (64, 64, 3)  # the dev profile's sizes
    assert (job.current_step, job.total_steps, job.progress) == (3, 3, 1.0)
    rows = list(job.images.order_by("image_index"))
    assert [(r.image_index, r.seed, r.width, r.height) for r in rows] == [
        (0, 123, 64, 64), (1, 124, 64, 64), (2, 125, 64, 64)]
    assert all(storage.get_storage().exists(r.bucket, r.thumbnail_path) for r in rows)
    first, second, third = (pixels(r) for r in rows)
    assert first.shape == (64, 64, 3)
    assert not np.array_equal(first, second) and not np.array_equal(second, third)
    assert {key: job.metadata[key] for key in ("model", "sampler", "device", "dtype", "pipeline")} == {
        "model": "sdxl-tiny", "sampler": "Euler", "device": "cpu", "dtype": "float32",
        "pipeline": "text2img"}
    assert {"load", "denoise", "generate", "store"} <= set(job.metadata["timings"])


def test_png_carries_generation_parameters(alice, tiny_models):
    job = run_job(make_job(alice, num_images=1, seed=7))

    text = PILImage.open(io.BytesIO(stored_bytes(job.images.get()))).info["parameters"]
    lines = text.splitlines()
    assert lines[0] == "a red house by the sea"
    assert lines[1] == f"Negative prompt: {job.negative_prompt}" and "bad anatomy" in lines[1]
    assert lines[2] == ("Steps: 3, Sampler: Euler, CFG scale: 6.0, Seed: 7, Size: 64x64, "
                        "Model: sdxl-tiny, Job type: sdxl_image_fast")


def test_same_seed_gives_identical_pixels(alice, tiny_models):
    first = run_job(make_job(alice))
    second = run_job(make_job(alice))

    for a, b in zip(first.images.order_by("image_index"), second.images.order_by("image_index"), strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_each_image_can_be_regenerated_alone_with_its_seed(alice, tiny_models):
    batch = list(run_job(make_job(alice, seed=123)).images.order_by("image_index"))

    for i in (0, 2):
        alone = run_job(make_job(alice, num_images=1, seed=123 + i)).images.get()
        assert alone.seed == batch[i].seed == 123 + i
        assert np.abs(pixels(alone) - pixels(batch[i])).max() <= 2


def test_seeds_wrap_at_32_bits(alice, tiny_models):
    job = run_job(make_job(alice, seed=2**32 - 2))

    seeds = job.images.order_by("image_index").values_list("seed", flat=True)
    assert list(seeds) == [2**32 - 2, 2**32 - 1, 0]


def test_cancelling_mid_run_leaves_no_images(alice, tiny_models, monkeypatch, settings):
    steps_seen = []
    original_step = runtime.JobRun.step

    def step(self, step, total):
        steps_seen.append(step)
        if step == 2:
            assert cancel(self.job)  # the user presses cancel while step 2 runs
        return original_step(self, step, total)

    monkeypatch.setattr(runtime.JobRun, "step", step)
    job = run_job(make_job(alice))

    assert job.status == JobStatus.CANCELLED
    assert steps_seen == [1, 2]  # stopped at the first step after the cancel
    assert not Image.objects.filter(job=job).exists()
    assert not list((settings.MEDIA_ROOT / job.type.bucket).rglob(f"*{job.pk}*"))


def test_nan_output_fails_the_job_instead_of_storing_black_images(alice, tiny_models, monkeypatch):
    import torch

    pipe = pipeline.load().pipe

    def broken_decode(latents, return_dict=True):
        n, _, h, w = latents.shape
        return (torch.full((n, 3, h * 2, w * 2), float("nan")),)  # the tiny VAE upsamples by 2

    monkeypatch.setattr(pipe.vae, "decode", broken_decode)
    job = run_job(make_job(alice))

    assert job.status == JobStatus.FAILED
    assert "NaN" in job.error_message
    assert not Image.objects.filter(job=job).exists()


def upload_reference(user):
    buffer = io.BytesIO()
    PILImage.new("RGB", (96, 48), (200, 30, 30)).save(buffer, format="PNG")  # not the job's size
    return references.save_reference(user, SimpleUploadedFile("ref.png", buffer.getvalue()))


def test_composition_reference_runs_img2img(alice, tiny_models):
    reference = upload_reference(alice)

    job = run_job(make_job(alice, reference_image=reference, reference_type="composition",
                           reference_strength=0.7))
    plain = run_job(make_job(alice))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.metadata["pipeline"] == "img2img"
    assert job.metadata["reference"] == {"id": reference.pk, "type": "composition", "size": [64, 64],
                                         "reference_strength": 0.7, "denoise_strength": 0.3}
    assert (job.current_step, job.total_steps) == (3, 3)  # the job's steps, whatever the strength
    rows = list(job.images.order_by("image_index"))
    assert len(rows) == 3 and all((r.width, r.height) == (64, 64) for r in rows)
    assert not np.array_equal(pixels(rows[0]), pixels(plain.images.get(image_index=0)))
    assert "Denoising strength: 0.3" in PILImage.open(io.BytesIO(stored_bytes(rows[0]))).info["parameters"]


def test_unusable_reference_fails_the_job_with_a_reason(alice, tiny_models, settings):
    deleted = make_job(alice, reference_image=upload_reference(alice), reference_type="composition")
    deleted.reference_image.delete()
    deleted = run_job(deleted)
    settings.SDXL_IP_ADAPTER_PATH = ""  # a worker without IP-Adapter weights
    style = run_job(make_job(alice, reference_image=upload_reference(alice), reference_type="style"))

    assert (deleted.status, deleted.error_message) == (
        JobStatus.FAILED, "The reference image was deleted before the job ran.")
    assert (style.status, style.error_message) == (
        JobStatus.FAILED, "reference_type 'style' needs IP-Adapter weights, which this SDXL worker does not have.")


@pytest.mark.parametrize("reference_type", ["style", "character"])
def test_ip_adapter_references_condition_the_images(alice, tiny_models, reference_type):
    reference = upload_reference(alice)
    plain = run_job(make_job(alice))
    guided = run_job(make_job(alice, reference_image=reference, reference_type=reference_type,
                              reference_strength=0.8))
    weak = run_job(make_job(alice, reference_image=reference, reference_type=reference_type,
                            reference_strength=0.1))
    after = run_job(make_job(alice))

    assert guided.status == JobStatus.COMPLETED, guided.error_message
    assert guided.metadata["reference"]["type"] == reference_type
    assert guided.metadata["reference"]["ip_adapter"].endswith("ip-adapter_sdxl.safetensors")
    first = [pixels(job.images.get(image_index=0)) for job in (plain, guided, weak, after)]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    # The adapter is switched out again: text-only jobs are exactly what they were.
    assert np.array_equal(first[0], first[3])
    assert f"Reference: {reference_type}" in PILImage.open(
        io.BytesIO(stored_bytes(guided.images.get(image_index=0)))).info["parameters"]


def test_style_and_character_differ(alice, tiny_models):
    reference = upload_reference(alice)
    style = run_job(make_job(alice, reference_image=reference, reference_type="style", reference_strength=1.0))
    character = run_job(make_job(alice, reference_image=reference, reference_type="character",
                                 reference_strength=1.0))
    assert not np.array_equal(pixels(style.images.get(image_index=0)), pixels(character.images.get(image_index=0)))


def test_out_of_memory_retries_in_smaller_batches(alice, tiny_models, monkeypatch):
    import torch

    normal = run_job(make_job(alice, num_images=6, seed=50))
    real_call = pipeline.call
    tried = []

    def small_gpu(pipe, kwargs, chunk_seeds, callback):
        tried.append(len(chunk_seeds))
        if len(chunk_seeds) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(pipe, kwargs, chunk_seeds, callback)

    monkeypatch.setattr(pipeline, "call", small_gpu)
    job = run_job(make_job(alice, num_images=6, seed=50))

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert tried == [6, 3, 3]
    assert job.metadata["batches"] == [3, 3]
    assert job.metadata["out_of_memory"][0]["batch"] == 6
    assert (job.current_step, job.total_steps) == (6, 6)  # two calls of three steps
    for a, b in zip(normal.images.order_by("image_index"), job.images.order_by("image_index"), strict=True):
        assert a.seed == b.seed and np.abs(pixels(a) - pixels(b)).max() <= 2


def test_out_of_memory_for_one_image_fails_clearly(alice, tiny_models, monkeypatch):
    import torch

    def no_gpu_memory(pipe, kwargs, chunk_seeds, callback):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(pipeline, "call", no_gpu_memory)
    job = run_job(make_job(alice, num_images=6))

    assert job.status == JobStatus.FAILED
    assert job.error_message == "The GPU ran out of memory even for one 64×64 image."
    assert [entry["batch"] for entry in job.metadata["out_of_memory"]] == [6, 3, 1]


def test_impossible_parameters_fail_fast(alice, tiny_models):
    job = make_job(alice, num_images=1)
    Job.objects.filter(pk=job.pk).update(width=66)
    job = run_job(job)
    assert job.status == JobStatus.FAILED
    assert job.error_message == "Width and height must be multiples of 4; got 66×64."


def test_reference_strength_maps_to_denoise_strength():
    assert pipeline.denoise_strength(0.7) == pytest.approx(0.3)
    assert pipeline.denoise_strength(None) == pytest.approx(0.3)
    assert pipeline.denoise_strength(0.1) == pytest.approx(0.9)
    assert pipeline.denoise_strength(1.0) == pipeline.MIN_DENOISE
    for steps in (2, 3, 5, 15, 25):
        for strength in (0.1, 0.3, 0.37, 0.9, 1.0):
            total = pipeline.img2img_steps(steps, strength)
            assert int(total * strength) >= steps and int((total - 1) * strength) < steps


def test_load_publishes_what_it_loaded_and_survives_a_redis_error(monkeypatch, sdxl_model):
    published = []
    pipelines.forget_loaded()
    monkeypatch.setattr("generation.worker.heartbeats.publish_loaded", published.append)
    loaded = pipeline.load()
    assert pipeline.load() is loaded  # once per process
    info = published[0]
    assert len(published) == 1
    assert {k: info[k] for k in ("pool", "model", "model_path", "device", "dtype", "vram_bytes", "compiled",
                                 "reference_types")} == {
        "pool": "sdxl", "model": "sdxl-tiny", "model_path": str(sdxl_model), "device": "cpu",
        "dtype": "float32", "vram_bytes": None, "compiled": False,
        "reference_types": ["character", "composition", "style"]}
    assert info["warmup_seconds"] > 0 and info["ip_adapter"].endswith("ip-adapter_sdxl.safetensors")

    def fail(info):
        raise ConnectionError("redis is down")

    pipelines.forget_loaded()
    monkeypatch.setattr("generation.worker.heartbeats.publish_loaded", fail)
    assert pipeline.load() is not loaded


def test_task_runs_the_job_in_process(alice, tiny_models):
    from sdxl_tasks import tasks

    assert tasks.generate.name == "sdxl.generate"
    job = make_job(alice, num_images=1)
    tasks.generate(str(job.pk))

    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_dev_model_tokenizer_serves_the_web_tier(sdxl_model):
    config = json.loads((sdxl_model / "tokenizer" / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 77
    tokenizer, window = negative_prompts.load_tokenizer(str(sdxl_model / "tokenizer"))
    assert window == 77
    encoding = tokenizer.encode("Bad anatomy, extra fingers, wrong number of people")
    assert encoding.tokens[0] == devmodel.BOS and encoding.tokens[-1] == devmodel.EOS
    assert devmodel.UNK not in encoding.tokens
    assert max(tokenizer.get_vocab().values()) < devmodel.VOCAB_SIZE
    assert not [p for p in sdxl_model.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_tests_without_the_model_read_its_tokenizer(sdxl_model, settings):
    """conftest writes the tokenizer alone for the tests that do not build the tiny models."""
    light = negative_prompts.load_tokenizer(settings.SDXL_TOKENIZER_PATH)
    assert light[1] == negative_prompts.load_tokenizer(str(sdxl_model / "tokenizer"))[1] == 77
    assert (sdxl_model / "tokenizer" / "tokenizer.json").read_bytes() == (
        Path(settings.SDXL_TOKENIZER_PATH) / "tokenizer.json").read_bytes()
