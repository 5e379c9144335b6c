"""Generation: a prompt in, a video file out, from a pipeline folder."""
