"""The cluster side: cluster.yaml and deploy/rayjob.yaml as Ray and KubeRay read them, and the job
path for real, `ray job submit --working-dir` of ray_jobs.train and ray_jobs.tune to a two-node Ray
cluster started here with `ray start` (loopback dashboard, token authentication on).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import ray
import yaml

from cvcore.model import read_meta
from cvcore.runlog import read_history
from ray_jobs import tune

pytestmark = pytest.mark.xdist_group("ray")  # Ray's tests run one after another: tests/conftest.py

REPO = Path(__file__).resolve().parents[1]
TARGETS = "perspective_score_hood,perspective_score_backdoor_left"


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_matches_the_launcher_schema_of_the_installed_ray(cluster_config):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cluster_config, schema)


def test_cluster_yaml_passes_the_checks_ray_up_makes_before_contacting_aws(cluster_config):
    """`ray up` fills in the provider's defaults, then validates (node types, worker bounds, docker)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster_config))


def test_cluster_yaml_layout_access_and_install(cluster_config):
    """A CPU-0 head, GPU workers from zero, CPU workers for Ray Data; token auth, nothing public but
    SSH, a loopback dashboard; the synced repository installed; S3 checkpoints documented."""
    types = cluster_config["available_node_types"]
    assert types[cluster_config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {name: spec for name, spec in types.items() if name != cluster_config["head_node_type"]}
    gpu = [spec for spec in workers.values() if spec["resources"].get("GPU", 0) >= 1]
    cpu = [spec for spec in workers.values() if spec["resources"].get("CPU", 0) >= 1 and "GPU" not in spec["resources"]]
    assert gpu and all(spec["min_workers"] == 0 < spec["max_workers"] for spec in gpu)
    assert cpu, "a CPU worker type for Ray Data"
    assert cluster_config["provider"]["security_group"]["IpPermissions"] == []  # only Ray's SSH rule from outside
    head_start = " ".join(cluster_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token ray start" in cluster_config[commands][-1]
        assert 'eval "$(python -m serve.edge)"' in cluster_config[commands][-1]  # Serve's HAProxy ingress, edge rules
    assert cluster_config["file_mounts"]["~/carpart"] == "."
    assert "pip install -q -e ~/carpart" in cluster_config["setup_commands"]
    assert "--storage s3://" in (REPO / "cluster.yaml").read_text()


def test_rayjob_manifest_names_what_kuberay_needs():
    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m ray_jobs.train ") and "--storage s3://" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    ray_cluster = spec["rayClusterSpec"]
    assert ray_cluster["rayVersion"] == ray.__version__ and ray_cluster["authOptions"] == {"mode": "token"}
    assert ray_cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {group["groupName"]: group for group in ray_cluster["workerGroupSpecs"]}
    [gpu_container] = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1 and groups["gpu"]["minReplicas"] == 0


# ---------------------------------------------------------------- a real two-node cluster


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open together, so no two are the same)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def processes_under(marker: str) -> set[int]:
    """PIDs whose command line names `marker`, and all their descendants (Ray's workers rename
    themselves, ray::RayTrainWorker, so they are found through their raylet)."""
    parents, found = {}, set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if marker.encode() in cmdline and int(entry.name) != os.getpid():
                found.add(int(entry.name))
    while children := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= children
    return found


class LocalCluster:
    """A head and a worker node, one CPU each, started with `ray start` on this machine.

    Everything it starts lives under its own temp dir and has its own token (RAY_AUTH_TOKEN_PATH),
    so stopping it kills exactly its processes: `ray stop` would stop every Ray instance here.
    Ray gives both nodes the machine's address, but everything this side talks to is on loopback.
    """

    OBJECT_STORE_BYTES = 300_000_000

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 bytes
        self.gcs_port, dashboard_port, *self.agent_ports, self.client_port = free_ports(5)
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        token = Path(self.temp_dir) / "auth_token"
        token.write_text(secrets.token_hex(32))
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token),
            RAY_API_SERVER_ADDRESS=self.dashboard,  # where Train's placement-group cleaner finds the State API
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # `python` in a job entrypoint is this venv's
        )
        self.env = env

    def ray(self, *args: str, timeout: float = 120) -> str:
        """Run the `ray` CLI as a client of this cluster: its stdout, or an AssertionError with both streams.
        (`ray job submit` exits 1 when the job fails.)"""
        done = subprocess.run(["ray", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"ray {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done.stdout

    def start(self) -> None:
        common = ["--num-cpus", "1", "--object-store-memory", str(self.OBJECT_STORE_BYTES), "--disable-usage-stats"]
        self.ray(
            "start", "--head", *common, "--port", str(self.gcs_port), "--temp-dir", f"{self.temp_dir}/head",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", self.dashboard.rsplit(":", 1)[1],
            "--dashboard-agent-listen-port", str(self.agent_ports[0]), "--ray-client-server-port", str(self.client_port),
        )
        # Its own temp dir, as on another machine: two nodes sharing one would share runtime_resources/,
        # and the worker node would delete a job's working_dir under the driver on the head.
        self.ray(
            "start", "--address", f"127.0.0.1:{self.gcs_port}", *common, "--temp-dir", f"{self.temp_dir}/worker",
            "--dashboard-agent-listen-port", str(self.agent_ports[1]),
        )
        nodes = self.list("nodes", "state=ALIVE")
        assert len(nodes) == 2, f"expected 2 live nodes, got {nodes}"

    def list(self, resource: str, *filters: str) -> list[dict]:
        """`ray list RESOURCE --filter ...` through the State API, as dicts."""
        args = ["list", resource, "--address", self.dashboard, "--format", "json", "--detail", "--limit", "1000"]
        return json.loads(self.ray(*args, *[arg for f in filters for arg in ("--filter", f)]))

    def submit(self, *entrypoint: str, timeout: float) -> None:
        """`ray job submit --working-dir REPO -- ENTRYPOINT`, waiting for the job to succeed."""
        self.ray("job", "submit", "--address", self.dashboard, "--working-dir", str(REPO), "--", *entrypoint, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM to this cluster's processes, SIGKILL to what is left after 3 s (the GCS takes its time)."""
        pids = processes_under(self.temp_dir)
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while (pids := {pid for pid in pids if Path(f"/proc/{pid}").exists()}) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not pids, f"processes of the cluster still running: {sorted(pids)}"


@pytest.fixture(scope="module")
def cluster():
    if sys.platform != "linux":
        pytest.skip("multi-node Ray on one machine needs Linux")
    local = LocalCluster()
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.mark.slow
def test_train_job_submitted_to_a_two_node_cluster(cluster, tiny_dataset, tmp_path):
    output = tmp_path / "train"  # one machine, so the nodes share this path; a real cluster needs --storage s3://
    cluster.submit(
        "python", "-m", "ray_jobs.train", "--data", str(tiny_dataset), "--output", str(output), "--targets", TARGETS,
        "--epochs", "2", "--image-size", "32", "--batch-size", "8", "--backbone", "resnet10t",
        "--num-workers", "2", "--cpus-per-worker", "1",
        timeout=300,
    )
    assert [h["epoch"] for h in read_history(output)] == [1, 2]
    meta = read_meta(output / "best")
    assert meta["backbone"] == "resnet10t" and meta["image_size"] == 32 and meta["targets"] == TARGETS.split(",")
    workers = cluster.list("actors", "class_name=RayTrainWorker")
    assert len({worker["node_id"] for worker in workers}) == 2, "the two workers should have run on the two nodes"


@pytest.mark.slow
def test_tune_job_submitted_to_a_two_node_cluster(cluster, tiny_dataset, tmp_path):
    space = tmp_path / "space.yaml"  # outside the working dir: passed by absolute path
    space.write_text(yaml.safe_dump({
        "search": {"seed": 0},
        "space": {"backbone": "resnet10t", "image_size": 32, "batch_size": 8, "aux_columns": [], "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    }))
    output = tmp_path / "tune"
    cluster.submit(
        "python", "-m", "ray_jobs.tune", "--data", str(tiny_dataset), "--output", str(output), "--config", str(space),
        "--targets", TARGETS, "--num-samples", "2", "--max-epochs", "1", "--cpus-per-worker", "1",
        timeout=300,
    )
    assert len(pd.read_csv(output / tune.SUMMARY_FILE)) == 2
    assert read_meta(output / "best")["targets"] == TARGETS.split(",")
