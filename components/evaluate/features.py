"""Metrics that need model weights, each loaded by hub id or path and optional.

- CLIPScore: 100 x max(cosine(image, text), 0) between every frame and the prompt, averaged over frames and
  videos, with a transformers CLIP model (e.g. openai/clip-vit-large-patch14).
- FVD: the Frechet distance between Gaussians fitted to features of real and generated videos. Features from an
  I3D network saved as TorchScript (the common `i3d_torchscript.pt`, called as
  `model(x, rescale=False, resize=False, return_features=True)` on (N, 3, T, 224, 224) floats in [-1, 1]) or, for
  the content-debiased variant, from a transformers VideoMAE model (mean of its last hidden states). With fewer
  videos than feature dimensions the covariance is singular and the distance is noisy: published numbers use
  2,048 videos or more.
- VBench: its dimensions when the `vbench` package and its weights are installed; otherwise skipped, and the
  reason is reported.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.weights.hub import ModelNotFound, resolve

log = logging.getLogger(__name__)


def _frames_tensor(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


class CLIPScorer:
    def __init__(self, model: str, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.device = device
        model = resolve(model)
        self.model = CLIPModel.from_pretrained(model).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.processor = CLIPImageProcessor.from_pretrained(model)
        self.max_length = self.model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def __call__(self, video: np.ndarray, prompt: str) -> float:
        text = self.tokenizer(
            [prompt], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        pixels = self.processor(images=list(video), return_tensors="pt")["pixel_values"].to(self.device)
        t = _features(self.model.get_text_features(**text))
        v = _features(self.model.get_image_features(pixel_values=pixels))
        t, v = F.normalize(t.float(), dim=-1), F.normalize(v.float(), dim=-1)
        return float((100 * (v @ t.T).clamp(min=0)).mean())


def _features(out) -> torch.Tensor:
    """A features tensor from transformers' CLIP outputs (a tensor, or an output object holding the projection)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("text_embeds", "image_embeds", "pooler_output"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise TypeError(f"no features in {type(out).__name__}")


class I3DFeatures:
    """Features from an I3D TorchScript file (the FVD convention described in the module docstring)."""

    name = "fvd"

    def __init__(self, path: str, device: str = "cpu", size: int = 224, min_frames: int = 10):
        try:
            path = resolve(path)
        except ModelNotFound as error:
            raise ModelNotFound(f"FVD model {error}; pass the I3D TorchScript file (i3d_torchscript.pt)") from None
        if not Path(path).is_file():
            raise ValueError(f"FVD model {path} not found: pass the I3D TorchScript file (i3d_torchscript.pt)")
        self.model = torch.jit.load(path, map_location=device).eval()
        self.device, self.size, self.min_frames = device, size, min_frames

    @torch.no_grad()
    def __call__(self, videos: list[np.ndarray]) -> np.ndarray:
        feats = []
        for video in videos:
            x = _frames_tensor(video)  # (3, T, H, W)
            if x.shape[1] < self.min_frames:  # I3D's temporal kernels need a few frames: repeat the last one
                x = torch.cat([x, x[:, -1:].expand(-1, self.min_frames - x.shape[1], -1, -1)], dim=1)
            x = F.interpolate(x[None], size=(x.shape[1], self.size, self.size), mode="trilinear", align_corners=False)
            out = self.model(x.to(self.device), rescale=False, resize=False, return_features=True)
            feats.append(out.reshape(1, -1).float().cpu())
        return torch.cat(feats).numpy().astype(np.float64)


class VideoMAEFeatures:
    """Mean last hidden state of a transformers VideoMAE model: the content-debiased FVD's features."""

    name = "fvd_videomae"

    def __init__(self, model: str, device: str = "cpu"):
        from transformers import VideoMAEModel

        self.model = VideoMAEModel.from_pretrained(resolve(model)).to(device).eval()
        self.device = device
        config = self.model.config
        self.frames, self.size = config.num_frames, config.image_size
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, videos: list[np.ndarray]) -> np.ndarray:
        feats = []
        for video in videos:
            index = np.linspace(0, len(video) - 1, self.frames).round().astype(int)
            x = torch.from_numpy(np.ascontiguousarray(video[index])).permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            x = ((x - self.mean) / self.std)[None].to(self.device)  # (1, T, 3, H, W)
            feats.append(self.model(pixel_values=x).last_hidden_state.mean(dim=1).float().cpu())
        return torch.cat(feats).numpy().astype(np.float64)


def frechet_distance(real: np.ndarray, fake: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) between the features' Gaussians (N, D)."""
    from scipy import linalg

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"the Frechet distance needs at least 2 videos per side, got {len(real)} and {len(fake)}")
    mu_r, mu_f = real.mean(0), fake.mean(0)
    s_r, s_f = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
    covmean = linalg.sqrtm(s_r @ s_f)
    if not np.isfinite(covmean).all():  # near-singular covariances (few videos): regularise
        offset = np.eye(len(s_r)) * eps
        covmean = linalg.sqrtm((s_r + offset) @ (s_f + offset))
    covmean = np.real(covmean)
    return max(0.0, float(np.sum((mu_r - mu_f) ** 2) + np.trace(s_r) + np.trace(s_f) - 2 * np.trace(covmean)))


def vbench_available() -> str | None:
    """None when VBench can run here, else why not (the message the report shows)."""
    if importlib.util.find_spec("vbench") is None:
        return "VBench skipped: the vbench package is not installed (pip install vbench; it downloads its weights)"
    return None


def vbench_scores(videos: Path, dimensions: tuple[str, ...], out_dir: Path, device: str) -> dict[str, float]:
    """VBench's score per dimension over the mp4s in `videos` (its custom-input mode: prompts from file names)."""
    from vbench import VBench

    info = Path(importlib.util.find_spec("vbench").origin).parent / "VBench_full_info.json"
    bench = VBench(device, str(info), str(out_dir))
    bench.evaluate(videos_path=str(videos), name="t2v", dimension_list=list(dimensions), mode="custom_input")
    results = json.loads((out_dir / "t2v_eval_results.json").read_text())
    return {f"vbench/{dim}": float(value[0] if isinstance(value, list) else value) for dim, value in results.items()}
