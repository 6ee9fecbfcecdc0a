"""Test set-up: 8 virtual CPU devices, so the sharded learner can be checked against one."""
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (loopback, no dashboard) shared by the tests that need one."""
    import ray
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_tmpdir():
    """A short directory for RAY_TMPDIR (Ray's socket paths must stay under 107 bytes)."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)
