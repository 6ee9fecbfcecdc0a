"""Peer baseline: Stable-Baselines3 DQN on CartPole-v1 with rl-zoo hyperparameters, CPU.

Prints one JSON line like ../shared/peers' scripts: seconds from process start until the
mean return of the last 20 training episodes reaches TARGET (null if never) and env steps
per second while training. Run it with the peers' virtualenv (PyTorch).
usage: python sb3_dqn_cartpole.py TARGET MAX_STEPS"""
import json
import sys
import time

t0 = time.time()
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from stable_baselines3 import DQN  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

target, max_steps = float(sys.argv[1]), int(sys.argv[2])


class Stop(BaseCallback):
    solved = None

    def _on_step(self):
        buf = self.model.ep_info_buffer
        if len(buf) >= 20 and np.mean([e["r"] for e in list(buf)[-20:]]) >= target:
            Stop.solved = time.time() - t0
            return False
        return True


m = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
        learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
        gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
        policy_kwargs=dict(net_arch=[256, 256]), seed=0, device="cpu")
t1 = time.time()
m.learn(max_steps, callback=Stop())
elapsed = time.time() - t1
print(json.dumps({"peer": "sb3-dqn", "solved_s": Stop.solved and round(Stop.solved, 1),
                  "env_steps": m.num_timesteps, "train_sps": round(m.num_timesteps / elapsed, 1)}))
