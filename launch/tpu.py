"""Cloud TPU launcher: a TPU VM or pod slice, rltpu on every host, a Ray cluster, training.

    python -m launch.tpu up --name rl --accelerator-type v5litepod-16 --spot -- --env CartPole-v1
    python -m launch.tpu up ... --dry-run      # prints the commands as a bash script, runs none
    python -m launch.tpu tunnel --name rl ...  # dashboard and TensorBoard on localhost
    python -m launch.tpu fetch --name rl ...   # worker 0's runs/ to ./runs-rl
    python -m launch.tpu down --name rl ...

Every gcloud and ray command comes from a pure function of a ``LaunchConfig`` (``plan``),
so ``--dry-run`` prints exactly what a real run executes, and the tests compare them.

Security: Ray's token authentication is on everywhere (``RAY_AUTH_MODE=token``; one token
per cluster, written here with mode 600 and copied to every host's ``~/.ray/auth_token``);
the dashboard listens on 127.0.0.1 only and is reached through an SSH tunnel. Anyone who
can reach a Ray cluster's ports and holds its token can run any code on every host.

This module uses the standard library only: it runs where gcloud runs, without JAX.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import typing

USAGE_ERROR = 2
PROG = "launch.tpu"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD_IP_VAR = "HEAD_IP"
HEAD_IP = "${HEAD_IP}"  # stands for worker 0's internal address until it is known
TRAIN_LOG = "~/rltpu-train.log"
DASHBOARD_PORT = 8265
TENSORBOARD_PORT = 6006


# --- accelerator types -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Generation:
    """What gcloud's accelerator-type names mean for one TPU generation."""

    prefix: str
    """The name before the dash: ``v4``, ``v5litepod``, ..."""
    cores_per_chip: int
    """The number after the dash counts TensorCores (v4, v5p: 2 per chip) or chips (1)."""
    max_single_host_chips: int
    """Slices of up to this many chips are one VM; larger ones have 4 chips per VM."""
    sizes: tuple[int, ...]
    """Valid numbers after the dash."""
    runtime_version: str
    """TPU VM software version for JAX (Cloud TPU docs, "TPU software versions")."""
    zone: str
    """A zone that offers this generation (Cloud TPU docs, "TPU regions and zones")."""


CHIPS_PER_MULTI_HOST_VM = 4
_LARGE = tuple(128 * k for k in range(1, 65))  # v4-128, v4-256, ... v4-8192 (3D slices)
GENERATIONS = {
    g.prefix: g for g in (
        Generation("v4", 2, 4, (8, 16, 32, 64) + _LARGE, "tpu-ubuntu2204-base", "us-central2-b"),
        Generation("v5p", 2, 4, (8, 16, 32, 64) + _LARGE, "v2-alpha-tpuv5", "us-east5-a"),
        Generation("v5litepod", 1, 8, (1, 4, 8, 16, 32, 64, 128, 256), "v2-alpha-tpuv5-lite",
                   "us-west4-a"),
        Generation("v6e", 1, 8, (1, 4, 8, 16, 32, 64, 128, 256), "v2-alpha-tpuv6e", "us-east5-b"),
    )
}
ALIASES = {"v5e": "v5litepod"}  # "v5e-16" is what people say; gcloud wants "v5litepod-16"


@dataclasses.dataclass(frozen=True)
class Slice:
    """One TPU slice: its gcloud name, chips and hosts (TPU VMs, gcloud's "workers")."""

    accelerator_type: str
    """Canonical gcloud name (``v5e-1`` becomes ``v5litepod-1``)."""
    generation: Generation
    """What the generation's names mean, and its runtime version and zone."""
    chips: int
    """TPU chips in the slice (JAX devices: one per chip on v4 and later)."""
    hosts: int
    """TPU VMs in the slice: gcloud's workers 0 .. hosts-1, each one Ray node."""


