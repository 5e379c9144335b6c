"""The register step: a trained pipeline as an MLflow pyfunc model version, with lineage and champion aliases."""
