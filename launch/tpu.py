"""Cloud TPU launcher: a TPU VM or pod slice, rltpu on every host, a Ray cluster, training.

    python -m launch.tpu up --name rl --accelerator-type v5litepod-16 --spot -- --env CartPole-v1
    python -m launch.tpu up ... --bucket gs://my-bucket/runs --auto-resume   # survives preemption
    python -m launch.tpu up ... --dry-run      # prints the commands as a bash script, runs none
    python -m launch.tpu tunnel --name rl ...  # dashboard and TensorBoard on localhost
    python -m launch.tpu fetch --name rl ...   # worker 0's ~/rltpu-runs to ./runs-rl
    python -m launch.tpu down --name rl ...    # refuses while runs live only on the slice

Runs never live in the code checkout (``~/rltpu`` on each host, replaced by every ``install``):
they go to the bucket (``--bucket``, or a ``gs://`` run directory after ``--``), or else to
``~/rltpu-runs`` beside the checkout, where ``rltpu train`` runs.

Every gcloud and ray command comes from a pure function of a ``LaunchConfig`` (``plan``),
so ``--dry-run`` prints exactly what a real run executes, and the tests compare them.

Security: Ray's token authentication is on everywhere (``RAY_AUTH_MODE=token``; one token
per cluster, written here with mode 600 in a folder of mode 700 and copied to every host's
``~/.ray/auth_token``, 600 in 700 there too);
the dashboard listens on 127.0.0.1 only and is reached through an SSH tunnel. Anyone who
can reach a Ray cluster's ports and holds its token can run any code on every host.

This module uses the standard library only: it runs where gcloud runs, without JAX.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import typing

USAGE_ERROR = 2
PROG = "launch.tpu"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD_IP_VAR = "HEAD_IP"
HEAD_IP = "${HEAD_IP}"  # stands for worker 0's internal address until it is known
TARBALL_DIR_VAR, TARBALL_VAR = "TARBALL_DIR", "TARBALL"
TARBALL_DIR = "${TARBALL_DIR}"  # a private (mode 700) folder made when the plan runs
TARBALL = "${TARBALL}"  # the code tarball in it (tempfile.mkstemp: mode 600)
PLACEHOLDERS = (HEAD_IP, TARBALL_DIR, TARBALL)
TRAIN_LOG = "~/rltpu-train.log"
CODE_DIR = "~/rltpu"  # the checkout on each host: install replaces it, so no run lives there
RUNS_DIR = "~/rltpu-runs"  # beside it: rltpu train runs here, local run directories land here
# Matches the command line of a running `rltpu train` (the venv's console script) but not
# the shell that runs pgrep with this pattern in its own command line ("[r]" matches "r").
TRAIN_PATTERN = "'[r]ltpu-venv/bin/rltpu train'"
TRAINING_ALIVE = "RLTPU_TRAINING_ALIVE"
UNFETCHED = "RLTPU_UNFETCHED_RUNS"
# Slice states (gcloud's value(state)): healthy, on the way, and lost (recreate it).
READY_STATES = ("READY",)
# A queued resource in these states will not become ACTIVE (FAILED: e.g. no capacity within
# --valid-until-duration; SUSPENDED: its spot TPU was preempted): waiting on is pointless.
QUEUED_FAILED = ("FAILED", "SUSPENDED")
LOST_STATES = ("PREEMPTED", "TERMINATED", "STOPPED", "STOPPING", "DELETING")
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
# gs://BUCKET[/PREFIX]: Cloud Storage bucket names are 3 to 222 lower-case letters, digits,
# '-', '_' and '.', starting and ending with a letter or digit.
BUCKET_RE = r"gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/[^\s/][^\s]*)?/?"


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
    bucket: str | None = None
    """gs://BUCKET[/PREFIX]: the run's directory is BUCKET/PREFIX/RUN_NAME (config, metrics,
    checkpoints, summary), so it outlives the slice. Default: ~/rltpu-runs on worker 0."""
    run_name: str | None = None
    """The run's folder in the bucket (default: NAME-YYYYMMDD-HHMMSS, UTC, when up or train
    starts); watch needs it, or the run directory after --."""
    auto_resume: bool = False
    """With up (or watch): poll the slice and the bucket; when the slice is preempted or
    gone, recreate it, reinstall and resume the run; stop when its summary.json exists."""
    poll_seconds: float = 30.0
    """Seconds between polls of a queued resource and, with --auto-resume, of the slice."""
    stop_grace_seconds: int = 120
    """Before Ray restarts (or stop): how long a running rltpu train gets after SIGTERM to
    finish its update and write its final checkpoint."""
    force: bool = False
    """down: delete the slice even if runs on its disks were never fetched."""
    internal_ips: bool = False
    """TPU VMs without external IP addresses; SSH and copies go through IAP
    (gcloud alpha ... --tunnel-through-iap; needs a firewall rule for 35.235.240.0/20)."""
    service_account: str | None = None
    """Service account the TPU VMs run as (default: the project's Compute Engine default
    account); give one with only the roles the run needs."""
    scopes: str | None = None
    """Comma-separated OAuth scopes for that account (gcloud --scopes), e.g.
    https://www.googleapis.com/auth/devstorage.read_write."""

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
        if self.bucket is not None and not re.fullmatch(BUCKET_RE, self.bucket):
            raise ValueError(f"--bucket {self.bucket!r} is not a Cloud Storage location; "
                             "give gs://BUCKET or gs://BUCKET/PREFIX (lower-case bucket name)")
        if self.run_name is not None and not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,127}",
                                                          self.run_name):
            raise ValueError(f"--run-name {self.run_name!r}: use letters, digits, '-', '_' "
                             "and '.' (one folder name, no '/')")
        if not (math.isfinite(self.poll_seconds) and self.poll_seconds > 0):
            raise ValueError(f"--poll-seconds must be a positive number, got "
                             f"{self.poll_seconds}")
        if not 0 <= self.stop_grace_seconds <= 3600:
            raise ValueError(f"--stop-grace-seconds must be 0 to 3600, got "
                             f"{self.stop_grace_seconds}")
        if self.service_account is not None and not re.fullmatch(
                r"[a-z0-9][-a-z0-9]{4,62}@[a-z0-9][-a-z0-9.]*\.gserviceaccount\.com",
                self.service_account):
            raise ValueError(f"--service-account {self.service_account!r} is not a service "
                             "account email (NAME@PROJECT.iam.gserviceaccount.com)")
        if self.scopes is not None:
            for scope in self.scopes.split(","):
                if not re.fullmatch(r"https://www\.googleapis\.com/auth/[a-z0-9._-]+"
                                    r"|[a-z][-a-z0-9.]*", scope):
                    raise ValueError(f"--scopes: {scope!r} is not an OAuth scope (a URL like "
                                     "https://www.googleapis.com/auth/devstorage.read_write, "
                                     "or an alias like storage-rw), comma-separated")
        if self.token_file is not None:
            folder = os.path.dirname(os.path.abspath(os.path.expanduser(self.token_file)))
            if folder in ("/", "/tmp", "/var/tmp", os.path.expanduser("~")):
                raise ValueError(f"--token-file {self.token_file!r}: give it a folder of its "
                                 "own (the launcher makes that folder mode 700)")

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
    def default_run_dir(self) -> str | None:
        """The bucket's run directory (None without a bucket: rltpu picks one locally)."""
        if self.bucket is None or self.run_name is None:
            return None
        return f"{self.bucket.rstrip('/')}/{self.run_name}"


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
    """Re-run the command every poll until it prints this (e.g. ACTIVE)."""
    until_fails: tuple[str, ...] = ()
    """Outputs that end such a wait as a failed step (e.g. FAILED: it never will be ACTIVE)."""
    unless: tuple[str, ...] | None = None
    """Skip the step when this command succeeds (e.g. the TPU exists already: reuse it)."""
    when: tuple[str, ...] | None = None
    """Run the step only when this command succeeds (e.g. delete what still exists)."""
    refuse_if: tuple[str, str] | None = None
    """(marker, message): when the command's output holds the marker, stop the plan with
    the message as one error line and exit status 2 (e.g. training is alive)."""
    choose_if: tuple[str, ...] | None = None
    """When this command succeeds, run ``alternative`` instead of ``argv``."""
    alternative: tuple[str, ...] | None = None
    """The command run when ``choose_if`` succeeds (e.g. resume a run that exists)."""


