"""optuna-dashboard (the ``dashboard`` extra) serves a study that ``nas search`` stored.

A tiny real search on synthetic data writes its SQLite study; optuna-dashboard runs as a
subprocess on a free local port, and its JSON API must list the study and return every
trial with the user attributes the search stored (``arch``, ``macs``, the per-epoch
accuracy list). The oracle is the storage itself, read independently with
`optuna.load_study`; the comparison uses the dashboard's own encoding of attributes
(strings as they are, numbers through ``str``, anything else as JSON).
"""

import json
import numbers
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest

from nas.search.early_stop import EPOCH_ACC_ATTR
from nas.search.runner import run_search
from nas.search.settings import SearchSettings

pytest.importorskip(
    "optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')"
)

from conftest import TINY_SPACE_BASE as BASE, TINY_SPACE_YAML as SPACE_YAML  # noqa: E402
STARTUP_TIMEOUT_S = 30.0

# Runs the distribution's own console script (``optuna-dashboard``) with this interpreter;
# the package has no ``__main__``, so ``python -m optuna_dashboard`` does not work.
LAUNCH = (
    "import sys\n"
    "from importlib.metadata import entry_points\n"
    "(ep,) = entry_points(group='console_scripts', name='optuna-dashboard')\n"
    "sys.argv[0] = 'optuna-dashboard'\n"
    "sys.exit(ep.load()())\n"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read().decode())


def _wait_until_up(proc: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"optuna-dashboard exited with {proc.returncode}:\n{log.read_text()}")
        try:
            _get_json(url)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"optuna-dashboard did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _dashboard_attr(value) -> str:
    """optuna-dashboard's serialisation of one attribute value (``serialize_attrs``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):  # bool included: str(True) == "True"
        return str(value)
    return json.dumps(value)[:1024]  # longer JSON is cut to 1,024 characters


@pytest.fixture
def searched_study(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE_YAML)
    settings = SearchSettings(
        space=str(space),
        out=str(tmp_path / "out"),
        dataset="synthetic:240:4:16",
        epochs=2,
        subset=160,
        val_size=40,
        num_threads=1,
        trials=2,
    )
    summary = run_search(settings, progress=False)
    return summary.storage, summary.study


# The tiny search is far below the proxy's step count; that warning is not this test's subject.
@pytest.mark.filterwarnings("ignore:each candidate trains only:UserWarning")
def test_dashboard_serves_the_search_study_and_its_trial_attributes(searched_study, tmp_path):
    storage_url, study_name = searched_study
    assert storage_url.startswith("sqlite:///")
    stored = optuna.load_study(study_name=study_name, storage=storage_url)
    stored_trials = {t.number: t for t in stored.get_trials()}
    assert len(stored_trials) >= 2
    for t in stored_trials.values():  # the oracle holds what the search promises
        assert isinstance(t.user_attrs["arch"], str) and t.user_attrs["arch"].startswith("net_")
        assert t.user_attrs["macs"] > 0
        assert len(t.user_attrs[EPOCH_ACC_ATTR]) >= 1

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, storage_url, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until_up(proc, f"{base}/api/meta", log)

        listed = _get_json(f"{base}/api/studies")["study_summaries"]
        (summary,) = [s for s in listed if s["study_name"] == study_name]
        assert summary["study_id"] == stored._study_id
        assert summary["directions"] == [d.name.lower() for d in stored.directions]

        detail = _get_json(f"{base}/api/studies/{summary['study_id']}")
        assert detail["name"] == study_name
        served = {t["number"]: t for t in detail["trials"]}
        assert served.keys() == stored_trials.keys()
        for number, trial in stored_trials.items():
            got = served[number]
            assert got["state"] == trial.state.name.capitalize()
            attrs = {a["key"]: a["value"] for a in got["user_attrs"]}
            assert attrs.keys() == trial.user_attrs.keys()
            for key, value in trial.user_attrs.items():
                assert attrs[key] == _dashboard_attr(value), key
            # The three attributes a reader of the dashboard looks for, decoded back.
            assert attrs["arch"] == trial.user_attrs["arch"]
            assert float(attrs["macs"]) == trial.user_attrs["macs"]
            epoch_acc = json.loads(attrs[EPOCH_ACC_ATTR])
            assert epoch_acc == pytest.approx(trial.user_attrs[EPOCH_ACC_ATTR])
            if trial.values is not None:
                assert got["values"] == pytest.approx(trial.values)
    finally:
        _stop(proc)
