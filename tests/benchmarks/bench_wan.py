"""WAN pool benchmark: where an enhanced video job's time goes (CPU), full-size video speed (GPU).

    make bench-wan                                    # CPU part, then the GPU part when CUDA is available
    make bench-wan ARGS="--cpu-only"                  # CPU part only
    make bench-wan ARGS="--cpu-only --cpu-size 96x160 --cpu-frames 33"   # a heavier CPU job
    make bench-wan ARGS="--gpu --job-types video_fast"                   # GPU part only (fails without CUDA)
    make bench-wan ARGS="--gpu-dry-run"               # the GPU code path on a CPU, scaled down (a code check)

Prints figures; asserts nothing about speed.

1. CPU, tiny dev models (built into a temp folder), jobs in a scratch database `ourvidz_bench_wan`
   run through the worker's own code (generation.worker.runtime.run + wan_tasks.pipeline.generate):
   a. time split of one `video7b_fast_enhanced` job after a warm-up job: load, enhance, denoise,
      decode, encode, store (the upload) and the rest, in seconds and % of the job's wall time
      (size and frames from the dev profile, or --cpu-size / --cpu-frames);
   b. guidance cut-off: WAN_GUIDANCE_STOP 1.0 / 0.8 / 0.6 (classifier-free guidance stops after that
      fraction of the steps), denoise time and PSNR of the decoded frames against the 1.0 output.
2. GPU: full-size WAN 2.1 T2V 1.3B (transformer, VAE, UMT5-XXL text encoder) built from its published
   configs with RANDOM weights (speed does not depend on weight values; never zeros), bf16 with the
   VAE in float32 as the worker loads it, optimised by the worker's own wan_tasks.pipeline.optimize
   (torch.compile per WAN_COMPILE / WAN_COMPILE_MODE) and warm_up. For video_fast (25 steps) and
   video_high (50 steps) at 832x480, 81 frames, with WAN_GUIDANCE_STOP 1.0 and each --guidance-stops:
   seconds per video (denoise / VAE decode), peak VRAM, speed-up over the old system's expected
   seconds (generation/job_types.py, RTX 6000 Ada), goal verdicts (H100: video_high <= 45 s,
   video_fast <= 25 s) and the PSNR of each cut-off video against the full-guidance one (same seed).
   Each video takes tens of seconds; with both job types a call may pass the device tool's 10-minute
   limit, so `--job-types video_fast` and `--job-types video_high` can run as separate calls.
"""

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = common.ROOT
sys.path.insert(0, str(ROOT))
BENCH_DB = "ourvidz_bench_wan"
PROMPT = "two women walking on a beach at sunset, cinematic"
NEGATIVE = "blurry, low quality, ugly"
CPU_JOB_TYPE = "video7b_fast_enhanced"
GOALS = {"video_high": 45.0, "video_fast": 25.0}  # seconds per video on an H100
GPU_SIZE, GPU_FRAMES = (832, 480), 81  # width x height, as the 16:9 aspect ratio renders

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, from its published configs.
TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                   qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True],
           # vae/config.json's per-channel latent statistics (also diffusers' defaults).
           latents_mean=[-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                         0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
           latents_std=[2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160])
UMT5_XXL = dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=256384,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                relative_attention_max_distance=128, layer_norm_epsilon=1e-6, tie_word_embeddings=False)
# flow_shift 3.0 is WAN's setting for 480p (5.0 for 720p).
SCHEDULER = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000)
# --gpu-dry-run: the same architectures, narrower and shallower, so that a CPU runs them in seconds.
DRY_RUN = {"transformer": dict(num_attention_heads=2, attention_head_dim=24, text_dim=64, ffn_dim=128, num_layers=2),
           "vae": dict(base_dim=8, num_res_blocks=1),
           "text_encoder": dict(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16)}


def run_job(user, job_type, seed, size=None, frames=None):
    """Create a job (size "WxH" and frames overriding the profile's), run it as the WAN worker does;
    return the job and its wall time."""
    from generation.submission import build_job
    from wan_tasks import pipeline

    job = build_job(user, job_type, PROMPT, negative_prompt=NEGATIVE, seed=seed)
    if size:
        job.width, job.height = size
    if frames:
        job.frames = frames
    job.save()
    return common.run_saved_job(job, "wan", pipeline.generate)


