"""One settings mechanism: loading order, errors that name the key, generated flags, and no second copy of any
default (CLI, KFP components, the compiled pipeline's parameters, the recipes) that could drift from the step's."""

import argparse
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import yaml

from components.caption import component as caption_component
from components.caption.caption import CaptionConfig
from components.common import cli, settings
from components.evaluate import component as evaluate_component
from components.ingest import component as ingest_component
from components.ingest.config import IngestConfig
from components.precompute import component as precompute_component
from components.register import component as register_component
from components.synth import component as synth_component
from components.synth.synth import SynthConfig
from components.train import component as train_component
from components.train.config import TrainConfig
from pipelines.recipe import SECTIONS, TASKS, resolve, restated_defaults
from t2v.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
# the settings each KFP component's task resolves
COMPONENTS = {
    "synth": [synth_component.synth],
    "ingest": [ingest_component.ingest_shard_ids, ingest_component.ingest_shard, ingest_component.ingest_merge],
    "caption": [caption_component.caption_shard_ids, caption_component.caption_shard, caption_component.caption_merge],
    "precompute-stage-1": [
        precompute_component.precompute_shard_ids,
        precompute_component.precompute_shard,
        precompute_component.precompute_merge,
    ],
    "train-stage-1": [train_component.train_stage, train_component.train_stage_nodes],
    "evaluate": [evaluate_component.evaluate],
    "register": [register_component.register],
}


# ------------------------------------------------------------------------------------------------ the checks


def _same(a, b) -> bool:
    """Equal defaults; KFP has no None for strings, so "" stands for None."""
    a, b = ("" if v is None else v for v in (a, b))
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def by_name(cls) -> dict[str, tuple[str, object]]:
    """Every setting's default under its full path and, where unambiguous, its last name."""
    full = settings.defaults(cls)
    short: dict[str, list] = {}
    for path, value in full.items():
        short.setdefault(path.rsplit(".", 1)[-1], []).append((path, value))
    return {**{k: v[0] for k, v in short.items() if len(v) == 1}, **{p: (p, v) for p, v in full.items()}}


# the pipeline's own parameters, not settings (tracking_uri: the cluster's MLflow, handed to every task)
RUNNER = ("recipe", "overrides", "source", "workdir", "run_id", "tracking_uri")


def drift(cls, declared: dict[str, object], where: str) -> list[str]:
    """Each declared default that names a setting of `cls` and differs from it."""
    known = by_name(cls)
    return [
        f"{where}: {name}={value!r}, but {cls.__name__}.{known[name][0]} defaults to {known[name][1]!r}"
        for name, value in declared.items()
        if name in known and name not in RUNNER and not _same(value, known[name][1])
    ]


def component_defaults(func) -> dict[str, object]:
    """A component's parameter defaults (artifacts left out: an optional input artifact defaults to None)."""
    fn = getattr(func, "python_func", func)
    params = inspect.signature(fn).parameters.values()
    artifact = ("Input[", "Output[", "InputAnnotation", "OutputAnnotation")
    return {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty and not any(a in str(p.annotation) for a in artifact)
    }


def cli_settings(argv: list[str], cls, sections: tuple[str, ...]):
    """The settings `t2v ARGV` builds (what the verb's `run` hands to the step)."""
    return cli.from_args(cls, build_parser().parse_args(argv), sections)


def pipeline_parameters(ir: dict) -> dict[str, object]:
    params = ir["root"]["inputDefinitions"]["parameters"]
    return {name: p.get("defaultValue") for name, p in params.items()}


def all_drift(ir: dict, components=COMPONENTS, recipe: Path = ROOT / "params.yaml") -> list[str]:
    found = []
    for task, funcs in components.items():
        cls = SECTIONS[TASKS[task][-1]]
        for func in funcs:
            name = getattr(func, "python_func", func).__name__
            found += drift(cls, component_defaults(func), f"component {name}")
        found += drift(cls, pipeline_parameters(ir), "pipeline parameter")
    found += [f"{recipe.name}: {key} restates its default" for key in restated_defaults(recipe)]
    return found


# ------------------------------------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    from pipelines.t2v import compile_pipeline

    path = compile_pipeline(str(tmp_path_factory.mktemp("ir") / "t2v.yaml"))
    return next(yaml.safe_load_all(path.read_text()))


