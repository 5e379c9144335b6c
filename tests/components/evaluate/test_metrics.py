import numpy as np
import pytest

from components.common.toy.world import render
from components.evaluate.metrics import flicker, motion, temporal_consistency, video_metrics


def moving_square(frames=8, size=64, speed=2.0):
    return np.stack([render("square", "red", "black", size, 16 + speed * t, 32) for t in range(frames)])


def test_a_still_video_is_consistent_motionless_and_steady():
    still = np.repeat(moving_square(1), 6, axis=0)
    assert video_metrics(still) == pytest.approx({"temporal_consistency": 1.0, "motion": 0.0, "flicker": 0.0})


def test_motion_grows_with_speed():
    slow, fast = motion(moving_square(speed=2.0)), motion(moving_square(speed=4.0))
    assert 0.3 < slow < 2.0  # a frame average: the background does not move
    assert fast == pytest.approx(2 * slow, rel=0.25)


def test_noise_is_inconsistent_and_brightness_jumps_flicker():
    noise = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    assert abs(temporal_consistency(noise)) < 0.1 < temporal_consistency(moving_square())
    steady = np.full((6, 16, 16, 3), 100, np.uint8)
    pulsing = steady.copy()
    pulsing[1::2] = 151  # +51 of 255 every other frame
    assert flicker(steady) == 0 and flicker(pulsing) == pytest.approx(0.2, abs=0.01)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"uint8 frames \(T, H, W, 3\)"):
        video_metrics(np.zeros((4, 8, 8), np.float32))
