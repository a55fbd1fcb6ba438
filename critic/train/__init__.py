"""Critic training: reward functions, GRPO losses, SFT and GRPO recipes."""
