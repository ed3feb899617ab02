"""SDXL pool benchmark: batching and warm-model gains on a CPU, and full-size speed on a GPU.

    make bench-sdxl                              # CPU part, then the GPU part when CUDA is available
    make bench-sdxl ARGS="--cpu-only"            # CPU part only
    make bench-sdxl ARGS="--gpu --batches 1 6"   # GPU part only (fails without CUDA)
    make bench-sdxl ARGS="--gpu-dry-run"         # the GPU code path on a CPU, scaled down (a code check)

Prints figures; asserts nothing about speed.

1. CPU, tiny dev model (built into a temp folder), jobs in a scratch database `ourvidz_bench_sdxl`
   run through the worker's own code (generation.worker.runtime.run + sdxl_tasks.pipeline.generate):
   a. batching gain: one 6-image job vs six 1-image jobs (seeds S..S+5), at each --sizes;
   b. warm model: in a fresh process, the first job (loads and warms up the pipeline) vs the second.
2. GPU: full-size SDXL built from its published config with RANDOM weights (speed does not depend on
   weight values; never zeros), float16 as the worker loads it, optimised by the worker's own
   sdxl_tasks.pipeline.optimize (channels-last, torch.compile per SDXL_COMPILE) and warm_up.
   For sdxl_image_fast / sdxl_image_high at 1024x1024 and each batch size: seconds per image
   (and the part spent in the VAE decode), peak VRAM, and the speed-up over the old system's
   expected seconds per image (generation/job_types.py, RTX 6000 Ada). Goal on an H100:
   sdxl_image_high <= 1.0 s/image at batch 1 and <= 0.7 s/image at batch 6.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = common.ROOT
sys.path.insert(0, str(ROOT))
BENCH_DB = "ourvidz_bench_sdxl"
PROMPT = "two women walking on a beach at sunset, photo, detailed"
NEGATIVE = "blurry, low quality, ugly"
GOALS = {("sdxl_image_high", 1): 1.0, ("sdxl_image_high", 6): 0.7}  # s/image on an H100

# stabilityai/stable-diffusion-xl-base-1.0, from its published configs.
UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
            cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu")
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           norm_num_groups=32, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768, max_position_embeddings=77, vocab_size=49408)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              hidden_act="gelu", projection_dim=1280, max_position_embeddings=77, vocab_size=49408)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", interpolation_type="linear")
# --gpu-dry-run: the same architecture, narrower and shallower, so that a CPU runs it in seconds.
DRY_RUN = {"unet": dict(block_out_channels=(64, 128, 256), transformer_layers_per_block=(1, 1, 2),
                        attention_head_dim=(2, 4, 8), cross_attention_dim=128 + 256,
                        projection_class_embeddings_input_dim=6 * 256 + 256),
           "vae": dict(block_out_channels=(32, 64, 128, 128)),
           "clip_l": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                          projection_dim=128),
           "clip_g": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                          projection_dim=256)}


def run_job(user, num_images, seed, size=None, job_type="sdxl_image_fast"):
    """Create a job, run it as the SDXL worker does, return its timings (seconds) and wall time."""
    from generation.submission import build_job
    from sdxl_tasks import pipeline

    job = build_job(user, job_type, PROMPT, num_images=num_images, seed=seed)
    if size:
        job.width = job.height = size
    job.save()
    job, wall = common.run_saved_job(job, "sdxl", pipeline.generate)
    return {**job.metadata["timings"], "wall": wall, "steps": job.steps, "size": f"{job.width}x{job.height}"}


def cpu_part(args):
    from django.conf import settings

    from sdxl_tasks import devmodel

    common.reset_database(BENCH_DB)
    devmodel.build(settings.SDXL_MODEL_PATH)
    user = common.bench_user()
    print(f"\n1a. Batching gain (CPU, tiny model, sdxl_image_fast, one run): six 1-image jobs vs one 6-image job, "
          f"seeds {args.seed}..{args.seed + 5}")
    print(f"  {'size':>9} {'steps':>5} | {'denoise 6x1':>11} {'1x6':>7} {'gain':>6} | "
          f"{'job wall 6x1':>12} {'1x6':>7} {'gain':>6}")
    for size in args.sizes:
        run_job(user, 1, args.seed, size)  # warm-up: loads the pipeline, first calls at this size
        run_job(user, 6, args.seed, size)
        singles = [run_job(user, 1, args.seed + i, size) for i in range(6)]
        batch = run_job(user, 6, args.seed, size)
        one_by_one = {k: sum(s[k] for s in singles) for k in ("denoise", "wall")}
        print(f"  {batch['size']:>9} {batch['steps']:>5} | {one_by_one['denoise']:9.3f} s {batch['denoise']:5.3f} s "
              f"{one_by_one['denoise'] / batch['denoise']:5.2f}x | {one_by_one['wall']:10.3f} s "
              f"{batch['wall']:5.3f} s {one_by_one['wall'] / batch['wall']:5.2f}x")
    print("  denoise: the job's timings['denoise'] (the pipeline calls, VAE decode included); job wall: runtime.run "
          "(load, encode, storage, database too)")

    print("\n1b. Warm model (CPU, tiny model, a fresh worker process, 1-image sdxl_image_fast jobs at the dev size)")
    child = subprocess.run([sys.executable, __file__, "--warm-child", "--seed", str(args.seed)],
                           capture_output=True, text=True, env=os.environ, cwd=ROOT)
    if child.returncode:
        sys.exit(f"warm-model process failed:\n{child.stdout}\n{child.stderr}")
    first, second = json.loads(child.stdout.splitlines()[-1])
    print(f"  {'job':>6} | {'load+warm-up':>12} {'denoise':>8} {'generate':>9} {'job wall':>9}")
    for name, t in (("first", first), ("second", second)):
        print(f"  {name:>6} | {t['load']:10.3f} s {t['denoise']:6.3f} s {t['generate']:7.3f} s {t['wall']:7.3f} s")
    print(f"  second job {first['wall'] / second['wall']:.1f}x faster than the first (job wall); "
          f"generate {first['generate'] / second['generate']:.1f}x")


def warm_child(args):
    """In a fresh process: the worker's first and second jobs; prints their timings as JSON."""
    user = common.bench_user()
    print(json.dumps([run_job(user, 1, args.seed), run_job(user, 1, args.seed + 1)]))