def _scope(cfg: LaunchConfig) -> list[str]:
    return [f"--zone={cfg.resolved_zone}"] + ([f"--project={cfg.project}"] if cfg.project else [])


def _tpu(cfg: LaunchConfig, *args: str) -> tuple[str, ...]:
    # NOTE: only gcloud's alpha tpu-vm ssh/scp take --tunnel-through-iap (GA has --internal-ip
    # alone, which works only from inside the VPC).
    if cfg.internal_ips and args[0] in ("ssh", "scp"):
        return ("gcloud", "alpha", "compute", "tpus", "tpu-vm", *args, "--tunnel-through-iap",
                *_scope(cfg))
    return ("gcloud", "compute", "tpus", "tpu-vm", *args, *_scope(cfg))


def _ssh(cfg: LaunchConfig, workers: str, remote: str) -> tuple[str, ...]:
    """Runs ``remote`` (a bash command line) on the slice's hosts, e.g. workers "all", "0"."""
    return _tpu(cfg, "ssh", cfg.name, f"--worker={workers}", f"--command={remote}")


def _iap(cfg: LaunchConfig) -> list[str]:
    return ["--tunnel-through-iap"] if cfg.internal_ips else []


def _cpu_ssh(cfg: LaunchConfig, host: str, remote: str) -> tuple[str, ...]:
    return ("gcloud", "compute", "ssh", host, *_iap(cfg), *_scope(cfg), f"--command={remote}")


def _cpu_scp(cfg: LaunchConfig, source: str, dest: str) -> tuple[str, ...]:
    return ("gcloud", "compute", "scp", source, dest, *_iap(cfg), *_scope(cfg))


def _venv_bin(tool: str) -> str:
    return f"~/rltpu-venv/bin/{tool}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _shape(s: Slice, kind: str) -> str:
    return f"{s.accelerator_type} ({_count(s.chips, 'chip')}, {_count(s.hosts, 'host')}, {kind})"


def describe_step(cfg: LaunchConfig) -> Step:
    return Step("show the TPU's state", _tpu(cfg, "describe", cfg.name, "--format=value(state)"))


def _queued(cfg: LaunchConfig, *args: str) -> tuple[str, ...]:
    return ("gcloud", "compute", "tpus", "queued-resources", *args)


def _vm_flags(cfg: LaunchConfig) -> list[str]:
    """Network and identity of the TPU VMs (create and queued-resources create alike)."""
    return ((["--internal-ips"] if cfg.internal_ips else [])
            + ([f"--service-account={cfg.service_account}"] if cfg.service_account else [])
            + ([f"--scopes={cfg.scopes}"] if cfg.scopes else []))


