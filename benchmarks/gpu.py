"""GPU acceptance: STDiT-XL/2 training throughput and MFU under ZeRO-2, the memory model, the attention kernels,
STDiT against full attention, sampling time, and the training loop's checkpoint/kill/resume on one NVIDIA H100/H200.

Parts (each runs in its own try/except; a failure is reported and the others still run):
  train      whole training steps (ColossalAI Booster + LowLevelZeroPlugin stage 2, bf16, fused AdamW, one process,
             NCCL, as the train step builds them) of STDiT-XL/2 (random weights, 4 latent channels, learned sigma,
             T5-XXL-sized text of 120x4096) at 512 px x 16 frames (latent 64x64, batch 4), one row per speed lever,
             each keeping the ones above it: today (eager, separate q/k/v, every block recomputing), fused
             projections, compiled blocks, and the recompute count the memory model picks (the default); then
             today and the default at 256 px x 16 frames (latent 32x32, batch 16). Tokens/s, MFU = 3 x forward
             FLOPs (model.planning.flops) per second over the card's dense bf16 peak (model.planning.gpus), HFU
             with the recomputed forward, and the first (compiling) step's seconds. Target: MFU >= 45% at 512 px,
             >= 40% at 256 px.
  memory     model.planning.memory.step_memory of each row's step (zero2, dp=1, its recompute count and
             compilation, no EMA) against torch.cuda.max_memory_allocated over the same timed steps.
             Target: within 15%.
  sdpa       which SDPA kernel runs (torch profiler op names) for the spatial, temporal and cross attention shapes
             at 256 and 512 px, and whether each runs with only FLASH_ATTENTION or only EFFICIENT_ATTENTION allowed.
             Target: flash or efficient, never math.
  attention  STDiT against its full-attention twin (attention_mode="full") at 64 frames x 512 px (65,536 tokens),
             bf16, batch 1, gradient checkpointing: forward+backward time ratio beside the FLOPs ratio; an
             out-of-memory full model is reported with the analytic ratio. Target: >= 5x (Open-Sora's figure).
  sample     one 16-frame 256 px video, 30 Euler steps with classifier-free guidance, bf16: seconds.
  loop       the whole train step (`python -m components.train`, plugin zero2, the recipe's tiny model) on a toy
             precompute: SIGKILL after the first checkpoint, run again (resume auto): it ends at max_steps with
             resumed_from > 0 and its last checkpoint equals an uninterrupted run's bit for bit (weights, fp32
             masters, optimizer state, EMA, schedule); NaN gradients planted at step 3 are skipped (step 3's
             checkpoint equals step 2's) and every logged grad_norm is finite. Seconds.

    python benchmarks/gpu.py                           # the acceptance run, about 4 minutes (under 8) on one H100
    python benchmarks/gpu.py --quick                   # fewer steps, about 3 minutes
    python benchmarks/gpu.py --parts train,memory      # some parts only
    python benchmarks/gpu.py --json gpu.json           # also the JSON in a file, rewritten after each row and part
    python benchmarks/gpu.py --smoke                   # no GPU: every part on the CPU, tiny model (code paths)

Without a CUDA device it prints why it skipped and exits 0. Exit code 1 when a part raised (a missed target is a
figure, not a failure: targets are printed beside the figures). The last line printed is a JSON object with every
figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import ExitStack
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("train", "memory", "sdpa", "attention", "sample", "loop")
FRAMES, CHANNELS, OUT_CHANNELS = 16, 4, 8  # SD VAE latents; learned sigma (Open-Sora 1.0's STDiT-XL/2)
TEXT_TOKENS, CAPTION_CHANNELS, VAE_FACTOR = 120, 4096, 8  # T5-XXL features, 120 tokens
MFU_TARGET = 0.45  # at 512 px x 16 frames, batch 4
MFU_TARGET_256 = 0.40  # at 256 px x 16 frames, batch 16
MEMORY_TOLERANCE = 0.15
FULL_OVER_STDIT_TARGET = 5.0  # Open-Sora 1.0: DiT vs STDiT at 64 frames x 512 px, about 65K tokens
ATTENTION_FRAMES, ATTENTION_PIXELS = 64, 512
DEVICE = "cuda:0"  # one process, the first GPU (as components.train.launch sets it up)
SAMPLE_STEPS, GUIDANCE = 30, 7.0
TARGETS = {"mfu_512": MFU_TARGET, "mfu_256": MFU_TARGET_256, "memory_tolerance": MEMORY_TOLERANCE,
           "full_over_stdit": FULL_OVER_STDIT_TARGET, "sdpa": "flash or efficient"}  # fmt: skip
SMOKE_ATTENTION, SMOKE_SAMPLE_STEPS = (4, 128), 2  # --smoke: full attention over 4 x 64 tokens, not 65,536


# --------------------------------------------------------------------------------------------------- helpers


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def describe(err: BaseException) -> str:
    """One line: the exception's type and message, and the innermost place in this project it passed through."""
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(ROOT) and ".venv" not in f.filename]
    frame = (ours or frames or [None])[-1]
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    message = " ".join(str(err).split())[:500]
    return f"{type(err).__name__}: {message}{where}"


def is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text


