"""Built-in agents, by the name ``rltpu train --agent`` takes."""
if __name__ != "rltpu.agents":  # one copy of each module (the folder is rltpu/agents, see pyproject.toml)
    raise ImportError(f"the built-in agents are rltpu.agents; import that, not {__name__}")
from rltpu.agent import Agent, load_agent

BUILTIN = {"impala": "rltpu.agents.impala:IMPALA", "ppo": "rltpu.agents.ppo:PPO", "dqn": "rltpu.agents.dqn:DQN",
           "r2d2": "rltpu.agents.r2d2:R2D2"}


def get(name: str) -> Agent:
    """A built-in agent by name, or any agent by ``module:Attribute``."""
    return load_agent(name, BUILTIN)