def create_steps(cfg: LaunchConfig) -> list[Step]:
    """Creates the slice, or reuses it when one of that name exists."""
    s = cfg.slice
    exists = describe_step(cfg).argv
    spot = ["--spot"] if cfg.spot else []
    kind = "spot" if cfg.spot else "on-demand"
    if not cfg.queued:
        return [Step(f"create {_shape(s, kind)} unless it exists",
                     _tpu(cfg, "create", cfg.name, f"--accelerator-type={s.accelerator_type}",
                          f"--version={cfg.resolved_runtime_version}", *spot, *_vm_flags(cfg)),
                     unless=exists)]
    valid = ([f"--valid-until-duration={cfg.valid_until_duration}"]
             if cfg.valid_until_duration else [])
    return [
        Step(f"queue a request for {_shape(s, kind)} unless the TPU exists",
             _queued(cfg, "create", cfg.name, f"--node-id={cfg.name}",
                     f"--accelerator-type={s.accelerator_type}",
                     f"--runtime-version={cfg.resolved_runtime_version}", *spot,
                     *_vm_flags(cfg), *valid, *_scope(cfg)),
             unless=exists),
        Step("wait until the queued resource is ACTIVE (capacity granted, VMs up)",
             _queued(cfg, "describe", cfg.name, *_scope(cfg), "--format=value(state.state)"),
             until="ACTIVE", until_fails=QUEUED_FAILED),
    ]


def _stop_training(cfg: LaunchConfig) -> str:
    """A bash line: SIGTERM to a running rltpu train, then up to the grace for it to write
    its final checkpoint and exit (it finishes the update it is on first)."""
    grace = cfg.stop_grace_seconds
    return (f"if pkill -TERM -f {TRAIN_PATTERN}; then "
            f"for i in $(seq {grace}); do pgrep -f {TRAIN_PATTERN} >/dev/null || break; "
            "sleep 1; done; "
            f"if pgrep -f {TRAIN_PATTERN} >/dev/null; then echo \"rltpu train still running "
            f"{grace} s after SIGTERM on $(hostname)\" >&2; fi; fi")


def _install_remote(cfg: LaunchConfig, jax_extra: str) -> str:
    """A bash line that replaces the checkout in ~/rltpu and installs it into ~/rltpu-venv.

    Runs live beside the checkout (~/rltpu-runs), never in it; runs an older launcher left in
    ~/rltpu/runs are moved there first, so replacing the checkout deletes code only."""
    uv = "~/.local/bin/uv"
    package = "'jax[tpu]' " if jax_extra == "tpu" else ""
    return ("set -e; mkdir -p ~/.ray ~/rltpu-runs; chmod 700 ~/.ray; "
            "if [ -d ~/rltpu/runs ]; then "
            "mv ~/rltpu/runs ~/rltpu-runs/runs-from-checkout-$(date +%Y%m%d-%H%M%S); fi; "
            "rm -rf ~/rltpu; tar -xzf ~/rltpu.tar.gz -C ~; rm -f ~/rltpu.tar.gz; "
            "python3 -m pip install --user --quiet --upgrade uv; "
            f"{uv} venv --quiet --allow-existing --python {cfg.python_version} ~/rltpu-venv; "
            f"{uv} pip install --quiet --python ~/rltpu-venv/bin/python "
            f"-c ~/rltpu/constraints.txt {package}-e ~/rltpu")


TOKEN_MODES_REMOTE = "chmod 700 ~/.ray && chmod 600 ~/.ray/auth_token"


def token_step(cfg: LaunchConfig) -> Step:
    """Makes the cluster's token here: mode 600, in a folder of mode 700 (both enforced
    also when they exist already), unless the file holds a token already."""
    token = cfg.resolved_token_file
    path = _quote(token)  # inside a bash line; a leading ~/ still expands
    folder = f"\"$(dirname {path})\""
    return Step(f"make this cluster's Ray auth token at {token} (mode 600, folder 700) unless "
                "it exists",
                ("bash", "-c", f"umask 077; mkdir -p {folder}; chmod 700 {folder}; "
                               f"test -s {path} || python3 -c "
                               f"'import secrets; print(secrets.token_hex(32))' > {path}; "
                               f"chmod 600 {path}"))


def _training_alive_check(cfg: LaunchConfig) -> tuple[str, ...]:
    """Prints TRAINING_ALIVE and the host's name on every host where rltpu train runs."""
    return _ssh(cfg, "all", f"if pgrep -f {TRAIN_PATTERN} >/dev/null; then "
                            f"echo {TRAINING_ALIVE} $(hostname); fi")


