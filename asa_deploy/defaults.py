"""Defaults shared by every stage and CLI command; imports nothing, so the CLI can read them cheaply."""

TEST_WINDOWS = 5
"""Test windows per recording (majority vote) for every evaluation: train's validation, evaluate,
analyze, fold's ladder, simulate and deploy. The paper evaluates 10 windows; 5 keeps the exact
event-driven simulator affordable on 2 CPU cores. One value everywhere, so that accuracies and
figures from different commands describe the same windows and can be compared."""
