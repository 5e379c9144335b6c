"""The two-shape world and its detector: every shape of every true clip read (decoded from the mp4s), chance on
shuffled captions; and combinations held out of training that no training clip shows."""

import csv

import numpy as np
import pandas as pd
import pytest

from components.caption.caption import CaptionConfig, caption
from components.common.toy.world import check_held_out, quarter_held_out
from components.common.video import read_frames
from components.evaluate.adherence import detect_objects, pair_scores, parse_pair_prompt, parse_prompt, shuffle_chance
from components.evaluate.config import EvalConfig
from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.synth.synth import SynthConfig, synth


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """(asked, detected) for 96 two-shape clips of 64 px, 24 frames each."""
    out = synth(SynthConfig(out_dir=str(tmp_path_factory.mktemp("pairs") / "toy"), videos=0, images=0, pairs=96,
                            seconds=1.0))  # fmt: skip
    asked, detected = [], []
    with open(out / "ground_truth.csv") as f:
        for row in csv.DictReader(f):
            assert (
                row["kind"] == "pair" and (out / row["file"]).with_suffix(".txt").read_text().strip() == row["caption"]
            )
            asked.append(parse_pair_prompt(row["caption"]))
            assert asked[-1][0] == {k: row[k] for k in ("colour", "shape", "direction")}  # the first shape's columns
            detected.append(detect_objects(np.stack(read_frames(str(out / row["file"]), list(range(24))))))
    return asked, detected


def test_both_shapes_of_every_true_clip_are_read(pairs):
    asked, detected = pairs
    assert len(asked) == 96 and all(len(found) == 2 for found in detected)
    assert pair_scores(asked, detected) == {"objects": 1.0, "both": 1.0}


def test_with_captions_shuffled_both_right_is_at_chance(pairs):
    """Against the captions of other clips, both shapes are right as often as two clips ask for the same pair."""
    asked, detected = pairs
    labels = [" ".join(sorted(f"{o['colour']} {o['shape']} {o['direction']}" for o in pair)) for pair in asked]
    p, sd = shuffle_chance(labels)
    n = len(asked)
    rounds = [pair_scores([asked[(i + k) % n] for i in range(n)], detected)["both"] for k in range(1, 51)]  # no clip
    assert abs(np.mean(rounds) - p) <= 4 * sd / np.sqrt(50) + 1e-9  # against its own caption
    objects = pair_scores([asked[(i + 1) % n] for i in range(n)], detected)["objects"]
    assert objects < 0.25  # one shape of a pair in its colour with its shape and direction: chance, far from 1


def test_a_one_shape_prompt_is_not_a_pair():
    assert parse_pair_prompt("a red circle moves left on a black background") is None
    asked = parse_pair_prompt("a red square moves left and a blue circle moves up on a gray background")
    assert asked == [{"colour": "red", "shape": "square", "direction": "left"},
                     {"colour": "blue", "shape": "circle", "direction": "up"}]  # fmt: skip


def test_held_out_combinations_leave_every_attribute_and_pair_in_training():
    quarter = check_held_out(quarter_held_out())
    assert len(quarter) == 12 and check_held_out(("quarter",)) == quarter  # of 4 colours x 3 shapes x 4 directions
    with pytest.raises(ValueError, match="no training video with colour red and shape circle"):
        check_held_out((*quarter_held_out(), "red circle right", "red circle up", "red circle down"))
    for settings_of in (SynthConfig, EvalConfig):  # evaluation refuses it before it samples anything
        with pytest.raises(ValueError, match="'red blob left' is not 'colour shape direction'"):
            settings_of(held_out=("red blob left",))


