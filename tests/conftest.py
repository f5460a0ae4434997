"""Shared fixtures: small synthetic data sets and one Ray session per module that asks for it.

The suite runs in two pytest-xdist workers (`addopts` in pyproject.toml). Modules that start Ray, Serve
or a cluster are marked `xdist_group("ray")` and run one after another in one worker: two Ray
instances on 2 cores would slow each other's timed tests. The Ray-free tests run in the other worker,
on the CPU that Ray's start-ups and polls leave idle. `pytest -n 0` runs everything in one process.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from cvcore.synth import write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """80 rendered cars in the customer's format, small images, plus one corrupt JPEG with a row."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    csv = write_dataset(root, 80, seed=7, workers=1, progress=False, extended=True, image_size=(160, 120))
    (root / "imgs" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    header = csv.read_text().splitlines()[0]
    row = ["corrupt.jpg"] + ["0.5"] * (len(header.split(",")) - 1)
    with csv.open("a") as f:
        f.write(",".join(row) + "\n")
    return root


def _pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free loopback port (other Ray instances may hold the usual ones)."""
    return _pick_free_port


@pytest.fixture(scope="module")
def ray_session():
    """A fresh 2-CPU Ray for the module (address="local": never someone else's), dashboard on a free port.

    The dashboard's State API must be on where Tune drives Train. Train's placement-group cleaner
    finds it through RAY_API_SERVER_ADDRESS, else by scanning the machine, which goes wrong when
    other Ray instances run here: the worker groups of stopped trials are never freed and later
    trials hang. Workers inherit the variable from the raylet, which inherits it from this process.
    """
    import ray

    port = _pick_free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{port}")
        patch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # as ray_jobs.common.init_ray sets it for a local Ray
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, configure_logging=False)
        yield ray
        ray.shutdown()


RAY_FORWARDED_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet|[\w:.-]+ pid=\d+[^)]*)\)(\x1b\[0m)? ")
"""A line Ray's log monitor copies to this driver from another process of the module's Ray session,
"(raylet) ..." or "(SomeActor pid=N) ...": it may land between a command's own lines at any time."""


@pytest.fixture
def cli_error(capsys):
    """Run a command's `main` on argv as a user would; return its one-line error (exit 2, no traceback)."""
    from cvcore.config import run

    def fails(main, argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run(main, argv)
        err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True) if not RAY_FORWARDED_LINE.match(line))
        assert exit_info.value.code == 2 and err.startswith("error: ") and "Traceback" not in err
        return err

    return fails