def parse_accelerator_type(name: str) -> Slice:
    """``v4-32`` -> 16 chips on 4 hosts; ``v5litepod-1`` (or ``v5e-1``) -> 1 chip, 1 host.

    Raises:
      ValueError: naming the bad type and what is valid.
    """
    valid = ", ".join(f"{p}-N" for p in GENERATIONS)
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name)
    if not match:
        raise ValueError(f"unknown accelerator type {name!r}; valid: {valid} "
                         "(e.g. v4-32, v5litepod-16)")
    prefix, size = ALIASES.get(match[1], match[1]), int(match[2])
    if prefix not in GENERATIONS:
        raise ValueError(f"unknown TPU generation in {name!r}; valid: {valid}")
    gen = GENERATIONS[prefix]
    if size not in gen.sizes:
        shown = ", ".join(str(s) for s in gen.sizes[:8]) + (", ..." if len(gen.sizes) > 8 else "")
        raise ValueError(f"accelerator type {name!r} does not exist; {prefix}-N takes N in "
                         f"{shown}")
    chips = size // gen.cores_per_chip
    hosts = 1 if chips <= gen.max_single_host_chips else chips // CHIPS_PER_MULTI_HOST_VM
    return Slice(f"{prefix}-{size}", gen, chips, hosts)


# --- configuration -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Where the slice lives and how rltpu and Ray are set up on it."""

    name: str = "rltpu"
    """TPU VM (and queued resource) name."""
    accelerator_type: str = "v5litepod-1"
    """gcloud accelerator type: v4-32, v5litepod-1 (alias v5e-1), v5litepod-16, v6e-8, ..."""
    zone: str | None = None
    """Zone (default: one that offers the generation, e.g. us-central2-b for v4)."""
    project: str | None = None
    """Google Cloud project (default: gcloud's configured project)."""
    runtime_version: str | None = None
    """TPU VM software version (default: the generation's, e.g. v2-alpha-tpuv5-lite)."""
    spot: bool = False
    """Spot capacity: much cheaper, may be preempted at any time."""
    queued: bool = False
    """Request through a queued resource: waits for capacity instead of failing at once."""
    valid_until_duration: str | None = None
    """With --queued: give up if no capacity within this time (gcloud duration, e.g. 6h)."""
    cpu_hosts: tuple[str, ...] = ()
    """Existing Compute Engine VMs (same zone and network) to join as CPU-only Ray workers."""
    python_version: str = "3.12"
    """Python for rltpu's venv on every host (TPU images ship 3.10; uv fetches this one)."""
    source: str = REPO_ROOT
    """The rltpu checkout whose committed HEAD is installed on every host."""
    token_file: str | None = None
    """Local copy of the cluster's Ray auth token (default: ~/.config/rltpu/NAME.ray-token)."""
    ray_port: int = 6379
    """Ray's GCS port on worker 0 (reachable inside the VPC only)."""
    dashboard: bool = True
    """Start Ray's dashboard (bound to 127.0.0.1; see the tunnel command)."""
    learners_by_ray: bool = False
    """Multi-host slice: start one rltpu train --learner-hosts N on worker 0 and let Ray
    place a learner process on every TPU host, instead of one per host over SSH."""

    def __post_init__(self):
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.name):
            raise ValueError(f"--name {self.name!r} is not a valid TPU name (lower-case letters, "
                             "digits and dashes, starting with a letter)")
        parse_accelerator_type(self.accelerator_type)
        if self.valid_until_duration is not None and not self.queued:
            raise ValueError("--valid-until-duration needs --queued")
        if not re.fullmatch(r"3\.1[1-3]", self.python_version):
            raise ValueError(f"--python-version {self.python_version!r}: rltpu runs on 3.11 "
                             "to 3.13")
        if not 0 < self.ray_port < 65536:
            raise ValueError(f"--ray-port must be a port number, got {self.ray_port}")
        for host in self.cpu_hosts:
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", host):
                raise ValueError(f"--cpu-hosts {host!r} is not a Compute Engine VM name")

    @property
    def slice(self) -> Slice:
        return parse_accelerator_type(self.accelerator_type)

    @property
    def resolved_zone(self) -> str:
        return self.zone or self.slice.generation.zone

    @property
    def resolved_runtime_version(self) -> str:
        return self.runtime_version or self.slice.generation.runtime_version

    @property
    def resolved_token_file(self) -> str:
        return self.token_file or os.path.join("~", ".config", "rltpu", f"{self.name}.ray-token")

    @property
    def tarball(self) -> str:
        return f"/tmp/rltpu-{self.name}.tar.gz"


# --- commands ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One command of a plan, as argv (never through a shell unless argv says so)."""

    what: str
    """One line for a person: what the step does and why."""
    argv: tuple[str, ...]
    """The command; ``~/`` at the start of an argument is a path on this machine."""
    capture: str | None = None
    """Store the command's stdout (stripped) in this variable; later argv use ``${NAME}``."""
    until: str | None = None
    """Re-run the command every 30 s until it prints this (e.g. ACTIVE)."""
    unless: tuple[str, ...] | None = None
    """Skip the step when this command succeeds (e.g. the TPU exists already: reuse it)."""


