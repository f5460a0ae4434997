"""Ray entry points, one per stage: `python -m ray_jobs.<stage> --help`."""
