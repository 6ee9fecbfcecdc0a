"""The Cloud TPU launcher's commands, exactly, for a v4-32, a v5e-1 and a v5litepod-16; the
`ray up` cluster config; and that a dry run and a real run (against a fake gcloud) do the
same thing. No cloud is reached: every test that runs commands puts a fake gcloud first
on PATH, and the dry runs must not call it at all."""
import contextlib
import copy
import fcntl
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile

import pytest
import yaml

from launch import tpu

pytestmark = pytest.mark.jax_independent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_YAML = os.path.join(REPO, "launch", "ray-tpu-cluster.yaml")

# --- what an accelerator type means --------------------------------------------------------

SLICES = [
    # name,          canonical,      chips, hosts, runtime version,       zone
    ("v4-32", "v4-32", 16, 4, "tpu-ubuntu2204-base", "us-central2-b"),
    ("v4-8", "v4-8", 4, 1, "tpu-ubuntu2204-base", "us-central2-b"),
    ("v5litepod-1", "v5litepod-1", 1, 1, "v2-alpha-tpuv5-lite", "us-west4-a"),
    ("v5e-1", "v5litepod-1", 1, 1, "v2-alpha-tpuv5-lite", "us-west4-a"),
    ("v5litepod-8", "v5litepod-8", 8, 1, "v2-alpha-tpuv5-lite", "us-west4-a"),
    ("v5litepod-16", "v5litepod-16", 16, 4, "v2-alpha-tpuv5-lite", "us-west4-a"),
    ("v6e-16", "v6e-16", 16, 4, "v2-alpha-tpuv6e", "us-east5-b"),
    ("v5p-8", "v5p-8", 4, 1, "v2-alpha-tpuv5", "us-east5-a"),
]


@pytest.mark.parametrize("name,canonical,chips,hosts,runtime,zone", SLICES,
                         ids=[s[0] for s in SLICES])
def test_accelerator_types(name, canonical, chips, hosts, runtime, zone):
    s = tpu.parse_accelerator_type(name)
    assert (s.accelerator_type, s.chips, s.hosts) == (canonical, chips, hosts)
    cfg = tpu.LaunchConfig(accelerator_type=name)
    assert (cfg.resolved_runtime_version, cfg.resolved_zone) == (runtime, zone)