def _scope(cfg: LaunchConfig) -> list[str]:
    return [f"--zone={cfg.resolved_zone}"] + ([f"--project={cfg.project}"] if cfg.project else [])


def _tpu(cfg: LaunchConfig, *args: str) -> tuple[str, ...]:
    return ("gcloud", "compute", "tpus", "tpu-vm", *args, *_scope(cfg))


def _ssh(cfg: LaunchConfig, workers: str, remote: str) -> tuple[str, ...]:
    """Runs ``remote`` (a bash command line) on the slice's hosts, e.g. workers "all", "0"."""
    return _tpu(cfg, "ssh", cfg.name, f"--worker={workers}", f"--command={remote}")


def _cpu_ssh(cfg: LaunchConfig, host: str, remote: str) -> tuple[str, ...]:
    return ("gcloud", "compute", "ssh", host, *_scope(cfg), f"--command={remote}")


def _venv_bin(tool: str) -> str:
    return f"~/rltpu-venv/bin/{tool}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _shape(s: Slice, kind: str) -> str:
    return f"{s.accelerator_type} ({_count(s.chips, 'chip')}, {_count(s.hosts, 'host')}, {kind})"


def describe_step(cfg: LaunchConfig) -> Step:
    return Step("show the TPU's state", _tpu(cfg, "describe", cfg.name, "--format=value(state)"))


def create_steps(cfg: LaunchConfig) -> list[Step]:
    """Creates the slice, or reuses it when one of that name exists."""
    s = cfg.slice
    exists = describe_step(cfg).argv
    spot = ["--spot"] if cfg.spot else []
    kind = "spot" if cfg.spot else "on-demand"
    if not cfg.queued:
        return [Step(f"create {_shape(s, kind)} unless it exists",
                     _tpu(cfg, "create", cfg.name, f"--accelerator-type={s.accelerator_type}",
                          f"--version={cfg.resolved_runtime_version}", *spot),
                     unless=exists)]
    valid = ([f"--valid-until-duration={cfg.valid_until_duration}"]
             if cfg.valid_until_duration else [])
    queued = ("gcloud", "compute", "tpus", "queued-resources")
    return [
        Step(f"queue a request for {_shape(s, kind)} unless the TPU exists",
             (*queued, "create", cfg.name, f"--node-id={cfg.name}",
              f"--accelerator-type={s.accelerator_type}",
              f"--runtime-version={cfg.resolved_runtime_version}", *spot, *valid, *_scope(cfg)),
             unless=exists),
        Step("wait until the queued resource is ACTIVE (capacity granted, VMs up)",
             (*queued, "describe", cfg.name, *_scope(cfg), "--format=value(state.state)"),
             until="ACTIVE"),
    ]


def _install_remote(cfg: LaunchConfig, jax_extra: str) -> str:
    """A bash line that unpacks the checkout and installs it into ~/rltpu-venv."""
    uv = "~/.local/bin/uv"
    package = "'jax[tpu]' " if jax_extra == "tpu" else ""
    return ("set -e; mkdir -p -m 700 ~/.ray; rm -rf ~/rltpu; tar -xzf ~/rltpu.tar.gz -C ~; "
            "python3 -m pip install --user --quiet --upgrade uv; "
            f"{uv} venv --quiet --allow-existing --python {cfg.python_version} ~/rltpu-venv; "
            f"{uv} pip install --quiet --python ~/rltpu-venv/bin/python "
            f"-c ~/rltpu/constraints.txt {package}-e ~/rltpu")


