"""Imports follow the flow of data, one way (DESIGN.md): model/ imports nothing of ours above it; a step imports
model/, components/common/ and its own folder; pipelines/ imports components, never the reverse; only the front door
(t2v/) sees everything. Read from the source with ast, so a lazy import inside a function counts too."""

from tests.imports import ROOT, graph, source_files


def layer(module: str) -> str:
    """model, common, step:<name>, components (the package itself), pipelines or t2v."""
    parts = module.split(".")
    if parts[0] != "components":
        return parts[0]
    if len(parts) == 1:
        return "components"
    return "common" if parts[1] == "common" else f"step:{parts[1]}"


# model/'s rooms, bottom up: a room imports its own modules and those of lower floors only
MODEL_FLOORS = {"networks": 0, "schedulers": 0, "weights": 1, "planning": 1, "inference": 2, "cli": 3}


def model_room_allows(source: str, target: str) -> bool:
    a, b = ([*m.split("."), "cli"][1] for m in (source, target))  # the package's own __init__: the top
    return a == b or MODEL_FLOORS[b] < MODEL_FLOORS[a]


def allowed(source: str, target: str) -> bool:
    a, b = layer(source), layer(target)
    if a == b == "model":
        return model_room_allows(source, target)
    if a == b or b == "components":
        return True
    rules = {
        "model": set(),
        "common": {"model"},
        "pipelines": {"model", "common", "components"},
        "t2v": None,  # the front door: every verb
    }
    if a.startswith("step:"):
        return b in ("model", "common")
    if a == "pipelines":
        return b in rules["pipelines"] or b.startswith("step:")
    return rules[a] is None or b in rules[a]


def violations(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} imports {b}" for a, targets in edges.items() for b in targets if not allowed(a, b))


def test_imports_follow_the_layers():
    assert violations(graph()) == []


def test_a_planted_crossing_import_is_caught(tmp_path):
    edges = graph()
    edges["model.networks.stdit"] = edges["model.networks.stdit"] | {"components.common.latents"}  # model reaching up
    edges["model.planning.flops"] = edges["model.planning.flops"] | {"model.inference.prompts"}  # a room reaching up
    edges["components.evaluate.evaluate"] = edges["components.evaluate.evaluate"] | {"components.train.train"}
    edges["components.common.video"] = edges["components.common.video"] | {"pipelines.t2v"}
    assert violations(edges) == [
        "components.common.video imports pipelines.t2v",
        "components.evaluate.evaluate imports components.train.train",
        "model.networks.stdit imports components.common.latents",
        "model.planning.flops imports model.inference.prompts",
    ]
    # and in source: a planted module is read like the real ones
    for name in ("model/__init__.py", "components/__init__.py", "components/train/__init__.py", "pipelines/x.py",
                 "t2v/x.py", "components/train/train.py"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "model" / "bad.py").write_text("def f():\n    from components.train.train import train\n")
    assert violations(graph(tmp_path)) == ["model.bad imports components.train.train"]


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n for p in source_files().values() if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}, "split these by concern"


def test_cli_code_lives_in_cli_modules():
    """argparse appears only in command-line modules (cli.py, __main__.py), never in a step's library code."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in source_files().values()
        if "import argparse" in p.read_text() and p.name not in ("cli.py", "__main__.py", "settings.py")
    ]
    assert offenders == []
