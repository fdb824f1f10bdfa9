"""Recommendation signals fitted on training interactions: each ranks a task's candidates."""
