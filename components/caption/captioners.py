"""Captioners: a text per clip from a vision-language model, or from metadata that came with the data.

Vision-language families (transformers, by hub id or local path; `trust_remote_code` only when asked):
- `llava_next` (LLaVA-1.6, the default): the clip's frames as images in one prompt;
- `llava_next_video` (LLaVA-NeXT-Video): the clip's frames as one video. Its frames are preprocessed here
  (resize, centre crop, normalise, from the checkpoint's image-processor settings) because transformers' video
  processors need torchvision, which this project does not install.
Generation is greedy and batched with left padding, so a clip's caption does not depend on its batch.
"""

from __future__ import annotations

import json

import fsspec
import numpy as np

from model.weights.hub import resolve

DEFAULT_PROMPT = (
    "Describe this video and its visual style in detail: the objects, what they do, the setting and the camera. "
    "Use at most six sentences, so that the description could be used to generate the video again."
)
FAMILIES = ("llava_next", "llava_next_video")
DEFAULT_FRAMES = {"llava_next": 3, "llava_next_video": 8}


class MetadataCaptioner:
    """Captions that arrived with the data: a manifest column, or sidecar files beside each source
    (`<source>.txt`, or `<source>.json` with a "caption" or "text" field)."""

    name = "metadata"

    def __init__(self, column: str | None = None):
        self.column = column

    def caption(self, rows: list[dict]) -> list[str]:
        if self.column:
            missing = [r["clip_id"] for r in rows if self.column not in r]
            if missing:
                raise ValueError(f"manifest has no column {self.column!r}; choose an existing caption column")
            return [str(r[self.column] or "") for r in rows]
        return [self._sidecar(r["source"]) for r in rows]

    @staticmethod
    def _sidecar(source: str) -> str:
        stem = source.rsplit(".", 1)[0]
        fs, _, (txt,) = fsspec.get_fs_token_paths(stem + ".txt")
        if fs.exists(txt):
            with fs.open(txt, "r") as f:
                return f.read().strip()
        fs, _, (js,) = fsspec.get_fs_token_paths(stem + ".json")
        if fs.exists(js):
            with fs.open(js, "r") as f:
                data = json.load(f)
            return str(data.get("caption") or data.get("text") or "").strip()
        return ""


class VLMCaptioner:
    """A transformers vision-language model captioning batches of clips (lists of RGB frames)."""

    name = "vlm"

    def __init__(
        self,
        model: str,
        *,
        family: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        frames: int | None = None,
        min_new_tokens: int = 0,
        max_new_tokens: int = 200,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import AutoConfig, AutoProcessor

        spec, model = model, resolve(model)
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.family = family or config.model_type
        if self.family not in FAMILIES:
            raise ValueError(
                f"model {spec} is a {config.model_type!r} model; supported families: {FAMILIES} "
                "(pass --family to force one)"
            )
        self.frames = frames or DEFAULT_FRAMES[self.family]
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = getattr(torch, dtype)
        self.prompt = prompt
        self.generate_kwargs = {"min_new_tokens": min_new_tokens, "max_new_tokens": max_new_tokens, "do_sample": False}
        if self.family == "llava_next":
            from transformers import LlavaNextForConditionalGeneration as model_class
        else:
            from transformers import LlavaNextVideoForConditionalGeneration as model_class
        self.model = model_class.from_pretrained(model, dtype=self.dtype, trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        if self.family == "llava_next":
            self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
            self.tokenizer = self.processor.tokenizer
            self.chat_template = getattr(self.processor, "chat_template", None)
        else:
            from transformers import AutoTokenizer, CLIPImageProcessor

            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
            self.frame_processor = CLIPImageProcessor.from_pretrained(model)
            self.chat_template = getattr(self.tokenizer, "chat_template", None)
        self.tokenizer.padding_side = "left"
        self.config = config

    # ------------------------------------------------------------------------------------------- prompts

    def _prompt(self, media_tokens: str, kind: str, count: int) -> str:
        if self.chat_template:
            content = [{"type": kind} for _ in range(count)] + [{"type": "text", "text": self.prompt}]
            messages = [{"role": "user", "content": content}]
            owner = self.processor if self.family == "llava_next" else self.tokenizer
            return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"USER: {media_tokens} {self.prompt} ASSISTANT:"

    def _video_inputs(self, clips: list[list[np.ndarray]]) -> dict:
        """pixel_values_videos (B, T, 3, H, W) and the prompts with one <video> token per pooled patch."""
        import torch

        videos = [self.frame_processor(images=list(f), return_tensors="pt")["pixel_values"] for f in clips]
        # every clip gets self.frames frames (a short clip or a still repeats its last), so its input, and with
        # it its caption, does not depend on the clips it is batched with
        t = self.frames
        videos = [torch.cat([v[:t], v[-1:].expand(max(0, t - v.shape[0]), -1, -1, -1)]) for v in videos]
        pixel_values = torch.stack(videos)
        h, w = pixel_values.shape[-2:]
        patch = self.config.vision_config.patch_size
        stride = self.config.spatial_pool_stride
        per_frame = (h // patch // stride) * (w // patch // stride)
        token = getattr(self.tokenizer, "video_token", None) or "<video>"
        tokens = token * (per_frame * pixel_values.shape[1])
        prompts = [self._prompt(tokens, "video", 1) for _ in clips]
        if self.chat_template:  # the template wrote a single video token: expand it
            prompts = [p.replace(token, tokens, 1) for p in prompts]
        text = self.tokenizer(prompts, return_tensors="pt", padding=True)
        return {**text, "pixel_values_videos": pixel_values}

    def _image_inputs(self, clips: list[list[np.ndarray]]) -> dict:
        token = self.processor.image_token
        prompts = [self._prompt(" ".join([token] * len(frames)), "image", len(frames)) for frames in clips]
        return dict(self.processor(images=[list(f) for f in clips], text=prompts, return_tensors="pt", padding=True))

    # ------------------------------------------------------------------------------------------ caption

    def caption_frames(self, clips: list[list[np.ndarray]]) -> list[str]:
        """One raw caption per clip, each clip given as a list of RGB frames."""
        import torch

        inputs = self._video_inputs(clips) if self.family == "llava_next_video" else self._image_inputs(clips)
        inputs = {
            k: v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.generate_kwargs, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