def install_steps(cfg: LaunchConfig) -> list[Step]:
    """Packs the checkout, copies it and the Ray token to every host, installs rltpu."""
    token = cfg.resolved_token_file
    path = _quote(token)  # inside a bash line; a leading ~/ still expands
    steps = [
        Step("pack the committed checkout (HEAD) to copy to every host",
             ("git", "-C", cfg.source, "archive", "--format=tar.gz", "--prefix=rltpu/",
              f"--output={cfg.tarball}", "HEAD")),
        Step(f"make this cluster's Ray auth token at {token} (mode 600) unless it exists",
             ("bash", "-c", f"umask 077; mkdir -p \"$(dirname {path})\"; test -s {path} || "
                            f"python3 -c 'import secrets; print(secrets.token_hex(32))' > {path}")),
        Step("copy the checkout to every TPU host",
             _tpu(cfg, "scp", cfg.tarball, f"{cfg.name}:rltpu.tar.gz", "--worker=all")),
        Step(f"install rltpu and jax[tpu] on every TPU host (Python {cfg.python_version}, "
             "~/rltpu-venv)",
             _ssh(cfg, "all", _install_remote(cfg, "tpu"))),
        Step("copy the Ray auth token to every TPU host",
             _tpu(cfg, "scp", token, f"{cfg.name}:.ray/auth_token", "--worker=all")),
    ]
    for host in cfg.cpu_hosts:
        scope = _scope(cfg)
        steps += [
            Step(f"copy the checkout to CPU host {host}",
                 ("gcloud", "compute", "scp", cfg.tarball, f"{host}:rltpu.tar.gz", *scope)),
            Step(f"install rltpu (CPU JAX) on {host}",
                 _cpu_ssh(cfg, host, _install_remote(cfg, "cpu"))),
            Step(f"copy the Ray auth token to {host}",
                 ("gcloud", "compute", "scp", token, f"{host}:.ray/auth_token", *scope)),
        ]
    return steps


def _ray_start(cfg: LaunchConfig, *flags: str) -> str:
    # NOTE: RAY_AUTH_MODE must be the same on every node and on every driver.
    return ("chmod 600 ~/.ray/auth_token; "
            f"RAY_AUTH_MODE=token {_venv_bin('ray')} stop --force >/dev/null 2>&1 || true; "
            f"RAY_AUTH_MODE=token {_venv_bin('ray')} start " + " ".join(flags))


def ray_steps(cfg: LaunchConfig) -> list[Step]:
    """Head on worker 0, the other TPU hosts and the CPU hosts join it."""
    s = cfg.slice
    head_flags = ["--head", f"--port={cfg.ray_port}", "--dashboard-host=127.0.0.1"]
    if not cfg.dashboard:
        head_flags.append("--include-dashboard=false")
    join = f"--address={HEAD_IP}:{cfg.ray_port}"
    steps = [Step("start the Ray head on worker 0 (token auth, dashboard on 127.0.0.1 only)",
                  _ssh(cfg, "0", _ray_start(cfg, *head_flags)))]
    if s.hosts > 1 or cfg.cpu_hosts:
        steps.append(Step("look up worker 0's internal address (the Ray head)",
                          _tpu(cfg, "describe", cfg.name,
                               "--format=value(networkEndpoints[0].ipAddress)"),
                          capture=HEAD_IP_VAR))
    if s.hosts > 1:
        others = ",".join(str(w) for w in range(1, s.hosts))
        steps.append(Step(f"join TPU workers {others} to the head",
                          _ssh(cfg, others, _ray_start(cfg, join))))
    for host in cfg.cpu_hosts:
        steps.append(Step(f"join CPU host {host} to the head (rollout actors only)",
                          _cpu_ssh(cfg, host, _ray_start(cfg, join))))
    return steps


def train_steps(cfg: LaunchConfig, train_args: tuple[str, ...]) -> list[Step]:
    """Starts ``rltpu train`` against the cluster, detached from the SSH session (a dropped
    connection must not end a pod run); its output goes to ~/rltpu-train.log.

    On a slice of several hosts it starts one learner process on every host, with the same
    flags and ``--distributed auto``: they join with ``jax.distributed`` (the TPU runtime
    tells them where the others are) and learn over every chip of the slice; worker 0's
    process writes the run directory. With ``learners_by_ray`` it starts one driver on worker
    0 instead, and Ray places the learner processes (``--learner-hosts``)."""
    hosts = cfg.slice.hosts
    by_ray = hosts > 1 and cfg.learners_by_ray
    if hosts > 1:
        train_args = (*train_args, *(("--learner-hosts", str(hosts)) if by_ray
                                     else ("--distributed", "auto")))
    args = " ".join(shlex.quote(a) for a in train_args)
    command = f"{_venv_bin('rltpu')} train{' ' + args if args else ''}"
    remote = (f"cd ~/rltpu && RAY_AUTH_MODE=token RAY_ADDRESS=auto nohup setsid {command} "
              f"> {TRAIN_LOG} 2>&1 < /dev/null &")
    if by_ray:
        return [Step(f"start training on worker 0; Ray starts a learner process on each of the "
                     f"{hosts} TPU hosts (output, all of theirs: {TRAIN_LOG} on worker 0)",
                     _ssh(cfg, "0", remote))]
    if hosts > 1:
        return [Step(f"start a learner process on each of the {hosts} TPU workers (output: "
                     f"{TRAIN_LOG} on each; worker 0's is the run's, see the logs command)",
                     _ssh(cfg, "all", remote))]
    return [Step(f"start training on worker 0 (output: {TRAIN_LOG} there; see the logs command)",
                 _ssh(cfg, "0", remote))]


