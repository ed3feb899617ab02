"""WAN image-to-video on the tiny development models: loading beside the text-to-video pipeline,
model checks, reference frames and real renders (no Celery)."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from generation import references, storage
from generation.models import Job, JobStatus, Video
from generation.submission import build_job
from generation.worker import pipelines, runtime
from generation.worker.model_folders import ModelConfigError
from wan_tasks import i2v, pipeline, tasks

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(scope="session")
def i2v_model(tiny_models):
    """The tiny I2V model for the tiny WAN model."""
    return tiny_models["wan_i2v"]


@pytest.fixture(autouse=True)
def wan_settings(settings, tmp_path, monkeypatch):
    settings.TORCH_DEVICE = "cpu"
    settings.STORAGE_BACKEND = "local"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.OURVIDZ_PROFILE = "dev"
    # Keep this test run's model info out of a Redis that a running stack may share.
    published = []
    monkeypatch.setattr("generation.worker.heartbeats.publish_loaded", published.append)
    storage._storage.cache_clear()
    yield published
    storage._storage.cache_clear()


@pytest.fixture
def t2v(tiny_models):
    return pipeline.get_pipeline()


@pytest.fixture
def i2v_pipe(t2v, i2v_model):
    return i2v.get_i2v(t2v, i2v_model)


def upload(user, picture):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return references.save_reference(user, SimpleUploadedFile("ref.png", buffer.getvalue()))


def video_job(user, colour=RED, job_type="video_fast", seed=7, size=(64, 64)):
    reference = upload(user, PILImage.new("RGB", size, colour))
    job = build_job(user, job_type, "a cat", seed=seed, reference_image=reference, reference_type="composition")
    job.save()
    return job


def render(pipe, job, **extra):
    """The call wan_tasks.pipeline.generate makes for `job`, plus `extra` (the I2V arguments)."""
    return pipe(prompt=job.prompt, negative_prompt=job.negative_prompt or None, height=job.height,
                width=job.width, num_frames=job.frames, num_inference_steps=job.steps,
                guidance_scale=job.guidance, generator=torch.Generator(device="cpu").manual_seed(job.seed),
                output_type="np", **extra).frames[0]


def render_i2v(pipe, job):
    return render(pipe, job, **i2v.i2v_kwargs(job, pipelines.reference_picture(job), pipe))


def test_dev_model_shares_the_text_to_video_weights(i2v_model, tiny_models):
    index = json.loads((i2v_model / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    transformer = json.loads((i2v_model / "transformer" / "config.json").read_text())
    encoder = json.loads((i2v_model / "image_encoder" / "config.json").read_text())
    assert transformer["in_channels"] == 36 and transformer["image_dim"] == encoder["hidden_size"]
    for name in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"):
        assert (i2v_model / name).read_bytes() == (tiny_models["wan"] / name).read_bytes(), name
    assert i2v.check_i2v_model(i2v_model, tiny_models["wan"])["image_dim"] == encoder["hidden_size"]


def test_loading_shares_text_encoder_tokenizer_and_vae(t2v, i2v_model):
    pipe = i2v.load_i2v(t2v, i2v_model)

    assert pipe.text_encoder is t2v.text_encoder and pipe.vae is t2v.vae and pipe.tokenizer is t2v.tokenizer
    pairs = zip(pipe.text_encoder.parameters(), t2v.text_encoder.parameters(), strict=True)
    assert all(a.data_ptr() == b.data_ptr() for a, b in pairs)
    assert pipe.transformer is not t2v.transformer and pipe.transformer.config.in_channels == 36
    assert pipe.transformer.config.image_dim == pipe.image_encoder.config.hidden_size
    assert str(pipe.device) == "cpu" and pipe.transformer.dtype == pipe.image_encoder.dtype == torch.float32
    assert pipe._progress_bar_config == {"disable": True}
    assert i2v.default_dtype(torch.device("cuda")) == {
        "default": torch.bfloat16, "vae": torch.float32, "image_encoder": torch.float32}

    cached = i2v.get_i2v(t2v, i2v_model)
    assert i2v.get_i2v(t2v, i2v_model) is cached  # once per process
    pipelines.forget_loaded()
    reloaded = pipeline.get_pipeline()
    assert i2v.get_i2v(reloaded, i2v_model).vae is reloaded.vae  # follows a reloaded T2V pipeline


def test_render_is_a_finite_video_and_deterministic_per_seed(alice, i2v_pipe):
    job = video_job(alice)
    assert (job.width, job.height, job.frames, job.steps) == (32, 48, 9, 5)  # video_fast, dev profile

    first, again = render_i2v(i2v_pipe, job), render_i2v(i2v_pipe, job)
    other = render_i2v(i2v_pipe, video_job(alice, seed=8))

    assert first.shape == (9, 48, 32, 3) and np.isfinite(first).all()
    assert first.min() >= 0 and first.max() <= 1 and first.std() > 0
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_reference_conditions_the_render(alice, t2v, i2v_pipe):
    """A random tiny model draws nothing like its reference (its first frame is no closer to a red
    reference than a text-to-video render is), so this checks what does hold: the reference reaches
    the transformer through both WAN 2.1 I2V paths, and changing it changes the video."""
    red, blue = video_job(alice, RED), video_job(alice, BLUE)
    inputs = []

    def capture(module, args, kwargs):
        if not inputs:  # the first transformer call: step one, conditional branch
            inputs.append({k: kwargs[k].clone() for k in ("hidden_states", "encoder_hidden_states_image")})

    handle = i2v_pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        from_red = render_i2v(i2v_pipe, red)
    finally:
        handle.remove()
    from_blue = render_i2v(i2v_pipe, blue)
    text_only = render(t2v, red)

    assert not np.array_equal(from_red, from_blue)  # same seed and prompt, another reference
    assert not np.array_equal(from_red, text_only)  # same seed and prompt, no reference

    # 16 noise channels, then 4 mask channels marking the first latent frame as given, then the VAE
    # latents of the reference: the causal VAE encodes the first frame alone, so latent frame 0 must
    # be the reference's own (normalized) latents.
    (captured,) = inputs
    hidden = captured["hidden_states"]
    assert hidden.shape == (1, 36, 3, 6, 4)  # (9 - 1) / 4 + 1 latent frames of 48/8 × 32/8
    assert (hidden[:, 16:20, 0] == 1).all() and (hidden[:, 16:20, 1:] == 0).all()
    vae = i2v_pipe.vae
    picture = i2v_pipe.video_processor.preprocess(pipelines.reference_picture(red), height=48, width=32)
    latents = vae.encode(picture.unsqueeze(2)).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(hidden[:, 20:, :1], (latents - mean) / std, rtol=1e-4, atol=1e-4)
    # The CLIP image tokens are the reference's: penultimate hidden states of the image encoder.
    tokens = captured["encoder_hidden_states_image"]
    expected = i2v_pipe.encode_image(pipelines.reference_picture(red), torch.device("cpu"))
    torch.testing.assert_close(tokens, expected)
    assert not torch.allclose(expected, i2v_pipe.encode_image(pipelines.reference_picture(blue), torch.device("cpu")))


def test_reference_frame_is_read_from_storage_and_center_cropped(alice):
    wide = PILImage.new("RGB", (96, 48), BLUE)  # blue | red | green thirds
    wide.paste(RED, (32, 0, 64, 48))
    wide.paste((0, 255, 0), (64, 0, 96, 48))
    job = video_job(alice)
    job.reference_image = upload(alice, wide)

    frame = pipelines.reference_picture(job)

    assert frame.mode == "RGB" and frame.size == (job.width, job.height) == (32, 48)
    pixels = np.asarray(frame, dtype=int)
    assert np.abs(pixels[:, 2:-2] - RED).max() <= 8  # the middle third, not a squeezed whole


def test_deleted_reference_fails_with_a_message(alice):
    job = video_job(alice)
    job.reference_image.delete()
    job.refresh_from_db()

    assert job.reference_type == "composition" and job.reference_image is None
    with pytest.raises(runtime.JobError, match="reference image was deleted"):
        pipelines.reference_picture(job)


def test_i2v_kwargs(alice, i2v_pipe):
    job = video_job(alice)
    frame = pipelines.reference_picture(job)
    assert i2v.i2v_kwargs(job, frame, i2v_pipe) == {"image": frame}

    job.frames = 8
    with pytest.raises(runtime.JobError, match="4k\\+1 frames; got 8"):
        i2v.i2v_kwargs(job, frame, i2v_pipe)
    job.frames, job.width = 9, 40
    with pytest.raises(runtime.JobError, match="multiples of 16"):
        i2v.i2v_kwargs(job, frame)
    job.width = 32
    with pytest.raises(runtime.JobError, match="not the job's 32×48"):
        i2v.i2v_kwargs(job, frame.resize((48, 32)))
    image_job = video_job(alice, job_type="image_fast")
    with pytest.raises(runtime.JobError, match="image_fast does not take a reference image"):
        i2v.i2v_kwargs(image_job, pipelines.reference_picture(image_job))


def edited_copy(source, target, component=None, **changes):
    """A copy of the model folder whose component config (or model_index.json) has `changes`."""
    shutil.copytree(source, target)
    config = target / (f"{component}/config.json" if component else "model_index.json")
    data = json.loads(config.read_text())
    data.update(changes)
    config.write_text(json.dumps(data))
    return target


def test_check_i2v_model_names_the_variable_and_the_problem(i2v_model, tiny_models, tmp_path):
    t2v = tiny_models["wan"]

    def error(path, t2v_path=None):
        with pytest.raises(ModelConfigError) as info:
            i2v.check_i2v_model(path, t2v_path)
        assert isinstance(info.value, ImproperlyConfigured)
        assert str(info.value).startswith(i2v.MODEL_VAR)
        return str(info.value)

    assert "is empty" in error("")
    assert error(tmp_path / "nowhere") == f"WAN_I2V_MODEL_PATH={tmp_path / 'nowhere'}: no such folder."
    assert "no model_index.json" in error(tmp_path)
    message = error(t2v)
    assert "'WanPipeline' (a text-to-video model" in message and "WanImageToVideoPipeline" in message
    assert "no model_index.json" in error(tiny_models["enhancer"])  # a transformers model, not a pipeline

    no_encoder = tmp_path / "no-encoder"
    shutil.copytree(i2v_model, no_encoder)
    shutil.rmtree(no_encoder / "image_encoder")
    assert "no image_encoder" in error(no_encoder)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(i2v_model, no_weights)
    (no_weights / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    assert "no weights in transformer/" in error(no_weights)
    assert "16 input channels for 16 latent channels" in error(
        edited_copy(i2v_model, tmp_path / "t2v-shaped", "transformer", in_channels=16))
    wider = edited_copy(i2v_model, tmp_path / "wider-text", "transformer", text_dim=4096)
    assert i2v.check_i2v_model(wider)  # alone it could be fine ...
    assert "text encoder width (32)" in error(wider, t2v)  # ... but not beside this T2V model
    assert "TI2V-5B" in error(edited_copy(i2v_model, tmp_path / "ti2v", expand_timesteps=True))

    # Loading checks first, so a wrong folder is reported by name rather than by diffusers.
    with pytest.raises(ModelConfigError, match="WAN_I2V_MODEL_PATH"):
        i2v.load_i2v(pipeline.get_pipeline(), t2v)


# The pool: wan_tasks.pipeline.generate and the worker's start, with WAN_I2V_MODEL_PATH set (tiny_models).


def run_job(job):
    runtime.run(job.pk, "wan", pipeline.generate)
    return Job.objects.get(pk=job.pk)


def stored_video(job):
    row = Video.objects.get(job=job)
    return storage.get_storage().get(row.bucket, row.video_path)


def test_video_job_with_a_reference_renders_image_to_video(alice, tiny_models):
    job = run_job(video_job(alice))
    plain = build_job(alice, "video_fast", "a cat", seed=7)
    plain.save()
    plain = run_job(plain)

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.metadata["pipeline"] == "i2v" and job.metadata["model"] == "wan-i2v-tiny"
    assert job.metadata["reference"] == {"id": job.reference_image_id, "type": "composition",
                                         "reference_strength": None, "size": [32, 48], "model": "wan-i2v-tiny"}
    assert plain.metadata["pipeline"] == "t2v" and "reference" not in plain.metadata
    row = Video.objects.get(job=job)
    assert (row.frame_count, row.width, row.height) == (9, 32, 48)
    assert stored_video(job) != stored_video(plain)  # same seed and prompt: the reference made the difference


def test_reference_jobs_the_pool_cannot_honour_fail_with_a_message(alice, tiny_models, settings):
    image = run_job(video_job(alice, job_type="image_fast"))  # submission refuses these; a stale job fails
    assert image.status == JobStatus.FAILED
    assert image.error_message == "image_fast does not take a reference image: only video types start from one."

    settings.WAN_I2V_MODEL_PATH = ""
    video = run_job(video_job(alice))
    assert video.status == JobStatus.FAILED and "no image-to-video model (WAN_I2V_MODEL_PATH)" in video.error_message
    assert not Video.objects.filter(job__in=[image, video]).exists()


def test_worker_advertises_composition_only_with_an_image_to_video_model(wan_settings, settings, tmp_path,
                                                                         tiny_models):
    pipelines.forget_loaded()
    tasks.load_models()
    settings.WAN_I2V_MODEL_PATH = ""
    tasks.load_models()  # a changed setting loads again

    with_i2v, without = wan_settings
    assert (with_i2v["reference_types"], with_i2v["i2v"]) == (["composition"], "wan-i2v-tiny")
    assert (without["reference_types"], without["i2v"]) == ([], None)

    settings.WAN_I2V_MODEL_PATH = settings.WAN_MODEL_PATH  # a text-to-video folder
    with pytest.raises(ImproperlyConfigured, match="WAN_I2V_MODEL_PATH=.*'WanPipeline'"):
        pipeline.check_models()
