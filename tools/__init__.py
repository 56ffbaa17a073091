"""Tools that are not benchmarks, run as modules from the repository root:

    python -m tools.make_drops --out /tmp/drops     # three real weekly drops, deterministic
    python -m tools.regate --candidate C --reference R --data D   # a past candidate gated with today's rules
"""
