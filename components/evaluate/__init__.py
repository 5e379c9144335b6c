"""The evaluate step: validation loss per bucket, sample videos, video metrics, prompt adherence and a report."""

# the comparison with the baseline (the registry's champion) beside metrics.json, not in it: what the champion is
# depends on the registry, not on the step's inputs, so DVC tracks metrics.json and not this
BASELINE_FILE = "baseline.json"
