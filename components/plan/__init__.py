"""The plan step: what a training schedule costs before anyone rents a GPU (the math is model.planning's)."""
