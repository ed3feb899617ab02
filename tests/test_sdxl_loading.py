"""Loading the SDXL pool's model: a diffusers folder or one original-format .safetensors checkpoint,
validated before any weight is read, loaded with no network access. Real diffusers code on the tiny
development model; the single file is converted from it by sdxl_tasks.devmodel."""

import json
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.numpy import save_file

from sdxl_tasks import devmodel, loading
from sdxl_tasks.loading import ModelConfigError, check_model, load_pipeline

MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="session")
def folder(tiny_models):
    return tiny_models["sdxl"]


@pytest.fixture(scope="session")
def single_file(folder, tmp_path_factory):
    return devmodel.build_single_file(folder, tmp_path_factory.mktemp("sdxl-single") / "sdxl-tiny.safetensors")


@pytest.fixture(scope="session")
def configs_only(folder, tmp_path_factory):
    """The diffusers folder without its weights: all that a single-file checkpoint needs beside it."""
    path = tmp_path_factory.mktemp("sdxl-configs") / "sdxl-base-configs"
    shutil.copytree(folder, path, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def rematerialized(pipe):
    """`pipe` with every weight copied to freshly allocated memory.

    On a CPU, matrix-multiply kernels round differently depending on the weight's address alignment
    (a 32×128 linear layer gives other last bits at a misaligned address). from_pretrained leaves
    weights where safetensors mapped them, from_single_file converts them into tensors elsewhere, so
    identical weights give images differing by about 1e-6 as loaded. Copied into new allocations on
    both sides, identical weights must give identical pictures.
    """
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in [*component.parameters(), *component.buffers()]:
                tensor.data = tensor.data.clone()
    return pipe


def config(model):
    """A model's config as a dict, less the folder it was read from."""
    values = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    values.pop("_name_or_path", None)
    return values


def render(pipe):
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in (7, 8)]
    return pipe(prompt="a red house by the sea", negative_prompt="blurry", num_images_per_prompt=2,
                generator=generators, width=64, height=64, num_inference_steps=3, output_type="np").images


def test_folder_loads_offline(folder, no_network):
    assert check_model(folder, folder) == check_model(folder) == "folder"

    pipe = load_pipeline(folder, None, torch.float32)

    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert pipe.unet.dtype == torch.float32
    assert render(pipe).shape == (2, 64, 64, 3)


def test_single_file_is_the_same_model(folder, single_file, configs_only, no_network):
    assert check_model(single_file, configs_only) == "single_file"

    reference = load_pipeline(folder, None, torch.float32)
    pipe = load_pipeline(single_file, configs_only, torch.float32)  # weights from the file only

    for name in MODELS:
        expected, loaded = getattr(reference, name), getattr(pipe, name)
        assert type(loaded) is type(expected)
        expected_state, loaded_state = expected.state_dict(), loaded.state_dict()
        assert loaded_state.keys() == expected_state.keys(), name
        for key, value in expected_state.items():
            assert loaded_state[key].dtype == value.dtype and torch.equal(loaded_state[key], value), f"{name}.{key}"
        assert config(loaded) == config(expected), name
    assert pipe.scheduler.config == reference.scheduler.config
    assert pipe.tokenizer_2.get_vocab() == reference.tokenizer_2.get_vocab()

    assert np.array_equal(render(rematerialized(pipe)), render(rematerialized(reference)))


def test_single_file_dtype(single_file, folder):
    pipe = load_pipeline(single_file, folder, torch.float16)

    assert {getattr(pipe, name).dtype for name in MODELS} == {torch.float16}


def test_check_model_reads_no_weights(single_file, configs_only):
    """It runs in the worker's main process before forking: no torch (so no CUDA) is imported."""
    code = ("import sys; from sdxl_tasks import loading; "
            f"assert loading.check_model({str(single_file)!r}, {str(configs_only)!r}) == 'single_file'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(loading.__file__).parent.parent)


@pytest.fixture
def not_sdxl_checkpoint(tmp_path):
    """A valid .safetensors file holding a Stable Diffusion 1.5-style checkpoint's keys."""
    path = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 4, 3, 3), np.float32),
               "first_stage_model.encoder.conv_in.weight": np.zeros((4, 3, 3, 3), np.float32),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": np.zeros(8, np.float32)}, path)
    return path


def expect_error(path, config_path, *fragments):
    with pytest.raises(ModelConfigError) as error:
        check_model(path, config_path)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    return str(error.value)