def install_steps(cfg: LaunchConfig) -> list[Step]:
    """Refuses while rltpu trains on the slice; packs the checkout into a private temporary
    file, copies it to every host and removes it; installs rltpu; copies the Ray token."""
    token = cfg.resolved_token_file
    steps = [
        Step("check that rltpu train is not running on the slice (install would change its "
             "code under it)",
             _training_alive_check(cfg),
             refuse_if=(TRAINING_ALIVE, "rltpu train is running on the slice; install would "
                        "replace its code: stop it first (python -m launch.tpu stop "
                        f"--name {cfg.name} ...; it writes a final checkpoint), then install")),
        Step("pack the committed checkout (HEAD) into a private temporary file",
             ("git", "-C", cfg.source, "archive", "--format=tar.gz", "--prefix=rltpu/",
              f"--output={TARBALL}", "HEAD")),
        Step("copy the checkout to every TPU host",
             _tpu(cfg, "scp", TARBALL, f"{cfg.name}:rltpu.tar.gz", "--worker=all")),
    ]
    steps += [Step(f"copy the checkout to CPU host {host}",
                   _cpu_scp(cfg, TARBALL, f"{host}:rltpu.tar.gz")) for host in cfg.cpu_hosts]
    steps += [
        Step("remove the local tarball (copied)", ("rm", "-rf", TARBALL_DIR)),
        Step(f"install rltpu and jax[tpu] on every TPU host (Python {cfg.python_version}, "
             "~/rltpu-venv; runs in ~/rltpu-runs, beside the code)",
             _ssh(cfg, "all", _install_remote(cfg, "tpu"))),
        token_step(cfg),
        Step("copy the Ray auth token to every TPU host (into ~/.ray, mode 700)",
             _tpu(cfg, "scp", token, f"{cfg.name}:.ray/auth_token", "--worker=all")),
        Step("make the token readable by its owner alone (600, in 700) on every TPU host",
             _ssh(cfg, "all", TOKEN_MODES_REMOTE)),
    ]
    for host in cfg.cpu_hosts:
        steps += [
            Step(f"install rltpu (CPU JAX) on {host}",
                 _cpu_ssh(cfg, host, _install_remote(cfg, "cpu"))),
            Step(f"copy the Ray auth token to {host}",
                 _cpu_scp(cfg, token, f"{host}:.ray/auth_token")),
            Step(f"make the token readable by its owner alone (600, in 700) on {host}",
                 _cpu_ssh(cfg, host, TOKEN_MODES_REMOTE)),
        ]
    return steps


