"""`t2v evaluate` on the tiny trained chain: metrics, samples, the report in headless Chromium, KFP outputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.common.toy.tiny import build_tiny_clip, build_tiny_i3d, build_tiny_videomae
from components.evaluate.config import EvalConfig
from components.evaluate.evaluate import evaluate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def evaluated(toy_chain, toy_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    _, _, three = toy_chain
    cfg = EvalConfig(
        model=str(three.out_dir / "pipeline"),
        data=str(toy_data),
        out_dir=str(root / "eval"),
        max_prompts=3,
        steps=4,
        val_timesteps=4,
        clip_model=str(build_tiny_clip(root / "clip")),
        fvd_model=str(build_tiny_i3d(root / "i3d.pt")),
        fvd_videomae=str(build_tiny_videomae(root / "videomae")),
        vbench_dimensions=("motion_smoothness",),
        progress=False,
    )
    return cfg, evaluate(cfg)


def test_every_metric_is_finite(evaluated):
    cfg, result = evaluated
    m = result["metrics"]
    expected = {"val_loss", "temporal_consistency", "motion", "flicker", "clip_score", "fvd", "fvd_videomae"}
    assert expected <= set(m) and any(k.startswith("val_loss/32-") for k in m)  # per bucket
    assert {"adherence/colour", "adherence/shape", "adherence/direction", "adherence/background"} <= set(m)
    # how far the held-out clips' shapes travel (they cross most of the frame) and the generated ones' ratio to it
    assert m["adherence/displacement_truth"] > 3
    assert m["adherence/displacement_ratio"] == m["adherence/displacement"] / m["adherence/displacement_truth"]
    assert all(np.isfinite(v) for v in m.values()), m
    written = json.loads((Path(cfg.out_dir) / "metrics.json").read_text())
    assert written["metrics"] == m and written["objective"] == "rectified-flow"  # which loss val_loss is


def test_samples_are_written_with_their_seeds(evaluated):
    import av

    cfg, result = evaluated

    out = Path(cfg.out_dir)
    assert [s["seed"] for s in result["samples"]] == [0, 1, 2]
    for sample in result["samples"]:
        with av.open(str(out / sample["mp4"])) as video:
            assert video.streams.video[0].frames >= 1
        assert (out / sample["gif"]).read_bytes()[:3] == b"GIF"
    assert "pip install vbench" in result["skipped"]["vbench"]
    assert (out / "loss.png").stat().st_size > 5000  # three stages found through the pipeline's lineage


def test_the_report_renders_in_headless_chromium_with_every_video(evaluated, tmp_path):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")

    from playwright.sync_api import sync_playwright

    cfg, result = evaluated
    report = Path(cfg.out_dir) / "report.html"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(report.as_uri())
        page.wait_for_function("document.body.dataset.media !== undefined", timeout=30_000)
        states = page.eval_on_selector_all("video", "els => els.map(e => [e.dataset.state, e.videoWidth])")
        assert page.evaluate("document.body.dataset.media") == "loaded", states
        assert len(states) == len(result["samples"]) and all(s == ["loaded", 32] for s in states)
        assert page.locator("table tr").count() == len(result["metrics"]) + 1
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kfp_outputs_carry_the_report_and_the_metrics(evaluated, tmp_path):
    from kfp import dsl

    from components.evaluate.evaluate import write_kfp_outputs

    cfg, result = evaluated
    html = dsl.HTML(name="report", uri=str(tmp_path / "html"))  # a local path: what the executor hands over
    metrics = dsl.Metrics(name="metrics")
    write_kfp_outputs(cfg.out_dir, html, metrics)
    assert (tmp_path / "html").read_text().startswith("<!doctype html>")
    assert metrics.metadata["val_loss"] == pytest.approx(result["metrics"]["val_loss"])
    assert "adherence-colour" in metrics.metadata


def test_bad_inputs_are_named(toy_chain, toy_data, tmp_path):
    _, _, three = toy_chain
    model = str(three.out_dir / "pipeline")
    with pytest.raises(ValueError, match="neither a pipeline folder"):
        evaluate(EvalConfig(model=str(tmp_path), data=str(toy_data), out_dir=str(tmp_path / "e")))
    with pytest.raises(ValueError, match="prompts file"):
        evaluate(EvalConfig(model=model, data=str(toy_data), out_dir=str(tmp_path / "e"), prompts="missing.txt"))
    assert not (tmp_path / "e").exists()  # nothing half-written


def test_the_loss_plot_names_each_stage_whether_found_by_lineage_or_given_as_artifact_folders(toy_chain, tmp_path):
    from components.evaluate.report import loss_curves
    from model.inference.pipeline import T2VPipeline

    def labels(figure):
        return figure.axes[0].get_legend_handles_labels()[1]

    chain = toy_chain
    pipe = T2VPipeline.from_pretrained(str(chain[2].out_dir / "pipeline"))
    names = ["stage 1 (images)", "stage 2 (video)", "stage 3 (HQ video)"]
    assert labels(loss_curves(pipe)) == [f"{n} {kind}" for n in names for kind in ("train", "val")]
    # KFP hands the stages over as artifact folders that are all called "model"
    given = []
    for i, stage in enumerate(chain):
        folder = tmp_path / f"a{i}" / "model"
        shutil.copytree(stage.out_dir / "export", folder / "export")
        shutil.copyfile(stage.out_dir / "metrics.jsonl", folder / "metrics.jsonl")
        given.append(str(folder))
    assert labels(loss_curves(pipe, tuple(given))) == labels(loss_curves(pipe))


def test_the_weighted_metrics_score_the_samples_against_the_held_out_videos(tmp_path):
    """CLIPScore is the mean over the samples of each one's score for its own prompt; FVD compares the held-out
    videos' features with the samples' (those of more than one frame), so the held-out set against itself is 0."""
    from components.evaluate.evaluate import weighted_metrics
    from components.evaluate.features import CLIPScorer, I3DFeatures, frechet_distance

    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8) for _ in range(6)]
    still = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    prompts = ["a red circle moves left", "green", "a blue square moves up", "a still image"]
    records = [{"video": v, "prompt": p} for v, p in zip([*videos[:3], still], prompts, strict=True)]
    clip, i3d = str(build_tiny_clip(tmp_path / "clip", seed=2)), str(build_tiny_i3d(tmp_path / "i3d.pt"))
    cfg = EvalConfig(clip_model=clip, fvd_model=i3d)
    real = videos[3:]
    m = weighted_metrics(cfg, records, real, "cpu")
    scorer, extract = CLIPScorer(clip), I3DFeatures(i3d)
    assert m["clip_score"] == pytest.approx(np.mean([scorer(r["video"], r["prompt"]) for r in records]))
    assert m["fvd"] == pytest.approx(frechet_distance(extract(real), extract(videos[:3])))
    assert m["fvd"] > 0
    copies = [{"video": v, "prompt": "x"} for v in real] + [{"video": still, "prompt": "x"}]
    assert weighted_metrics(EvalConfig(fvd_model=i3d), copies, real, "cpu")["fvd"] == pytest.approx(0, abs=1e-6)
