"""Optional clip scorers that need model weights, loaded by path or hub id; off unless a model is given.

A scorer takes a few RGB frames of one clip (first, middle and last of those kept for scoring) and returns one
number, stored in the manifest column named by its `column`:

- `AestheticScorer` ("aes"): CLIP image embeddings (a transformers CLIP folder) fed to a small MLP head (a torch
  state dict of Linear layers, as the LAION aesthetic predictor ships), averaged over the frames. Open-Sora's
  scale: 1-10, 5.5 fair, 6.5 high.
- `TextAreaScorer` ("ocr"): the share of the frame covered by detected text, averaged over the frames; its one
  backend is the DB text detector (a DB network in ONNX, e.g. OpenCV's DB_TD500_resnet50.onnx, DB_IC15_resnet18.onnx
  or the OpenCV zoo's PP-OCRv3 detector text_detection_en_ppocrv3_2023may.onnx) run by OpenCV's dnn module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from model.weights.hub import ModelNotFound, resolve


class ClipScorer(Protocol):
    column: str

    def __call__(self, frames: list[np.ndarray]) -> float: ...


def _require(spec: str | None, what: str, flag: str) -> str:
    """The local path of a scorer's model (online, a hub repository id may come back as is):
    model.weights.hub.resolve."""
    if not spec:
        raise ValueError(f"the {what} needs a model: pass {flag} PATH or hub id")
    try:
        return resolve(spec)
    except ModelNotFound as error:
        raise ModelNotFound(
            f"{flag} {error}; give the local path or hub id of the {what}", spec, error.command
        ) from None


class AestheticScorer:
    column = "aes"

    def __init__(self, clip_path: str, head_path: str, device: str = "cpu"):
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        clip_dir = _require(clip_path, "aesthetic scorer's CLIP model", "--aesthetic-model")
        head_file = _require(head_path, "aesthetic scorer's MLP head", "--aesthetic-head")
        self.device = device
        self.processor = CLIPImageProcessor.from_pretrained(clip_dir)
        self.clip = CLIPVisionModelWithProjection.from_pretrained(clip_dir).to(device).eval()
        self.head = mlp_from_state_dict(torch.load(head_file, map_location="cpu", weights_only=True)).to(device)
        width = self.clip.config.projection_dim
        if self.head[0].in_features != width:
            raise ValueError(
                f"--aesthetic-head {head_path} expects {self.head[0].in_features}-d embeddings but the CLIP model "
                f"gives {width}-d ones; use the head trained for this CLIP model"
            )

    def __call__(self, frames: list[np.ndarray]) -> float:
        import torch

        with torch.no_grad():
            pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
            emb = self.clip(pixel_values=pixels).image_embeds
            emb = emb / emb.norm(dim=-1, keepdim=True)
            return float(self.head(emb).mean())


def mlp_from_state_dict(state: dict):
    """A stack of Linear layers (no activations, as the LAION aesthetic head) from `<prefix>.<i>.weight/bias`."""
    import torch

    linear = sorted({int(m.group(1)) for k in state if (m := re.search(r"(\d+)\.weight$", k)) and state[k].ndim == 2})
    if not linear:
        raise ValueError("the aesthetic head holds no Linear weights ('<n>.weight' matrices)")
    layers = []
    for i in linear:
        (w_key,) = [k for k in state if re.search(rf"(^|\.){i}\.weight$", k)]
        b_key = w_key[: -len("weight")] + "bias"
        layer = torch.nn.Linear(state[w_key].shape[1], state[w_key].shape[0], bias=b_key in state)
        layer.weight.data.copy_(state[w_key])
        if b_key in state:
            layer.bias.data.copy_(state[b_key])
        layers.append(layer)
    return torch.nn.Sequential(*layers).eval()


# BGR input statistics (mean, std; 0-255 units) of the DB detectors' two training recipes: DB's own (MhLiao/DB and
# OpenCV's DB_* ONNX models) and PaddleOCR's ImageNet values (PP-OCR's DB detectors, e.g. the OpenCV zoo's
# text_detection_en_ppocrv3_2023may.onnx); "auto" picks "ppocr" by the file name
NORMALIZATIONS = {
    "db": ((122.68, 116.67, 104.01), (255.0, 255.0, 255.0)),
    "ppocr": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


@dataclass
class TextAreaScorer:
    """Share of the frame area inside detected text boxes (0 = no text).

    Runs the DB network with OpenCV's dnn module and does DB's post-processing here (binarize the probability
    map, keep regions whose mean probability passes the box threshold, grow each region's rotated box by DB's
    unclip offset area * ratio / perimeter): `cv2.dnn.TextDetectionModel_DB.detect` fails an internal assertion
    in OpenCV 5.0 for every model."""

    model_path: str
    input_size: tuple[int, int] = (640, 640)  # (width, height), multiples of 32
    binary_threshold: float = 0.3
    box_threshold: float = 0.5
    unclip_ratio: float = 1.5
    normalization: str = "auto"  # a key of NORMALIZATIONS, or auto
    column: str = "ocr"

    def __post_init__(self):
        path = _require(self.model_path, "text-area scorer's DB text detector", "--ocr-model")
        if any(s % 32 for s in self.input_size):
            raise ValueError(f"input_size={self.input_size} must be multiples of 32 for the DB detector")
        if self.normalization == "auto":
            self.normalization = "ppocr" if "ppocr" in Path(path).name.lower() else "db"
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: choose auto or one of {sorted(NORMALIZATIONS)}")
        self.mean, self.std = (np.array(v, np.float32) for v in NORMALIZATIONS[self.normalization])
        self.net = cv2.dnn.readNet(str(path))

    def text_mask(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) uint8 mask of the text boxes found in an RGB frame."""
        h, w = rgb.shape[:2]
        bgr = cv2.resize(rgb, self.input_size, interpolation=cv2.INTER_LINEAR)[..., ::-1].astype(np.float32)
        blob = np.ascontiguousarray(((bgr - self.mean) / self.std).transpose(2, 0, 1)[None])  # (1, 3, H, W)
        self.net.setInput(blob)
        prob = self.net.forward().reshape(self.input_size[1], self.input_size[0])
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        binary = (prob > self.binary_threshold).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        mask = np.zeros((h, w), np.uint8)
        for contour in contours:
            region = np.zeros_like(mask)
            cv2.drawContours(region, [contour], -1, 1, thickness=-1)
            if prob[region > 0].mean() < self.box_threshold:
                continue
            (cx, cy), (bw, bh), angle = cv2.minAreaRect(contour)
            offset = bw * bh * self.unclip_ratio / max(2 * (bw + bh), 1e-6)
            box = cv2.boxPoints(((cx, cy), (bw + 2 * offset, bh + 2 * offset), angle))
            cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
        return mask

    def __call__(self, frames: list[np.ndarray]) -> float:
        shares = [float(self.text_mask(np.ascontiguousarray(rgb)).mean()) for rgb in frames]
        return float(np.mean(shares)) if shares else 0.0


@cache
def load_scorers(aesthetic_model: str | None, aesthetic_head: str | None, ocr_model: str | None) -> tuple:
    """The scorers the settings ask for, loaded once per process."""
    scorers: list[ClipScorer] = []
    if aesthetic_model or aesthetic_head:
        scorers.append(AestheticScorer(aesthetic_model, aesthetic_head))
    if ocr_model:
        scorers.append(TextAreaScorer(ocr_model))
    return tuple(scorers)
