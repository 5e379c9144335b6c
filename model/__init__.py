"""The model, by concern, each room importing only the rooms listed before it:
networks (STDiT) and schedulers (rectified flow); weights (encoders, hub, imports) and planning (FLOPs, memory,
buckets, cost); inference (the diffusers pipeline and its folder, the MLflow pyfunc); cli (`t2v model`)."""