def nested(flat: dict) -> dict:
    """Overrides `section.key.sub: value` (configs/recipes/rehearsal.yaml) as a recipe's nested sections."""
    out: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


SHIPPED_RECIPES = ("params.yaml", "configs/recipes/production.yaml")  # the stage configs through production's


def test_no_default_is_declared_twice(ir, monkeypatch):
    assert all_drift(ir) == []
    monkeypatch.chdir(ROOT)  # a recipe names its section files from the repository's root
    for recipe in SHIPPED_RECIPES:
        assert restated_defaults(ROOT / recipe) == [], recipe
    sizes = nested(yaml.safe_load((ROOT / "configs/recipes/rehearsal.yaml").read_text()))
    assert restated_defaults(sizes) == []
    from pipelines.t2v import ClusterSettings

    defaults = settings.defaults(ClusterSettings)
    for path in (ROOT / "configs/cluster").glob("*.yaml"):
        stated = yaml.safe_load(path.read_text()) or {}
        restated = [k for k, v in stated.items() if v == defaults[k]]
        restated += [f"{k}.{step}" for k, v in stated.items() if isinstance(v, dict) and isinstance(defaults[k], dict)
                     for step, n in v.items() if defaults[k].get(step) == n]  # fmt: skip
        assert restated == [], path
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")}
    covered = {"configs/recipes/production.yaml", "configs/recipes/rehearsal.yaml", "configs/train/stage1.yaml",
               "configs/train/stage2.yaml", "configs/train/stage3.yaml"}  # fmt: skip
    others = {p for p in shipped if p.startswith(("configs/buckets/", "configs/plan/", "configs/cluster/"))}
    assert shipped == covered | others  # a new recipe or stage config joins the checks above


def test_planted_drift_is_caught(ir, tmp_path):
    def old_ingest_component(manifest, dedup_distance: int = -1, val_fraction: float = 0.1, workers: int = 1):
        """The drift that was: the cluster's ingest never removed near-duplicates."""

    planted = {**COMPONENTS, "ingest": [old_ingest_component]}
    bad_ir = json.loads(json.dumps(ir))
    bad_ir["root"]["inputDefinitions"]["parameters"]["frame_interval"] = {"defaultValue": 2}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({**yaml.safe_load((ROOT / "params.yaml").read_text()), "register": {"margin": 0.0}})
    )
    found = all_drift(bad_ir, planted, recipe)
    assert (
        "component old_ingest_component: dedup_distance=-1, but IngestConfig.filters.dedup_distance defaults to 4"
        in found
    )
    assert any(f.startswith("component old_ingest_component: val_fraction=0.1") for f in found)
    assert not any("workers" in f for f in found)  # the same default is no drift
    assert any(f.startswith("pipeline parameter: frame_interval=2, but PrecomputeConfig") for f in found)
    assert "recipe.yaml: register.margin restates its default" in found


def test_the_cli_builds_each_steps_defaults():
    assert cli_settings(["ingest", "in"], IngestConfig, ("ingest",)) == IngestConfig(inputs=("in",))
    assert cli_settings(["data", "synth"], SynthConfig, ("synth",)) == SynthConfig()
    for verb, cls in {"caption": CaptionConfig, "train": TrainConfig}.items():
        assert cli_settings([verb], cls, (verb,)) == cls()


def test_every_flag_says_its_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--filters.dedup-distance DEDUP_DISTANCE drop a clip within this many phash bits" in out
    assert "(default: 4)" in out and "(default: 0.05)" in out and "--recipe RECIPE" in out


def test_loading_order_defaults_recipe_file_flags_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"optim": {"lr": 1e-3}, "max_steps": 5}, "stage2": {"max_steps": 7}}))
    config = tmp_path / "stage.yaml"
    config.write_text(yaml.safe_dump({"optim": {"warmup_steps": 3}, "seed": 4}))
    cfg = settings.load(
        TrainConfig,
        recipe=recipe,
        sections=("train", "stage2"),
        config=config,
        overrides=["seed=5"],
        fixed={"stage": 2},
    )
    assert (cfg.optim.lr, cfg.max_steps, cfg.optim.warmup_steps, cfg.seed, cfg.stage) == (1e-3, 7, 3, 5, 2)
    assert cfg.optim.betas == (0.9, 0.999) and cfg.model == TrainConfig().model  # the rest stays default

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser, TrainConfig)
    args = parser.parse_args(["--recipe", str(recipe), "--optim.lr", "0.5", "--set", "optim.lr=0.25", "--no-progress"])
    cfg = cli.from_args(TrainConfig, args, ("train", "stage2"))
    assert (cfg.optim.lr, cfg.max_steps, cfg.progress) == (0.25, 7, False)  # --set wins over a flag


