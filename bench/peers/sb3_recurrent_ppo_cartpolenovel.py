"""Peer baseline: SB3-contrib's RecurrentPPO on CartPoleNoVel-v1 with rl-zoo's settings, CPU.

rl-baselines3-zoo's hyperparams/ppo_lstm.yml for CartPoleNoVel-v1 (the zoo's published
model reports 500 after 100k steps): 8 envs, n_steps 32, batch_size 256, 20 epochs, gamma
0.98, gae_lambda 0.8, learning rate and clip range linear from 1e-3 and 0.2 to 0, no
entropy bonus, observations normalised (VecNormalize, rewards not), MlpLstmPolicy with
64-unit LSTMs for actor and critic (enable_critic_lstm), ReLU, net_arch pi=[64], vf=[64],
ortho_init False. CartPoleNoVel-v1 is defined here as a gymnasium wrapper (CartPole-v1
without its two velocities), as rltpu's is.

Prints one JSON line like the other peers: seconds from process start until the mean
return of the last 20 training episodes reaches TARGET (null if never), env steps, and
env steps per second while training. Run it with the peers' virtualenv (PyTorch).
usage: python sb3_recurrent_ppo_cartpolenovel.py TARGET MAX_STEPS [SEED]"""
import json
import signal
import sys
import time

t0 = time.time()
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from sb3_contrib import RecurrentPPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

target, max_steps = float(sys.argv[1]), int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0


class NoVelocities(gym.ObservationWrapper):
    """CartPole's observation without the cart's and the pole's velocities."""

    def __init__(self, env):
        super().__init__(env)
        high = env.observation_space.high[[0, 2]]
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    def observation(self, observation):
        return observation[[0, 2]].astype(np.float32)


def linear(start):
    return lambda progress_remaining: progress_remaining * start


class Stop(BaseCallback):
    solved = None

    def _on_step(self):
        buf = self.model.ep_info_buffer
        if len(buf) >= 20 and np.mean([e["r"] for e in list(buf)[-20:]]) >= target:
            Stop.solved = time.time() - t0
            return False
        return True


env = VecNormalize(make_vec_env("CartPole-v1", n_envs=8, seed=seed, wrapper_class=NoVelocities),
                   norm_obs=True, norm_reward=False)
m = RecurrentPPO("MlpLstmPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98,
                 gae_lambda=0.8, learning_rate=linear(1e-3), clip_range=linear(0.2),
                 ent_coef=0.0, policy_kwargs=dict(
                     ortho_init=False, activation_fn=torch.nn.ReLU, lstm_hidden_size=64,
                     enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])),
                 seed=seed, device="cpu")


def report(note=None):
    elapsed = time.time() - t1
    buf = m.ep_info_buffer
    line = {"peer": "sb3-recurrent-ppo", "solved_s": Stop.solved and round(Stop.solved, 1),
            "env_steps": m.num_timesteps, "train_sps": round(m.num_timesteps / elapsed, 1),
            "last_return": round(float(np.mean([e["r"] for e in list(buf)[-20:]])), 1) if buf else None}
    print(json.dumps({**line, "note": note} if note else line), flush=True)


def stopped(signum, frame):  # the bench's timeout: say how far it got, then go
    report(f"stopped by signal {signum} after {time.time() - t0:.0f} s")
    sys.exit(1)


signal.signal(signal.SIGTERM, stopped)
t1 = time.time()
m.learn(max_steps, callback=Stop())
report()
