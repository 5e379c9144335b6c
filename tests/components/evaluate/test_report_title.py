"""The report's title names the model, not a machine's folders."""

from components.evaluate.report import model_title


def test_the_title_is_a_short_name_and_a_registry_uri_as_given():
    assert model_title("/home/someone/work/data/train/stage3/pipeline") == "stage3/pipeline"
    assert model_title("models:/t2v-stdit@champion") == "models:/t2v-stdit@champion"
    assert model_title("pipeline") == "pipeline"
