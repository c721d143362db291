"""Plumbing shared by everything: the write gate, progress bars, errors, JSON lines, output records, plots."""
