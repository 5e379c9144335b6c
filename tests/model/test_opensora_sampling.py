"""Open-Sora 1.0's weights sample as they were trained: IDDPM's respaced steps, its learned-range variance, guidance
on three latent channels against the null caption read under the prompt's mask; imported through the CLI into a
pipeline folder that `t2v generate` samples from, and exported back bit for bit."""

import json
import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

from components.common.toy.tiny import build_tiny_t5, build_tiny_vae
from components.common.validation import FLOW, IDDPM, objective
from model.inference.imports import opensora_v1_pipeline
from model.inference.pipeline import T2VPipeline
from model.schedulers.iddpm import respaced_timesteps
from model.weights.hub import file_sha256
from model.weights.opensora import stdit_from_opensora_v1
from t2v.cli import main
from tests.model.test_opensora import HEADS, documented_layout

CAPTION = 32  # build_tiny_t5's width


class Recording:
    """A tokenizer that remembers the texts it is given (the tiny T5's own tokenizer lowercases everything)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts, *args, **kwargs):
        self.texts.append(list(texts))
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def tiny_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.2 for k, s in documented_layout(cap=CAPTION).items()}


def test_the_respaced_steps_are_iddpms():
    steps = respaced_timesteps(1000, 100)
    assert len(steps) == 100 and steps[0] == 999 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    assert set(np.diff(steps[::-1])) == {10, 11}  # 999 / 99 apart, rounded
    assert steps[::-1][:7] == [0, 10, 20, 30, 40, 50, 61]
    assert respaced_timesteps(1000, 1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        respaced_timesteps(1000, 0)


def test_the_first_step_is_the_documented_iddpm_update(tmp_path):
    torch.manual_seed(0)
    model = stdit_from_opensora_v1(tiny_checkpoint(), pixels=64, num_heads=HEADS).eval()
    pipe = opensora_v1_pipeline(model, frames=2)
    pipe.register_modules(vae=AutoencoderKL.from_pretrained(build_tiny_vae(tmp_path / "vae")))
    pipe.set_progress_bar_config(disable=True)
    text = torch.randn(1, 6, CAPTION)
    mask = torch.tensor([[True, True, True, False, False, False]])
    seen = {}

    def first(p, step, t, tensors):
        seen.setdefault("latents", tensors["latents"].clone())
        return {}

    pipe(prompt_embeds=text, prompt_attention_mask=mask, num_inference_steps=100, guidance_scale=7.0,
         generator=torch.Generator().manual_seed(3), output_type="latent", callback_on_step_end=first)  # fmt: skip

    # by hand: DDPM's linear betas, the respaced pair of steps, the posterior, the learned range
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 2, 8, 8, generator=g)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    acp = torch.cumprod(1 - betas, 0)
    t, t_prev = 999, respaced_timesteps(1000, 100)[1]
    a, a_prev = acp[t].item(), acp[t_prev].item()
    beta = 1 - a / a_prev
    null = model.y_embedding[None]  # the learned null caption, under the prompt's mask
    with torch.no_grad():
        out = model(torch.cat([x, x]), torch.tensor([t, t]), torch.cat([text, null]), torch.cat([mask, mask])).sample
    cond, uncond = out.chunk(2)
    eps = cond[:, :4].clone()
    eps[:, :3] = uncond[:, :3] + 7.0 * (cond[:, :3] - uncond[:, :3])  # three channels guided, the fourth not
    x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
    mean = a_prev**0.5 * beta / (1 - a) * x0 + (1 - beta) ** 0.5 * (1 - a_prev) / (1 - a) * x
    frac = (cond[:, 4:] + 1) / 2
    log_var = frac * np.log(beta) + (1 - frac) * np.log(beta * (1 - a_prev) / (1 - a))
    expected = mean + torch.exp(0.5 * log_var) * torch.randn(1, 4, 2, 8, 8, generator=g)
    assert torch.allclose(seen["latents"], expected.float(), rtol=1e-4, atol=1e-5)


def test_import_through_the_cli_then_generate_then_export_back(tmp_path, capsys):
    source = tmp_path / "OpenSora-v1-tiny.pth"
    weights = tiny_checkpoint(seed=1)
    torch.save(weights, source)
    vae, t5 = build_tiny_vae(tmp_path / "vae"), build_tiny_t5(tmp_path / "t5")
    folder = tmp_path / "imported"
    started = time.perf_counter()
    assert main(["model", "import", "opensora-v1", str(source), "--out", str(folder), "--pixels", "64",
                 "--num-heads", str(HEADS), "--vae", str(vae), "--text-encoder", str(t5)]) == 0  # fmt: skip
    imported_s = time.perf_counter() - started
    index = json.loads((folder / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"] and index["guidance_channels"] == 3
    assert index["null_caption_mask"] == "prompt" and index["max_text_tokens"] == 6
    pipe = T2VPipeline.from_pretrained(folder)  # prompts reach T5 in lower case, as 1.0's were trained
    pipe.tokenizer = Recording(pipe.tokenizer)
    pipe.encode_prompt("A RED Circle moves LEFT")
    pipe.register_to_config(lowercase_prompts=False)
    pipe.encode_prompt("A RED Circle moves LEFT")
    assert pipe.tokenizer.texts == [["a red circle moves left"], ["A RED Circle moves LEFT"]]
    (record,) = json.loads((folder / "lineage.json").read_text())
    assert record["checkpoint_sha256"] == file_sha256(source) and record["imported_from"] == str(source)
    assert record["format"] == "opensora-v1" and record["training_runs"] == []

    video = tmp_path / "video.mp4"
    started = time.perf_counter()
    assert main(["generate", "a red circle moves left", "--model", str(folder), "--out", str(video), "--steps", "4",
                 "--frames", "2", "--no-progress"]) == 0  # fmt: skip
    generated_s = time.perf_counter() - started
    assert video.stat().st_size > 0

    back = tmp_path / "back.pth"
    assert main(["model", "export", "opensora-v1", str(folder), "--out", str(back)]) == 0
    exported = torch.load(back, weights_only=True)
    assert exported.keys() == weights.keys() and all(torch.equal(exported[k], weights[k]) for k in weights)
    print(f"import {imported_s:.1f} s, generate (4 IDDPM steps, 2 frames of 64 px) {generated_s:.1f} s")


def test_an_iddpm_model_is_measured_by_its_own_objective():
    torch.manual_seed(0)
    model = stdit_from_opensora_v1(tiny_checkpoint(), pixels=64, num_heads=HEADS).eval()
    name, loss = objective(opensora_v1_pipeline(model, frames=2).scheduler)
    assert name == IDDPM
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(2, 4, 2, 8, 8, generator=g), torch.randn(2, 4, 2, 8, 8, generator=g)
    text, mask = torch.randn(2, 6, CAPTION, generator=g), torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        got = loss(model, x0, noise, torch.tensor([0.35, 0.9995]), text, mask)
        # by hand: steps 350 and 999 of DDPM's linear betas, the noised latents, the noise MSE on the first C channels
        acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
        a = acp[[350, 999]].float().view(2, 1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        eps = model(x_t, torch.tensor([350.0, 999.0]), text, mask).sample[:, :4]
    expected = (eps - noise).pow(2).flatten(1).mean(1)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    flow_name, flow = objective(FlowMatchEulerDiscreteScheduler())  # a rectified-flow pipeline's scheduler
    assert flow_name == FLOW and not torch.allclose(
        flow(model, x0, noise, torch.tensor([0.35, 0.9995]), text, mask), got
    )
