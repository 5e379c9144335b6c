"""The evaluate step: validation loss per bucket, sample videos, video metrics, prompt adherence and a report."""
