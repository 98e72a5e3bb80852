"""Workflows: the steps a user runs, built from the layers below.

Config (typed TOML), the pipeline (config -> run directory), run directories, the demo job, cross-modal
search, hyperparameter tuning, ablations and reports, and the run-level entry points of alignment and
the LLM layer. The CLI and the HTTP service call these; nothing here knows about either.
"""
