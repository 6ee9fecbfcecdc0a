"""Peer baseline: Stable-Baselines3 PPO on a MuJoCo env with rl-zoo's hyperparameters, CPU.

rl-zoo (rl-baselines3-zoo hyperparams/ppo.yml, commit 22e3ff2) tunes the v4 envs; the v5
ones (the same robots, fixed models) get their v4 entry. ``normalize: true`` there is
VecNormalize on observations and rewards (rl-zoo passes the run's discount to it).

Writes RUN_DIR/metrics.jsonl in rltpu's shape (``time_s`` from process start, ``env_steps``,
``mean_return`` of the last 20 training episodes, unnormalised; a row per rollout) and
RUN_DIR/config.json, so ``rltpu plot`` draws it beside rltpu's runs (seeds of one env form a
group). Prints one JSON line: env_steps, train_s, sps (env steps/s while training),
final_return (last 20 episodes), total_s (from process start).
Run it with the peers' virtualenv (PyTorch, stable-baselines3, gymnasium[mujoco]).
usage: python sb3_ppo_mujoco.py ENV SEED TOTAL_STEPS RUN_DIR"""
import json
import os
import sys
import time

t0 = time.time()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

# NOTE: one thread: on a loaded 2-core machine two torch threads spin against each other
# (a 4k-step smoke run made 16 env steps/s with the default of 2). rltpu's learner is
# not limited alike; its actor and learner are two processes.
torch.set_num_threads(1)
ZOO_NET = dict(log_std_init=-2, ortho_init=False, activation_fn=torch.nn.ReLU,
               net_arch=dict(pi=[256, 256], vf=[256, 256]))
# rl-zoo's ppo.yml entries (n_envs 1, normalize true, 1M steps, MlpPolicy for all three).
ZOO = {
    "HalfCheetah": dict(batch_size=64, n_steps=512, gamma=0.98, learning_rate=2.0633e-05,
                        ent_coef=0.000401762, clip_range=0.1, n_epochs=20, gae_lambda=0.92,
                        max_grad_norm=0.8, vf_coef=0.58096, policy_kwargs=ZOO_NET),
    "Hopper": dict(batch_size=32, n_steps=512, gamma=0.999, learning_rate=9.80828e-05,
                   ent_coef=0.00229519, clip_range=0.2, n_epochs=5, gae_lambda=0.99,
                   max_grad_norm=0.7, vf_coef=0.835671, policy_kwargs=ZOO_NET),
    "Walker2d": dict(batch_size=32, n_steps=512, gamma=0.99, learning_rate=5.05041e-05,
                     ent_coef=0.000585045, clip_range=0.1, n_epochs=20, gae_lambda=0.95,
                     max_grad_norm=1.0, vf_coef=0.871923),
}

env_id, seed, total, run_dir = sys.argv[1], int(sys.argv[2]), int(float(sys.argv[3])), sys.argv[4]
hyper = ZOO[env_id.split("-")[0]]
os.makedirs(run_dir, exist_ok=False)
with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump({"run": {"peer": "sb3-ppo", "env": env_id, "seed": seed, "total_env_steps": total},
               "agent": {k: repr(v) for k, v in hyper.items()}}, f, indent=1)
metrics = open(os.path.join(run_dir, "metrics.jsonl"), "w")


def mean_return(model):
    returns = [e["r"] for e in list(model.ep_info_buffer)[-20:]]
    return float(np.mean(returns)) if returns else None


class Record(BaseCallback):
    def _on_step(self):
        return True

    def _on_rollout_end(self):
        metrics.write(json.dumps({"time_s": time.time() - t0, "env_steps": self.num_timesteps,
                                  "mean_return": mean_return(self.model)}) + "\n")
        metrics.flush()


env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=hyper["gamma"])
model = PPO("MlpPolicy", env, seed=seed, device="cpu", **hyper)
t1 = time.time()
model.learn(total, callback=Record())
train_s = time.time() - t1
metrics.close()
print(json.dumps({"peer": "sb3-ppo", "env": env_id, "seed": seed, "env_steps": model.num_timesteps,
                  "train_s": round(train_s, 1), "sps": round(model.num_timesteps / train_s, 1),
                  "final_return": mean_return(model), "total_s": round(time.time() - t0, 1)}))
