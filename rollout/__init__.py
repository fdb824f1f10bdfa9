"""Generation engines, the multi-turn episode loop, rollout workers and their Ray actors."""