def test_no_training_clip_shows_a_held_out_combination(tmp_path):
    """Read back from the manifest the steps made of the generated world (videos, two-shape videos and cuts)."""
    held_out = quarter_held_out()
    toy = synth(SynthConfig(out_dir=str(tmp_path / "toy"), videos=48, images=4, pairs=12, cut_videos=2,
                            held_out=held_out))  # fmt: skip
    ingest(IngestConfig(inputs=(str(toy),), out_dir=str(tmp_path / "ingest"), progress=False, val_fraction=0.1))
    caption(CaptionConfig(manifest=str(tmp_path / "ingest" / "manifest.parquet"), out_dir=str(tmp_path / "caption"),
                          captioner="metadata", progress=False))  # fmt: skip
    manifest = pd.read_parquet(tmp_path / "caption" / "manifest.parquet")
    train = manifest[manifest.split == "train"]
    shown = set()
    for text in train.text:
        one = parse_prompt(text)
        objects = parse_pair_prompt(text) or ([one] if one.get("direction") else [])
        shown |= {f"{o['colour']} {o['shape']} {o['direction']}" for o in objects}
    assert len(train) > 40 and shown and not shown & set(held_out)


def test_the_evaluation_reports_held_out_seen_and_two_shape_prompts_apart():
    """True clips of every kind of prompt score 1 in their own group; the recipe's held-out set reaches evaluate."""
    from components.common import settings
    from components.common.toy.world import caption as one_caption
    from components.common.toy.world import pair_caption, render_pair, sample_pair
    from components.evaluate.evaluate import sample_metrics
    from components.synth.synth import video_frames

    held_out = quarter_held_out()
    rng, cfg = np.random.default_rng(0), SynthConfig(shape_scale=0.2)
    records = []
    moves = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for k, triple in enumerate((held_out[0], held_out[1], "red circle right", "blue square left")):
        colour, shape, direction = triple.split()
        shown = moves[direction] if k == 0 else direction  # the first held-out clip moves the other way
        world = {"colour": colour, "shape": shape, "direction": shown, "background": "black", "jitter": 0.5}
        records.append(
            {"prompt": one_caption(colour, shape, "black", direction), "video": video_frames(world, cfg, 16)}
        )
    for _ in range(3):
        pair = sample_pair(rng)
        records.append({"prompt": pair_caption(pair), "video": render_pair(pair, 64, 16, 0.1)})
    metrics = sample_metrics(records, check_held_out(held_out))
    assert metrics["adherence/held_out/prompts"] == 2 and metrics["adherence/seen/prompts"] == 2
    assert metrics["adherence/prompts"] == 4 and metrics["adherence/pairs/prompts"] == 3
    assert metrics["adherence/held_out/direction"] == 0.5 and metrics["adherence/seen/direction"] == 1.0
    assert metrics["adherence/direction"] == 0.75 and metrics["adherence/seen/mean"] == 1.0
    assert metrics["adherence/pairs/both"] == 1.0
    assert "adherence/held_out/mean" not in sample_metrics(records[:4])  # no held-out set: one group

    recipe = {"synth": {"held_out": list(held_out)}}
    assert settings.load(EvalConfig, recipe=recipe, sections=("evaluate",)).held_out == held_out


def test_the_composition_prompts_ask_for_48_held_out_and_48_seen_combinations():
    """configs/toy/prompts_composition.txt: every held-out triple four times (backgrounds in turn), every seen one
    once and twelve of them twice, all toy-world prompts."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[3] / "configs/toy/prompts_composition.txt").read_text().splitlines()
    asked = [parse_prompt(line) for line in lines]
    quarter = check_held_out(("quarter",))
    triples = [(a["colour"], a["shape"], a["direction"]) for a in asked]
    held = [t for t in triples if t in quarter]
    assert len(held) == 48 and set(held) == quarter and len(triples) - len(held) == 48
    assert len(set(triples) - quarter) == 36 and all(a.get("background") for a in asked)


def test_the_two_shape_prompts_ask_for_48_pairs_of_seen_combinations():
    """configs/toy/prompts_pairs.txt: 48 distinct two-shape prompts, every ordered pair of colours four times, each
    shape a combination the recipe's training shows (none held out)."""
    from collections import Counter
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[3] / "configs/toy/prompts_pairs.txt").read_text().splitlines()
    pairs = [parse_pair_prompt(line) for line in lines]
    assert len(set(lines)) == len(lines) == 48 and all(pairs)
    quarter = check_held_out(("quarter",))
    assert not any((o["colour"], o["shape"], o["direction"]) in quarter for pair in pairs for o in pair)
    assert set(Counter((a["colour"], b["colour"]) for a, b in pairs).values()) == {4}