def logs_steps(cfg: LaunchConfig) -> list[Step]:
    return [Step("follow the training output on worker 0",
                 _ssh(cfg, "0", f"tail -n 200 -f {TRAIN_LOG}"))]


def fetch_steps(cfg: LaunchConfig) -> list[Step]:
    """Copies worker 0's run directories (summary, metrics, TensorBoard files) here."""
    return [Step("copy worker 0's runs/ (summary.json, metrics.jsonl, events) to ./runs-NAME",
                 _tpu(cfg, "scp", "--recurse", f"{cfg.name}:rltpu/runs", f"runs-{cfg.name}",
                      "--worker=0"))]


def tunnel_steps(cfg: LaunchConfig) -> list[Step]:
    """Ray's dashboard and TensorBoard on this machine's localhost, through SSH only."""
    forwards = [a for p in (DASHBOARD_PORT, TENSORBOARD_PORT) for a in ("-L", f"{p}:localhost:{p}")]
    return [Step(f"tunnel localhost:{DASHBOARD_PORT} (Ray dashboard; it asks for the token in "
                 f"{cfg.resolved_token_file}) and localhost:{TENSORBOARD_PORT} (TensorBoard, "
                 "once started on worker 0)",
                 (*_tpu(cfg, "ssh", cfg.name, "--worker=0"), "--", "-N", *forwards))]


def down_steps(cfg: LaunchConfig) -> list[Step]:
    """Stops Ray on the CPU hosts (they are not ours to delete) and deletes the slice."""
    steps = [Step(f"stop Ray on CPU host {host}",
                  _cpu_ssh(cfg, host, f"{_venv_bin('ray')} stop --force"))
             for host in cfg.cpu_hosts]
    if cfg.queued:
        steps.append(Step("delete the queued resource and its TPU (billing stops)",
                          ("gcloud", "compute", "tpus", "queued-resources", "delete", cfg.name,
                           *_scope(cfg), "--force", "--quiet")))
    else:
        steps.append(Step("delete the TPU (billing stops)",
                          _tpu(cfg, "delete", cfg.name, "--quiet")))
    return steps


def plan(command: str, cfg: LaunchConfig, train_args: tuple[str, ...] = ()) -> list[Step]:
    """The steps of one launcher command, in order."""
    if command == "up":
        return (create_steps(cfg) + install_steps(cfg) + ray_steps(cfg)
                + train_steps(cfg, train_args))
    builders = {"create": create_steps, "install": install_steps, "ray": ray_steps,
                "logs": logs_steps, "fetch": fetch_steps, "tunnel": tunnel_steps,
                "down": down_steps,
                "status": lambda c: [describe_step(c)]}
    if command == "train":
        return train_steps(cfg, train_args)
    return builders[command](cfg)


# --- rendering and running ---------------------------------------------------------------

def _quote(arg: str) -> str:
    """Shell-quotes ``arg`` so bash reads it back unchanged, except that a leading ``~/``
    (a local path) and ``${HEAD_IP}`` (known once worker 0's address is) still expand."""
    if arg.startswith("~/"):
        return "~/" + shlex.quote(arg[2:])
    if HEAD_IP not in arg:
        if "'" in arg and not re.search(r'[\\"`$!]', arg):
            return f'"{arg}"'  # reads better than shlex's '"'"' for a quote inside
        return shlex.quote(arg)
    parts = (re.sub(r'([\\"`$])', r"\\\1", part) for part in arg.split(HEAD_IP))
    return '"' + HEAD_IP.join(parts) + '"'


def render_argv(argv: typing.Sequence[str]) -> str:
    return " ".join(_quote(a) for a in argv)


def render(steps: list[Step]) -> str:
    """The steps as a bash script: what ``--dry-run`` prints and a real run executes."""
    lines = ["#!/usr/bin/env bash", "set -euo pipefail"]
    for step in steps:
        lines.append(f"# {step.what}")
        command = render_argv(step.argv)
        if step.capture:
            lines.append(f"{step.capture}=$({command})")
        elif step.until:
            lines.append(f'until [ "$({command})" = {step.until} ]; do sleep 30; done')
        elif step.unless:
            lines.append(f"{render_argv(step.unless)} >/dev/null 2>&1 || {command}")
        else:
            lines.append(command)
    return "\n".join(lines) + "\n"