def model_config(preset: str, mode: str = "spatial_temporal") -> dict:
    """STDiT constructor arguments: `preset` with Open-Sora 1.0's inputs (SD VAE latents, learned sigma, T5-XXL)."""
    from model.networks.presets import preset_config

    return preset_config(
        preset,
        in_channels=CHANNELS,
        out_channels=OUT_CHANNELS,
        caption_channels=CAPTION_CHANNELS,
        caption_max_length=TEXT_TOKENS,
        sample_size=256 // VAE_FACTOR,
        attention_mode=mode,
    )


def build(preset: str, device: str, dtype: torch.dtype, mode: str = "spatial_temporal", caption_channels=None):
    """A randomly initialised STDiT, made directly on `device`."""
    from model.networks.stdit import STDiT

    config = model_config(preset, mode)
    if caption_channels:
        config["caption_channels"] = caption_channels
    with torch.device(device):
        model = STDiT(**config)
    return model.to(device=device, dtype=dtype)


def arch(config: dict, variant: str | None = None):
    from model.planning.flops import Arch

    return Arch.from_config({"mlp_ratio": 4.0, "qk_norm": False, **config}, variant)


def timed(step, warmup: int, reps: int, device: str) -> list[float]:
    """Seconds of each of `reps` calls of step(k) after `warmup` untimed ones (k counts all calls)."""
    for k in range(warmup):
        step(k)
    sync(device)
    times = []
    for k in range(warmup, warmup + reps):
        start = time.perf_counter()
        step(k)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def peak_tflops(args, device: str) -> tuple[float | None, str]:
    """The dense bf16 peak (TFLOP/s) MFU is taken against, and where it comes from."""
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    from model.planning.gpus import by_device_name

    spec = by_device_name(torch.cuda.get_device_name(device)) if device.startswith("cuda") else None
    return (spec.bf16_tflops, spec.name) if spec else (None, "unknown GPU: give --peak-tflops")


# ------------------------------------------------------------------------------------ parts 1 and 2: ZeRO-2

# The levers, applied one after another at 512 px: each row keeps the ones above it. The last is `t2v train`'s
# default on a GPU; "today" is the step before any of them (eager, separate q/k/v, every block recomputing).
LEVERS = (
    ("today", {"fused": False, "compile": False, "recompute": "all"}),
    ("+fused-projections", {"fused": True, "compile": False, "recompute": "all"}),
    ("+compiled", {"fused": True, "compile": True, "recompute": "all"}),
    ("+recompute-auto", {"fused": True, "compile": True, "recompute": "auto"}),  # the default
)
DEFAULT = "+recompute-auto"


def step_setup(plugin: str, levers: dict, recompute: int) -> object:
    from model.planning.memory import StepSetup

    return StepSetup(plugin=plugin, dp=1, gradient_checkpointing=recompute > 0, recompute_blocks=recompute,
                     compiled=levers["compile"], ema=False)  # fmt: skip


