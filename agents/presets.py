"""Named sets of run and agent settings: ``rltpu train --preset NAME`` starts from them and
explicit flags override any of them.

The Atari presets take their hyperparameters from the papers (the source of each is on
the preset). Where rltpu cannot do what the paper did, the preset says what it does
instead in ``deviations``; README.md lists both, with the returns the papers report.
All of them use the env preprocessing of ``rltpu.envs.atari`` (Machado et al. 2018: sticky
actions, no loss-of-life episodes), not the papers' own Atari settings.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Preset:
    agent: str
    run: Mapping[str, Any]
    agent_config: Mapping[str, Any]
    source: str
    deviations: tuple[str, ...] = ()


# What the two MinAtar presets share: gymnax-blines' geometry and PPO settings (their
# sources below); they differ in network, discount and step-size schedule.
MINATAR_RUN = {"mode": "anakin", "env": "gymnax:Breakout-MinAtar", "batch_size": 64,
               "unroll_length": 128, "total_env_steps": 10_000_000, "target_return": None}
MINATAR_PPO = {"learning_rate": 5e-4, "num_epochs": 4, "num_minibatches": 8,
               "gae_lambda": 0.95, "clip_epsilon": 0.2, "value_clip_epsilon": 0.2,
               "value_cost": 0.5, "entropy_cost": 0.01, "max_grad_norm": 0.5}

ADAM_EPSILON = ("Adam's epsilon is optax's 1e-8, not the source's 1e-5 (docs/results.md's "
                "figures were measured so; --adam-epsilon 1e-5 gives the source's)")

PRESETS = {
    "impala-atari": Preset(
        agent="impala",
        run={"env": "ALE/Pong-v5", "num_actors": 2, "envs_per_actor": 16, "unroll_length": 20,
             "batch_size": 32, "total_env_steps": 50_000_000, "target_return": None},
        agent_config={"torso": "impala_resnet", "clip_rewards": True, "optimizer": "rmsprop",
                      "learning_rate": 6e-4, "anneal_lr": True, "rmsprop_decay": 0.99,
                      "rmsprop_epsilon": 0.01, "discount": 0.99, "entropy_cost": 0.01,
                      "baseline_cost": 0.5, "max_grad_norm": 40.0, "num_epochs": 1,
                      "core": "lstm", "core_size": 256},
        source="Espeholt et al. 2018, IMPALA, Table G.1 (Atari): unroll 20, batch 32, "
               "discount 0.99, baseline cost 0.5, entropy 0.01, RMSProp (decay 0.99, "
               "epsilon 0.01, no momentum), learning rate 0.0006 annealed to 0, gradient "
               "norm 40, rewards clipped to [-1, 1], 200M frames (50M agent steps); the deep "
               "network with its LSTM (256 units; it also reads the previous action and "
               "clipped reward)",
        deviations=("2 actors of 16 envs, not 48 actors (raise --num-actors on a bigger machine)")),
    "ppo-atari": Preset(
        agent="ppo",
        run={"env": "ALE/Pong-v5", "num_actors": 1, "envs_per_actor": 8, "unroll_length": 128,
             "batch_size": 8, "on_policy": True, "total_env_steps": 10_000_000,
             "target_return": None},
        agent_config={"torso": "nature", "clip_rewards": True, "learning_rate": 2.5e-4,
                      "anneal_lr": True, "num_epochs": 3, "num_minibatches": 4,
                      "discount": 0.99, "gae_lambda": 0.95, "clip_epsilon": 0.1,
                      "value_cost": 1.0, "entropy_cost": 0.01, "max_grad_norm": 0.5},
        source="Schulman et al. 2017, PPO, Table 5 (Atari): horizon 128, 8 actors, Adam "
               "2.5e-4 annealed linearly, 3 epochs, minibatch 32 x 8 = 256 (4 minibatches of "
               "1024 samples), discount 0.99, GAE lambda 0.95, clip 0.1, value coefficient 1, "
               "entropy coefficient 0.01, 40M frames (10M agent steps)",
        deviations=("the clip range is not annealed with the step size (the paper anneals both)",
                    "gradient norm clipped to 0.5 (OpenAI baselines' default; the paper gives none)")),
    "dqn-atari": Preset(
        agent="dqn",
        run={"env": "ALE/Pong-v5", "num_actors": 2, "envs_per_actor": 16, "unroll_length": 20,
             "batch_size": 16, "total_env_steps": 50_000_000, "target_return": None},
        agent_config={"torso": "nature", "clip_rewards": True, "n_step": 3, "discount": 0.99,
                      "learning_rate": 0.00025 / 4, "max_grad_norm": 40.0,
                      "target_update_period": 2500, "sample_size": 512, "epsilon": 0.4,
                      "epsilon_alpha": 7.0, "priority_exponent": 0.6, "importance_exponent": 0.4,
                      "replay_capacity": 100_000, "min_replay_size": 50_000, "dueling": True,
                      "adam_epsilon": 1e-8},
        source="Horgan et al. 2018, Ape-X DQN (Atari): 3-step returns, discount 0.99, learning "
               "rate 0.00025 / 4, gradient norm 40, target network every 2500 updates, batch "
               "512, exploration ladder eps 0.4 alpha 7, prioritised replay alpha 0.6 beta 0.4, "
               "learning from 50,000 transitions; the Nature DQN network (Mnih et al. 2015) "
               "with a dueling head (Wang et al. 2016)",
        deviations=("Adam (epsilon 1e-8), not centred RMSProp",
                    "the dueling streams are two linear heads on the Nature network's shared "
                    "512-unit layer (Wang et al. split after the convolutions, a 512-unit "
                    "layer in each stream)",
                    "replay holds 100,000 transitions, not 2M (uncompressed uint8 frames: "
                    "about 56 KB per transition, 5.6 GB in all)",
                    "2 actors of 16 envs, not 360 actors")),
    "ppo-minatar": Preset(
        agent="ppo",
        run=MINATAR_RUN,
        agent_config={**MINATAR_PPO, "hidden_sizes": (64, 64), "anneal_lr": True,
                      "discount": 0.99},
        source="gymnax-blines' MinAtar PPO geometry (agents/<game>-MinAtar/ppo.yaml, commit "
               "3f029d6: 64 envs x 128 steps, 4 epochs x 8 minibatches, learning rate 5e-4, "
               "GAE lambda 0.95, clip 0.2, entropy 0.01, value coefficient 0.5, gradient norm "
               "0.5, 10M steps; the runs behind gymnax's README table) with PureJaxRL's "
               "ppo.py for the rest (Lu et al. 2022: 64x64 tanh MLPs on the flattened "
               "observation, discount 0.99, learning rate annealed linearly to 0, value "
               "updates clipped to 0.2), so that bench/minatar.py compares like with like "
               "against PureJaxRL's runner",
        deviations=(ADAM_EPSILON,
                    "64x64 tanh MLPs, not gymnax-blines' 256x256 ReLU ones (PureJaxRL's "
                    "network)",
                    "discount 0.99, not gymnax-blines' 0.999 (PureJaxRL's)",
                    "learning rate annealed to 0, not held at 5e-4 (PureJaxRL's; "
                    "ppo-minatar-blines follows gymnax-blines)")),
    "ppo-minatar-blines": Preset(
        agent="ppo",
        run=MINATAR_RUN,
        agent_config={**MINATAR_PPO, "hidden_sizes": (256, 256), "activation": "relu",
                      "anneal_lr": False, "discount": 0.999},
        source="gymnax-blines' MinAtar PPO, the runs behind gymnax's README table that issue "
               "17's return goals quote (agents/<game>-MinAtar/ppo.yaml and utils/ppo.py, "
               "commit 15b76af: 64 envs x 128 steps, 4 epochs x 8 minibatches, Adam 5e-4 "
               "held constant (lr_begin = lr_end, so its warm-up changes nothing), discount "
               "0.999, GAE lambda 0.95, clip 0.2 on the ratio and on value updates, value "
               "coefficient 0.5, entropy 0.01, gradient norm 0.5, separate 2 x 256 ReLU MLPs "
               "on the flattened observation, 10M steps)",
        deviations=(ADAM_EPSILON,
                    "initial weights are rltpu's (the policy's output layer scaled by 0.01, "
                    "biases 0), not gymnax-blines' (LeCun normal in every layer, biases "
                    "uniform in [0, 0.05)); --weight-init blines gives the source's",
                    "gymnax's table is the mean return of 164 evaluation episodes with sampled "
                    "actions; rltpu's final return is that of the last 20 training episodes "
                    "(--eval-every-updates N --eval-episodes 164 --eval-policy sample gives "
                    "the table's kind)",
                    "PureJaxRL's runner cannot take these settings (its network, discount and "
                    "annealing are fixed), so bench/minatar.py compares with ppo-minatar")),
    "impala-minatar": Preset(
        agent="impala",
        run={**MINATAR_RUN, "batch_size": 128, "unroll_length": 20},
        agent_config={"hidden_sizes": (256, 256), "activation": "relu", "optimizer": "adam",
                      "learning_rate": 5e-4, "discount": 0.999, "entropy_cost": 0.05},
        source="rltpu's own (no published IMPALA on MinAtar to follow), tried on "
               "Breakout-MinAtar, seed 0, 2026-11-30: gymnax-blines' PPO network, discount "
               "and Adam step size (2 x 256 ReLU MLPs, 0.999, 5e-4) with IMPALA's default "
               "two V-trace steps on each batch of 128 envs x 20 steps, and an entropy cost "
               "of 0.05: 28.1 at 10M steps. With entropy 0.01 the policy's entropy fell to "
               "0.36 in the first 56k steps and the return stayed at 5.5 to 5.1M (discount "
               "0.999) and 6.8M (0.99); RMSProp at 6e-4 did not learn (0.35 at 5.8M)",
        deviations=("tuned on one seed of one game; its entropy cost is not every game's: "
                    "Freeway reaches gymnax's 58 with --entropy-cost 0.01 --learning-rate "
                    "1e-3 --anneal-lr --vtrace-lambda 0.95 (59.45, median of three seeds), "
                    "where Breakout and SpaceInvaders do worse (docs/results.md has the "
                    "figures)",)),
    "ppo-mujoco": Preset(
        agent="ppo",
        run={"env": "Hopper-v5", "num_actors": 1, "envs_per_actor": 1, "unroll_length": 2048,
             "batch_size": 1, "on_policy": True, "normalize_observations": True,
             "normalize_rewards": True, "total_env_steps": 1_000_000, "target_return": None},
        agent_config={"hidden_sizes": (64, 64), "learning_rate": 3e-4, "anneal_lr": True,
                      "num_epochs": 10, "num_minibatches": 32, "discount": 0.99,
                      "gae_lambda": 0.95, "clip_epsilon": 0.2, "value_clip_epsilon": 0.2,
                      "value_cost": 0.5, "entropy_cost": 0.0, "max_grad_norm": 0.5,
                      "weight_init": "orthogonal"},
        source="CleanRL's ppo_continuous_action.py (Huang et al. 2022, The 37 Implementation "
               "Details of PPO; the MuJoCo returns issue 17 takes as goals): 1 env x 2048 "
               "steps, 10 epochs x 32 minibatches (64 samples), Adam 3e-4 annealed linearly "
               "to 0, discount 0.99, GAE lambda 0.95, clip 0.2 on the ratio and on value "
               "updates, value coefficient 0.5, no entropy bonus, gradient norm 0.5, 64x64 "
               "tanh MLPs started orthogonal (gain sqrt(2); 0.01 policy and 1 value out) "
               "with a state-independent log std starting at 0, observations "
               "normalised by running statistics, rewards scaled by a running estimate of "
               "the discounted return's spread and clipped to [-10, 10], 1M steps",
        deviations=(ADAM_EPSILON,)),
}


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
