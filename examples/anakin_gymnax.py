"""Anakin mode from Python: a gymnax env, acting and learning in one compiled program on
the learner's devices (a TPU's cores, a GPU, or this CPU), no Ray.

``--batch-size`` is the number of envs, split over the devices; each update unrolls
``unroll_length`` steps of all of them. The settings are the README's Anakin example
(PureJaxRL's CartPole geometry; PPO's default discount and GAE lambda are PureJaxRL's)::

    python examples/anakin_gymnax.py             # or, from the shell:
    rltpu train --mode anakin --agent ppo --env gymnax:CartPole-v1 --batch-size 2048 \\
        --unroll-length 16 --num-epochs 4 --num-minibatches 32
"""
from __future__ import annotations

import rltpu
from rltpu import agents


def main(total_env_steps: int = 2_000_000, run_dir: str | None = None) -> dict:
    agent = agents.get("ppo")
    config = agent.Config(num_epochs=4, num_minibatches=32)
    run = rltpu.RunConfig(mode="anakin", env="gymnax:CartPole-v1", batch_size=2048,
                          unroll_length=16, total_env_steps=total_env_steps, run_dir=run_dir)
    return rltpu.train(agent, config, run)


if __name__ == "__main__":
    summary = main()
    print(f"return {summary['final_return']:.1f} after {summary['env_steps']:,} env steps, "
          f"{summary['env_sps']:,.0f} env steps/s on {summary['num_devices']} "
          f"{summary['platform']} device(s); run directory {summary['run_dir']}")
