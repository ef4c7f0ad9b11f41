"""`nas search` on a real PostgreSQL server (Optuna's RDB storage through psycopg 3).

Runs when ``EFFNAS_TEST_POSTGRES_URL`` names a database the tests may use
(``postgresql+psycopg://user:password@127.0.0.1:PORT/db``; `.ci/run` starts a throwaway
server with ``scripts/local_postgres.sh`` and sets it); skipped, with that reason, when it is
unset. Every test uses a study of its own name and deletes it at the end. The SIGKILL test
on PostgreSQL is in ``test_storage_faults.py``, next to the same test on SQLite.
"""

import json
import os
from urllib.parse import quote

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main as nas_main
from nas.search.runner import run_search
from nas.search.settings import SearchSettings
from nas.search.storage_url import password_of, redact
from test_storage_faults import COUNTED, DATA, NO_POSTGRES, POSTGRES_URL, settings_dict, unique_study

pytestmark = [pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES),
              pytest.mark.filterwarnings("ignore:each candidate trains only:UserWarning")]


@pytest.fixture
def url():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    return POSTGRES_URL


@pytest.fixture
def study_name(url):
    name = unique_study("pg")
    yield name
    try:
        optuna.delete_study(study_name=name, storage=url)
    except KeyError:  # the test never made it
        pass


def test_a_study_on_postgresql_completes_and_resumes(url, space_file, tmp_path, study_name):
    d = settings_dict(space_file, tmp_path, trials=2, storage=url, study=study_name)
    first = run_search(SearchSettings(**d), progress=False)
    assert first.counts["counted"] == 2
    resumed = run_search(SearchSettings(**{**d, "trials": 3}), progress=False)
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in COUNTED for t in trials) and resumed.counts["counted"] == 3
    assert len({t.user_attrs["arch"] for t in trials if not t.user_attrs.get("duplicate_of")}) >= 2
    assert resumed.storage == redact(url)


def test_two_worker_processes_on_postgresql_finish_the_count_without_lost_or_duplicated_trials(
        url, space_file, tmp_path, study_name):
    d = settings_dict(space_file, tmp_path, trials=4, workers=2, storage=url, study=study_name)
    summary = run_search(SearchSettings(**d), progress=False)
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    done = [t for t in trials if t.state in COUNTED]
    assert len(done) == 4 and summary.counts["counted"] == 4
    assert len({t.number for t in trials}) == len(trials)
    for t in trials:  # anything else lost the race for the last trial and never trained
        if t not in done:
            assert t.state == TrialState.FAIL and t.user_attrs.get("surplus") and "arch" not in t.user_attrs
    log = (tmp_path / "out" / "runs" / study_name / "search.log").read_text().splitlines()
    assert sum(" COMPLETE " in line for line in log) == 4


def test_no_password_is_printed_logged_or_written(url, space_file, tmp_path, study_name, capfd):
    """`nas search`, `nas best` and `nas report`: the password is in no output, no file of
    the run folder and no study or trial attribute. (Worker processes get their settings,
    URL included, on stdin: see the two-worker test above.)"""
    password = password_of(url) or os.environ.get("PGPASSWORD")
    if not password:
        pytest.skip("EFFNAS_TEST_POSTGRES_URL has no password (and PGPASSWORD is unset): nothing to hide")
    out = tmp_path / "out"
    common = ["--storage", url, "--study", study_name, "--out", str(out)]
    code = nas_main(["search", "--space", str(space_file), "--dataset", DATA, "--trials", "2", "--epochs", "1",
                     "--subset", "160", "--val-size", "40", "--threads", "1",
                     "--early-stop", "none", *common])
    assert code == 0
    assert nas_main(["best", "--json", *common]) == 0
    assert nas_main(["report", *common]) == 0
    shown = "".join(capfd.readouterr())
    assert study_name in shown and redact(url) in shown  # the URL is shown, masked

    forms = {password, quote(password, safe=""), quote(password)}
    for form in forms:
        assert form not in shown
    files = [p for p in (out / "runs" / study_name).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"summary.txt", "trials.csv", "baseline.json", "search.log"} <= names
    for path in files:
        data = path.read_bytes()
        for form in forms:
            assert form.encode() not in data, f"the password is in {path}"
    study = optuna.load_study(study_name=study_name, storage=url)
    attrs = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id),
                        [(t.user_attrs, t.system_attrs) for t in study.get_trials()]], default=str)
    for form in forms:
        assert form not in attrs