def _ray_start(cfg: LaunchConfig, *flags: str) -> str:
    # NOTE: RAY_AUTH_MODE must be the same on every node and on every driver. `ray stop
    # --force` kills rltpu train's Ray processes: stop the run first, as a preemption would.
    return ("chmod 600 ~/.ray/auth_token; " + _stop_training(cfg) + "; "
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


def _flag_value(args: tuple[str, ...], flag: str) -> str | None:
    """The value of ``--flag V`` or ``--flag=V`` in rltpu train's arguments (the last one)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


@dataclasses.dataclass(frozen=True)
class RunTarget:
    """Where the run lives and how to start it: fresh, or resumed from its directory."""

    run_dir: str | None
    """The run directory (gs://... or a path relative to ~/rltpu-runs), or None: rltpu's
    default folder under ~/rltpu-runs/runs."""
    fresh_args: tuple[str, ...]
    """rltpu train's arguments for a new run (the bucket's run dir added when defaulted)."""

    @property
    def in_bucket(self) -> bool:
        return self.run_dir is not None and self.run_dir.startswith("gs://")

    @property
    def resume_args(self) -> tuple[str, ...]:
        # NOTE: the run's saved config.json has every other setting; flags given again
        # would only risk a refusal (a --preset cannot be combined with --resume).
        return ("--resume", self.run_dir)


def run_target(cfg: LaunchConfig, train_args: tuple[str, ...]) -> RunTarget:
    """The run's directory from the flags after -- (``--run-dir``, ``--resume``) or else
    the bucket's default; refuses a run directory inside the code checkout.

    Raises:
      ValueError: naming the bad run directory.
    """
    resume = _flag_value(train_args, "--resume")
    given = resume if resume is not None else _flag_value(train_args, "--run-dir")
    if given is not None:
        # Where the path lands on a host: rltpu train runs in ~/rltpu-runs.
        where = posixpath.normpath(given if given.startswith(("/", "~/", "gs://"))
                                   else posixpath.join(RUNS_DIR, given))
        if re.match(r"(~|/root|/home/[^/]+)/rltpu(/|$)", where):
            raise ValueError(f"run directory {given!r} would be inside the code checkout "
                             "(~/rltpu, replaced by every install); give a gs:// path or a "
                             "path in ~/rltpu-runs (where relative paths go)")
        return RunTarget(given, train_args)
    if cfg.default_run_dir is not None:
        return RunTarget(cfg.default_run_dir, (*train_args, "--run-dir", cfg.default_run_dir))
    return RunTarget(None, train_args)


def _training_hosts(cfg: LaunchConfig) -> int:
    """How many hosts the train step starts rltpu train on: worker 0 alone (one host, or Ray
    places the learners) or every host of the slice."""
    return 1 if cfg.slice.hosts == 1 or cfg.learners_by_ray else cfg.slice.hosts


def _train_command(cfg: LaunchConfig, train_args: tuple[str, ...]) -> tuple[str, str]:
    """(workers, bash line) that start rltpu train detached in ~/rltpu-runs."""
    hosts = cfg.slice.hosts
    by_ray = hosts > 1 and cfg.learners_by_ray
    if hosts > 1:
        train_args = (*train_args, *(("--learner-hosts", str(hosts)) if by_ray
                                     else ("--distributed", "auto")))
    # A leading ~/ stays unquoted so that the host's shell expands it (its home, not ours).
    args = " ".join("~/" + shlex.quote(a[2:]) if a.startswith("~/") else shlex.quote(a)
                    for a in train_args)
    command = f"{_venv_bin('rltpu')} train{' ' + args if args else ''}"
    remote = (f"mkdir -p {RUNS_DIR} && cd {RUNS_DIR} && RAY_AUTH_MODE=token RAY_ADDRESS=auto "
              f"nohup setsid {command} >> {TRAIN_LOG} 2>&1 < /dev/null &")
    return ("0" if _training_hosts(cfg) == 1 else "all"), remote


def _storage_ls(path: str) -> tuple[str, ...]:
    return ("gcloud", "storage", "ls", path)


def train_steps(cfg: LaunchConfig, train_args: tuple[str, ...]) -> list[Step]:
    """Starts ``rltpu train`` against the cluster, detached from the SSH session (a dropped
    connection must not end a pod run), in ~/rltpu-runs; output appends to ~/rltpu-train.log.

    On a slice of several hosts it starts one learner process on every host, with the same
    flags and ``--distributed auto``: they join with ``jax.distributed`` (each host's
    metadata tells it its id and where worker 0, the coordinator, is) and learn over every
    chip of the slice; worker 0's process writes the run directory. With ``learners_by_ray`` it starts one driver on worker
    0 instead, and Ray places the learner processes (``--learner-hosts``). A run in a bucket
    whose config.json exists already is resumed (``--resume RUN_DIR``) instead of started."""
    hosts = cfg.slice.hosts
    target = run_target(cfg, train_args)
    workers, remote = _train_command(cfg, target.fresh_args)
    if cfg.learners_by_ray and hosts > 1:
        what = (f"start training on worker 0; Ray starts a learner process on each of the "
                f"{hosts} TPU hosts (output, all of theirs: {TRAIN_LOG} on worker 0)")
    elif hosts > 1:
        what = (f"start a learner process on each of the {hosts} TPU workers (output: "
                f"{TRAIN_LOG} on each; worker 0's is the run's, see the logs command)")
    else:
        what = f"start training on worker 0 (output: {TRAIN_LOG} there; see the logs command)"
    if not target.in_bucket or _flag_value(train_args, "--resume") is not None:
        return [Step(what, _ssh(cfg, workers, remote))]
    _, resume = _train_command(cfg, target.resume_args)
    return [Step(f"{what}; resume the run if {target.run_dir} holds it already",
                 _ssh(cfg, workers, remote),
                 choose_if=_storage_ls(f"{target.run_dir}/config.json"),
                 alternative=_ssh(cfg, workers, resume))]


def stop_steps(cfg: LaunchConfig) -> list[Step]:
    return [Step(f"stop rltpu train on every TPU host (SIGTERM: it finishes its update and "
                 f"writes a final checkpoint; up to {cfg.stop_grace_seconds} s)",
                 _ssh(cfg, "all", _stop_training(cfg)))]


def logs_steps(cfg: LaunchConfig) -> list[Step]:
    return [Step("follow the training output on worker 0",
                 _ssh(cfg, "0", f"tail -n 200 -f {TRAIN_LOG}"))]


FETCH_STARTED, FETCHED = "~/rltpu-runs/.fetch-started", "~/rltpu-runs/.fetched"


def fetch_steps(cfg: LaunchConfig) -> list[Step]:
    """Copies worker 0's ~/rltpu-runs (run directories: summary, metrics, TensorBoard files,
    checkpoints) to ./runs-NAME/rltpu-runs, and marks the time the copy started on worker 0
    so that down knows what was fetched."""
    local = f"runs-{cfg.name}"
    return [
        Step("mark on worker 0 when this copy started",
             _ssh(cfg, "0", f"mkdir -p {RUNS_DIR} && touch {FETCH_STARTED}")),
        Step(f"make ./{local}", ("mkdir", "-p", local)),
        Step(f"copy worker 0's ~/rltpu-runs (run directories) to ./{local}/rltpu-runs",
             _tpu(cfg, "scp", "--recurse", f"{cfg.name}:rltpu-runs", local, "--worker=0")),
        Step("record on worker 0 that runs older than the mark are fetched",
             _ssh(cfg, "0", f"mv {FETCH_STARTED} {FETCHED}")),
    ]


def tunnel_steps(cfg: LaunchConfig) -> list[Step]:
    """Ray's dashboard and TensorBoard on this machine's localhost, through SSH only."""
    forwards = [a for p in (DASHBOARD_PORT, TENSORBOARD_PORT) for a in ("-L", f"{p}:localhost:{p}")]
    return [Step(f"tunnel localhost:{DASHBOARD_PORT} (Ray dashboard; it asks for the token in "
                 f"{cfg.resolved_token_file}) and localhost:{TENSORBOARD_PORT} (TensorBoard, "
                 "once started on worker 0)",
                 (*_tpu(cfg, "ssh", cfg.name, "--worker=0"), "--", "-N", *forwards))]


# Files in the run folders (~/rltpu-runs, and ~/rltpu/runs of an older launcher) newer than
# the last fetch's start (all of them if none): runs that exist only on the slice's disks.
UNFETCHED_REMOTE = (
    "cd ~ && f=$(find rltpu-runs rltpu/runs -type f ! -name '.fetch*' "
    "$([ -e rltpu-runs/.fetched ] && echo -newer rltpu-runs/.fetched) 2>/dev/null | head -n 1); "
    f"if [ -n \"$f\" ]; then echo {UNFETCHED} \"$(hostname):~/$f\"; fi")


def delete_steps(cfg: LaunchConfig) -> list[Step]:
    if cfg.queued:
        return [Step("delete the queued resource and its TPU (billing stops)",
                     _queued(cfg, "delete", cfg.name, *_scope(cfg), "--force", "--quiet"))]
    return [Step("delete the TPU (billing stops)", _tpu(cfg, "delete", cfg.name, "--quiet"))]


def down_steps(cfg: LaunchConfig) -> list[Step]:
    """Refuses while runs live only on the slice's disks (unless fetched, or --force); stops
    Ray on the CPU hosts (they are not ours to delete) and deletes the slice."""
    steps = []
    if not cfg.force:
        steps.append(Step(
            "check that no run lives only on the slice's disks (fetched ones are fine; "
            "--force skips this)",
            _ssh(cfg, "all", UNFETCHED_REMOTE),
            refuse_if=(UNFETCHED, "runs on the slice's disks were never fetched and would be "
                       f"deleted with it: copy them with python -m {PROG} fetch --name "
                       f"{cfg.name} ..., or add --force (a preempted slice's disks are gone "
                       "already)")))
    steps += [Step(f"stop Ray on CPU host {host}",
                   _cpu_ssh(cfg, host, f"{_venv_bin('ray')} stop --force"))
              for host in cfg.cpu_hosts]
    return steps + delete_steps(cfg)


def recover_steps(cfg: LaunchConfig, target: RunTarget) -> list[Step]:
    """After a preemption: delete what is left of the slice, create it again (or queue for
    it again), reinstall, restart Ray and resume the run from its bucket."""
    if cfg.queued:
        exists = _queued(cfg, "describe", cfg.name, *_scope(cfg), "--format=value(state.state)")
    else:
        exists = describe_step(cfg).argv
    delete = [dataclasses.replace(step, what=f"{step.what}: it was preempted or lost",
                                  when=exists) for step in delete_steps(cfg)]
    return delete + resume_steps(cfg, target)


def resume_steps(cfg: LaunchConfig, target: RunTarget) -> list[Step]:
    """Creates the slice unless it exists, installs, restarts Ray and resumes the run from
    its bucket (``recover_steps`` without the delete: a recovery that failed part way, on a
    slice that is up)."""
    return create_steps(cfg) + install_steps(cfg) + ray_steps(cfg) + train_steps(
        cfg, target.fresh_args)


def plan(command: str, cfg: LaunchConfig, train_args: tuple[str, ...] = ()) -> list[Step]:
    """The steps of one launcher command, in order (watch's loop is ``watch``)."""
    if command == "up":
        return (create_steps(cfg) + install_steps(cfg) + ray_steps(cfg)
                + train_steps(cfg, train_args))
    builders = {"create": create_steps, "install": install_steps, "ray": ray_steps,
                "logs": logs_steps, "fetch": fetch_steps, "tunnel": tunnel_steps,
                "down": down_steps, "stop": stop_steps, "watch": lambda c: [],
                "status": lambda c: [describe_step(c)]}
    if command == "train":
        return train_steps(cfg, train_args)
    return builders[command](cfg)


# --- watching for preemption --------------------------------------------------------------

def slice_state(cfg: LaunchConfig) -> str | None:
    """The TPU's state (READY, PREEMPTED, ...); None when it does not exist; "" when gcloud
    failed otherwise (a network error is no reason to delete anything)."""
    result = subprocess.run(describe_step(cfg).argv, capture_output=True, text=True)
    if result.returncode == 0:
        return result.stdout.strip()
    return None if "NOT_FOUND" in result.stderr else ""


def hosts_training(cfg: LaunchConfig) -> int:
    """On how many hosts rltpu train runs (0 too when the check itself failed)."""
    result = subprocess.run(_training_alive_check(cfg), capture_output=True, text=True)
    return result.stdout.count(TRAINING_ALIVE) if result.returncode == 0 else 0


def watch(cfg: LaunchConfig, target: RunTarget, echo=print, sleep=time.sleep) -> int:
    """Polls until the run's summary.json is in the bucket; recreates and resumes the slice
    whenever it is preempted or gone. Returns an exit status.

    Each poll: ``gcloud storage ls RUN_DIR/summary.json`` (the run has ended: stop), then the
    slice's state: READY or on its way (CREATING, ...) waits; PREEMPTED, TERMINATED, STOPPED
    or gone runs ``recover_steps``. A failed recovery is tried again next poll: from the
    start while the slice is lost (no capacity yet), with ``resume_steps`` once it is READY
    (the slice came back but, say, the install or the train step failed: no training runs
    there, and waiting would wait for ever). On a READY slice where rltpu train runs on every
    host it was started on, the failed recovery did start it (its SSH session dropped after
    the start): that counts as recovered, and the launcher waits again. A start on some
    hosts only (a pod's learners wait for all of theirs to join) is stopped on every host
    before installing and resuming again, since install refuses while any host trains.
    """
    summary = f"{target.run_dir}/summary.json"
    recoveries, failed = 0, False
    while True:
        if subprocess.run(_storage_ls(summary), capture_output=True).returncode == 0:
            echo(f"# {summary} exists: the run has ended (recovered {_count(recoveries, 'time')})"
                 f"; delete the slice with: python -m {PROG} down --name {cfg.name} ...")
            return 0
        state = slice_state(cfg)
        lost = state is None or state in LOST_STATES
        if not lost and not (failed and state == "READY"):
            echo(f"# slice {cfg.name}: {state or 'state unknown (gcloud failed)'}; run not "
                 f"finished; next look in {cfg.poll_seconds:g} s")
            sleep(cfg.poll_seconds)
            continue
        if lost:
            echo(f"# slice {cfg.name} is {state or 'gone'}: recreating it and resuming "
                 f"{target.run_dir}")
            steps = recover_steps(cfg, target)
        elif (running := hosts_training(cfg)) >= _training_hosts(cfg):
            echo(f"# slice {cfg.name} is READY and rltpu train runs there: the last recovery "
                 f"started it; next look in {cfg.poll_seconds:g} s")
            failed, recoveries = False, recoveries + 1
            sleep(cfg.poll_seconds)
            continue
        elif running:
            echo(f"# slice {cfg.name} is READY but the last recovery started rltpu train on "
                 f"{running} of its {_training_hosts(cfg)} hosts only: stopping it, installing "
                 f"again and resuming {target.run_dir}")
            steps = stop_steps(cfg) + resume_steps(cfg, target)
        else:
            echo(f"# slice {cfg.name} is READY but the last recovery failed: installing again "
                 f"and resuming {target.run_dir}")
            steps = resume_steps(cfg, target)
        code = execute(steps, poll_s=cfg.poll_seconds, echo=echo)
        failed = code != 0
        if failed:
            echo(f"# recovery failed (exit status {code}); trying again in "
                 f"{cfg.poll_seconds:g} s")
        else:
            recoveries += 1
        sleep(cfg.poll_seconds)



# --- rendering and running ---------------------------------------------------------------

_PLACEHOLDER_RE = "(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")"