def test_host_counts_agree_with_rays_tpu_tables():
    """Ray's own TPU code (chips per type, chips visible per host) for every size we accept."""
    from ray._private.accelerators import tpu as ray_tpu
    for gen in tpu.GENERATIONS.values():
        for size in gen.sizes:
            name = f"{gen.prefix}-{size}"
            chips = ray_tpu.get_total_chips_from_accelerator_type(name)
            per_host = ray_tpu.get_num_tpu_visible_chips_per_host(name)
            s = tpu.parse_accelerator_type(name)
            assert (s.chips, s.hosts) == (chips, max(1, chips // per_host)), name


BAD_TYPES = [
    ("v4-33", "accelerator type 'v4-33' does not exist; v4-N takes N in 8, 16, 32, 64, 128"),
    ("v5litepod-3",
     "accelerator type 'v5litepod-3' does not exist; v5litepod-N takes N in 1, 4, 8"),
    ("v9-8", "unknown TPU generation in 'v9-8'; valid: v4-N, v5p-N, v5litepod-N, v6e-N"),
    ("tpu-v4-8", "unknown accelerator type 'tpu-v4-8'; valid: v4-N"),
    ("v4", "unknown accelerator type 'v4'"),
]


@pytest.mark.parametrize("name,message", BAD_TYPES, ids=[b[0] for b in BAD_TYPES])
def test_bad_accelerator_type_is_one_line_and_exit_2(name, message, fake_path):
    result = launcher(["up", "--accelerator-type", name], fake_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("launch.tpu: error: ") and message in result.stderr
    assert result.stdout == "" and not fake_path.calls()


BAD_SETTINGS = [
    (["up", "--name", "My_TPU"], "--name 'My_TPU' is not a valid TPU name"),
    (["up", "--valid-until-duration", "6h"], "--valid-until-duration needs --queued"),
    (["up", "--python-version", "3.10"], "--python-version '3.10': rltpu runs on 3.11 to 3.13"),
    (["down", "--", "--env", "Acrobot-v1"], "flags after -- go to rltpu train; 'down' takes none"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["up", "--zone"], "argument --zone: expected one argument"),
]


@pytest.mark.parametrize("argv,message", BAD_SETTINGS, ids=[" ".join(b[0]) for b in BAD_SETTINGS])
def test_bad_settings_are_one_line_and_exit_2(argv, message, fake_path):
    result = launcher(argv, fake_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not fake_path.calls()


def test_missing_gcloud_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "launch.tpu", "status"], cwd=REPO,
                            env={**os.environ, "PATH": str(empty)}, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ("launch.tpu: error: gcloud not found on PATH; install the Google "
                             "Cloud CLI (or add --dry-run to see the commands)\n")


# --- the exact commands --------------------------------------------------------------------

TRAIN = "'[r]ltpu-venv/bin/rltpu train'"
STOP_TRAINING = (f"if pkill -TERM -f {TRAIN}; then for i in $(seq 120); do pgrep -f {TRAIN} "
                 ">/dev/null || break; sleep 1; done; if pgrep -f "
                 f"{TRAIN} >/dev/null; then echo \"rltpu train still running 120 s after "
                 "SIGTERM on $(hostname)\" >&2; fi; fi")
RAY_STOP = (f"chmod 600 ~/.ray/auth_token; {STOP_TRAINING}; RAY_AUTH_MODE=token "
            "~/rltpu-venv/bin/ray stop --force >/dev/null 2>&1 || true; RAY_AUTH_MODE=token "
            "~/rltpu-venv/bin/ray start")
HEAD = shlex.quote(f"--command={RAY_STOP} --head --port=6379 --dashboard-host=127.0.0.1")
# bash reads a double-quoted argument: \ " ` $ escaped, except ${HEAD_IP}, filled in by bash
JOIN = '"' + re.sub(r'([\\"`$])', r"\\\1", f"--command={RAY_STOP} --address=") + '${HEAD_IP}:6379"'
UNFETCHED = ("cd ~ && f=$(find rltpu-runs rltpu/runs -type f ! -name '.fetch*' "
             "$([ -e rltpu-runs/.fetched ] && echo -newer rltpu-runs/.fetched) 2>/dev/null | "
             "head -n 1); if [ -n \"$f\" ]; then "
             "echo RLTPU_UNFETCHED_RUNS \"$(hostname):~/$f\"; fi")


def down_check(scope):
    message = ("launch.tpu: error: runs on the slice's disks were never fetched and would be "
               "deleted with it: copy them with python -m launch.tpu fetch --name rl ..., or add "
               "--force (a preempted slice's disks are gone already)")
    return (f"# check that no run lives only on the slice's disks (fetched ones are fine; "
            "--force skips this)\n"
            f"out=$(gcloud compute tpus tpu-vm ssh rl --worker=all "
            f"{shlex.quote('--command=' + UNFETCHED)} {scope})\n"
            f"if grep -q RLTPU_UNFETCHED_RUNS <<<\"$out\"; then echo \"{message}\" >&2; "
            "exit 2; fi\n")


V4_32 = f"""\
# create v4-32 (16 chips, 4 hosts, on-demand) unless it exists
gcloud compute tpus tpu-vm describe rl '--format=value(state)' --zone=us-central2-b >/dev/null 2>&1 || gcloud compute tpus tpu-vm create rl --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --zone=us-central2-b
# start the Ray head on worker 0 (token auth, dashboard on 127.0.0.1 only)
gcloud compute tpus tpu-vm ssh rl --worker=0 {HEAD} --zone=us-central2-b
# look up worker 0's internal address (the Ray head)
HEAD_IP=$(gcloud compute tpus tpu-vm describe rl '--format=value(networkEndpoints[0].ipAddress)' --zone=us-central2-b)
# join TPU workers 1,2,3 to the head
gcloud compute tpus tpu-vm ssh rl --worker=1,2,3 {JOIN} --zone=us-central2-b
{down_check("--zone=us-central2-b")}# delete the TPU (billing stops)
gcloud compute tpus tpu-vm delete rl --quiet --zone=us-central2-b
"""

V5E_1_SPOT = f"""\
# create v5litepod-1 (1 chip, 1 host, spot) unless it exists
gcloud compute tpus tpu-vm describe rl '--format=value(state)' --zone=us-west4-a --project=my-proj >/dev/null 2>&1 || gcloud compute tpus tpu-vm create rl --accelerator-type=v5litepod-1 --version=v2-alpha-tpuv5-lite --spot --zone=us-west4-a --project=my-proj
# start the Ray head on worker 0 (token auth, dashboard on 127.0.0.1 only)
gcloud compute tpus tpu-vm ssh rl --worker=0 {HEAD} --zone=us-west4-a --project=my-proj
{down_check("--zone=us-west4-a --project=my-proj")}# delete the TPU (billing stops)
gcloud compute tpus tpu-vm delete rl --quiet --zone=us-west4-a --project=my-proj
"""

V5LITEPOD_16_QUEUED_SPOT = f"""\
# queue a request for v5litepod-16 (16 chips, 4 hosts, spot) unless the TPU exists
gcloud compute tpus tpu-vm describe rl '--format=value(state)' --zone=us-central1-a >/dev/null 2>&1 || gcloud compute tpus queued-resources create rl --node-id=rl --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot --valid-until-duration=6h --zone=us-central1-a
# wait until the queued resource is ACTIVE (capacity granted, VMs up)
until state=$(gcloud compute tpus queued-resources describe rl --zone=us-central1-a '--format=value(state.state)'); [ "$state" = ACTIVE ]; do case "$state" in FAILED|SUSPENDED) echo "launch.tpu: error: state $state" >&2; exit 1;; esac; sleep 30; done
# start the Ray head on worker 0 (token auth, dashboard on 127.0.0.1 only)
gcloud compute tpus tpu-vm ssh rl --worker=0 {HEAD} --zone=us-central1-a
# look up worker 0's internal address (the Ray head)
HEAD_IP=$(gcloud compute tpus tpu-vm describe rl '--format=value(networkEndpoints[0].ipAddress)' --zone=us-central1-a)
# join TPU workers 1,2,3 to the head
gcloud compute tpus tpu-vm ssh rl --worker=1,2,3 {JOIN} --zone=us-central1-a
{down_check("--zone=us-central1-a")}# delete the queued resource and its TPU (billing stops)
gcloud compute tpus queued-resources delete rl --zone=us-central1-a --force --quiet
"""

EXACT = [
    (["--accelerator-type", "v4-32"], V4_32),
    (["--accelerator-type", "v5e-1", "--spot", "--project", "my-proj"], V5E_1_SPOT),
    (["--accelerator-type", "v5litepod-16", "--spot", "--queued", "--valid-until-duration", "6h",
      "--zone", "us-central1-a"], V5LITEPOD_16_QUEUED_SPOT),
]


@pytest.mark.parametrize("flags,expected", EXACT,
                         ids=["v4-32", "v5e-1-spot", "v5litepod-16-queued-spot"])
def test_create_ray_and_down_commands_are_exact(flags, expected, fake_path):
    """Create (or reuse), the Ray cluster and teardown, as the CLI's dry run prints them."""
    script = ""
    for command in ("create", "ray", "down"):
        result = launcher([command, "--name", "rl", *flags, "--dry-run"], fake_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("#!/usr/bin/env bash\nset -euo pipefail\n")
        script += result.stdout.split("set -euo pipefail\n", 1)[1]
    assert script == expected
    assert not fake_path.calls(), "a dry run called gcloud"


INSTALL_REMOTE = ("set -e; mkdir -p ~/.ray ~/rltpu-runs; chmod 700 ~/.ray; "
                  "if [ -d ~/rltpu/runs ]; then mv ~/rltpu/runs "
                  "~/rltpu-runs/runs-from-checkout-$(date +%Y%m%d-%H%M%S); fi; "
                  "rm -rf ~/rltpu; tar -xzf ~/rltpu.tar.gz -C ~; rm -f ~/rltpu.tar.gz; "
                  "python3 -m pip install --user --quiet --upgrade uv; "
                  "~/.local/bin/uv venv --quiet --allow-existing --python 3.12 ~/rltpu-venv; "
                  "~/.local/bin/uv pip install --quiet --python ~/rltpu-venv/bin/python "
                  "-c ~/rltpu/constraints.txt ")
ALIVE = ("if pgrep -f '[r]ltpu-venv/bin/rltpu train' >/dev/null; then "
         "echo RLTPU_TRAINING_ALIVE $(hostname); fi")
ALIVE_MESSAGE = ("launch.tpu: error: rltpu train is running on the slice; install would replace "
                 "its code: stop it first (python -m launch.tpu stop --name rl ...; it writes a "
                 "final checkpoint), then install")
TOKEN_MODES = "chmod 700 ~/.ray && chmod 600 ~/.ray/auth_token"


def test_up_is_create_install_ray_train_exactly():
    cfg = tpu.LaunchConfig(name="rl", accelerator_type="v4-32", source="/src/rltpu",
                           cpu_hosts=("actors-1",))
    script = tpu.render(tpu.plan("up", cfg, ("--env", "Acrobot-v1", "--run-dir", "runs/my run")))
    z = "--zone=us-central2-b"
    tok = "~/.config/rltpu/rl.ray-token"
    assert script == f"""\
#!/usr/bin/env bash
set -euo pipefail
# a private folder (mode 700) for the code tarball, removed on exit
TARBALL_DIR=$(mktemp -d)
trap 'rm -rf "$TARBALL_DIR"' EXIT
TARBALL=$(mktemp "$TARBALL_DIR/rltpu-XXXXXX")
# create v4-32 (16 chips, 4 hosts, on-demand) unless it exists
gcloud compute tpus tpu-vm describe rl '--format=value(state)' {z} >/dev/null 2>&1 || gcloud compute tpus tpu-vm create rl --accelerator-type=v4-32 --version=tpu-ubuntu2204-base {z}
# check that rltpu train is not running on the slice (install would change its code under it)
out=$(gcloud compute tpus tpu-vm ssh rl --worker=all {shlex.quote('--command=' + ALIVE)} {z})
if grep -q RLTPU_TRAINING_ALIVE <<<"$out"; then echo {shlex.quote(ALIVE_MESSAGE)} >&2; exit 2; fi
# pack the committed checkout (HEAD) into a private temporary file
git -C /src/rltpu archive --format=tar.gz --prefix=rltpu/ "--output=${{TARBALL}}" HEAD
# copy the checkout to every TPU host
gcloud compute tpus tpu-vm scp "${{TARBALL}}" rl:rltpu.tar.gz --worker=all {z}
# copy the checkout to CPU host actors-1
gcloud compute scp "${{TARBALL}}" actors-1:rltpu.tar.gz {z}
# remove the local tarball (copied)
rm -rf "${{TARBALL_DIR}}"
# install rltpu and jax[tpu] on every TPU host (Python 3.12, ~/rltpu-venv; runs in ~/rltpu-runs, beside the code)
gcloud compute tpus tpu-vm ssh rl --worker=all {shlex.quote(f"--command={INSTALL_REMOTE}'jax[tpu]' -e ~/rltpu")} {z}
# make this cluster's Ray auth token at {tok} (mode 600, folder 700) unless it exists
bash -c {shlex.quote(f'umask 077; mkdir -p "$(dirname {tok})"; chmod 700 "$(dirname {tok})"; test -s {tok} || python3 -c ' + "'import secrets; print(secrets.token_hex(32))'" + f' > {tok}; chmod 600 {tok}')}
# copy the Ray auth token to every TPU host (into ~/.ray, mode 700)
gcloud compute tpus tpu-vm scp {tok} rl:.ray/auth_token --worker=all {z}
# make the token readable by its owner alone (600, in 700) on every TPU host
gcloud compute tpus tpu-vm ssh rl --worker=all '--command={TOKEN_MODES}' {z}
# install rltpu (CPU JAX) on actors-1
gcloud compute ssh actors-1 {z} {shlex.quote(f"--command={INSTALL_REMOTE}-e ~/rltpu")}
# copy the Ray auth token to actors-1
gcloud compute scp {tok} actors-1:.ray/auth_token {z}
# make the token readable by its owner alone (600, in 700) on actors-1
gcloud compute ssh actors-1 {z} '--command={TOKEN_MODES}'
# start the Ray head on worker 0 (token auth, dashboard on 127.0.0.1 only)
gcloud compute tpus tpu-vm ssh rl --worker=0 {HEAD} {z}
# look up worker 0's internal address (the Ray head)
HEAD_IP=$(gcloud compute tpus tpu-vm describe rl '--format=value(networkEndpoints[0].ipAddress)' {z})
# join TPU workers 1,2,3 to the head
gcloud compute tpus tpu-vm ssh rl --worker=1,2,3 {JOIN} {z}
# join CPU host actors-1 to the head (rollout actors only)
gcloud compute ssh actors-1 {z} {JOIN}
# start a learner process on each of the 4 TPU workers (output: ~/rltpu-train.log on each; worker 0's is the run's, see the logs command)
gcloud compute tpus tpu-vm ssh rl --worker=all "--command=mkdir -p ~/rltpu-runs && cd ~/rltpu-runs && RAY_AUTH_MODE=token RAY_ADDRESS=auto nohup setsid ~/rltpu-venv/bin/rltpu train --env Acrobot-v1 --run-dir 'runs/my run' --distributed auto >> ~/rltpu-train.log 2>&1 < /dev/null &" {z}
"""


def test_learners_placed_by_ray_start_from_worker_0_alone():
    cfg = tpu.LaunchConfig(name="rl", accelerator_type="v4-32", learners_by_ray=True)
    (step,) = tpu.train_steps(cfg, ("--env", "Acrobot-v1"))
    assert step.argv == (
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "rl", "--worker=0",
        "--command=mkdir -p ~/rltpu-runs && cd ~/rltpu-runs && RAY_AUTH_MODE=token "
        "RAY_ADDRESS=auto nohup setsid ~/rltpu-venv/bin/rltpu train --env Acrobot-v1 "
        "--learner-hosts 4 >> ~/rltpu-train.log 2>&1 < /dev/null &", "--zone=us-central2-b")
    one_host = tpu.LaunchConfig(name="rl", accelerator_type="v4-8", learners_by_ray=True)
    assert "--learner-hosts" not in " ".join(tpu.train_steps(one_host, ())[0].argv)


def test_tunnel_logs_fetch_and_status_commands():
    cfg = tpu.LaunchConfig(name="rl", accelerator_type="v5litepod-16")
    z = "--zone=us-west4-a"
    assert [tpu.render_argv(s.argv) for s in tpu.plan("tunnel", cfg)] == [
        f"gcloud compute tpus tpu-vm ssh rl --worker=0 {z} -- -N "
        "-L 8265:localhost:8265 -L 6006:localhost:6006"]
    assert [tpu.render_argv(s.argv) for s in tpu.plan("logs", cfg)] == [
        "gcloud compute tpus tpu-vm ssh rl --worker=0 "
        f"'--command=tail -n 200 -f ~/rltpu-train.log' {z}"]
    assert [tpu.render_argv(s.argv) for s in tpu.plan("fetch", cfg)] == [
        "gcloud compute tpus tpu-vm ssh rl --worker=0 '--command=mkdir -p ~/rltpu-runs && "
        f"touch ~/rltpu-runs/.fetch-started' {z}",
        "mkdir -p runs-rl",
        f"gcloud compute tpus tpu-vm scp --recurse rl:rltpu-runs runs-rl --worker=0 {z}",
        "gcloud compute tpus tpu-vm ssh rl --worker=0 '--command=mv ~/rltpu-runs/.fetch-started "
        f"~/rltpu-runs/.fetched' {z}"]
    assert [tpu.render_argv(s.argv) for s in tpu.plan("stop", cfg)] == [
        f"gcloud compute tpus tpu-vm ssh rl --worker=all {shlex.quote('--command=' + STOP_TRAINING)} {z}"]
    assert [tpu.render_argv(s.argv) for s in tpu.plan("status", cfg)] == [
        f"gcloud compute tpus tpu-vm describe rl '--format=value(state)' {z}"]


@pytest.mark.parametrize("accelerator_type", ["v4-32", "v5litepod-1", "v5litepod-16"])
@pytest.mark.parametrize("dashboard", [True, False])
def test_ray_token_auth_everywhere_and_no_public_dashboard(accelerator_type, dashboard, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("f00dfeedcafe4242\n")
    cfg = tpu.LaunchConfig(name="rl", accelerator_type=accelerator_type,
                           cpu_hosts=("cpu-a", "cpu-b"), token_file=str(token_file),
                           dashboard=dashboard)
    steps = tpu.plan("up", cfg, ("--env", "CartPole-v1"))
    script = tpu.render(steps)
    ray_lines = [line for line in script.splitlines() if "/bin/ray start" in line]
    starts = [part for line in ray_lines for part in line.split("; ") if "ray start" in part]
    # the head, one line for the other TPU hosts of a pod, one per CPU host
    assert len(ray_lines) == 1 + (tpu.parse_accelerator_type(accelerator_type).hosts > 1) + 2
    assert all(part.startswith("RAY_AUTH_MODE=token ") for part in starts), starts
    assert sum("--head" in part for part in starts) == 1
    head = next(part for part in starts if "--head" in part)
    assert "--dashboard-host=127.0.0.1" in head
    assert ("--include-dashboard=false" in head) == (not dashboard)
    assert "0.0.0.0" not in script and "--dashboard-host=" not in script.replace(
        "--dashboard-host=127.0.0.1", "")
    assert "RAY_AUTH_MODE=token RAY_ADDRESS=auto" in script  # the driver authenticates too
    assert "f00dfeedcafe4242" not in script, "the token itself must never be printed"
    copies = [s for s in steps if any(a.endswith(":.ray/auth_token") for a in s.argv)]
    assert len(copies) == 1 + 2  # every TPU host at once (--worker=all), each CPU host
    # one learner process on every TPU host of a pod, joined by jax.distributed
    pod = tpu.parse_accelerator_type(accelerator_type).hosts > 1
    train = steps[-1].argv
    assert ("--worker=all" if pod else "--worker=0") in train
    command = next(a for a in train if a.startswith("--command="))
    assert command.count(" --distributed auto ") == pod


# --- dry run and real run do the same ------------------------------------------------------

FAKE_TOOL = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + args) + "\\n")
if "--format=value(state)" in args:  # does the TPU exist?
    sys.exit(0 if os.environ.get("FAKE_TPU_EXISTS") else 1)
if "--format=value(networkEndpoints[0].ipAddress)" in args:
    print("10.164.0.7")
if "--format=value(state.state)" in args:
    print("ACTIVE")
if args[:2] == ["storage", "ls"]:  # does the run exist in the bucket?
    sys.exit(0 if os.environ.get("FAKE_RUN_EXISTS") else 1)
command = next((a for a in args if a.startswith("--command=")), "")
if "RLTPU_TRAINING_ALIVE" in command and os.environ.get("FAKE_TRAINING_ALIVE"):
    print("RLTPU_TRAINING_ALIVE t1v-w-0")
if "RLTPU_UNFETCHED_RUNS" in command and os.environ.get("FAKE_UNFETCHED"):
    print("RLTPU_UNFETCHED_RUNS t1v-w-0:~/rltpu-runs/runs/a/metrics.jsonl")
for arg in args:  # git archive --output=PATH: note the modes it finds, write the file
    if arg.startswith("--output="):
        path = arg[len("--output="):]
        with open(os.environ["FAKE_LOG"] + ".tarball", "a") as f:
            f.write(json.dumps([path, os.stat(os.path.dirname(path)).st_mode & 0o777,
                                os.stat(path).st_mode & 0o777]) + "\\n")
        with open(path, "wb") as f:
            f.write(b"tarball")
"""


class FakePath:
    """A bin folder whose gcloud and git only log their argv (one JSON list a line)."""

    def __init__(self, root):
        self.bin, self.log = root / "fakebin", root / "calls.jsonl"
        self.bin.mkdir()
        for tool in ("gcloud", "git"):
            path = self.bin / tool
            path.write_text(FAKE_TOOL.format(python=sys.executable))
            path.chmod(0o755)

    def env(self, **extra):
        return {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                "FAKE_LOG": str(self.log), **extra}

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def reset(self):
        if self.log.exists():
            self.log.unlink()


@contextlib.contextmanager
def _pgrep_lock(operation):
    """The launcher finds rltpu train by a pattern over every process of the host (pgrep and
    pkill -f '[r]ltpu-venv/bin/rltpu train'), and a fake gcloud given the train step has that
    pattern in its own command line. make test runs the fast tests in two processes: a test
    that runs pgrep or pkill here holds this lock exclusively, the tests whose fake tools can
    match it hold it shared (before this, a pkill here killed a fake gcloud mid-recovery and
    the watching launcher waited for a run that was never started, 60 s, in a CI run)."""
    with open(os.path.join(tempfile.gettempdir(), "rltpu-tests-pkill.lock"), "w") as lock:
        fcntl.flock(lock, operation)
        yield


@pytest.fixture
def fake_path(tmp_path):
    with _pgrep_lock(fcntl.LOCK_SH):
        yield FakePath(tmp_path)


def launcher(argv, fake, timeout=60, **env):
    """Runs ``python -m launch.tpu ARGV`` against the fake tools. One that runs past
    ``timeout`` (these take 1-6 s) is stopped with SIGABRT, on which faulthandler prints
    where its Python was, and the test fails with that, its output and the last tool calls
    (a CI run of 2026-12-05 timed out once here and said nothing more)."""
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "launch.tpu", *argv],
                               cwd=REPO, env=fake.env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        stdout, stderr = process.communicate()
        pytest.fail(f"launch.tpu ran past {timeout} s; its stderr:\n{stderr[-6000:]}\nits stdout:"
                    f"\n{stdout[-3000:]}\nthe last tool calls: {fake.calls()[-6:]}", pytrace=False)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _tarballs(fake):
    """(path, folder mode, file mode) of each tarball git archive wrote, as the fake saw it."""
    log = fake.log.parent / (fake.log.name + ".tarball")
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]


def _without_tarball(calls, path):
    """The calls with the (random) tarball path and its folder put as fixed names."""
    folder = os.path.dirname(path)
    return [[a.replace(path, "TARBALL").replace(folder, "TARBALL_DIR") for a in c] for c in calls]


BUCKET = ["--bucket", "gs://my-bucket/runs", "--run-name", "r1", "--internal-ips",
          "--service-account", "rl-run@my-proj.iam.gserviceaccount.com",
          "--scopes", "https://www.googleapis.com/auth/devstorage.read_write"]


@pytest.mark.parametrize("where", ["beside", "bucket"])
@pytest.mark.parametrize("exists", [False, True], ids=["new", "reused"])
def test_dry_run_script_and_real_run_make_the_same_calls(exists, where, fake_path, tmp_path):
    """The printed script, run by bash, and the launcher's own run issue the same gcloud and
    git calls (quoting survives bash), with worker 0's address filled in, and reuse an
    existing TPU instead of creating one (and, in a bucket, resume a run that exists). The
    code tarball is a private temporary file, gone when the launcher ends."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o755)
    keys.chmod(0o755)
    run = ["--run-dir", "runs/a b"] if where == "beside" else []
    flags = ["up", "--name", "rl", "--accelerator-type", "v5litepod-16", "--spot", "--queued",
             "--cpu-hosts", "cpu-a", "--token-file", str(keys / "tok"), "--source", "/src/x",
             *(BUCKET if where == "bucket" else []), "--", "--env", "CartPole-v1", *run]
    extra = {"FAKE_TPU_EXISTS": "1", "FAKE_RUN_EXISTS": "1"} if exists else {}
    dry = launcher([*flags[:flags.index("--")], "--dry-run", *flags[flags.index("--"):]], fake_path)
    assert dry.returncode == 0, dry.stderr
    assert not fake_path.calls()
    script = tmp_path / "up.sh"
    script.write_text(dry.stdout)
    by_bash = subprocess.run(["bash", str(script)], env=fake_path.env(**extra), capture_output=True,
                             text=True, timeout=60)
    assert by_bash.returncode == 0, by_bash.stderr
    (bash_tarball, folder_mode, file_mode), = _tarballs(fake_path)
    assert (folder_mode, file_mode) == (0o700, 0o600) and not os.path.exists(bash_tarball)
    bash_calls = _without_tarball(fake_path.calls(), bash_tarball)
    token = (keys / "tok").read_text()
    assert len(token.strip()) == 64
    assert stat.S_IMODE((keys / "tok").stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700  # was 755

    fake_path.reset()
    (fake_path.log.parent / (fake_path.log.name + ".tarball")).unlink()
    (keys / "tok").unlink()
    real = launcher(flags, fake_path, **extra)
    assert real.returncode == 0, real.stderr + real.stdout
    (tarball, folder_mode, file_mode), = _tarballs(fake_path)
    assert (folder_mode, file_mode) == (0o700, 0o600)  # tempfile.mkdtemp, mkstemp
    assert not os.path.exists(os.path.dirname(tarball)) and tarball != bash_tarball
    assert _without_tarball(fake_path.calls(), tarball) == bash_calls
    assert (keys / "tok").read_text() != token  # a fresh token for a fresh cluster

    creates = [c for c in bash_calls
               if c[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]]
    assert len(creates) == (0 if exists else 1)
    if creates and where == "bucket":
        assert creates[0][-4:] == [
            "--internal-ips", "--service-account=rl-run@my-proj.iam.gserviceaccount.com",
            "--scopes=https://www.googleapis.com/auth/devstorage.read_write", "--zone=us-west4-a"]
    joins = [c for c in bash_calls if any("--address=" in a for a in c)]
    prefix = (["gcloud", "alpha", "compute", "tpus"] if where == "bucket"
              else ["gcloud", "compute", "tpus", "tpu-vm"])
    assert [c[:4] for c in joins] == [prefix, ["gcloud", "compute", "ssh", "cpu-a"]]
    assert all(any(a.endswith("--address=10.164.0.7:6379") for a in c) for c in joins)
    train = bash_calls[-1]
    tpu_vm = (["gcloud", "alpha", "compute", "tpus", "tpu-vm"] if where == "bucket"
              else ["gcloud", "compute", "tpus", "tpu-vm"])
    assert train[:len(tpu_vm) + 3] == [*tpu_vm, "ssh", "rl", "--worker=all"]
    iap = [c for c in bash_calls if "ssh" in c or "scp" in c]
    assert all(("--tunnel-through-iap" in c) == (where == "bucket") for c in iap), iap
    command = next(a for a in train if a.startswith("--command="))
    if where == "beside":
        expected = "train --env CartPole-v1 --run-dir 'runs/a b' --distributed auto"
    elif exists:  # the run's config.json is in the bucket: resume it, its settings saved
        expected = "train --resume gs://my-bucket/runs/r1 --distributed auto"
    else:
        expected = "train --env CartPole-v1 --run-dir gs://my-bucket/runs/r1 --distributed auto"
    assert command == ("--command=mkdir -p ~/rltpu-runs && cd ~/rltpu-runs && RAY_AUTH_MODE=token "
                       "RAY_ADDRESS=auto nohup setsid ~/rltpu-venv/bin/rltpu " + expected
                       + " >> ~/rltpu-train.log 2>&1 < /dev/null &")
    storage = [c for c in bash_calls if c[:3] == ["gcloud", "storage", "ls"]]
    assert storage == ([["gcloud", "storage", "ls", "gs://my-bucket/runs/r1/config.json"]]
                       if where == "bucket" else [])


# --- the ray up cluster config -------------------------------------------------------------

def test_ray_up_cluster_yaml():
    with open(CLUSTER_YAML) as f:
        config = yaml.safe_load(f)
    assert config["provider"]["type"] == "gcp"
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert "machineType" in head["node_config"]  # Ray cannot make a TPU the head
    # the head holds the autoscaler's project-wide credentials: no actor (env code) there
    assert head["resources"] == {"CPU": 0}
    assert config["setup_commands"][0] == "chmod 700 ~/.ray && chmod 600 ~/.ray/auth_token"
    text = open(CLUSTER_YAML).read()
    assert "ray get-auth-token --generate             # once: ~/.ray/auth_token (mode 600)" \
        not in text
    assert "(umask 077 && ray get-auth-token --generate >/dev/null) && chmod 700 ~/.ray && " \
           "chmod 600 ~/.ray/auth_token" in text
    tpu_node = nodes["ray_tpu"]["node_config"]
    s = tpu.parse_accelerator_type(tpu_node["acceleratorType"])
    assert (s.accelerator_type, s.hosts) == ("v5litepod-16", 4)
    assert tpu_node["runtimeVersion"] == s.generation.runtime_version
    assert config["provider"]["availability_zone"] == s.generation.zone
    assert config["provider"]["region"] == s.generation.zone.rsplit("-", 1)[0]
    assert nodes["ray_tpu"]["resources"] == {"TPU": tpu.CHIPS_PER_MULTI_HOST_VM}
    assert nodes["ray_tpu"]["min_workers"] == nodes["ray_tpu"]["max_workers"] == 1
    assert any("'jax[tpu]'" in c for c in nodes["ray_tpu"]["worker_setup_commands"])
    assert nodes["ray_cpu"]["min_workers"] == 0  # CPU-only actor hosts are optional

    # token auth on every ray start; the token file travels to every node; no public dashboard
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
              if " start " in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts)
    head_start = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in open(CLUSTER_YAML).read()
    assert any("constraints.txt" in c and "-e ~/rltpu" in c for c in config["setup_commands"])
    assert ".venv" in config["rsync_exclude"]


def test_ray_up_cluster_yaml_passes_rays_own_schema():
    """Ray's cluster-launcher schema rejects unknown or misplaced keys."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    with open(CLUSTER_YAML) as f:
        config = yaml.safe_load(f)
    validate_config(prepare_config(copy.deepcopy(config)))
    config["available_node_types"]["ray_tpu"]["acceleratorTyp"] = "v4-8"  # a typo must fail
    with pytest.raises(Exception, match="acceleratorTyp"):
        validate_config(prepare_config(config))


# --- bad values of the newer flags ----------------------------------------------------------

BAD_NEW_FLAGS = [
    (["up", "--bucket", "s3://runs"], "--bucket 's3://runs' is not a Cloud Storage location"),
    (["up", "--bucket", "gs://My_Bucket"], "--bucket 'gs://My_Bucket' is not a Cloud Storage"),
    (["up", "--bucket", "gs://"], "--bucket 'gs://' is not a Cloud Storage location"),
    (["up", "--bucket", "gs://b1"], "--bucket 'gs://b1' is not a Cloud Storage location"),
    (["up", "--bucket", "gs://b12/x", "--run-name", "a/b"], "--run-name 'a/b': use letters"),
    (["up", "--poll-seconds", "0"], "--poll-seconds must be a positive number, got 0.0"),
    (["up", "--poll-seconds", "nan"], "--poll-seconds must be a positive number, got nan"),
    (["up", "--poll-seconds", "soon"], "argument --poll-seconds: invalid float value: 'soon'"),
    (["up", "--stop-grace-seconds", "-1"], "--stop-grace-seconds must be 0 to 3600, got -1"),
    (["up", "--service-account", "me@gmail.com"],
     "--service-account 'me@gmail.com' is not a service account email"),
    (["up", "--scopes", "cloud-platform,https://evil.example/x"],
     "--scopes: 'https://evil.example/x' is not an OAuth scope"),
    (["up", "--token-file", "/tmp/tok"], "--token-file '/tmp/tok': give it a folder of its own"),
    (["up", "--auto-resume"], "--auto-resume needs the run in a bucket"),
    (["up", "--auto-resume", "--", "--run-dir", "runs/x"], "--auto-resume needs the run in a"),
    (["install", "--auto-resume"], "--auto-resume goes with up or watch, not 'install'"),
    (["watch", "--bucket", "gs://b12"], "watch needs the run in a bucket"),
    (["up", "--", "--run-dir", "~/rltpu/runs/x"],
     "run directory '~/rltpu/runs/x' would be inside the code checkout"),
    (["up", "--", "--run-dir", "../rltpu/x"], "run directory '../rltpu/x' would be inside"),
    (["train", "--", "--resume", "/home/me/rltpu/runs/a"], "'/home/me/rltpu/runs/a' would be"),
    (["fetch", "--", "--env", "CartPole-v1"], "flags after -- go to rltpu train; 'fetch'"),
]


@pytest.mark.parametrize("argv,message", BAD_NEW_FLAGS, ids=[" ".join(b[0]) for b in BAD_NEW_FLAGS])
def test_bad_new_flags_are_one_line_and_exit_2_before_gcloud(argv, message, fake_path):
    for dry in ([], ["--dry-run"]):
        cut = argv.index("--") if "--" in argv else len(argv)
        result = launcher([*argv[:cut], *dry, *argv[cut:]], fake_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert result.stderr.startswith("launch.tpu: error: ") and result.stdout == ""
        assert not fake_path.calls()


# --- refusals: install while training, down with runs on the slice's disks ------------------

@pytest.mark.parametrize("how", ["launcher", "bash"])
def test_install_refuses_while_training_is_alive(how, fake_path, tmp_path):
    flags = ["install", "--name", "rl", "--accelerator-type", "v4-32",
             "--token-file", str(tmp_path / "keys" / "tok")]
    if how == "bash":
        script = tmp_path / "install.sh"
        script.write_text(launcher([*flags, "--dry-run"], fake_path).stdout)
        result = subprocess.run(["bash", str(script)], env=fake_path.env(FAKE_TRAINING_ALIVE="1"),
                                capture_output=True, text=True, timeout=60)
    else:
        result = launcher(flags, fake_path, FAKE_TRAINING_ALIVE="1")
    assert result.returncode == 2
    assert result.stderr == ALIVE_MESSAGE + "\n"
    assert fake_path.calls() == [["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rl",
                                  "--worker=all", "--command=" + ALIVE, "--zone=us-central2-b"]]
    assert not (tmp_path / "keys").exists()  # nothing made, nothing packed or copied


@pytest.mark.parametrize("how", ["launcher", "bash"])
def test_down_refuses_unfetched_runs_unless_forced(how, fake_path, tmp_path):
    def down(*extra, **env):
        flags = ["down", "--name", "rl", "--accelerator-type", "v5litepod-1", *extra]
        if how == "launcher":
            return launcher(flags, fake_path, **env)
        script = tmp_path / "down.sh"
        script.write_text(launcher([*flags, "--dry-run"], fake_path).stdout)
        return subprocess.run(["bash", str(script)], env=fake_path.env(**env),
                              capture_output=True, text=True, timeout=60)

    check = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rl", "--worker=all",
             "--command=" + UNFETCHED, "--zone=us-west4-a"]
    delete = ["gcloud", "compute", "tpus", "tpu-vm", "delete", "rl", "--quiet", "--zone=us-west4-a"]
    result = down(FAKE_UNFETCHED="1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "runs on the slice's disks were never fetched" in result.stderr
    assert fake_path.calls() == [check]
    fake_path.reset()
    assert down().returncode == 0 and fake_path.calls() == [check, delete]  # none, or fetched
    fake_path.reset()
    assert down("--force", FAKE_UNFETCHED="1").returncode == 0
    assert fake_path.calls() == [delete]


# --- the remote command lines, run by bash on a fake host (HOME in a temp folder) ------------

def _host(tmp_path):
    """A fake TPU host: HOME, and a PATH whose python3 and uv only succeed (no network)."""
    home, bin_ = tmp_path / "home", tmp_path / "hostbin"
    home.mkdir()
    bin_.mkdir()
    for tool in (bin_ / "python3", home / ".local" / "bin" / "uv"):
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    env = {"HOME": str(home), "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}
    return home, env


def _remote(line, env):
    return subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                          timeout=60)


def test_install_keeps_runs_and_makes_ray_folder_private(tmp_path):
    """A run an older launcher left in ~/rltpu/runs survives install (moved beside the code);
    ~/.ray becomes 700 even if Ray made it 755; the token copied in is then made 600."""
    home, env = _host(tmp_path)
    old_run = home / "rltpu" / "runs" / "impala-CartPole-v1-1"
    old_run.mkdir(parents=True)
    (old_run / "metrics.jsonl").write_text('{"update": 1}\n')
    (home / ".ray").mkdir(mode=0o755)
    (home / ".ray").chmod(0o755)
    code = tmp_path / "code" / "rltpu"
    code.mkdir(parents=True)
    (code / "constraints.txt").write_text("jax==0.8\n")
    subprocess.run(["tar", "-czf", str(home / "rltpu.tar.gz"), "-C", str(code.parent), "rltpu"],
                   check=True)
    cfg = tpu.LaunchConfig(name="rl")
    result = _remote(tpu._install_remote(cfg, "tpu"), env)
    assert result.returncode == 0, result.stderr
    (moved,) = (home / "rltpu-runs").glob("runs-from-checkout-*")
    assert (moved / "impala-CartPole-v1-1" / "metrics.jsonl").read_text() == '{"update": 1}\n'
    assert sorted(os.listdir(home / "rltpu")) == ["constraints.txt"]
    assert not (home / "rltpu.tar.gz").exists()
    assert stat.S_IMODE((home / ".ray").stat().st_mode) == 0o700
    (home / ".ray" / "auth_token").write_text("t\n")
    (home / ".ray" / "auth_token").chmod(0o644)
    assert _remote(TOKEN_MODES, env).returncode == 0
    assert stat.S_IMODE((home / ".ray" / "auth_token").stat().st_mode) == 0o600
    # a second install finds no runs in the checkout and moves nothing
    subprocess.run(["tar", "-czf", str(home / "rltpu.tar.gz"), "-C", str(code.parent), "rltpu"],
                   check=True)
    assert _remote(tpu._install_remote(cfg, "tpu"), env).returncode == 0
    assert len(list((home / "rltpu-runs").glob("runs-from-checkout-*"))) == 1


def test_unfetched_check_sees_runs_newer_than_the_last_fetch(tmp_path):
    home, env = _host(tmp_path)

    def unfetched():
        result = _remote(UNFETCHED, env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert unfetched() == ""  # no runs at all
    run = home / "rltpu-runs" / "runs" / "a"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    os.utime(run / "metrics.jsonl", (1000, 1000))
    assert unfetched().startswith("RLTPU_UNFETCHED_RUNS ")
    assert unfetched().endswith(":~/rltpu-runs/runs/a/metrics.jsonl")
    cfg = tpu.LaunchConfig(name="rl")
    mark, _, _, done = (tpu._expand(s.argv, {})[-2] for s in tpu.fetch_steps(cfg))
    assert _remote(mark[len("--command="):], env).returncode == 0  # the copy starts
    os.utime(home / "rltpu-runs" / ".fetch-started", (2000, 2000))
    assert _remote(done[len("--command="):], env).returncode == 0  # the copy is done
    assert unfetched() == ""
    (run / "checkpoint").write_text("new\n")  # written after the copy started
    os.utime(run / "checkpoint", (3000, 3000))
    assert unfetched().endswith(":~/rltpu-runs/runs/a/checkpoint")


FAKE_TRAIN = """#!{python}
import os, signal, sys, time
def stop(signum, frame):
    if os.environ.get("IGNORE_TERM"):
        return
    time.sleep(0.5)  # the update it is on, and the final checkpoint
    open(os.path.join(os.environ["HOME"], "final-checkpoint"), "w").write("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("training", flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def alone_on_this_machine():
    """No other test's processes that pgrep and pkill -f could match (``_pgrep_lock``)."""
    with _pgrep_lock(fcntl.LOCK_EX):
        yield


@pytest.mark.parametrize("ignores_term", [False, True], ids=["stops", "hangs"])
def test_ray_restart_stops_training_with_sigterm_and_a_bounded_grace(ignores_term, tmp_path,
                                                                      alone_on_this_machine):
    """What runs before `ray stop --force`: a live rltpu train gets SIGTERM and time for its
    final checkpoint; one that does not stop is waited for the grace only, and named."""
    home, env = _host(tmp_path)
    train = home / "rltpu-venv" / "bin" / "rltpu"
    train.parent.mkdir(parents=True)
    train.write_text(FAKE_TRAIN.format(python=sys.executable))
    train.chmod(0o755)
    proc = subprocess.Popen([str(train), "train", "--env", "CartPole-v1"], stdout=subprocess.PIPE,
                            env={**env, "IGNORE_TERM": "1" if ignores_term else ""}, text=True)
    try:
        assert proc.stdout.readline() == "training\n"
        assert _remote(ALIVE, env).stdout.startswith("RLTPU_TRAINING_ALIVE ")
        cfg = tpu.LaunchConfig(name="rl", stop_grace_seconds=3)
        result = _remote(tpu._stop_training(cfg), env)
        assert result.returncode == 0
        if ignores_term:
            assert proc.poll() is None
            assert result.stderr.startswith("rltpu train still running 3 s after SIGTERM on ")
        else:
            assert proc.wait(timeout=5) == 0 and result.stderr == ""
            assert (home / "final-checkpoint").read_text() == "saved"
            assert _remote(ALIVE, env).stdout == ""
    finally:
        proc.kill()
        proc.wait()


def test_token_file_and_folder_are_made_private_even_when_they_exist(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    keys.chmod(0o755)
    (keys / "tok").write_text("f00d\n")
    (keys / "tok").chmod(0o644)
    step = tpu.token_step(tpu.LaunchConfig(name="rl", token_file=str(keys / "tok")))
    assert subprocess.run(step.argv, timeout=30).returncode == 0
    assert (keys / "tok").read_text() == "f00d\n"  # kept: the cluster's hosts have it
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "tok").stat().st_mode) == 0o600
    # on every host: the folder is made 700 before the token arrives, the token 600 after
    steps = tpu.install_steps(tpu.LaunchConfig(name="rl", accelerator_type="v4-32",
                                               cpu_hosts=("cpu-a",)))
    for i, s in enumerate(steps):
        if any(a.endswith(":.ray/auth_token") for a in s.argv):
            assert steps[i + 1].argv[-2:] in ((f"--command={TOKEN_MODES}", "--zone=us-central2-b"),
                                              ("--zone=us-central2-b", f"--command={TOKEN_MODES}"))
            installs = [t for t in steps[:i] if any(INSTALL_REMOTE in a for a in t.argv)]
            assert installs, "the token arrived before ~/.ray was made 700"


# --- internal IPs, IAP and the service account ----------------------------------------------

def test_internal_ips_ssh_through_iap_and_a_chosen_service_account():
    cfg = tpu.LaunchConfig(name="rl", accelerator_type="v4-8", internal_ips=True,
                           service_account="rl-run@p1.iam.gserviceaccount.com",
                           scopes="cloud-platform", cpu_hosts=("cpu-a",))
    z = "--zone=us-central2-b"
    (create,) = tpu.create_steps(cfg)
    assert create.argv == (
        "gcloud", "compute", "tpus", "tpu-vm", "create", "rl", "--accelerator-type=v4-8",
        "--version=tpu-ubuntu2204-base", "--internal-ips",
        "--service-account=rl-run@p1.iam.gserviceaccount.com", "--scopes=cloud-platform", z)
    assert [tpu.render_argv(s.argv) for s in tpu.plan("tunnel", cfg)] == [
        f"gcloud alpha compute tpus tpu-vm ssh rl --worker=0 --tunnel-through-iap {z} -- -N "
        "-L 8265:localhost:8265 -L 6006:localhost:6006"]
    steps = tpu.plan("up", cfg, ("--env", "CartPole-v1"))
    remote = [s.argv for s in steps if "ssh" in s.argv or "scp" in s.argv]
    assert remote and all("--tunnel-through-iap" in argv for argv in remote)
    assert all(argv[:2] == ("gcloud", "alpha") for argv in remote if "tpu-vm" in argv)
    assert not any("--internal-ips" in s.argv for s in steps if s is not steps[0])
    plain = tpu.LaunchConfig(name="rl", accelerator_type="v4-8")
    assert not any("--tunnel-through-iap" in " ".join(s.argv) or "alpha" in s.argv
                   for s in tpu.plan("up", plain, ()))


# --- automatic resume after a preemption ----------------------------------------------------

PREEMPTING_GCLOUD = """#!{python}
# A fake gcloud with state (a JSON file): a TPU that is created READY, is preempted (or
# vanishes) on the watcher's second look after training starts, and a bucket whose run gets
# its config.json when training starts and its summary.json on the second look after the
# second start (the resumed run).
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(["gcloud"] + args) + "\\n")
path = os.environ["FAKE_STATE"]
with open(path) as f:
    state = json.load(f)
code = 0
command = next((a for a in args if a.startswith("--command=")), "")
if args[:4] == ["compute", "tpus", "tpu-vm", "describe"] and "--format=value(state)" in args:
    if state["tpu"] is None:
        print("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: rl", file=sys.stderr)
        code = 1
    else:
        print(state["tpu"])
elif args[:4] == ["compute", "tpus", "tpu-vm", "create"]:
    state["tpu"] = "READY"
elif args[:4] == ["compute", "tpus", "tpu-vm", "delete"]:
    state["tpu"] = None
elif args[:4] == ["compute", "tpus", "queued-resources", "create"]:
    state["qr"] = "WAITING_FOR_RESOURCES"
    if state.get("qr_fails"):  # this request will fail (no capacity in time)
        state["qr_fails"] -= 1
        state["qr"] = "FAILED"
elif args[:4] == ["compute", "tpus", "queued-resources", "describe"]:
    if state["qr"] is None:
        print("ERROR: NOT_FOUND", file=sys.stderr)
        code = 1
    else:
        print(state["qr"])
        if state["qr"] == "WAITING_FOR_RESOURCES":  # granted on the next look
            state["qr"], state["tpu"] = "ACTIVE", "READY"
elif args[:4] == ["compute", "tpus", "queued-resources", "delete"]:
    state["qr"] = state["tpu"] = None
elif args[:2] == ["storage", "ls"] and args[2].endswith("/config.json"):
    code = 0 if state["trains"] else 1
elif args[:2] == ["storage", "ls"] and args[2].endswith("/summary.json"):
    state["looks"] += 1
    if state["trains"] == 1 and state["looks"] == 2 and not state["preempted"]:
        state["preempted"] = True
        state["tpu"] = "PREEMPTED" if state["mode"] == "preempted" else None
    code = 0 if state["trains"] >= 2 and state["looks"] >= 2 else 1
elif "RLTPU_TRAINING_ALIVE" in command and state.get("alive"):
    print("RLTPU_TRAINING_ALIVE t1v-w-0")
elif "pkill -TERM" in command:  # the stop step: training ends on every host
    state["alive"] = False
elif "nohup setsid" in command and state["trains"] and state.get("train_starts_then_fails"):
    state["train_starts_then_fails"] -= 1  # a resume starts training, then its SSH drops
    state.update(trains=state["trains"] + 1, looks=0, alive=True)
    print("Connection to 10.164.0.7 closed by remote host.", file=sys.stderr)
    code = 255
elif "nohup setsid" in command and state["trains"] and state.get("train_fails"):
    state["train_fails"] -= 1  # a resume's train step fails (the connection dropped)
    print("ssh: connect to host rl port 22: Connection timed out", file=sys.stderr)
    code = 255
elif "nohup setsid" in command:  # the train step (not a check naming rltpu train)
    state["trains"] += 1
    state["looks"] = 0
with open(path, "w") as f:
    json.dump(state, f)
sys.exit(code)
"""


def _preempting_cloud(tmp_path, fake, **state):
    (fake.bin / "gcloud").write_text(PREEMPTING_GCLOUD.format(python=sys.executable))
    (tmp_path / "cloud.json").write_text(json.dumps(
        {"tpu": None, "qr": None, "trains": 0, "looks": 0, "preempted": False, **state}))
    return {"FAKE_STATE": str(tmp_path / "cloud.json")}


def _calls_without_tarballs(fake):
    calls = fake.calls()
    for path, _, _ in _tarballs(fake):
        calls = _without_tarball(calls, path)
    return calls


def _tpu_vm(verb, *args, z="--zone=us-west4-a"):
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, z]


def _reinstall(token, run, z="--zone=us-west4-a"):
    """The calls of install, Ray's head and the train step (fresh or resumed)."""
    return [
        _tpu_vm("ssh", "rl", "--worker=all", "--command=" + ALIVE, z=z),
        ["git", "-C", REPO, "archive", "--format=tar.gz", "--prefix=rltpu/",
         "--output=TARBALL", "HEAD"],
        _tpu_vm("scp", "TARBALL", "rl:rltpu.tar.gz", "--worker=all", z=z),
        _tpu_vm("ssh", "rl", "--worker=all",
                f"--command={INSTALL_REMOTE}'jax[tpu]' -e ~/rltpu", z=z),
        _tpu_vm("scp", token, "rl:.ray/auth_token", "--worker=all", z=z),
        _tpu_vm("ssh", "rl", "--worker=all", "--command=" + TOKEN_MODES, z=z),
        _tpu_vm("ssh", "rl", "--worker=0",
                f"--command={RAY_STOP} --head --port=6379 --dashboard-host=127.0.0.1", z=z),
        ["gcloud", "storage", "ls", "gs://my-bucket/runs/r1/config.json"],
        _tpu_vm("ssh", "rl", "--worker=0",
                "--command=mkdir -p ~/rltpu-runs && cd ~/rltpu-runs && RAY_AUTH_MODE=token "
                f"RAY_ADDRESS=auto nohup setsid ~/rltpu-venv/bin/rltpu train {run} >> "
                "~/rltpu-train.log 2>&1 < /dev/null &", z=z),
    ]


SUMMARY = ["gcloud", "storage", "ls", "gs://my-bucket/runs/r1/summary.json"]
ALIVE_CHECK = _tpu_vm("ssh", "rl", "--worker=all", "--command=" + ALIVE)
DESCRIBE = _tpu_vm("describe", "rl", "--format=value(state)")
CREATE = _tpu_vm("create", "rl", "--accelerator-type=v5litepod-1", "--version=v2-alpha-tpuv5-lite",
                 "--spot")


def _up_auto_resume(fake_path, tmp_path, accelerator="v5litepod-1", **state):
    """up --auto-resume of run r1 in gs://my-bucket/runs on a spot ``accelerator``, against
    the preempting fake gcloud in ``state``; it must exit 0. Returns the result and token path."""
    env = _preempting_cloud(tmp_path, fake_path, **state)
    token = str(tmp_path / "keys" / "tok")
    result = launcher(["up", "--name", "rl", "--accelerator-type", accelerator, "--spot",
                       "--bucket", "gs://my-bucket/runs/", "--run-name", "r1", "--auto-resume",
                       "--poll-seconds", "0.01", "--token-file", token,
                       "--", "--env", "CartPole-v1"], fake_path, **env)
    assert result.returncode == 0, result.stderr + result.stdout
    return result, token


@pytest.mark.parametrize("mode", ["preempted", "vanished"])
def test_auto_resume_recreates_a_preempted_slice_and_resumes_from_the_bucket(mode, fake_path,
                                                                            tmp_path):
    """up --auto-resume against a fake gcloud: create -> READY -> training -> PREEMPTED (or
    gone) -> delete what is left -> create -> reinstall -> rltpu train --resume gs://... ->
    summary.json appears -> exit 0. The exact command sequence."""
    result, token = _up_auto_resume(fake_path, tmp_path, mode=mode)
    fresh = "--env CartPole-v1 --run-dir gs://my-bucket/runs/r1"
    delete = ([DESCRIBE, _tpu_vm("delete", "rl", "--quiet")] if mode == "preempted"
              else [DESCRIBE])  # (nothing left to delete)
    assert _calls_without_tarballs(fake_path) == [
        DESCRIBE, CREATE, *_reinstall(token, fresh),             # up
        SUMMARY, DESCRIBE,                                        # READY: wait
        SUMMARY, DESCRIBE,                                        # PREEMPTED or gone
        *delete, DESCRIBE, CREATE,                                # recreate
        *_reinstall(token, "--resume gs://my-bucket/runs/r1"),   # resume from the bucket
        SUMMARY, DESCRIBE,                                        # READY: wait
        SUMMARY,                                                  # the run has ended
    ]
    assert "gs://my-bucket/runs/r1/summary.json exists: the run has ended (recovered 1 time)" \
        in result.stdout
    assert len(_tarballs(fake_path)) == 2
    assert not any(os.path.exists(os.path.dirname(p)) for p, _, _ in _tarballs(fake_path))


def _preempted_then_resumed(token):
    """The calls of up, a wait, the preemption, the recreate and the resume whose train
    step fails, then the poll that finds the slice READY after that failed recovery."""
    return [
        DESCRIBE, CREATE, *_reinstall(token, "--env CartPole-v1 --run-dir gs://my-bucket/runs/r1"),
        SUMMARY, DESCRIBE,                                        # READY: wait
        SUMMARY, DESCRIBE,                                        # PREEMPTED
        DESCRIBE, _tpu_vm("delete", "rl", "--quiet"), DESCRIBE, CREATE,
        *_reinstall(token, "--resume gs://my-bucket/runs/r1"),
        SUMMARY, DESCRIBE,                                        # READY, recovery failed
    ]


def test_a_recovery_that_fails_on_a_ready_slice_is_tried_again_without_the_delete(fake_path,
                                                                                   tmp_path):
    """The slice came back READY but the resume's train step failed: nothing trains there,
    so the next poll installs and resumes again on that slice (no delete, no create), instead
    of waiting for a summary.json that would never come."""
    result, token = _up_auto_resume(fake_path, tmp_path, mode="preempted", train_fails=1)
    assert _calls_without_tarballs(fake_path) == [
        *_preempted_then_resumed(token),                          # its train step fails
        ALIVE_CHECK,                                              # nothing trains there
        DESCRIBE, *_reinstall(token, "--resume gs://my-bucket/runs/r1"),  # the slice kept
        SUMMARY, DESCRIBE,                                        # READY: wait
        SUMMARY,                                                  # the run has ended
    ]
    assert "# recovery failed (exit status 255); trying again in 0.01 s" in result.stdout
    assert "# slice rl is READY but the last recovery failed: installing again and resuming " \
           "gs://my-bucket/runs/r1" in result.stdout
    assert "the run has ended (recovered 1 time)" in result.stdout


def test_a_failed_recovery_that_did_start_training_counts_as_recovered(fake_path, tmp_path):
    """The resume's train step started rltpu train, then its SSH session dropped (exit 255):
    the next poll finds training running on the READY slice and waits, where installing
    again would be refused at each poll (install will not replace code under a run)."""
    result, token = _up_auto_resume(fake_path, tmp_path, mode="preempted",
                                    train_starts_then_fails=1)
    assert _calls_without_tarballs(fake_path) == [
        *_preempted_then_resumed(token),                          # starts, then exit 255
        ALIVE_CHECK,                                              # training runs: wait
        SUMMARY,                                                  # the run has ended
    ]
    assert "# slice rl is READY and rltpu train runs there: the last recovery started it" \
        in result.stdout
    assert "the run has ended (recovered 1 time)" in result.stdout
    assert "install would replace its code" not in result.stderr


def test_a_partial_pod_start_is_stopped_on_every_host_then_resumed(fake_path, tmp_path):
    """On a pod (4 hosts, a learner process on each) training found on worker 0 alone is a
    partial start: not a recovery. The launcher stops it on every host, then installs and
    resumes again (install would refuse while a host trains)."""
    result, _ = _up_auto_resume(fake_path, tmp_path, accelerator="v5litepod-16",
                                mode="preempted", train_starts_then_fails=1)
    assert "READY and rltpu train runs there" not in result.stdout
    assert ("# slice rl is READY but the last recovery started rltpu train on 1 of its 4 "
            "hosts only: stopping it, installing again and resuming gs://my-bucket/runs/r1"
            ) in result.stdout
    calls = _calls_without_tarballs(fake_path)
    stop = calls.index(_tpu_vm("ssh", "rl", "--worker=all", "--command=" + STOP_TRAINING))
    assert calls[stop - 1] == ALIVE_CHECK                     # training found on 1 host
    assert calls[stop + 1:stop + 3] == [DESCRIBE, ALIVE_CHECK]  # then install's own check
    assert "install would replace its code" not in result.stderr
    assert "the run has ended (recovered 1 time)" in result.stdout


def test_watch_queues_for_a_new_slice_and_resumes(fake_path, tmp_path):
    """watch alone, on a queued spot slice already preempted: the queued resource is deleted
    and requested again (a request that FAILED is not waited on: it is made again at the next
    poll), the launcher waits until it is ACTIVE, then resumes the run."""
    env = _preempting_cloud(tmp_path, fake_path, mode="preempted", tpu="PREEMPTED",
                            qr="ACTIVE", trains=1, preempted=True, qr_fails=1)
    token = str(tmp_path / "keys" / "tok")
    result = launcher(["watch", "--name", "rl", "--accelerator-type", "v5litepod-1", "--spot",
                       "--queued", "--poll-seconds", "0.01", "--token-file", token,
                       "--", "--resume", "gs://my-bucket/runs/r1"], fake_path, **env)
    assert result.returncode == 0, result.stderr + result.stdout
    z = "--zone=us-west4-a"
    describe = _tpu_vm("describe", "rl", "--format=value(state)")
    queued = ["gcloud", "compute", "tpus", "queued-resources"]
    qr_state = [*queued, "describe", "rl", z, "--format=value(state.state)"]
    delete = [*queued, "delete", "rl", z, "--force", "--quiet"]
    create = [*queued, "create", "rl", "--node-id=rl", "--accelerator-type=v5litepod-1",
              "--runtime-version=v2-alpha-tpuv5-lite", "--spot", z]
    assert _calls_without_tarballs(fake_path) == [
        SUMMARY, describe,                                        # PREEMPTED
        qr_state, delete, describe, create, qr_state,             # the request FAILED
        SUMMARY, describe,                                        # gone: try again
        qr_state, delete, describe, create,
        qr_state, qr_state,                                       # WAITING..., then ACTIVE
        *_reinstall(token, "--resume gs://my-bucket/runs/r1")[:-2],
        _reinstall(token, "--resume gs://my-bucket/runs/r1")[-1],  # --resume given: no probe
        SUMMARY, describe, SUMMARY,
    ]


def test_the_yaml_token_recipe_makes_it_private_where_rays_generate_alone_does_not(tmp_path):
    """What the YAML's header says of `ray get-auth-token --generate`, checked with this
    Ray: alone (umask 022) it writes 644 in 755; the recipe gives 600 in 700."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    recipe = next(line[1:].split("#")[0].strip() for line in open(CLUSTER_YAML)
                  if "ray get-auth-token --generate" in line and "umask 077" in line)
    for home, line, modes in ((tmp_path / "alone", "umask 022; ray get-auth-token --generate "
                               ">/dev/null", (0o755, 0o644)),
                              (tmp_path / "recipe", "umask 022; " + recipe, (0o700, 0o600))):
        home.mkdir()
        env = {**os.environ, "HOME": str(home),
               "PATH": f"{os.path.dirname(ray)}{os.pathsep}{os.environ['PATH']}"}
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        result = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        token = home / ".ray" / "auth_token"
        assert len(token.read_text().strip()) >= 32
        assert (stat.S_IMODE(token.parent.stat().st_mode),
                stat.S_IMODE(token.stat().st_mode)) == modes, line


def test_auto_resume_dry_run_prints_the_watch_and_calls_nothing(fake_path):
    result = launcher(["up", "--name", "rl", "--spot", "--bucket", "gs://my-bucket/runs",
                       "--run-name", "r1", "--auto-resume", "--poll-seconds", "60", "--dry-run",
                       "--", "--env", "CartPole-v1"], fake_path)
    assert result.returncode == 0, result.stderr
    assert not fake_path.calls()
    up, watching = result.stdout.split("# watching: every 60 s until the run has ended:\n")
    assert "--run-dir gs://my-bucket/runs/r1" in up
    assert watching.startswith("#   gcloud storage ls gs://my-bucket/runs/r1/summary.json")
    assert "#   if gcloud compute tpus tpu-vm describe rl '--format=value(state)' " \
           "--zone=us-west4-a >/dev/null 2>&1; then gcloud compute tpus tpu-vm delete rl " \
           "--quiet --zone=us-west4-a; fi\n" in watching
    assert all(line.startswith("#") for line in watching.splitlines())
