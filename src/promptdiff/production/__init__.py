"""Producing data: expert training (PPO), scripted and learned experts, collection of trajectory
files, dataset cards, and the importer of Prompt-DT's published pickles.

Everything here writes; `promptdiff.data` only reads what it wrote. Nothing in `promptdiff.data`,
`promptdiff.models` or the methods imports this package; the command line does, when a run needs
files that are missing (`promptdiff.production.collect.ensure_files`).
"""
