"""The ingest step: raw videos and images -> filtered clip manifest."""