class BenchRun:
    """What wan_tasks.pipeline.call needs of a generation.worker.runtime.JobRun (metadata, step reports),
    without a database; notes when the last denoising step ended."""

    def __init__(self, sync):
        self.metadata = {}
        self.sync = sync
        self.denoised_at = None

    def step(self, step, total):
        if step >= total:
            self.sync()
            self.denoised_at = time.perf_counter()


def render(pipe, kwargs, seed, sync=lambda: None):
    """One call of the worker's wan_tasks.pipeline.call (guidance cut-off included): float frames
    (n, h, w, 3) in 0..1, seconds to the end of the last step (text encoding included), decode seconds."""
    from wan_tasks import pipeline

    run = BenchRun(sync)
    sync()
    start = time.perf_counter()
    frames = pipeline.call(run, pipe, kwargs, seed)
    sync()
    end = time.perf_counter()
    return frames, run.denoised_at - start, end - run.denoised_at


def psnr(frames, reference):
    """PSNR in dB of float frames in 0..1 against `reference`; inf when identical."""
    import numpy as np

    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def db(value):
    return "identical" if value == math.inf else f"{value:.1f} dB"


def guided_steps(steps, stop):
    """Steps that run both passes under WAN_GUIDANCE_STOP=stop (as wan_tasks.pipeline.call counts)."""
    return min(steps, math.ceil(steps * stop))


def cpu_part(args):
    from django.conf import settings
    from django.test import override_settings

    from wan_tasks import devmodels, pipeline

    common.reset_database(BENCH_DB)
    devmodels.build_wan(settings.WAN_MODEL_PATH)
    devmodels.build_enhancer(settings.ENHANCER_MODEL_PATH)
    user = common.bench_user()

    start = time.perf_counter()
    run_job(user, CPU_JOB_TYPE, args.seed, args.cpu_size, args.cpu_frames)  # loads models, first calls
    warm_up = time.perf_counter() - start
    job, wall = run_job(user, CPU_JOB_TYPE, args.seed + 1, args.cpu_size, args.cpu_frames)
    timings = job.metadata["timings"]
    print(f"\n1a. Time split of one {CPU_JOB_TYPE} job (CPU, tiny models, warm worker; the warm-up job took "
          f"{warm_up:.2f} s): {job.width}x{job.height}, {job.frames} frames, {job.steps} steps, "
          f"enhancer up to {settings.ENHANCER_MAX_NEW_TOKENS} new tokens")
    phases = {"load": "pipeline already loaded (warm worker)",
              "enhance": "prompt rewrite by the enhancer LM",
              "denoise": "text encoding + denoising steps",
              "decode": "VAE decode (after the last step)",
              "encode": "MP4 (H.264) encoding, thumbnail frame",
              "store": "upload: MP4 + thumbnail to storage (local backend here)"}
    print(f"  {'phase':<8} {'seconds':>8} {'share':>6}  what")
    for phase, what in phases.items():
        seconds = timings.get(phase, 0.0)
        print(f"  {phase:<8} {seconds:8.3f} {seconds / wall:6.1%}  {what}")
    rest = wall - sum(timings.get(phase, 0.0) for phase in phases)
    print(f"  {'rest':<8} {rest:8.3f} {rest / wall:6.1%}  database, progress writes, pixel conversion, signals")
    print(f"  {'job wall':<8} {wall:8.3f} {1:6.1%}  generation.worker.runtime.run, end to end")
    enhanced, error = job.enhanced_prompt or "", job.metadata["enhancement"]["error"]
    print(f"  the enhanced prompt: {len(enhanced.split())} words (the user's: {len(PROMPT.split())})"
          + (f"; enhancement FAILED: {error}" if error else ""))

    pipe = pipeline.get_pipeline()  # the worker's, loaded by the jobs above
    steps = args.cpu_steps
    kwargs = {"prompt": enhanced or PROMPT, "negative_prompt": job.negative_prompt or None, "height": job.height,
              "width": job.width, "num_frames": job.frames, "num_inference_steps": steps,
              "guidance_scale": job.guidance, "output_type": "np"}
    print(f"\n1b. Guidance cut-off (CPU, tiny model, random weights): {job.width}x{job.height}, {job.frames} frames, "
          f"{steps} steps, guidance {job.guidance}, seed {args.seed}, median of {args.cpu_runs} runs (interleaved)")
    print(f"  {'WAN_GUIDANCE_STOP':>17} {'guided steps':>12} | {'denoise':>8} {'saved':>6} {'decode':>7} | "
          f"{'PSNR vs 1.0':>11}")
    stops = (1.0, 0.8, 0.6)
    results = {stop: [] for stop in stops}
    for run in range(1 + args.cpu_runs):  # the first round is untimed; rounds interleave the stops
        for stop in stops:
            with override_settings(WAN_GUIDANCE_STOP=stop):
                result = render(pipe, kwargs, args.seed)
            if run:
                results[stop].append(result)
    reference, base = results[1.0][0][0], statistics.median(r[1] for r in results[1.0])
    for stop, runs in results.items():
        denoise = statistics.median(r[1] for r in runs)
        decode = statistics.median(r[2] for r in runs)
        print(f"  {stop:17.1f} {guided_steps(steps, stop):>6} of {steps:<3} | {denoise:6.3f} s "
              f"{1 - denoise / base:6.1%} {decode:5.3f} s | {db(psnr(runs[0][0], reference)):>11}")
    print("  denoise: to the last step's callback (text encoding included); PSNR: decoded frames against the "
          "WAN_GUIDANCE_STOP=1.0 frames, same seed. Random weights: a numerical effect measure, not a "
          "perceptual one (that needs the real weights). On the tiny model the transformer is a small part "
          "of the step, so the saving is smaller than on the full-size one.")