def test_values_are_parsed_by_the_settings_type():
    cfg = settings.load(
        IngestConfig,
        overrides=["out_dir=0.10", "filters.dedup_distance=none", "analysis.min_seconds=3", "inputs=[a, b]"],
    )
    assert cfg.out_dir == "0.10" and cfg.filters.dedup_distance is None  # text stays text; none switches off
    assert cfg.analysis.min_seconds == 3.0 and isinstance(cfg.analysis.min_seconds, float) and cfg.inputs == ("a", "b")
    cfg = settings.load(
        TrainConfig, overrides=["subset.aes=5", "guard.plant={4: nan}", "buckets=configs/buckets/80gb.yaml"]
    )
    assert cfg.subset == {"aes": 5} and cfg.guard.plant == {4: "nan"} and cfg.buckets == "configs/buckets/80gb.yaml"
    # a number written without a dot (YAML 1.1 reads 3e-3 as text), from the command line or a recipe file
    cfg = settings.load(TrainConfig, recipe={"train": {"optim": {"weight_decay": "1e-2"}}}, sections=("train",),
                        overrides=["optim.lr=3e-3"])  # fmt: skip
    assert cfg.optim.lr == 0.003 and cfg.optim.weight_decay == 0.01
    with pytest.raises(ValueError, match=r"TrainConfig.optim.lr='fast': expected float"):
        settings.load(TrainConfig, overrides=["optim.lr=fast"])


def test_bad_settings_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"IngestConfig.filters: unknown keys \['dedup'\]; known: \["):
        settings.load(IngestConfig, overrides=["filters.dedup=2"])
    with pytest.raises(ValueError, match=r"IngestConfig.workers='two': expected int"):
        settings.load(IngestConfig, overrides=["workers=two"])
    with pytest.raises(ValueError, match="expected key=value"):
        settings.load(IngestConfig, overrides=["workers"])
    with pytest.raises(ValueError, match="clip_mode='frames' must be one of"):
        settings.load(IngestConfig, overrides=["clip_mode=frames"])
    with pytest.raises(ValueError, match=r"recipe section stage1 missing\.yaml not found"):
        settings.load(TrainConfig, recipe={"stage1": "missing.yaml"}, sections=("train", "stage1"))
    with pytest.raises(ValueError, match=r"recipe: unknown sections \['stage4'\]"):
        resolve({"stage4": {"max_steps": 1}})
    with pytest.raises(ValueError, match=r"SynthConfig: unknown keys \['video'\]"):
        resolve({"synth": {"video": 3}})