def lever_rows(args, device: str, shapes: list[tuple[int, int, str]], done=None) -> list[dict]:
    """Whole training steps (as components.train builds them: plugin, AdamW, the trainer's switches) for each
    (pixels, batch, lever) in `shapes`; one row each ({"ok": False, "error": ...} for a row that raised), handed to
    done(rows so far) as it is made."""
    from components.train.build import set_recompute
    from components.train.config import ModelConfig, TrainConfig
    from components.train.launch import boost
    from model.planning.flops import forward_flops
    from model.planning.memory import step_memory
    from model.schedulers.config import FlowConfig
    from model.schedulers.flow import training_loss

    plugin = "zero2" if device.startswith("cuda") else "ddp"
    peak, _ = peak_tflops(args, device)
    flow, rows = FlowConfig(), []
    for pixels, batch, lever in shapes:
        levers = dict(LEVERS)[lever]
        side = pixels // VAE_FACTOR
        row: dict = {"lever": lever, **levers, "pixels": pixels, "latent": side, "frames": FRAMES, "batch": batch}
        model = run = None
        try:
            model = build(args.preset, device, torch.float32, caption_channels=args.caption_channels)
            if levers["fused"]:
                model.fuse_projections()
            if levers["compile"]:
                model.compile_blocks()
            a = arch(dict(model.config))
            shape = {"batch": batch, "frames": FRAMES, "height": side, "width": side}
            checkpointing = "auto" if levers["recompute"] == "auto" else True  # as `t2v train` decides it
            cfg = TrainConfig(plugin=plugin, model=ModelConfig(gradient_checkpointing=checkpointing))
            count = set_recompute(model, cfg, [shape], TEXT_TOKENS, device, plugin, 1)
            model.train()
            run = boost(model, cfg)  # fused AdamW on CUDA; LowLevelZero stage 2, bf16
            x0 = torch.randn(batch, CHANNELS, FRAMES, side, side, device=device)
            text = torch.randn(batch, TEXT_TOKENS, args.caption_channels, device=device)
            mask = torch.ones(batch, TEXT_TOKENS, dtype=torch.bool, device=device)

            def step(k, x0=x0, text=text, mask=mask, batch=batch, run=run):  # what components.train.train._step does
                loss = training_loss(run.model, x0, text, mask, flow, seed=0, step=k, indices=list(range(batch)))
                run.booster.backward(loss, run.optimizer)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)

            t0 = time.perf_counter()
            step(0)  # the first step compiles
            sync(device)
            first_s = time.perf_counter() - t0
            for k in range(1, args.warmup):
                step(k)
            sync(device)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(device)
            times = timed(step, args.warmup, args.reps, device)
            measured = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None
            step_s = statistics.median(times)
            tokens = batch * FRAMES * (side // a.patch_size) ** 2
            flops = forward_flops(a, batch=batch, frames=FRAMES, height=side, width=side, text_tokens=TEXT_TOKENS)
            useful = flops.train_step()  # MFU: 3x forward; recompute is not useful work
            hardware = useful + flops.forward * count / a.num_layers
            estimate = step_memory(a, **shape, text_tokens=TEXT_TOKENS, setup=step_setup(plugin, levers, count))
            row.update(
                ok=True,
                recompute_blocks=count,
                compiled=model.compiled is not None,  # False after a compiler failure (eager fall-back)
                first_step_s=first_s,
                tokens_per_step=tokens,
                step_s=step_s,
                step_s_all=times,
                tokens_per_s=tokens / step_s,
                samples_per_s=batch / step_s,
                train_tflops_per_step=useful / 1e12,
                achieved_tflops=useful / step_s / 1e12,
                mfu=useful / step_s / (peak * 1e12) if peak else None,
                hfu=hardware / step_s / (peak * 1e12) if peak else None,
                memory_estimate_gb=estimate["total"] / 2**30,
                memory_measured_gb=measured / 2**30 if measured else None,
                memory_estimate_over_measured=estimate["total"] / measured if measured else None,
                error=None,
            )
        except Exception as err:  # one row's failure (an OOM, say) leaves the others' figures
            row.update(ok=False, error=describe(err))
        finally:
            model = run = x0 = text = mask = step = None  # the next row's peak must not hold this one's
            free(device)
        rows.append(row)
        if done:
            done(rows)
    return rows


def training_shapes(args) -> list[tuple[int, int, str]]:
    """Every lever at 512 px, then today's step and the default at 256 px."""
    return [(512, args.batch_512, lever) for lever, _ in LEVERS] + [
        (256, args.batch_256, "today"), (256, args.batch_256, DEFAULT)
    ]  # fmt: skip


def train_part(rows: list[dict]) -> dict:
    keep = ("lever", "pixels", "latent", "frames", "batch", "recompute_blocks", "compiled", "first_step_s",
            "tokens_per_step", "step_s", "step_s_all", "tokens_per_s", "samples_per_s", "train_tflops_per_step",
            "achieved_tflops", "mfu", "hfu", "error")  # fmt: skip
    default = {r["pixels"]: r for r in rows if r["lever"] == DEFAULT}
    today = {r["pixels"]: r for r in rows if r["lever"] == "today"}
    mfu = {p: default.get(p, {}).get("mfu") for p in (512, 256)}
    meets = None if None in mfu.values() else mfu[512] >= MFU_TARGET and mfu[256] >= MFU_TARGET_256
    speedup = {
        str(p): today[p]["step_s"] / default[p]["step_s"]
        for p in (512, 256) if default.get(p, {}).get("ok") and today.get(p, {}).get("ok")
    }  # fmt: skip
    return {
        "ok": all(r["ok"] for r in rows),
        "levers": [{k: r.get(k) for k in keep} for r in rows],
        "default": DEFAULT,
        "mfu_512": mfu[512],
        "mfu_256": mfu[256],
        "tokens_per_s_512": default.get(512, {}).get("tokens_per_s"),
        "speedup_over_today": speedup,
        "mfu_target": {"512": MFU_TARGET, "256": MFU_TARGET_256},
        "meets_target": meets,
        "flops_note": "MFU counts 3x forward FLOPs; the recompute of gradient checkpointing is not counted (HFU is)",
        "error": next((f"{r['pixels']} px {r['lever']}: {r['error']}" for r in rows if not r["ok"]), None),
    }


def memory_part(rows: list[dict]) -> dict:
    keep = ("lever", "pixels", "batch", "recompute_blocks", "memory_estimate_gb", "memory_measured_gb",
            "memory_estimate_over_measured", "error")  # fmt: skip
    ratios = [r["memory_estimate_over_measured"] for r in rows if r.get("memory_estimate_over_measured")]
    return {
        "ok": all(r["ok"] for r in rows),
        "rows": [{k: r.get(k) for k in keep} for r in rows],
        "setup": "the row's step (zero2, dp=1, its recompute count and compilation, no EMA)",
        "tolerance": MEMORY_TOLERANCE,
        "meets_target": bool(ratios) and all(abs(r - 1) <= MEMORY_TOLERANCE for r in ratios),
        "error": next((f"{r['pixels']} px {r['lever']}: {r['error']}" for r in rows if not r["ok"]), None),
    }


def print_training_header(peak: float | None, peak_source: str, preset: str) -> None:
    print(f"\n[train] whole training steps (plugin, AdamW, optimizer step), STDiT-{preset}, {FRAMES} frames; each "
          f"lever keeps the ones above it; {DEFAULT} is the default")  # fmt: skip
    print(f"        MFU against {peak or '?'} TFLOP/s dense bf16 ({peak_source}); target >= {MFU_TARGET:.0%} at "
          f"512 px, >= {MFU_TARGET_256:.0%} at 256 px")  # fmt: skip
    print(f"{'lever':>19} {'pixels':>6} {'batch':>5} {'recompute':>9} {'1st s':>6} {'step s':>7} {'tokens/s':>9} "
          f"{'MFU':>6} {'HFU':>6} {'est GiB':>8} {'peak GiB':>8}", flush=True)  # fmt: skip


def print_lever_row(r: dict) -> None:
    if not r["ok"]:
        print(f"{r['lever']:>19} {r['pixels']:6d} {r['batch']:5d}  failed: {r['error']}", flush=True)
        return
    pct = lambda v: f"{v:6.1%}" if v is not None else f"{'-':>6}"  # noqa: E731
    gib = lambda v: f"{v:8.1f}" if v is not None else f"{'-':>8}"  # noqa: E731
    print(
        f"{r['lever']:>19} {r['pixels']:6d} {r['batch']:5d} {r['recompute_blocks']:9d} {r['first_step_s']:6.1f} "
        f"{r['step_s']:7.3f} {r['tokens_per_s']:9.0f} {pct(r['mfu'])} {pct(r['hfu'])} "
        f"{gib(r['memory_estimate_gb'])} {gib(r['memory_measured_gb'])}",
        flush=True,
    )


def print_training_footer() -> None:
    print(
        "MFU counts 3x forward FLOPs (model.planning.flops) as useful work; HFU adds the forward that recompute "
        "repeats."
    )
    print(f"[memory] estimate: model.planning.memory.step_memory of the row's step; target within "
          f"{MEMORY_TOLERANCE:.0%} of torch.cuda.max_memory_allocated")  # fmt: skip


# ------------------------------------------------------------------------------------------ part 3: kernels

KERNELS = (("flash", "flash_attention"), ("efficient", "efficient_attention"), ("cudnn", "cudnn_attention"),
           ("math", "attention_math"))  # fmt: skip


def kernels_of(names) -> list[str]:
    """The SDPA backends whose aten ops appear among profiler event names."""
    return sorted({kind for name in names for kind, key in KERNELS if key in name})


def attention_calls(model, pixels: int, device: str, dtype: torch.dtype) -> dict:
    """name -> (a forward+backward of that attention of block 0 at `pixels` x FRAMES, batch 1; q's shape)."""
    from model.networks.attention import rope_cos_sin

    cfg = model.config
    block = model.transformer_blocks[0]
    side = pixels // VAE_FACTOR // cfg.patch_size
    S, T, H, D = side * side, FRAMES, cfg.num_attention_heads, cfg.attention_head_dim
    C = H * D
    rope = rope_cos_sin(torch.arange(T, device=device), D, cfg.rope_theta)
    text = torch.randn(1, TEXT_TOKENS, C, device=device, dtype=dtype)
    mask = torch.ones(1, 1, 1, TEXT_TOKENS, dtype=torch.bool, device=device)

    def run(fn, shape):
        def call():
            x = torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
            fn(x).float().pow(2).mean().backward()
            block.zero_grad(set_to_none=True)

        return call

    return {
        "spatial": (run(lambda x: block.attn1(x), (T, S, C)), (T, H, S, D)),  # (B*T, S, C): within each frame
        "temporal": (run(lambda x: block.attn_temp(x, rope=rope), (S, T, C)), (S, H, T, D)),  # (B*S, T, C)
        "cross": (
            run(lambda x: block.attn2(x, encoder_hidden_states=text, attention_mask=mask), (1, T * S, C)),
            (1, H, T * S, D),
        ),  # video tokens -> 120 text tokens, with the text mask
    }


def forced(call, backend) -> str:
    """'ok' when `call` runs with only `backend` allowed, else why not."""
    from torch.nn.attention import sdpa_kernel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel([backend]):
                call()
            return "ok"
        except RuntimeError as err:
            # torch warns why each kernel was not used ("... not used because:", then the reasons)
            reasons = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
            return ("; ".join(reasons) or " ".join(str(err).split()))[:400]


def sdpa_part(args, device: str) -> dict:
    from torch.nn.attention import SDPBackend
    from torch.profiler import ProfilerActivity, profile

    model = build(args.preset, device, torch.bfloat16, caption_channels=args.caption_channels)
    rows = []
    try:
        for pixels in (256, 512):
            for name, (call, shape) in attention_calls(model, pixels, device, torch.bfloat16).items():
                call()  # warm-up: the first call may pick and compile kernels
                sync(device)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    call()
                    sync(device)
                ran = kernels_of(e.key for e in prof.key_averages())
                rows.append(
                    {
                        "attention": name,
                        "pixels": pixels,
                        "q_shape": list(shape),
                        "ran": "+".join(ran) or "none found",
                        "flash_only": forced(call, SDPBackend.FLASH_ATTENTION),
                        "efficient_only": forced(call, SDPBackend.EFFICIENT_ATTENTION),
                    }
                )
    finally:
        del model
        free(device)
    ran = {f"{r['attention']}_{r['pixels']}": r["ran"] for r in rows}
    return {
        "ok": True,
        "rows": rows,
        "ran": ran,
        "meets_target": all("math" not in r["ran"] and r["ran"] != "none found" for r in rows),
        "target": "flash or efficient, never math",
        "error": None,
    }


def print_sdpa(part: dict) -> None:
    print("\n[sdpa] SDPA kernel per attention (bf16, block 0, batch 1, forward+backward; torch profiler op names)")
    print(f"{'attention':>9} {'pixels':>6} {'q (B,H,N,D)':>20} {'ran':>10} {'flash only':>11} {'efficient only':>15}")
    reasons: list[str] = []
    for r in part["rows"]:
        shape = "(" + ",".join(str(n) for n in r["q_shape"]) + ")"
        cells = []
        for key in ("flash_only", "efficient_only"):
            if r[key] == "ok":
                cells.append("ok")
            else:
                reasons += [] if r[key] in reasons else [r[key]]
                cells.append(f"no [{reasons.index(r[key]) + 1}]")
        print(f"{r['attention']:>9} {r['pixels']:6d} {shape:>20} {r['ran']:>10} {cells[0]:>11} {cells[1]:>15}")
    for i, reason in enumerate(reasons, 1):
        print(f"  [{i}] {reason}")
    print("target: flash or efficient, never math (cross-attention has a text mask, which flash does not take)")


# ------------------------------------------------------------------------------- part 4: STDiT against full


def attention_part(args, device: str) -> dict:
    """Forward+backward time of STDiT and its full-attention twin at 64 frames x 512 px, batch 1, bf16."""
    from model.planning.flops import forward_flops

    frames, pixels = args.attention_frames, args.attention_pixels
    side = pixels // VAE_FACTOR
    shape = dict(batch=1, frames=frames, height=side, width=side, text_tokens=TEXT_TOKENS)
    config = model_config(args.preset)
    st_flops = forward_flops(arch(config), **shape).train_step(gradient_checkpointing=True)
    full_flops = forward_flops(arch(config, "full"), **shape).train_step(gradient_checkpointing=True)
    result: dict = {
        "frames": frames,
        "pixels": pixels,
        "tokens": frames * (side // config["patch_size"]) ** 2,
        "full_over_stdit_analytic": full_flops / st_flops,
        "target": FULL_OVER_STDIT_TARGET,
    }
    for mode, key in (("spatial_temporal", "stdit"), ("full", "full")):
        model = None
        try:
            model = build(args.preset, device, torch.bfloat16, mode, caption_channels=args.caption_channels)
            model.enable_gradient_checkpointing()
            model.train()
            x = torch.randn(1, CHANNELS, frames, side, side, device=device, dtype=torch.bfloat16)
            t = torch.full((1,), 500.0, device=device)
            text = torch.randn(1, TEXT_TOKENS, args.caption_channels, device=device, dtype=torch.bfloat16)
            mask = torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device)

            def step(k, model=model, x=x, t=t, text=text, mask=mask):
                model(x, t, text, mask).sample.float().pow(2).mean().backward()
                model.zero_grad(set_to_none=True)

            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(device)
            result[f"{key}_s"] = statistics.median(timed(step, 1, args.attention_reps, device))
            result[f"{key}_peak_gb"] = (
                torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
            )
            result[f"{key}_oom"] = False
        except Exception as err:
            if mode == "spatial_temporal" or not is_oom(err):
                raise
            result.update(full_s=None, full_oom=True, full_error=describe(err))
        finally:
            model = x = text = None
            free(device)
    measured = result["full_s"] / result["stdit_s"] if result.get("full_s") else None
    result["full_over_stdit"] = measured
    ratio = measured if measured is not None else result["full_over_stdit_analytic"]
    result.update(
        ok=True,
        ratio_source="measured" if measured is not None else "analytic (full attention ran out of memory)",
        meets_target=ratio >= FULL_OVER_STDIT_TARGET,
        error=None,
    )
    return result


def print_attention(part: dict, preset: str) -> None:
    print(f"\n[attention] STDiT-{preset} vs full attention, {part['frames']} frames x {part['pixels']} px "
          f"({part['tokens']} tokens), batch 1, bf16, gradient checkpointing, forward+backward")  # fmt: skip
    full = "out of memory" if part.get("full_oom") else f"{part['full_s']:.3f}"
    measured = f"{part['full_over_stdit']:.2f}x" if part["full_over_stdit"] else "-"
    print(f"{'STDiT s':>9} {'full s':>14} {'full/STDiT':>11} {'(FLOPs)':>8} {'target':>7}")
    print(f"{part['stdit_s']:9.3f} {full:>14} {measured:>11} {part['full_over_stdit_analytic']:7.2f}x "
          f"{'>=' + str(FULL_OVER_STDIT_TARGET) + 'x':>7}")  # fmt: skip
    print("Open-Sora 1.0 measured 5x at 64 frames x 512 px (8xH800, gradient checkpointing)")


# ----------------------------------------------------------------------------------------- part 5: sampling


def sample_part(args, device: str) -> dict:
    from model.schedulers.config import FlowConfig
    from model.schedulers.flow import sample

    model = build(args.preset, device, torch.bfloat16, caption_channels=args.caption_channels).eval()
    try:
        side = 256 // VAE_FACTOR
        shape = (1, CHANNELS, FRAMES, side, side)
        text = torch.randn(1, TEXT_TOKENS, args.caption_channels, generator=torch.Generator().manual_seed(0))
        mask = torch.ones(1, TEXT_TOKENS, dtype=torch.bool)
        kwargs = dict(cfg=FlowConfig(), guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(0))
        sample(model, shape, text, mask, num_steps=2, **kwargs)  # warm-up
        sync(device)
        start = time.perf_counter()
        out = sample(model, shape, text, mask, num_steps=args.sample_steps, **kwargs)
        sync(device)
        seconds = time.perf_counter() - start
        finite = bool(torch.isfinite(out).all())
    finally:
        del model
        free(device)
    return {
        "ok": True,
        "finite": finite,
        "frames": FRAMES,
        "pixels": 256,
        "steps": args.sample_steps,
        "guidance_scale": GUIDANCE,
        "seconds": seconds,
        "seconds_per_step": seconds / args.sample_steps,
        "error": None,
    }


def print_sample(part: dict, preset: str) -> None:
    print(f"\n[sample] STDiT-{preset}, one {part['frames']}-frame {part['pixels']} px video (latents), "
          f"{part['steps']} Euler steps, guidance {part['guidance_scale']} (2 model calls per step), bf16")  # fmt: skip
    print(f"{'seconds':>8} {'s/step':>8}")
    print(f"{part['seconds']:8.2f} {part['seconds_per_step']:8.3f}")


# ------------------------------------------------------------------------------ part 6: the training loop


def toy_precompute(root: Path) -> Path:
    """A small precompute folder of the toy world (32 px, pixel space, a tiny T5), the one the tests train on."""
    from pipelines.toy import small_precompute

    return small_precompute(root)


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return " | ".join(text[-lines:])


def checkpoint_tensors(folder: Path) -> dict[str, object]:
    """Every tensor and number a checkpoint folder holds (model, optimizer, fp32 masters, EMA, schedule), by name."""
    from safetensors.torch import load_file

    held: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors" and not path.name.startswith("rng"):
            held.update({f"{path.name}/{k}": v for k, v in load_file(path).items()})
        elif path.suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            for key, value in loaded.get("state", loaded).items():
                items = value.items() if isinstance(value, dict) else [("", value)]
                held.update({f"{path.name}/{key}/{k}": v for k, v in items})
        elif path.name == "scheduler.json":
            held[path.name] = json.loads(path.read_text())
    return held


def differing(a: dict, b: dict) -> list[str]:
    """Names whose values differ (tensors bit for bit), or that only one side holds."""
    same = lambda x, y: torch.equal(x, y) if torch.is_tensor(x) and torch.is_tensor(y) else x == y  # noqa: E731
    return sorted(set(a) ^ set(b)) + [k for k in a if k in b and not same(a[k], b[k])]


def loop_part(args, plugin: str = "zero2", timeout_s: float = 300.0) -> dict:
    """Train the toy world with `python -m components.train` three times: uninterrupted; SIGKILLed after its first
    checkpoint and run again (resume auto), whose last checkpoint must equal the uninterrupted one's bit for bit
    (weights, fp32 masters, optimizer state, EMA, schedule); and with NaN gradients planted at step 3 (a finite
    loss), which the guard must skip: its step-3 checkpoint equals its step-2 one."""
    from components.train import checkpoint
    from components.train.launch import TORCHRUN_ENV

    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="t2v-bench-gpu-loop-"))
    try:
        data = toy_precompute(work)
        precompute_s = time.perf_counter() - start
        # the runs are processes of their own: not ranks of this process's group (the train part's, still open)
        env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}

        def command(out: Path, *extra: str) -> list[str]:
            return [
                sys.executable, "-m", "components.train", "--recipe", str(ROOT / "params.yaml"),
                *(f"--set={item}" for item in (
                    f"data={data}", f"out_dir={out}", f"plugin={plugin}", f"max_steps={args.loop_steps}",
                    "ckpt_every=5", "keep_last=20", "val_every=10", "sample_every=0", "tracking_uri=none",
                    "progress=false", "system_metrics_every=0", *extra,
                )),
            ]  # fmt: skip

        def run_to_end(out: Path, log: Path, *extra: str) -> float:
            t0 = time.perf_counter()
            with open(log, "w") as f:
                done = subprocess.run(command(out, *extra), cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=timeout_s)  # fmt: skip
            if done.returncode:
                raise RuntimeError(f"{out.name} exited with {done.returncode}: {tail(log)}")
            return time.perf_counter() - t0

        straight, out = work / "straight", work / "train"
        straight_s = run_to_end(straight, work / "straight.log")
        first_log, second_log = work / "first.log", work / "second.log"
        t0 = time.perf_counter()
        with open(first_log, "w") as log:
            first = subprocess.Popen(command(out), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while checkpoint.latest(out / "checkpoints") is None:
                if first.poll() is not None:
                    raise RuntimeError(f"the first run exited with {first.returncode} before its first checkpoint: "
                                       f"{tail(first_log)}")  # fmt: skip
                if time.perf_counter() - t0 > timeout_s:
                    raise RuntimeError(f"no checkpoint after {timeout_s:.0f} s: {tail(first_log)}")
                time.sleep(0.02)
            if first.poll() is not None:
                raise RuntimeError(f"the first run ended (exit {first.returncode}) before it could be killed")
            os.kill(first.pid, signal.SIGKILL)
        finally:
            if first.poll() is None:
                first.kill()
            first.wait()
        first_s = time.perf_counter() - t0
        at_kill = checkpoint.latest(out / "checkpoints")
        killed_after = json.loads((at_kill / "state.json").read_text())["step"] if at_kill else None
        second_s = run_to_end(out, second_log)
        state = json.loads((out / "export" / "train_state.json").read_text())
        final = checkpoint.latest(out / "checkpoints")
        final_step = json.loads((final / "state.json").read_text())["step"] if final else None
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        logged = [m for m in metrics if "loss" in m]
        last = checkpoint.step_dir(straight / "checkpoints", args.loop_steps)
        differ = differing(checkpoint_tensors(last), checkpoint_tensors(final)) if final else ["no checkpoint"]

        planted = work / "planted"
        run_to_end(planted, work / "planted.log", "ckpt_every=1", "max_steps=4", "guard.plant={3: nan_grad}")
        before, after = (checkpoint_tensors(checkpoint.step_dir(planted / "checkpoints", k)) for k in (2, 3))
        skipped = differing(before, after)
        planted_metrics = [json.loads(x) for x in (planted / "metrics.jsonl").read_text().splitlines() if x.strip()]
        skip_count = max((m.get("guard/skipped_steps", 0) for m in planted_metrics), default=0)
        norms = [m["grad_norm"] for m in planted_metrics if "grad_norm" in m]

        problems = []
        if state["steps"] != args.loop_steps or final_step != args.loop_steps:
            problems.append(f"ended at step {final_step} (export says {state['steps']}), not {args.loop_steps}")
        if not 0 < state["resumed_from"] < args.loop_steps:
            problems.append(f"resumed_from={state['resumed_from']}, expected between 0 and {args.loop_steps}")
        if not logged or logged[-1]["step"] != args.loop_steps:
            problems.append("metrics.jsonl does not log the last step")
        if differ:
            problems.append(f"resumed run differs from the uninterrupted one in {len(differ)} tensors: {differ[:3]}")
        if skipped or skip_count != 1:
            problems.append(f"planted NaN gradients: {skip_count} skipped, step 3 changed {skipped[:3]}")
        if not norms or not all(math.isfinite(n) for n in norms):
            problems.append(f"grad_norm not logged finite: {norms}")
        return {
            "ok": not problems,
            "plugin": plugin,
            "max_steps": args.loop_steps,
            "killed_after_checkpoint": killed_after,
            "resumed_from": state["resumed_from"],
            "final_checkpoint": final_step,
            "bit_identical_to_uninterrupted": not differ,
            "tensors_compared": len(checkpoint_tensors(final)) if final else 0,
            "planted_nan_grad_skipped": not skipped and skip_count == 1,
            "grad_norm_logged": norms,
            "last_loss": logged[-1]["loss"] if logged else None,
            "last_mfu": logged[-1].get("mfu") if logged else None,
            "precompute_s": precompute_s,
            "uninterrupted_run_s": straight_s,
            "first_run_s": first_s,
            "resumed_run_s": second_s,
            "seconds": time.perf_counter() - start,
            "error": "; ".join(problems) or None,
        }
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def print_loop(part: dict) -> None:
    print(f"\n[loop] python -m components.train (plugin {part['plugin']}, the recipe's tiny model, toy world): "
          f"SIGKILL after the first checkpoint, run again (resume auto)")  # fmt: skip
    print(f"{'result':>7} {'killed':>7} {'resumed':>8} {'final':>6} {'= uninterrupted':>16} {'NaN grad skipped':>17} "
          f"{'total s':>8}")  # fmt: skip
    print(
        f"{'ok' if part['ok'] else 'failed':>7} {part['killed_after_checkpoint']!s:>7} {part['resumed_from']:8d} "
        f"{part['final_checkpoint']!s:>6} {part['bit_identical_to_uninterrupted']!s:>16} "
        f"{part['planted_nan_grad_skipped']!s:>17} {part['seconds']:8.1f}"
    )
    if part["error"]:
        print(f"problems: {part['error']}")


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer warm-up and timed steps, 10 loop steps")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)} (default all)")
    parser.add_argument("--batch-256", type=int, default=16, help="batch at 256 px x 16 frames (default 16)")
    parser.add_argument("--batch-512", type=int, default=4, help="batch at 512 px x 16 frames (default 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed ZeRO-2 steps per shape (default 3)")
    parser.add_argument("--reps", type=int, default=None, help="timed ZeRO-2 steps per shape (default 5)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: model.planning.gpus)"
    )
    parser.add_argument("--preset", default="XL/2", help="STDiT preset (default XL/2; the targets are for XL/2)")
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the JSON object to this file, rewritten after every lever row and part: what a run cut "
        'short (a time limit, a lost machine) leaves of its figures has "complete": false',
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="no GPU needed: every part on the CPU with the tiny preset, batch 1, one step each, the attention "
        f"part at {SMOKE_ATTENTION[0]} frames x {SMOKE_ATTENTION[1]} px, {SMOKE_SAMPLE_STEPS} sampling steps, the "
        "loop under ddp (checks this script's code paths, measures nothing)",
    )
    parser.add_argument("--caption-channels", type=int, default=CAPTION_CHANNELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: folder {args.json.parent} does not exist; create it or name a file in "
                     "an existing folder")  # fmt: skip
    if args.smoke:
        args.preset, args.batch_256, args.batch_512, args.warmup, args.reps = "tiny", 1, 1, 1, 1
        args.caption_channels, args.parts = 32, ",".join(PARTS)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts {args.parts!r}: unknown {unknown}; choose from {','.join(PARTS)}")
    args.parts = [p for p in PARTS if p in parts]
    for name in ("batch_256", "batch_512", "warmup", "reps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')}={value} must be at least {0 if name == 'warmup' else 1}")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.reps = args.reps or (2 if args.quick else 5)
    args.attention_reps = 1 if args.quick else 2
    attention = SMOKE_ATTENTION if args.smoke else (ATTENTION_FRAMES, ATTENTION_PIXELS)
    args.attention_frames, args.attention_pixels = attention
    args.sample_steps = SMOKE_SAMPLE_STEPS if args.smoke else SAMPLE_STEPS
    args.loop_steps = 10 if args.quick or args.smoke else 20
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = {"benchmark": "gpu", "torch": torch.__version__, "host": platform.machine(), "quick": args.quick}
    if not torch.cuda.is_available() and not args.smoke:
        print("skipped: no CUDA device (torch.cuda.is_available() is False); this benchmark needs one H100 or H200")
        print(json.dumps({**base, "skipped": "no CUDA device", "parts": args.parts}))
        return 0

    device = "cpu" if args.smoke else DEVICE
    base["smoke"] = args.smoke
    results: dict[str, dict] = {}
    start = time.perf_counter()
    peak, peak_source = peak_tflops(args, device)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        memory_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
    else:
        name, memory_gb = "cpu (smoke run: code paths only)", 0.0
    print(f"{name} ({memory_gb:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}; parts: {args.parts}")

    def record(part: str, fn) -> None:
        t0 = time.perf_counter()
        print(f"... {part}", file=sys.stderr, flush=True)
        try:
            results[part] = fn()
        except Exception as err:
            traceback.print_exc()
            results[part] = {"ok": False, "error": describe(err)}
            print(f"\n[{part}] failed: {results[part]['error']}")
        finally:
            free(device)
        results[part]["seconds_part"] = time.perf_counter() - t0
        save()

    def summary(complete: bool) -> dict:
        ok = all(r["ok"] for r in results.values())
        return {**base, "device": name, "device_memory_gb": memory_gb, "peak_tflops": peak,
                "peak_source": peak_source, "preset": args.preset, "parts_run": args.parts, "complete": complete,
                "ok": ok, "total_s": time.perf_counter() - start, "targets": TARGETS, "parts": results}  # fmt: skip

    def save(in_progress: dict | None = None, data: dict | None = None) -> None:
        """The figures so far (or `data`) into --json, written whole and then renamed: never half a file."""
        if args.json:
            data = data or {**summary(complete=False), "parts": {**results, **(in_progress or {})}}
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(data, default=str))
            tmp.replace(args.json)

    def lever_done(rows: list[dict]) -> None:
        save({p: {**f(rows), "seconds_part": time.perf_counter() - t0, "in_progress": True}
              for p, f in (("train", train_part), ("memory", memory_part)) if p in args.parts})  # fmt: skip
        print_lever_row(rows[-1])

    with ExitStack() as group:  # the train part's process group, open to the end
        if {"train", "memory"} & set(args.parts):
            t0 = time.perf_counter()
            rows: list[dict] = []
            try:
                from components.train.launch import launched

                group.enter_context(launched(seed=0))  # one process, NCCL: as the train step starts
                if device.startswith("cuda"):
                    torch.cuda.set_device(device)
                print_training_header(peak, peak_source, args.preset)
                rows = lever_rows(args, device, training_shapes(args), done=lever_done)
                print_training_footer()
                parts = {"train": train_part(rows), "memory": memory_part(rows)}
            except Exception as err:
                traceback.print_exc()
                parts = {p: {"ok": False, "error": describe(err)} for p in ("train", "memory")}
                print(f"\n[train, memory] failed: {parts['train']['error']}")
            finally:
                free(device)
            for part in ("train", "memory"):
                if part in args.parts:
                    results[part] = {**parts[part], "seconds_part": time.perf_counter() - t0}
            save()
        if "sdpa" in args.parts:
            record("sdpa", lambda: sdpa_part(args, device))
            if results["sdpa"]["ok"]:
                print_sdpa(results["sdpa"])
        if "attention" in args.parts:
            record("attention", lambda: attention_part(args, device))
            if results["attention"]["ok"]:
                print_attention(results["attention"], args.preset)
        if "sample" in args.parts:
            record("sample", lambda: sample_part(args, device))
            if "seconds" in results["sample"]:
                print_sample(results["sample"], args.preset)
        if "loop" in args.parts:
            record("loop", lambda: loop_part(args, plugin="ddp" if args.smoke else "zero2"))
            if "resumed_from" in results["loop"]:
                print_loop(results["loop"])

    final = summary(complete=True)
    save(data=final)
    print(f"\n{'part':<10} {'ok':>5} {'seconds':>8}")
    for part, r in results.items():
        print(f"{part:<10} {r['ok']!s:>5} {r['seconds_part']:8.1f}")
    print(f"total {final['total_s']:.0f} s (budget 480 s); exit {0 if final['ok'] else 1}")
    sys.stdout.flush()
    print(json.dumps(final, default=str), flush=True)
    return 0 if final["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
