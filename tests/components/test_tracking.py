"""Lineage: the commit a run names."""

from components.common.tracking import git_commit


def test_the_image_commit_names_the_code_and_the_working_tree_is_the_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("T2V_GIT_COMMIT", "a" * 40)
    assert git_commit() == "a" * 40  # an image has no .git: its build argument names the code
    monkeypatch.delenv("T2V_GIT_COMMIT")
    commit = git_commit()
    assert commit is not None and len(commit) == 40  # this checkout
    monkeypatch.chdir(tmp_path)
    assert git_commit() is None  # neither: no tag rather than a wrong one
