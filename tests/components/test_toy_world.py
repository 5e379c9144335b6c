"""The toy world is a fair test: every file it writes is distinct (ingest drops none as a copy) and its coverage of
the attribute combinations is fixed by its settings, not left to chance."""

import hashlib
import json
from collections import Counter
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from components.common.toy.world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, check_held_out
from components.synth.synth import STILL_STEPS, Distinct, SynthConfig, synth, video_worlds

ROOT = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((ROOT / "params.yaml").read_text())["synth"]


@pytest.mark.parametrize("held_out", [(), ("quarter",)], ids=["all", "quarter-held-out"])
def test_the_demo_world_writes_no_two_alike_files_and_covers_every_combination_evenly(tmp_path, held_out):
    out = synth(SynthConfig(out_dir=str(tmp_path / "toy"), **{**DEMO, "held_out": held_out}))
    media = [p for p in out.rglob("*") if p.suffix in (".mp4", ".png")]
    assert len(media) == DEMO["videos"] + DEMO["images"]
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in media}) == len(media)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["near_duplicates"] == summary["identical_files"] == 0 and summary["files"] == len(media)
    truth = pd.read_csv(out / "ground_truth.csv", keep_default_na=False)
    videos, stills = truth[truth.kind == "video"], truth[truth.kind == "image"]
    # the first scene of each video: every triple not held out, each as often as any other (within one)
    seen = set(product(COLOURS, SHAPES, DIRECTIONS)) - check_held_out(held_out)
    triples = Counter(zip(videos.colour, videos["shape"], videos.direction, strict=True))
    assert set(triples) == seen and max(triples.values()) - min(triples.values()) <= 1
    # each triple on every background before any (triple, background) again (in another lane: distinct bytes above)
    per_combination = videos.groupby(["colour", "shape", "direction", "background"]).size()
    assert len(per_combination) == min(len(videos), 3 * len(seen)) and per_combination.max() <= -(
        -len(videos) // (3 * len(seen))
    )
    combinations = Counter(zip(stills.colour, stills["shape"], stills.background, strict=True))
    assert len(combinations) == len(COLOURS) * len(SHAPES) * len(BACKGROUNDS)
    assert max(combinations.values()) - min(combinations.values()) <= 1


def test_a_combination_shown_again_runs_in_another_lane_and_too_many_stills_are_refused(tmp_path):
    cfg = SynthConfig(videos=3 * 48 + 4, path_spread=0.1, grid=4)  # three rounds of the 48 triples, then four more
    worlds = video_worlds(cfg, frozenset(), np.random.default_rng(0))
    assert [w["lane"] for w in worlds[:144]] == [0] * 144  # each triple on each background once
    for world in worlds[144:]:
        first = next(w for w in worlds if {**w, "lane": 0} == {**world, "lane": 0})
        assert world["lane"] in (4, -4) and first["lane"] == 0  # one grid cell aside, the same lane drawn
    too_many = len(COLOURS) * len(SHAPES) * len(BACKGROUNDS) * len(STILL_STEPS) + 1
    with pytest.raises(ValueError, match=f"images={too_many}: .* ask for fewer images"):
        synth(SynthConfig(out_dir=str(tmp_path / "toy"), videos=0, images=too_many))
    assert not (tmp_path / "toy").exists()  # nothing half-written


def test_a_file_with_another_files_frames_is_refused_by_name():
    distinct, frames = Distinct(), np.zeros((2, 8, 8, 3), np.uint8)
    distinct.check("videos/a.mp4", frames, "lower videos")
    assert distinct.new(frames + 1) and not distinct.new(frames)
    with pytest.raises(ValueError, match=r"videos/b.mp4 would show the same frames as videos/a.mp4: lower videos"):
        distinct.check("videos/b.mp4", frames, "lower videos")


def test_files_of_one_caption_alike_at_the_grids_size_are_counted_as_near_duplicates():
    """Near-duplicates: one caption, frames averaged over grid cells within 2 grey levels on average. A picture one
    grey level brighter is one; a shift by a whole cell is not, nor is a near-copy captioned apart."""
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    frames[:, 4:8, 4:8] = 200
    distinct = Distinct(grid=4)
    distinct.check("a.mp4", frames, "", "a red square")
    distinct.check("b.mp4", np.roll(frames, 4, axis=2), "", "a red square")  # a whole cell aside
    distinct.check("c.mp4", frames + 2, "", "a blue square")  # another caption
    assert distinct.near_duplicates == 0
    distinct.check("d.mp4", frames + 1, "", "a red square")  # one grey level brighter
    assert distinct.near_duplicates == 1
