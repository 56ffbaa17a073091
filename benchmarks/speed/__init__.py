"""Timing probes: two or more ways of doing one thing, measured side by side in one run, reported as ratios."""
