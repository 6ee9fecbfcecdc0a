"""Test set-up: 8 virtual CPU devices, so the sharded learner can be checked against one."""
import shutil
import tempfile

import jax
import psutil
import pytest

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (loopback, no dashboard) shared by the tests that need one."""
    import ray

    from rltpu.cluster import start_local_ray
    start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_tmpdir():
    """A short directory for RAY_TMPDIR (Ray's socket paths must stay under 107 bytes).
    Afterwards the Ray processes still using it (a kill -9 orphans them: Ray starts them in
    sessions of their own) are ended, found by this folder in their command line."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield path
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(path in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
        except psutil.Error:
            pass
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_dir(ray_tmpdir):
    return ray_tmpdir