def _quote(arg: str) -> str:
    """Shell-quotes ``arg`` so bash reads it back unchanged, except that a leading ``~/``
    (a local path) and the placeholders (``${HEAD_IP}``, known once worker 0's address is;
    ``${TARBALL}``, made when the plan runs) still expand."""
    if arg.startswith("~/"):
        return "~/" + shlex.quote(arg[2:])
    if not any(p in arg for p in PLACEHOLDERS):
        if "'" in arg and not re.search(r'[\\"`$!]', arg):
            return f'"{arg}"'  # reads better than shlex's '"'"' for a quote inside
        return shlex.quote(arg)
    parts = re.split(_PLACEHOLDER_RE, arg)
    return '"' + "".join(part if part in PLACEHOLDERS else re.sub(r'([\\"`$])', r"\\\1", part)
                         for part in parts) + '"'


def render_argv(argv: typing.Sequence[str]) -> str:
    return " ".join(_quote(a) for a in argv)


def _uses_tarball(steps: list[Step]) -> bool:
    return any(TARBALL in arg for step in steps for arg in step.argv)


def render(steps: list[Step], poll_s: float = 30.0) -> str:
    """The steps as a bash script: what ``--dry-run`` prints and a real run executes."""
    lines = ["#!/usr/bin/env bash", "set -euo pipefail"]
    if _uses_tarball(steps):
        lines += ["# a private folder (mode 700) for the code tarball, removed on exit",
                  f"{TARBALL_DIR_VAR}=$(mktemp -d)",
                  f"trap 'rm -rf \"${TARBALL_DIR_VAR}\"' EXIT",
                  f'{TARBALL_VAR}=$(mktemp "${TARBALL_DIR_VAR}/rltpu-XXXXXX")']
    for step in steps:
        lines.append(f"# {step.what}")
        command = render_argv(step.argv)
        if step.capture:
            lines.append(f"{step.capture}=$({command})")
        elif step.until and step.until_fails:
            fails = "|".join(step.until_fails)
            lines.append(f'until state=$({command}); [ "$state" = {step.until} ]; do case '
                         f'"$state" in {fails}) echo "{PROG}: error: state $state" >&2; exit 1;; '
                         f"esac; sleep {poll_s:g}; done")
        elif step.until:
            lines.append(f'until [ "$({command})" = {step.until} ]; do sleep {poll_s:g}; done')
        elif step.unless:
            lines.append(f"{render_argv(step.unless)} >/dev/null 2>&1 || {command}")
        elif step.when:
            lines.append(f"if {render_argv(step.when)} >/dev/null 2>&1; then {command}; fi")
        elif step.refuse_if:
            marker, message = step.refuse_if
            error = _quote(f"{PROG}: error: {message}")
            lines += [f"out=$({command})",
                      f'if grep -q {marker} <<<"$out"; then echo {error} >&2; exit 2; fi']
        elif step.choose_if:
            lines.append(f"if {render_argv(step.choose_if)} >/dev/null 2>&1; then "
                         f"{render_argv(step.alternative)}; else {command}; fi")
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


