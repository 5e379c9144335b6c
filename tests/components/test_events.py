"""What a task tells `t2v pipeline run`: JSON lines in the file $T2V_EVENTS names, nothing without it."""

import json

import pytest

from components.common.events import EVENTS, Steps, task


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_task_reports_its_start_its_steps_and_its_figure(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(EVENTS, str(path))
    with task("train-stage-1") as report:
        steps = Steps(10, every=3600)  # throttled: the first update and the last go
        for done in range(1, 11):
            steps.update(done, loss=1.0 / done)
        report.figure = "10 steps, final loss 0.1000"
    got = records(path)
    assert [(r["task"], r["event"]) for r in got] == [("train-stage-1", "start"), ("train-stage-1", "steps"),
                                                      ("train-stage-1", "steps"), ("train-stage-1", "end")]  # fmt: skip
    assert [(r["done"], r["total"], r["loss"]) for r in got[1:3]] == [(1, 10, 1.0), (10, 10, 0.1)]
    assert got[-1]["figure"] == "10 steps, final loss 0.1000" and got[-1]["time"] >= got[0]["time"]


def test_a_failing_task_reports_its_error_and_its_last_lines(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(EVENTS, str(path))

    def evaluate():
        raise ValueError("no held-out clips in /data/latents: ingest with val_fraction > 0")

    with pytest.raises(ValueError), task("evaluate"):
        evaluate()
    fail = records(path)[-1]
    assert fail["event"] == "fail" and fail["task"] == "evaluate"
    assert fail["error"] == "ValueError: no held-out clips in /data/latents: ingest with val_fraction > 0"
    assert fail["lines"][-1] == fail["error"] and any("in evaluate" in line for line in fail["lines"])


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(EVENTS, raising=False)
    monkeypatch.chdir(tmp_path)
    with task("register") as report:
        Steps(2).update(2, 0.5)
        report.figure = "t2v-stdit version 1"
    assert list(tmp_path.iterdir()) == []