def as_loaded(model, dtype):
    """Cast `model` as from_pretrained(dtype=...) does: parameters of the modules the class keeps in
    float32 (diffusers' _keep_in_fp32_modules) stay float32, the rest become `dtype`."""
    import torch

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return model


def build_wan(device, dtype, dry_run):
    """WanPipeline from WAN 2.1 T2V 1.3B's configs with random weights, created on `device`."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from wan_tasks import devmodels

    def config(base, part):
        return {**base, **(DRY_RUN[part] if dry_run else {})}

    tokenizer = devmodels.wan_tokenizer()  # word-level; its ids (< 1000) are valid in UMT5's 256384
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):  # default (random) initialisation, directly on the device
        transformer = as_loaded(WanTransformer3DModel(**config(TRANSFORMER, "transformer")), dtype)
        vae = AutoencoderKLWan(**config(VAE, "vae"))  # float32, as the worker keeps it
        text_encoder = UMT5EncoderModel(UMT5Config(**config(UMT5_XXL, "text_encoder"), **ids)).to(dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the float32 copies made while building
    for model in (transformer, vae, text_encoder):
        model.eval()  # as from_pretrained leaves them: no dropout (UMT5 has 0.1)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=UniPCMultistepScheduler(**SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def transformer_flops(transformer, frames, width, height, text_tokens=512):
    """Model FLOPs of one transformer pass: the blocks' matrix products, self- and cross-attention."""
    config = transformer.config
    p_t, p_h, p_w = config.patch_size
    tokens = ((frames - 1) // 4 + 1) // p_t * (height // 8 // p_h) * (width // 8 // p_w)
    inner = config.num_attention_heads * config.attention_head_dim
    block_params = sum(p.numel() for p in transformer.blocks.parameters())
    attention = 4 * tokens * (tokens + text_tokens) * inner * config.num_layers
    return 2 * block_params * tokens + attention, tokens


def gpu_part(args):
    import numpy as np
    import torch
    from django.conf import settings
    from django.test import override_settings

    from generation import job_types
    from generation.worker import pipelines
    from wan_tasks import pipeline

    dry = args.gpu_dry_run
    device, dtype, cuda, sync = common.gpu_device(dry, torch.bfloat16)  # bfloat16: what wan_tasks.pipeline._load picks
    with common.gpu_settings(dry, args.no_compile, "WAN_COMPILE"):
        what = "scaled-down WAN 2.1 1.3B (dry run, on a CPU)" if dry else "full-size WAN 2.1 T2V 1.3B"
        print(f"\n2. GPU: {what}, random weights (never zeros), transformer and text encoder "
              f"{str(dtype).removeprefix('torch.')}, VAE float32, WAN_COMPILE={settings.WAN_COMPILE} "
              f"mode={settings.WAN_COMPILE_MODE}")
        start = time.perf_counter()
        pipe = build_wan(device, dtype, dry)
        sync()
        sizes = ", ".join(f"{name} {sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e9:.2f} B"
                          for name in ("transformer", "text_encoder", "vae"))
        print(f"  built in {time.perf_counter() - start:.1f} s (parameters: {sizes})")
        compiled = pipeline.optimize(pipe, device)
        start = time.perf_counter()
        pipeline.warm_up(pipe)
        sync()
        warm = job_types.render_params(job_types.get("video_fast"))
        print(f"  warm-up{' + compile' if compiled else ''} ({warm['width']}x{warm['height']}, {warm['frames']} "
              f"frames, 2 steps): {time.perf_counter() - start:.1f} s")

        width, height = (48, 32) if dry else GPU_SIZE  # the dev profile's 832x480
        frames = args.frames or (9 if dry else GPU_FRAMES)
        stops = [1.0] + [s for s in args.guidance_stops if s != 1.0]
        print(f"  {'job type':<10} {'size':>7} {'frames':>6} {'steps':>5} {'stop':>4} | {'s/video':>7} "
              f"{'denoise':>7} {'decode':>6} {'TFLOP/s':>7} {'peak VRAM':>9} | {'old s':>5} {'speed-up':>8} | "
              f"{'goal':<14} | PSNR vs 1.0")
        for name in args.job_types:
            jt = job_types.get(name)
            steps = args.steps or (jt.steps // job_types.DEV_STEP_DIVISOR if dry else jt.steps)
            kwargs = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "height": height, "width": width,
                      "num_frames": frames, "num_inference_steps": steps, "guidance_scale": jt.guidance,
                      "output_type": "np"}
            flops, tokens = transformer_flops(pipe.transformer, frames, width, height)
            start = time.perf_counter()
            render(pipe, kwargs, args.seed, sync)  # untimed: a first call at this size may recompile
            first = time.perf_counter() - start
            print(f"  {name}: {tokens} video tokens, ≈ {flops / 1e12:.4g} TFLOP per transformer pass; "
                  f"first (untimed) run {first:.1f} s", flush=True)
            reference = None
            for stop in stops:
                common.reset_peak_vram(cuda)
                try:
                    with override_settings(WAN_GUIDANCE_STOP=stop):
                        runs = [render(pipe, kwargs, args.seed, sync) for _ in range(args.runs)]
                except torch.cuda.OutOfMemoryError as exc:
                    pipelines.free_memory()
                    print(f"  {name:<10} stop {stop}: out of GPU memory ({str(exc)[:120]})")
                    continue
                totals = [d + v for _, d, v in runs]
                seconds, denoise = statistics.median(totals), statistics.median(r[1] for r in runs)
                decode = statistics.median(r[2] for r in runs)
                guided = guided_steps(steps, stop)
                achieved = flops * (2 * guided + (steps - guided)) / denoise / 1e12
                peak = common.peak_vram(cuda)
                goal = GOALS.get(name) if steps == jt.steps and frames == GPU_FRAMES and not dry else None
                verdict = f"<= {goal:.0f} s: {'met' if seconds <= goal else 'MISSED'}" if goal else ""
                finite = all(bool(np.isfinite(r[0]).all()) for r in runs)
                if stop == 1.0:
                    reference = runs[0][0]
                    quality = f"{db(psnr(runs[1][0], reference))} run to run" if len(runs) > 1 else "reference"
                else:
                    quality = db(psnr(runs[0][0], reference)) if reference is not None else "no 1.0 reference"
                print(f"  {name:<10} {f'{width}x{height}':>7} {frames:>6} {steps:>5} {stop:4.2f} | {seconds:7.2f} "
                      f"{denoise:7.2f} {decode:6.2f} {achieved:7.1f} {peak:>9} | {jt.expected_seconds:5.0f} "
                      f"{jt.expected_seconds / seconds:7.1f}x | {verdict:<14} | {quality}"
                      f"{'' if finite else ' (non-finite pixels)'}", flush=True)
                del runs
    print(f"  s/video: median of {args.runs} timed runs (pipeline call: text encoding, steps, VAE decode); "
          "denoise: to the last step's callback; decode: the rest (VAE, float32); TFLOP/s: transformer model FLOPs "
          "(both passes on guided steps, the conditional one after the cut-off) / denoise time.")
    print("  stop: WAN_GUIDANCE_STOP (guidance for that fraction of the steps, conditional pass only after); "
          "PSNR vs 1.0: frames against the stop 1.0 frames, same seed — with random weights a numerical effect "
          "measure, not a perceptual quality measure (that needs the real weights).")
    print("  Old system (RTX 6000 Ada): 135-240 s per video; published WAN 2.1 1.3B: about 97-175 s for 50 steps "
          "on an A800, 41-49 s with step caching. Compute floor for 50 guided steps at 832x480x81: about 36 s "
          "(≈ 0.57 PFLOP per step at ≈ 790 TFLOP/s)." + (" Dry run: not real figures." if dry else ""))


def header(args):
    common.print_versions("WAN")
    cpu_size = "x".join(map(str, args.cpu_size)) if args.cpu_size else "dev profile"
    print(f"  settings: CPU job {cpu_size}, frames {args.cpu_frames or 'dev profile'}; GPU job types "
          f"{', '.join(args.job_types)}, steps {args.steps or 'from the job-type table'}, frames "
          f"{args.frames or (9 if args.gpu_dry_run else GPU_FRAMES)}, guidance stops 1.0 + {args.guidance_stops}, "
          f"timed runs {args.runs}, compile {'off' if args.no_compile else 'per WAN_COMPILE'}; seed {args.seed}")


def size(text):
    width, _, height = text.partition("x")
    return int(width), int(height)


def main():
    sys.stdout.reconfigure(line_buffering=True)  # partial figures survive a time limit
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_part_options(parser)
    parser.add_argument("--cpu-size", type=size, help="CPU job WIDTHxHEIGHT, multiples of 16 (default: the dev "
                                                      "profile's 32x48), e.g. 96x160")
    parser.add_argument("--cpu-frames", type=int, help="CPU job frames, 4k+1 (default: the dev profile's 9), e.g. 33")
    parser.add_argument("--cpu-steps", type=int, default=25,
                        help="steps of the CPU guidance cut-off table (default 25, video_fast's)")
    parser.add_argument("--cpu-runs", type=int, default=5, help="timed runs per CPU cut-off (default 5)")
    parser.add_argument("--job-types", nargs="+", default=["video_fast", "video_high"], help="GPU job types")
    parser.add_argument("--steps", type=int, help="GPU steps instead of the job type's (no goal verdicts)")
    parser.add_argument("--frames", type=int, help=f"GPU frames, 4k+1 (default {GPU_FRAMES}; others: no verdicts)")
    parser.add_argument("--guidance-stops", type=float, nargs="+", default=[0.8],
                        help="GPU WAN_GUIDANCE_STOP cut-offs timed besides 1.0 (default 0.8)")
    parser.add_argument("--runs", type=int, default=2, help="timed GPU runs per configuration, after one untimed "
                                                            "run per job type (default 2)")
    parser.add_argument("--no-compile", action="store_true", help="GPU part without torch.compile")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-bench-wan-"))
    try:
        common.setup_django(BENCH_DB, data_dir, WAN_MODEL_PATH=str(data_dir / "models" / "wan-tiny"),
                            ENHANCER_MODEL_PATH=str(data_dir / "models" / "enhancer-tiny"))
        header(args)
        common.run_parts(args, cpu_part, gpu_part)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