def build_sdxl(device, dtype, dry_run):
    """StableDiffusionXLPipeline from SDXL's configs with random weights, created on `device`."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdxl_tasks import devmodel

    def config(base, part):
        return {**base, **(DRY_RUN[part] if dry_run else {})}

    tokenizer = devmodel.build_tokenizer()  # word-level; its ids (< 1000) are valid in CLIP's 49408
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, layer_norm_eps=1e-5)
    torch.manual_seed(0)
    diffusers.utils.logging.set_verbosity_error()  # .to(dtype) warns about a (here empty) keep-in-float32 list
    with torch.device(device):  # default (random) initialisation, directly on the device
        unet = UNet2DConditionModel(**config(UNET, "unet")).to(dtype)
        vae = AutoencoderKL(**config(VAE, "vae")).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**config(CLIP_L, "clip_l"), **ids)).to(dtype)
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config(CLIP_G, "clip_g"), **ids)).to(dtype)
    diffusers.utils.logging.set_verbosity_warning()
    for model in (unet, vae, text_encoder, text_encoder_2):
        model.eval()  # as from_pretrained leaves them (models built from a config start in training mode)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                     scheduler=EulerDiscreteScheduler(**SCHEDULER), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gpu_part(args):
    import numpy as np
    import torch
    from django.conf import settings

    from generation import job_types
    from sdxl_tasks import pipeline

    dry = args.gpu_dry_run
    device, dtype, cuda, sync = common.gpu_device(dry, torch.float16)  # float16: what sdxl_tasks.pipeline._load picks
    with common.gpu_settings(dry, args.no_compile, "SDXL_COMPILE"):
        what = "scaled-down SDXL (dry run, on a CPU)" if dry else "full-size SDXL"
        print(f"\n2. GPU: {what}, random weights (never zeros), {str(dtype).removeprefix('torch.')}, "
              f"SDXL_COMPILE={settings.SDXL_COMPILE} mode={settings.SDXL_COMPILE_MODE}")
        start = time.perf_counter()
        pipe = build_sdxl(device, dtype, dry)
        sync()
        params = sum(p.numel() for p in pipe.unet.parameters())
        print(f"  built in {time.perf_counter() - start:.1f} s (UNet {params / 1e9:.2f} B parameters)")
        compiled = pipeline.optimize(pipe, device)
        for batch in args.batches:
            start = time.perf_counter()
            pipeline.warm_up(pipe, batches=(batch,))
            sync()
            print(f"  warm-up{' + compile' if compiled else ''}, batch {batch}: {time.perf_counter() - start:.1f} s")

        size = 256 if dry else None
        print(f"  {'job type':<16} {'size':>9} {'steps':>5} {'batch':>5} | {'s/image':>7} {'decode':>6} "
              f"{'peak VRAM':>9} | {'old s/img':>9} {'speed-up':>8} | goal")
        for name in args.job_types:
            jt = job_types.get(name)
            width, height = (size, size) if size else (jt.width, jt.height)
            steps = args.steps or (2 if dry else jt.steps)
            kwargs = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "width": width, "height": height,
                      "num_inference_steps": steps, "guidance_scale": jt.guidance, "output_type": "np"}
            for batch in args.batches:
                common.reset_peak_vram(cuda)
                totals, decodes, finite = [], [], True
                for run in range(1 + args.runs):  # the first run is untimed
                    marks = {}

                    def denoised(pipe, step, timestep, callback_kwargs, marks=marks):
                        if step == pipe.num_timesteps - 1:
                            sync()
                            marks["denoised"] = time.perf_counter()
                        return callback_kwargs

                    sync()
                    start = time.perf_counter()
                    pixels = pipeline.call(pipe, kwargs, list(range(args.seed, args.seed + batch)), denoised)
                    sync()
                    end = time.perf_counter()
                    finite = finite and bool(np.isfinite(pixels).all())
                    if run:
                        totals.append((end - start) / batch)
                        decodes.append((end - marks["denoised"]) / batch)
                per_image = statistics.median(totals)
                peak = common.peak_vram(cuda)
                goal = GOALS.get((name, batch)) if steps == jt.steps and not dry else None
                verdict = f"<= {goal} s: {'met' if per_image <= goal else 'MISSED'}" if goal else ""
                print(f"  {name:<16} {f'{width}x{height}':>9} {steps:>5} {batch:>5} | {per_image:7.3f} "
                      f"{statistics.median(decodes):6.3f} {peak:>9} | {jt.expected_seconds:9.1f} "
                      f"{jt.expected_seconds / per_image:7.1f}x | {verdict}{'' if finite else ' (non-finite pixels)'}")
    print("  s/image: median of the timed runs' wall time / batch; decode: the part after the last denoising "
          "step (VAE, float32 when force_upcast); speed-up: old s/image / new" + (" (dry run: not real figures)"
                                                                                   if dry else ""))


def header(args):
    common.print_versions("SDXL")
    sizes = ", ".join(f"{s}x{s}" if s else "dev profile" for s in args.sizes)
    print(f"  settings: CPU sizes {sizes}; GPU batches {args.batches}, job types {', '.join(args.job_types)}, "
          f"steps {args.steps or ('2 (dry run)' if args.gpu_dry_run else 'from the job-type table')}, "
          f"timed runs {args.runs}, compile {'off' if args.no_compile else 'per SDXL_COMPILE'}; seed {args.seed}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_part_options(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 128],
                        help="CPU batching sizes in pixels, multiples of 4; 0 = the dev profile's (default: 0 128)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3, 6], help="GPU batch sizes")
    parser.add_argument("--job-types", nargs="+", default=["sdxl_image_fast", "sdxl_image_high"])
    parser.add_argument("--steps", type=int, help="GPU steps instead of the job type's (no goal verdicts)")
    parser.add_argument("--runs", type=int, default=3, help="timed GPU runs per configuration (default 3)")
    parser.add_argument("--no-compile", action="store_true", help="GPU part without torch.compile")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--warm-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.warm_child:  # the environment is the parent's: scratch database, temp folder
        common.django_setup()
        return warm_child(args)
    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-sdxl-"))
    try:
        common.setup_django(BENCH_DB, data_dir, SDXL_MODEL_PATH=str(data_dir / "models" / "sdxl-tiny"),
                            SDXL_IP_ADAPTER_PATH="")
        header(args)
        common.run_parts(args, cpu_part, gpu_part)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