def _succeeds(argv: typing.Sequence[str]) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


def execute(steps: list[Step], poll_s: float = 30.0, echo=print) -> int:
    """Runs the steps in order, as the rendered script would; returns an exit status."""
    values: dict[str, str] = {}
    if _uses_tarball(steps):
        # NOTE: mkdtemp makes the folder mode 700 and mkstemp the file mode 600, under
        # names nobody can guess or take first; the folder goes with the last copy (a
        # step) or, whatever happens, below.
        folder = tempfile.mkdtemp(prefix="rltpu-")
        handle, tarball = tempfile.mkstemp(prefix="rltpu-", suffix=".tar.gz", dir=folder)
        os.close(handle)
        values.update({TARBALL_DIR_VAR: folder, TARBALL_VAR: tarball})
    try:
        return _execute(steps, values, poll_s, echo)
    finally:
        if TARBALL_DIR_VAR in values:
            shutil.rmtree(values[TARBALL_DIR_VAR], ignore_errors=True)


def _execute(steps: list[Step], values: dict[str, str], poll_s: float, echo) -> int:
    for step in steps:
        argv = _expand(step.argv, values)
        echo(f"# {step.what}")
        if step.unless is not None and _succeeds(_expand(step.unless, values)):
            echo("#   exists: reusing it")
            continue
        if step.when is not None and not _succeeds(_expand(step.when, values)):
            echo("#   nothing there: skipped")
            continue
        if step.choose_if is not None and _succeeds(_expand(step.choose_if, values)):
            echo("#   it exists: resuming it")
            argv = _expand(step.alternative, values)
        if step.capture or step.until or step.refuse_if:
            while True:
                result = subprocess.run(argv, capture_output=True, text=True)
                if result.returncode != 0:
                    echo(result.stderr.rstrip())
                    echo(f"{PROG}: step failed with exit status {result.returncode}: "
                         f"{step.what}")
                    return result.returncode
                out = result.stdout.strip()
                if step.refuse_if:
                    marker, message = step.refuse_if
                    if marker in out:
                        print(f"{PROG}: error: {message}", file=sys.stderr)
                        return USAGE_ERROR
                    break
                if step.capture:
                    values[step.capture] = out
                    echo(f"#   {step.capture}={out}")
                    break
                if out == step.until:
                    break
                if out in step.until_fails:
                    echo(f"{PROG}: {step.what}: state {out}")
                    return 1
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
        elif kind is float:
            parser.add_argument(flag, type=float, metavar="SECONDS", **kwargs)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(flag, nargs="+", metavar="VM", **kwargs)
        else:
            parser.add_argument(flag, metavar="TEXT", **kwargs)


