"""The ingest step: raw videos and images -> filtered clip manifest; and the generated toy world."""
