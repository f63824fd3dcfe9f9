"""`agentloop.env`: agentloop as an RL environment (see agentloop/batch/env.py and docs/batch.md)."""

from agentloop.batch.env import AgentloopEnv, Episode, GymEnv, as_row, episode_reward, rollout

__all__ = ["AgentloopEnv", "Episode", "GymEnv", "as_row", "episode_reward", "rollout"]