COMMANDS = {
    "up": "create or reuse the slice, install rltpu, start Ray, start training "
          "(--auto-resume: then watch)",
    "create": "create the slice (or reuse one of that name)",
    "install": "copy this checkout and the Ray token to every host and install rltpu "
               "(refused while rltpu trains there)",
    "ray": "start the Ray cluster (head on worker 0; a running rltpu train is stopped first)",
    "train": "start rltpu train on worker 0 (flags after --)",
    "watch": "recreate the slice and resume the run whenever it is preempted, until the "
             "run's summary.json is in the bucket",
    "stop": "stop rltpu train (SIGTERM; it writes a final checkpoint)",
    "logs": "follow the training output",
    "fetch": "copy worker 0's run directories (~/rltpu-runs) to ./runs-NAME",
    "tunnel": "forward the dashboard and TensorBoard to localhost over SSH",
    "status": "show the TPU's state",
    "down": "delete the slice (and stop Ray on the CPU hosts); refused while runs live only "
            "on its disks",
}
TRAIN_COMMANDS = ("up", "train", "watch")


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
    if command in ("up", "train") and args.get("bucket") and not args.get("run_name"):
        # Fixed once, here: every later step (and a resume) names the same folder.
        args["run_name"] = (f"{args.get('name', LaunchConfig.name)}-"
                            f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    return command, LaunchConfig(**args), train_args, dry_run


def check(command: str, cfg: LaunchConfig, train_args: tuple[str, ...]) -> RunTarget | None:
    """What the flags of one command must agree on, before anything runs.

    Raises:
      ValueError: one line naming the bad flag and what would be valid.
    """
    if train_args and command not in TRAIN_COMMANDS:
        raise ValueError(f"flags after -- go to rltpu train; {command!r} takes none")
    if cfg.auto_resume and command not in ("up", "watch"):
        raise ValueError(f"--auto-resume goes with up or watch, not {command!r}")
    if command not in TRAIN_COMMANDS:
        return None
    target = run_target(cfg, train_args)
    if (cfg.auto_resume or command == "watch") and not target.in_bucket:
        raise ValueError(f"{'watch' if command == 'watch' else '--auto-resume'} needs the run "
                         "in a bucket (a preempted slice's disks are gone): give --bucket "
                         "gs://BUCKET (and, for watch, --run-name), or --run-dir gs://... or "
                         "--resume gs://... after --")
    return target


def _watch_plan(cfg: LaunchConfig, target: RunTarget) -> str:
    """What --auto-resume (or watch) does after the steps, as comments in a dry run."""
    recover = render(recover_steps(cfg, target), cfg.poll_seconds).split("\n", 2)[2]
    return (f"# watching: every {cfg.poll_seconds:g} s until the run has ended:\n"
            f"#   gcloud storage ls {target.run_dir}/summary.json   (exists: stop)\n"
            f"#   {render_argv(describe_step(cfg).argv)}   (READY: wait; "
            f"{', '.join(LOST_STATES)} or gone: recover; READY after a failed recovery: "
            "wait if rltpu train runs on every host it was started on, else stop it where "
            "it runs and recover without the delete)\n"
            "# recover:\n" + "".join(f"#   {line}\n" for line in recover.splitlines()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, cfg, train_args, dry_run = parse(argv)
        target = check(command, cfg, train_args)
        steps = plan(command, cfg, train_args)
    except ValueError as e:
        return _fail(str(e))
    watching = command == "watch" or cfg.auto_resume
    if dry_run:
        sys.stdout.write(render(steps, cfg.poll_seconds))
        if watching:
            sys.stdout.write(_watch_plan(cfg, target))
        return 0
    if shutil.which("gcloud") is None:
        return _fail("gcloud not found on PATH; install the Google Cloud CLI "
                     "(or add --dry-run to see the commands)")
    code = execute(steps, cfg.poll_seconds)
    if code != 0 or not watching:
        return code
    return watch(cfg, target)


if __name__ == "__main__":
    sys.exit(main())
