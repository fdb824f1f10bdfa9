"""Learning: pure RL functions, the learner, SFT, the GRPO driver, evaluation and W&B tracking."""
