"""Data sets for the tasks: raw files decoded once into cache files that tasks load quickly."""
