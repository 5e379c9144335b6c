"""The evaluate step's settings."""

from __future__ import annotations

from dataclasses import dataclass

from components.common import settings
from components.common.settings import setting
from components.common.toy.world import check_held_out


@dataclass(frozen=True)
class EvalConfig:
    model: str = setting("data/train/stage3/pipeline", "pipeline folder or models:/NAME@ALIAS or models:/NAME/VERSION")
    data: str = setting("data/precompute", "precompute folder or root: its held-out (val) split")
    out_dir: str = setting("outputs/evaluate", "output folder, replaced as a whole")
    baseline: str | None = setting(None, "the model to compare with, e.g. models:/t2v-stdit@champion (for register)")
    prompts: str | None = setting(None, "file with one prompt per line (default: the held-out captions)")
    max_prompts: int = setting(8, "prompts sampled")
    num_frames: int | None = setting(None, "frames for prompt-file prompts (default: the model's)")
    height: int | None = setting(None, "pixels for prompt-file prompts (default: the model's)")
    width: int | None = setting(None, "pixels for prompt-file prompts (default: the model's)")
    steps: int = setting(30, "sampling steps")
    guidance_scale: float = setting(7.0, "classifier-free guidance scale")
    seed: int = setting(0, "first sample's seed (sample i: seed + i)")
    fps: int = setting(8, "frame rate of the sample files")
    val_timesteps: int = setting(10, "timesteps of the validation loss")
    val_max_samples: int = setting(256, "held-out samples of the validation loss")
    clip_model: str | None = setting(None, "CLIP id/path for CLIPScore, e.g. openai/clip-vit-large-patch14")
    fvd_model: str | None = setting(None, "I3D TorchScript file for FVD (i3d_torchscript.pt)")
    fvd_videomae: str | None = setting(None, "VideoMAE id/path for content-debiased FVD")
    fvd_max_videos: int = setting(256, "videos per side of FVD")
    vbench_dimensions: tuple[str, ...] = setting((), "VBench dimensions, e.g. motion_smoothness (needs vbench)")
    loss_curves: tuple[str, ...] = setting((), "training out_dirs whose loss curves are plotted (default: lineage)")
    tracking_uri: str | None = setting(None, "MLflow tracking URI (none: no tracking)")
    experiment: str = setting("t2v-pipeline", "MLflow experiment")
    device: str = setting("auto", "auto, cpu or cuda")
    progress: bool = setting(True, "progress bar")
    held_out: tuple[str, ...] = setting(
        (),
        "'colour shape direction' combinations no training clip showed: toy-world adherence is also reported over "
        "the prompts asking for one and over the others (default: the recipe's synth.held_out)",
    )

    def __post_init__(self):
        if self.max_prompts < 1:
            raise ValueError(f"max_prompts={self.max_prompts} must be at least 1")
        check_held_out(self.held_out)  # a misspelt combination fails here, not after the samples are made

    @staticmethod
    def recipe_defaults(recipe: dict, overrides: list[str]) -> dict:
        """Under a recipe, the combinations its toy world holds out of training (synth.held_out)."""
        synth = settings.layered(
            None, recipe=recipe, sections=("synth",), overrides=settings.scoped(overrides, ("synth",))
        )
        return {"held_out": synth["held_out"]} if synth.get("held_out") else {}

    def models(self) -> dict[str, str | None]:
        """The pretrained weights these settings load, by setting (a task checks them at its start)."""
        return {"evaluate.clip_model": self.clip_model, "evaluate.fvd_model": self.fvd_model,
                "evaluate.fvd_videomae": self.fvd_videomae}  # fmt: skip
