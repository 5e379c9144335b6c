"""Generation: the diffusers T2VPipeline, the folder it is saved in, the MLflow pyfunc around it, prompt clean-up."""