def test_missing_paths(tmp_path, single_file, folder):
    expect_error(tmp_path / "nope", None, f"SDXL_MODEL_PATH={tmp_path / 'nope'}: no such file or folder")
    expect_error("", None, "SDXL_MODEL_PATH is empty")
    expect_error(single_file, None, f"SDXL_MODEL_PATH={single_file} is a single-file checkpoint",
                 "set SDXL_CONFIG_PATH")
    expect_error(single_file, tmp_path / "nope", f"SDXL_CONFIG_PATH={tmp_path / 'nope'}: no such folder")


def test_folders_that_are_not_sdxl(tmp_path, tiny_models, single_file):
    wan = tiny_models["wan"]
    expect_error(wan, None, f"SDXL_MODEL_PATH={wan}: model_index.json describes 'WanPipeline'",
                 "not an SDXL pipeline")
    expect_error(single_file, wan, f"SDXL_CONFIG_PATH={wan}: model_index.json describes 'WanPipeline'")
    expect_error(tmp_path, None, f"SDXL_MODEL_PATH={tmp_path}: not a diffusers pipeline folder (no model_index.json)")


def test_incomplete_folders(tmp_path, tiny_models, configs_only):
    refiner = tmp_path / "refiner"
    shutil.copytree(tiny_models["sdxl"], refiner)
    index = json.loads((refiner / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionXLImg2ImgPipeline", text_encoder=[None, None], tokenizer=[None, None])
    (refiner / "model_index.json").write_text(json.dumps(index))
    expect_error(refiner, None, f"SDXL_MODEL_PATH={refiner}: no text_encoder, tokenizer",
                 "a refiner has no first text encoder")
    # Configs without weights serve a single file, not SDXL_MODEL_PATH.
    expect_error(configs_only, None, f"SDXL_MODEL_PATH={configs_only}: no weights in unet/")


def test_files_that_are_not_sdxl_checkpoints(tmp_path, not_sdxl_checkpoint, folder):
    expect_error(not_sdxl_checkpoint, folder, f"SDXL_MODEL_PATH={not_sdxl_checkpoint}: not an SDXL base checkpoint",
                 "the first text encoder (CLIP ViT-L), the second text encoder (OpenCLIP ViT-bigG)",
                 "looks like a Stable Diffusion 1.x/2.x checkpoint")
    garbage = tmp_path / "truncated.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    expect_error(garbage, folder, f"SDXL_MODEL_PATH={garbage}: not a readable .safetensors file")
    pickled = tmp_path / "sd_xl_base_1.0.ckpt"
    pickled.write_bytes(b"not read")
    expect_error(pickled, folder, f"SDXL_MODEL_PATH={pickled}: a single-file checkpoint must be a .safetensors file")


def run_worker(env, timeout=90):
    """Start the SDXL worker from the Procfile as `make run` does, under a node name of its own (the session's
    workers may be live under `sdxl`); return (exit status, output)."""
    from helpers import ROOT

    env = {**env, "SDXL_WORKER_NAME": f"sdxl-{uuid.uuid4().hex[:6]}"}
    result = subprocess.run([sys.executable, "-m", "ourvidz.supervise", "sdxl"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.django_db(transaction=True)
def test_worker_with_a_wrong_model_path_stops_at_start(tmp_path, tiny_models):
    from helpers import worker_env

    status, output = run_worker(worker_env(SDXL_MODEL_PATH=tmp_path / "missing", SDXL_CONFIG_PATH=""))
    assert status != 0
    assert "sdxl worker not started: SDXL_MODEL_PATH=" in output and "no such file or folder" in output


@pytest.mark.django_db(transaction=True)
def test_worker_with_truncated_weights_stops_at_start(tmp_path, folder):
    from helpers import worker_env

    broken = tmp_path / "sdxl-broken"
    shutil.copytree(folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)  # a truncated download
    status, output = run_worker(worker_env(SDXL_MODEL_PATH=broken, SDXL_CONFIG_PATH=broken))
    assert status != 0, output
    assert "sdxl worker not started: SDXL_MODEL_PATH=" in output
    assert "unet/diffusion_pytorch_model.safetensors: not a readable .safetensors file" in output


@pytest.mark.django_db(transaction=True)
def test_worker_that_cannot_load_its_models_stops(tmp_path, folder, tiny_models):
    """What the start check cannot see (here: an IP-Adapter for another UNet) stops the worker too."""
    from helpers import worker_env

    status, output = run_worker(worker_env(SDXL_MODEL_PATH=folder, SDXL_CONFIG_PATH=folder,
                                           SDXL_IP_ADAPTER_PATH=tiny_models["wan"]))
    assert "could not load the sdxl models; stopping the worker" in output
    # Each start stops itself with status 1 before taking a task, and the supervisor gives it up.
    assert output.count("Cold shutdown") == 3 and output.count("sdxl exited (status 1)") == 3, output
    assert "given up" in output and status != 0
    assert "Task sdxl.generate[" not in output
