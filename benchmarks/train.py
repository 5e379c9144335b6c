"""Training step time on cached latents vs encoding online, and STDiT tokens per second.

Same batch, same STDiT-S/2 step (forward, backward, AdamW), two ways to get its inputs:
  cached   latents and text embeddings read from a precompute folder (what `t2v precompute` writes)
  online   the frames through a VAE with the SD VAE's architecture (random weights, 8x, 4 channels) and the
           captions through a T5 with t5-small's architecture (random weights, 512 channels), every step
Videos are 256x256 (128x128 with --quick). Timings are medians; the ratio is measured side by side in one run.

    python benchmarks/train.py            # batch 2 of 4-frame clips, 5 timed steps
    python benchmarks/train.py --quick    # batch 1 of 2-frame clips at 128 px, 2 timed steps (CI)

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from components.common.toy.tiny import word_tokenizer
from model.networks.presets import preset_config
from model.networks.stdit import STDiT
from model.schedulers.config import FlowConfig
from model.schedulers.flow import training_loss

SIZE, CAPTION = 256, "a red circle moves left on a black background"


def sd_vae_architecture(size: int = SIZE):
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # the SD VAE's layout (sd-vae-ft-ema), random weights
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=size,
    ).eval()


def t5_small_architecture(vocab: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=max(vocab, 32128), d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
    return T5EncoderModel(config).eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 of 2-frame clips at 128 px, 2 timed steps (CI)")
    args = parser.parse_args(argv)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    batch, frames, reps, size = (1, 2, 2, 128) if args.quick else (2, 4, 5, SIZE)
    torch.manual_seed(0)
    vae = sd_vae_architecture(size)
    tokenizer = word_tokenizer()
    t5 = t5_small_architecture(len(tokenizer))
    model = STDiT(
        **preset_config("S/2", in_channels=4, caption_channels=512, caption_max_length=120, sample_size=size // 8)
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flow = FlowConfig()
    video = torch.rand(batch, 3, frames, size, size) * 2 - 1
    captions = [CAPTION] * batch

    @torch.no_grad()
    def encode():
        frames_2d = video.permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size)
        z = vae.encode(frames_2d).latent_dist.mode() * 0.18215
        z = z.reshape(batch, frames, 4, size // 8, size // 8).permute(0, 2, 1, 3, 4)
        tokens = tokenizer(captions, return_tensors="pt", padding=True)
        text = t5(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return z.contiguous(), text.contiguous(), tokens.attention_mask.bool()

    def step(z, text, mask, k):
        loss = training_loss(model, z, text, mask, flow, seed=0, step=k, indices=list(range(batch)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    work = Path(tempfile.mkdtemp(prefix="t2v-bench-train-"))
    try:
        z, text, mask = encode()  # the cache: written once, read every step
        save_file({"latent": z, "text": text, "mask": mask.to(torch.uint8)}, work / "cache.safetensors")
        timings = {"cached": [], "online": [], "encode": []}
        for k in range(reps + 1):  # the first round warms up
            start = time.perf_counter()
            cached = load_file(work / "cache.safetensors")
            step(cached["latent"], cached["text"], cached["mask"].bool(), k)
            t_cached = time.perf_counter() - start
            start = time.perf_counter()
            z, text, mask = encode()
            t_encode = time.perf_counter() - start
            step(z, text, mask, k)
            t_online = time.perf_counter() - start
            if k:
                timings["cached"].append(t_cached)
                timings["online"].append(t_online)
                timings["encode"].append(t_encode)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in timings.items()}
    tokens = batch * frames * (size // 8 // 2) ** 2
    result = {
        "benchmark": "train",
        "quick": args.quick,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch": batch,
        "frames": frames,
        "size": size,
        "stdit": "S/2",
        "stdit_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "vae_params_m": sum(p.numel() for p in vae.parameters()) / 1e6,
        "t5_params_m": sum(p.numel() for p in t5.parameters()) / 1e6,
        "cached_step_s": med["cached"],
        "online_step_s": med["online"],
        "encode_s": med["encode"],
        "online_over_cached": med["online"] / med["cached"],
        "encode_share_online": med["encode"] / med["online"],
        "stdit_tokens_per_s_cached": tokens / med["cached"],
        "stdit_tokens_per_s_online": tokens / med["online"],
    }
    print(f"STDiT-S/2 training step, batch {batch} x {frames} frames at {size}px ({tokens} tokens), CPU")
    print(f"{'inputs':8} {'step s':>8} {'tokens/s':>10}")
    print(f"{'cached':8} {med['cached']:8.3f} {tokens / med['cached']:10.0f}")
    print(f"{'online':8} {med['online']:8.3f} {tokens / med['online']:10.0f}   (encoding {med['encode']:.3f} s)")
    print(f"online / cached: {result['online_over_cached']:.2f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
