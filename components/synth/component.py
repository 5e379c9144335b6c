"""The synth step as a KFP component."""

from kfp.dsl import Dataset, Output

from components.common.kfp import component


@component
def synth(toy: Output[Dataset], source: str, recipe: str, overrides: str = "[]"):
    """With `source` "synth": write the toy world (the recipe's `synth` section) to the `toy` artifact, which ingest
    then reads as its footage. With footage as the source there is nothing to generate: the artifact stays empty."""
    from components.common.kfp import task

    with task("synth") as report:
        from components.common.kfp import step_settings
        from components.synth.synth import SynthConfig
        from components.synth.synth import synth as write_world

        if source != "synth":
            report.figure = "nothing to generate: the source is footage"
            return
        cfg = step_settings(SynthConfig, recipe, overrides, ("synth",), {"out_dir": toy.path})
        write_world(cfg)
        toy.metadata.update({"videos": cfg.videos, "images": cfg.images, "seed": cfg.seed})
        report.figure = f"{cfg.videos} videos and {cfg.images} stills of {cfg.size} px"
