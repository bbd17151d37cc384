"""Metrics, analysis, plots and reports. May import every layer below it."""
