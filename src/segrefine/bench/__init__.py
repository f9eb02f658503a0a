"""Benchmarks: each writes JSON (figures, machine, command line), a Markdown table and PNGs."""
