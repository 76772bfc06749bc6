"""The `promptdiff` console script."""
