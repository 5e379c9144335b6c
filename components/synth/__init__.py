"""The synth step: the generated toy world (captioned mp4s of moving shapes, stills, their ground truth)."""
