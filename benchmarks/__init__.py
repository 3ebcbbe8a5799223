"""Benchmarks of Cohort's hot paths (see README.md in this folder)."""