def _expand(argv: typing.Sequence[str], values: dict[str, str]) -> list[str]:
    """Fills in captured values and expands a leading ``~/`` (local paths), as bash would."""
    out = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace("${" + name + "}", value)
        out.append(os.path.expanduser(arg) if arg.startswith("~/") else arg)
    return out


def execute(steps: list[Step], poll_s: float = 30.0, echo=print) -> int:
    """Runs the steps in order, as the rendered script would; returns an exit status."""
    values: dict[str, str] = {}
    for step in steps:
        argv = _expand(step.argv, values)
        echo(f"# {step.what}")
        if step.unless is not None:
            if subprocess.run(_expand(step.unless, values), capture_output=True).returncode == 0:
                echo("#   exists: reusing it")
                continue
        if step.capture or step.until:
            while True:
                result = subprocess.run(argv, capture_output=True, text=True)
                if result.returncode != 0:
                    echo(result.stderr.rstrip())
                    return result.returncode
                out = result.stdout.strip()
                if step.capture:
                    values[step.capture] = out
                    echo(f"#   {step.capture}={out}")
                    break
                if out == step.until:
                    break
                echo(f"#   state {out or '(none yet)'}; waiting")
                time.sleep(poll_s)
            continue
        code = subprocess.run(argv).returncode
        if code != 0:
            echo(f"{PROG}: step failed with exit status {code}: {step.what}")
            return code
    return 0


# --- command line ------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string right after each field) of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    return {node.target.id: nxt.value.value.strip() for node, nxt in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    docs = _field_docs(LaunchConfig)
    hints = typing.get_type_hints(LaunchConfig)
    for field in dataclasses.fields(LaunchConfig):
        flag, kind = "--" + field.name.replace("_", "-"), hints[field.name]
        kwargs = {"dest": field.name, "default": argparse.SUPPRESS,
                  "help": f"{docs[field.name]} (default: {field.default!r})"}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind is int:
            parser.add_argument(flag, type=int, metavar="INT", **kwargs)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(flag, nargs="+", metavar="VM", **kwargs)
        else:
            parser.add_argument(flag, metavar="TEXT", **kwargs)


COMMANDS = {
    "up": "create or reuse the slice, install rltpu, start Ray, start training",
    "create": "create the slice (or reuse one of that name)",
    "install": "copy this checkout and the Ray token to every host and install rltpu",
    "ray": "start the Ray cluster (head on worker 0)",
    "train": "start rltpu train on worker 0 (flags after --)",
    "logs": "follow the training output",
    "fetch": "copy worker 0's run directories to ./runs-NAME",
    "tunnel": "forward the dashboard and TensorBoard to localhost over SSH",
    "status": "show the TPU's state",
    "down": "delete the slice (and stop Ray on the CPU hosts)",
}


def parse(argv: list[str]) -> tuple[str, LaunchConfig, tuple[str, ...], bool]:
    """Splits ``COMMAND [flags] [-- rltpu train flags]``.

    Raises:
      ValueError: for a bad setting; SystemExit(2) for bad flags.
    """
    train_args: tuple[str, ...] = ()
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], tuple(argv[cut + 1:])
    parser = _Parser(prog=f"python -m {PROG}", description="Cloud TPU launcher for rltpu.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        _add_config_flags(command)
        command.add_argument("--dry-run", action="store_true",
                             help="print the commands as a bash script; run nothing")
    args = vars(parser.parse_args(argv))
    command, dry_run = args.pop("command"), args.pop("dry_run")
    if "cpu_hosts" in args:
        args["cpu_hosts"] = tuple(args["cpu_hosts"])
    return command, LaunchConfig(**args), train_args, dry_run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, cfg, train_args, dry_run = parse(argv)
        if train_args and command not in ("up", "train"):
            raise ValueError(f"flags after -- go to rltpu train; {command!r} takes none")
    except ValueError as e:
        return _fail(str(e))
    steps = plan(command, cfg, train_args)
    if dry_run:
        sys.stdout.write(render(steps))
        return 0
    if shutil.which("gcloud") is None:
        return _fail("gcloud not found on PATH; install the Google Cloud CLI "
                     "(or add --dry-run to see the commands)")
    return execute(steps)


if __name__ == "__main__":
    sys.exit(main())
