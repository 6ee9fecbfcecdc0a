"""Built-in agents, by the name ``rltpu train --agent`` takes."""
from rltpu.agent import Agent, load_agent

BUILTIN = {"impala": "agents.impala:IMPALA", "ppo": "agents.ppo:PPO", "dqn": "agents.dqn:DQN"}


def get(name: str) -> Agent:
    """A built-in agent by name, or any agent by ``module:Attribute``."""
    return load_agent(name, BUILTIN)
