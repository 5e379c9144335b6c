"""The small copies scores run on; selecting clips by score: thresholds, what ingest must compute, and the refusal
before a run."""

import cv2
import numpy as np
import pandas as pd
import pytest

from components.common.scores import passing, shrink, thresholds, unscored
from components.ingest.config import IngestConfig
from pipelines.recipe import check


@pytest.mark.parametrize(
    ("source", "size"),
    [((1280, 720), (320, 180)), ((1920, 1080), (320, 180)), ((3840, 2160), (320, 180)), ((1000, 562), (320, 180)),
     ((640, 360), (320, 180)), ((330, 190), (320, 180)), ((320, 180), (320, 180)), ((1280, 720), (160, 90))],
)  # fmt: skip
def test_shrink_in_halving_steps_is_a_direct_area_resize_up_to_rounding(source, size):
    rng = np.random.default_rng(0)
    w, h = source
    gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    colour = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for image in (gray, colour):
        small = shrink(image, size)
        direct = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        assert small.shape == direct.shape
        assert np.abs(small.astype(int) - direct).max() <= 1
        assert np.abs(small.astype(int) - direct).mean() < 0.5


def test_a_number_is_a_minimum_and_a_mapping_a_range():
    assert thresholds({"aes": 5.0, "ocr": {"max": 0.02}}) == {"aes": (5.0, None), "ocr": (None, 0.02)}
    table = pd.DataFrame({"aes": [4.0, 5.0, 6.5, float("nan")], "ocr": [0.0, 0.5, 0.01, 0.0]})
    assert passing(table, {"aes": 5.0}).tolist() == [False, True, True, False]  # no score: not selected
    assert passing(table, {"aes": 5.0, "ocr": {"max": 0.02}}).tolist() == [False, False, True, False]
    assert passing(table, {}).all()
    with pytest.raises(ValueError, match=r"stage3.subset: no score 'beauty'; the manifest's scores are"):
        thresholds({"beauty": 1}, "stage3.subset")
    with pytest.raises(ValueError, match=r"stage3.subset.aes=\[5\]: give a minimum"):
        thresholds({"aes": [5]}, "stage3.subset")


def test_data_without_the_score_names_the_ingest_settings_that_compute_it():
    with pytest.raises(ValueError, match=r"selects on 'aes', which this data lacks .* ingest.aesthetic_model and "):
        passing(pd.DataFrame({"motion": [1.0]}), {"aes": 5.0}, "stage3.subset")


def test_a_recipe_selecting_on_a_score_its_ingest_never_computes_is_refused_before_the_run():
    assert unscored({"motion": 1.0}, IngestConfig()) == []  # always computed
    found = unscored({"aes": 5.0, "ocr": {"max": 0.1}}, IngestConfig(), "stage3.subset")
    assert len(found) == 2 and "ingest.aesthetic_model and ingest.aesthetic_head" in found[0]
    assert "ingest.ocr_model" in found[1]
    recipe = {"stage3": {"subset": {"aes": 5.0}}}  # the shipped stage 3 without the ingest models
    with pytest.raises(ValueError, match=r"stage3.subset selects on 'aes', a score ingest computes only with "):
        check(recipe)
    check({**recipe, "ingest": {"aesthetic_model": "m", "aesthetic_head": "h"}})
    with pytest.raises(ValueError, match=r"ingest\.aesthetic_model"):  # an override can break it too
        check("configs/recipes/production.yaml", ["ingest.aesthetic_model=none"])