def test_a_typo_in_a_recipe_names_the_file_and_the_section(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train: {log_every: 5}\nstage2: {max_stepz: 10}\n")
    with pytest.raises(
        ValueError, match=rf"recipe {recipe}, section stage2: TrainConfig: unknown keys \['max_stepz'\]"
    ):
        settings.load(TrainConfig, recipe=str(recipe), sections=("train", "stage2"))
    (tmp_path / "stage3.yaml").write_text("optim: {lr: fast}\n")
    recipe.write_text(f"stage3: {tmp_path / 'stage3.yaml'}\n")
    with pytest.raises(
        ValueError, match=rf"section stage3 \({tmp_path / 'stage3.yaml'}\): TrainConfig.optim.lr='fast'"
    ):
        settings.load(TrainConfig, recipe=str(recipe), sections=("train", "stage3"))


def test_each_task_resolves_the_production_and_toy_recipes():
    production = resolve(ROOT / "configs/recipes/production.yaml")
    assert production["ingest"].filters.dedup_distance == 4
    assert production["ingest"].aesthetic_model and production["ingest"].aesthetic_head  # stage 3 selects on aes
    assert production["train-stage-1"].model.init.startswith("pixart:")
    assert production["train-stage-3"].subset == {"aes": 5.0} and production["train-stage-3"].stage == 3
    buckets = {n: production[f"precompute-stage-{n}"].bucket_config for n in (1, 2, 3)}
    assert buckets == {1: {"256": {1: [1.0, 32]}}, 2: {"256": {16: [1.0, 4]}}, 3: {"512": {16: [1.0, 1]}}}
    assert production["precompute-stage-3"].subset == {"aes": 5.0} and production["precompute-stage-1"].subset == {}
    toy = resolve(ROOT / "params.yaml", ["stage2.max_steps=9"])
    assert toy["train-stage-2"].max_steps == 9 and toy["train-stage-2"].frames == "all"
    assert toy["train-stage-1"].model.preset == "tiny" and toy["train-stage-3"].max_steps == 300
    assert toy["ingest"].filters.dedup_distance is None and toy["synth"].shape_scale == 0.3


def test_updated_replaces_by_path():
    cfg = settings.updated(IngestConfig(), {"filters.dedup_distance": None, "workers": 3})
    assert cfg.filters.dedup_distance is None and cfg.workers == 3 and IngestConfig().workers == 1
    assert dataclasses.replace(SynthConfig(), videos=2).videos == 2


def test_the_stage_trained_is_the_stage_whose_recipe_section_is_read(tmp_path):
    """--set wins over a flag for the stage as for any setting, and the recipe section follows it."""
    from components.train.cli import config_from_argv

    recipe = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = ["--recipe", str(ROOT / "params.yaml"), "--data", "d", "--out-dir", "o"]
    cfg = config_from_argv([*base, "--stage", "2", "--set", "stage=3"])
    assert cfg.stage == 3 and cfg.max_steps == recipe["stage3"]["max_steps"]
    assert config_from_argv([*base, "--stage", "2"]).max_steps == recipe["stage2"]["max_steps"]
    config = tmp_path / "stage.yaml"
    config.write_text("stage: 3\n")
    from_file = config_from_argv([*base, "--config", str(config)])
    assert from_file.stage == 3 and from_file.max_steps == recipe["stage3"]["max_steps"]
    with pytest.raises(ValueError, match="stage=4 must be 1, 2 or 3"):
        config_from_argv([*base, "--set", "stage=4"])


def test_a_setting_of_several_scalar_types_has_a_flag_that_takes_each():
    from components.train.cli import config_from_argv

    base = ["--recipe", str(ROOT / "params.yaml"), "--data", "d", "--out-dir", "o"]
    for given, expected in (("3", 3), ("auto", "auto"), ("true", True), ("false", False)):
        cfg = config_from_argv([*base, "--model.gradient-checkpointing", given])
        assert cfg.model.gradient_checkpointing == expected
    with pytest.raises(ValueError, match=r"model\.gradient_checkpointing='some'"):
        config_from_argv([*base, "--model.gradient-checkpointing", "some"])


def test_a_stage_task_trains_with_one_settings_file_that_every_node_reads(tmp_path):
    """The KFP stage task resolves its settings once and writes them whole; `t2v train --config FILE` (torchrun, a
    TrainJob's pods) reads back exactly those, without the values derived from the data."""
    from components.train.cli import config_from_argv
    from components.train.stage import stage_settings

    overrides = json.dumps(["stage2.max_steps=7", "stage2.optim.lr=0.002", "caption.num_shards=3"])
    out = tmp_path / "run" / "stage2"
    cfg, argv = stage_settings(
        str(ROOT / "params.yaml"), overrides, 2, "lat", out, str(tmp_path / "s1"), "http://m:5000"
    )
    assert argv == ["--config", str(out / "settings.yaml")]
    assert (cfg.stage, cfg.max_steps, cfg.optim.lr, cfg.data, cfg.out_dir) == (2, 7, 0.002, "lat", str(out))
    assert (cfg.model.init, cfg.tracking_uri, cfg.resume, cfg.progress) == (
        str(tmp_path / "s1" / "export"), "http://m:5000", "auto", False)  # fmt: skip
    written = yaml.safe_load((out / "settings.yaml").read_text())
    assert "spatial_compression" not in written["flow"] and "resolution_shift" in written["flow"]
    assert config_from_argv(argv) == cfg
