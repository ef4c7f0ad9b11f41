"""Bad input, as a user at the end of a long day gives it (issue 11): every case below is
answered by one sentence on stderr (``error: ...``) that names what to change, exit status
2, no traceback, nothing on stdout, and nothing written: the output path a case names
does not exist afterwards and the input files are unchanged.

The table runs each command in-process (``main([...])`` with capsys); a few cases that used
to end in a traceback run as real subprocesses at the end. Cases already covered elsewhere
(tests/test_cli_nas.py, test_cli_space.py, test_scaling.py, test_scaling_family_cli.py)
are not repeated here.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from nas.cli import main as nas_main
from scaling.cli import main as scaling_main
from space.cli import main as space_main

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"nas": nas_main, "space": space_main, "scaling": scaling_main}

TINY_SPACE = f"base: {TINY}\ndefaults: {{kernel: [3, 5], expand: [1, 2]}}\n"
# Large enough that a search on it raises no warning (every image is used and each candidate
# gets >= 150 steps), so the refusal is the only line on stderr; 8x8 images load in ms.
DATA = "synthetic:1300:2:8"
SEARCH = ["search", "--space", "{d}/tiny.yaml", "--dataset", DATA, "--subset", "0", "--epochs", "5",
          "--threads", "1", "--quiet", "--out", "{out}"]
TRAIN = ["train", "--arch", TINY, "--epochs", "1", "--threads", "1", "--quiet", "--out", "{out}"]
TRAIN_SYN = [*TRAIN, "--dataset", "synthetic:64:4:8"]
COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]
FAMILY = ["family", "--arch", "efficientnet_b0", *COEFFS]
TRAIN_FAMILY = ["family", "--arch", TINY, *COEFFS, "--phi", "1", "--train", "--dataset", DATA, "--quiet",
                "--out", "{out}"]
GRID = ["grid", "--arch", TINY, "--dataset", DATA, "--quiet", "--out", "{out}"]
CALIBRATE = ["calibrate", "--space", "{d}/tiny.yaml", "--dataset", DATA, "--samples", "3",
             "--low", "epochs=1", "--high", "epochs=2", "--quiet", "--out", "{out}"]


def _images(folder: Path, n: int, corrupt: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        if corrupt:
            (folder / f"{i}.png").write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad (and a few good) input files every case reads; never written by a case."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "tiny.yaml").write_text(TINY_SPACE)
    (d / "file.txt").write_text("keep me\n")
    (d / "notrun").mkdir()
    (d / "empty").mkdir()
    # space files
    (d / "unknown_key.yaml").write_text(TINY_SPACE + "colour: blue\n")
    (d / "empty_choices.yaml").write_text(f"base: {TINY}\ndefaults: {{kernel: []}}\n")
    (d / "wrong_type.yaml").write_text(f"base: {TINY}\ndefaults: {{kernel: [three, 5]}}\n")
    (d / "duplicate.yaml").write_text(f"base: {TINY}\ndefaults: {{expand: [2, 2]}}\n")
    (d / "a_list.yaml").write_text("- kernel\n- expand\n")
    (d / "syntax.yaml").write_text(f"base: {TINY}\ndefaults: {{kernel: [3, 5\n")
    (d / "empty.yaml").write_text("")
    (d / "binary.yaml").write_bytes(bytes(range(256)))
    # arch and coefficient files
    (d / "empty.json").write_text("")
    (d / "truncated.json").write_text('{"resolution": 32, "stages": [')
    (d / "binary.json").write_bytes(bytes(range(255, -1, -1)))
    (d / "coefficients.yaml").write_text("alpha: 1.2\nbeta: 1.1\ngamma: 1.15\n")
    # checkpoints that are not checkpoints
    (d / "notes.pt").write_text("this is a text file\n")
    (d / "truncated.pt").write_bytes(b"PK\x03\x04" + bytes(40))
    # image folders
    for cls in ("a", "b"):
        _images(d / "good" / "train" / cls, 3)
        _images(d / "good" / "test" / cls, 2)
        _images(d / "corrupt" / "train" / cls, 2, corrupt=True)
        (d / "no_images" / "train" / cls).mkdir(parents=True)
    _images(d / "one_class" / "train" / "a", 4)
    _images(d / "one_class" / "test" / "a", 2)
    _images(d / "empty_class" / "train" / "a", 4)
    (d / "empty_class" / "train" / "b").mkdir(parents=True)
    _images(d / "test_only_class" / "train" / "a", 3)
    _images(d / "test_only_class" / "train" / "b", 3)
    _images(d / "test_only_class" / "test" / "c", 2)
    _images(d / "no_test" / "train" / "a", 3)
    _images(d / "no_test" / "train" / "b", 3)
    return d


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


NO_CUDA_INDEX = "cuda:99"  # refused both on a CPU-only machine and on one with fewer GPUs

CASES = [
    # ---------------------------------------------------------------- nas, the command line itself
    ("nas-typo-command", "nas", ["trian", "--arch", TINY], "did you mean 'train'"),
    ("nas-no-command", "nas", [], "needs a command"),
    ("train-unknown-flag", "nas", [*TRAIN_SYN, "--epoch-count", "3"], "--epoch-count"),
    ("train-missing-dataset", "nas", TRAIN, "--dataset"),
    ("train-epochs-0", "nas", [*TRAIN_SYN, "--epochs", "0"], "--epochs"),
    ("train-epochs-nan", "nas", [*TRAIN_SYN, "--epochs", "nan"], "--epochs"),
    ("train-batch-size-0", "nas", [*TRAIN_SYN, "--batch-size", "0"], "--batch-size"),
    ("train-subset-negative", "nas", [*TRAIN_SYN, "--subset", "-5"], "--subset"),
    ("train-subset-fraction", "nas", [*TRAIN_SYN, "--subset", "0.5"], "--subset"),
    ("train-threads-0", "nas", [*TRAIN_SYN, "--threads", "0"], "--threads"),
    ("train-recipe-unknown", "nas", [*TRAIN_SYN, "--recipe", "fast"], "--recipe 'fast'"),
    ("train-device-tpu", "nas", [*TRAIN_SYN, "--device", "tpu"], "--device 'tpu'"),
    ("train-device-missing-gpu", "nas", [*TRAIN_SYN, "--device", NO_CUDA_INDEX], "--device"),
    ("train-resolution-0", "nas", [*TRAIN_SYN, "--resolution", "0"], "--resolution"),
    ("train-seed-negative", "nas", [*TRAIN_SYN, "--seed", "-1"], "--seed"),
    ("train-split-seed-text", "nas", [*TRAIN_SYN, "--split-seed", "abc"], "--split-seed"),
    ("train-out-under-a-file", "nas", [*TRAIN_SYN, "--out", "{d}/file.txt/run"], "--out"),
    ("train-val-size-too-large", "nas", [*TRAIN_SYN, "--val-size", "100000"], "--val-size"),
    ("train-subset-larger-than-data", "nas", [*TRAIN_SYN, "--subset", "100000"], "--subset"),
    # ---------------------------------------------------------------- nas train: arch inputs
    ("train-arch-empty-json", "nas", [*TRAIN, "--dataset", DATA, "--arch", "{d}/empty.json"], "empty.json"),
    ("train-arch-truncated-json", "nas", [*TRAIN, "--dataset", DATA, "--arch", "{d}/truncated.json"],
     "not valid JSON"),
    ("train-arch-binary-json", "nas", [*TRAIN, "--dataset", DATA, "--arch", "{d}/binary.json"], "not UTF-8"),
    ("train-arch-missing-layers", "nas", [*TRAIN, "--dataset", DATA, "--arch", "net_r16-stem_c8-mb_k3_c16-head_c32"],
     "missing l<n>"),
    ("train-arch-missing-head", "nas", [*TRAIN, "--dataset", DATA, "--arch", "net_r16-stem_c8-mb_k3_c16_l1"],
     "head"),
    # ---------------------------------------------------------------- nas train: data
    ("train-dataset-unknown", "nas", [*TRAIN, "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    ("train-dataset-is-a-file", "nas", [*TRAIN, "--dataset", "{d}/file.txt"], "not a folder"),
    ("train-dataset-empty-folder", "nas", [*TRAIN, "--dataset", "{d}/empty"], "train does not exist"),
    ("train-class-folders-without-images", "nas", [*TRAIN, "--dataset", "{d}/no_images"], "no image files"),
    ("train-one-class", "nas", [*TRAIN, "--dataset", "{d}/one_class"], "one class"),
    ("train-an-empty-class-folder", "nas", [*TRAIN, "--dataset", "{d}/empty_class"], "class b"),
    ("train-class-only-in-test", "nas", [*TRAIN, "--dataset", "{d}/test_only_class", "--test"], "class c"),
    ("train-test-split-missing", "nas", [*TRAIN, "--dataset", "{d}/no_test", "--test"], "--test"),
    ("train-synthetic-one-class", "nas", [*TRAIN, "--dataset", "synthetic:64:1:8"], "at least 2 classes"),
    ("train-synthetic-garbage", "nas", [*TRAIN, "--dataset", "synthetic:lots"], "synthetic[:N"),
    ("train-cifar-not-there", "nas", [*TRAIN, "--dataset", "cifar10", "--no-download", "--data-root", "{d}/notrun"],
     "CIFAR-10"),
    # ---------------------------------------------------------------- nas search
    ("search-space-unknown-key", "nas", [*SEARCH, "--space", "{d}/unknown_key.yaml"], "'colour'"),
    ("search-space-empty-choices", "nas", [*SEARCH, "--space", "{d}/empty_choices.yaml"], "empty"),
    ("search-space-wrong-type", "nas", [*SEARCH, "--space", "{d}/wrong_type.yaml"], "'three'"),
    ("search-space-duplicate-choice", "nas", [*SEARCH, "--space", "{d}/duplicate.yaml"], "listed twice"),
    ("search-space-not-a-mapping", "nas", [*SEARCH, "--space", "{d}/a_list.yaml"], "must be a mapping"),
    ("search-space-yaml-syntax", "nas", [*SEARCH, "--space", "{d}/syntax.yaml"], "not valid YAML"),
    ("search-space-binary", "nas", [*SEARCH, "--space", "{d}/binary.yaml"], "not UTF-8"),
    ("search-space-empty-file", "nas", [*SEARCH, "--space", "{d}/empty.yaml"], "must be a mapping"),
    ("search-macs-budget-nothing-fits", "nas", [*SEARCH, "--max-macs", "1k"], "--max-macs"),
    ("search-params-budget-nothing-fits", "nas", [*SEARCH, "--max-params", "10"], "--max-params"),
    ("search-budget-garbage-units", "nas", [*SEARCH, "--max-macs", "2X"], "--max-macs"),
    ("search-trials-0", "nas", [*SEARCH, "--trials", "0"], "--trials"),
    ("search-trials-negative", "nas", [*SEARCH, "--trials", "-3"], "--trials"),
    ("search-workers-0", "nas", [*SEARCH, "--workers", "0"], "--workers"),
    ("search-epochs-0", "nas", [*SEARCH, "--epochs", "0"], "--epochs"),
    ("search-sampler-unknown", "nas", [*SEARCH, "--sampler", "tpee"], "did you mean 'tpe'"),
    ("search-mode-unknown", "nas", [*SEARCH, "--mode", "best"], "--mode"),
    ("search-budget-unknown", "nas", [*SEARCH, "--budget", "huge"], "--budget"),
    ("search-device-tpu", "nas", [*SEARCH, "--device", "tpu"], "--device"),
    ("search-device-missing-gpu", "nas", [*SEARCH, "--device", NO_CUDA_INDEX], "--device"),
    ("search-target-negative-as-flag", "nas", [*SEARCH, "--target-macs", "-3M"], "--target-macs=VALUE"),
    ("search-objectives-unknown", "nas", [*SEARCH, "--mode", "pareto", "--objectives", "acc,flops"], "'flops'"),
    ("search-enqueue-empty-json", "nas", [*SEARCH, "--enqueue", "{d}/empty.json"], "--enqueue"),
    ("search-unknown-space", "nas", [*SEARCH, "--space", "mnasnet_cifa"], "unknown search space"),
    ("search-out-is-a-file", "nas", [*SEARCH, "--out", "{d}/file.txt"], "--out"),
    ("search-storage-unreachable-postgres", "nas",
     [*SEARCH, "--storage", "postgresql+psycopg://u@127.0.0.1:1/db"], "--storage"),
    ("search-storage-sqlite-no-such-dir", "nas", [*SEARCH, "--storage", "sqlite:////no/such/dir/x.db"],
     "/no/such/dir does not exist"),
    ("search-storage-sqlite-is-a-folder", "nas", [*SEARCH, "--storage", "sqlite:///{d}/notrun"], "is a folder"),
    ("search-storage-sqlite-not-a-database", "nas", [*SEARCH, "--storage", "sqlite:///{d}/file.txt"],
     "not a SQLite database"),
    ("search-storage-not-a-url", "nas", [*SEARCH, "--storage", "{d}/study.db"], "--storage"),
    ("search-subset-larger-than-data", "nas", [*SEARCH, "--subset", "100000"], "--subset"),
    ("grid-subset-larger-than-data", "scaling", [*GRID, "--subset", "100000"], "--subset"),
    ("family-train-subset-larger-than-data", "scaling", [*TRAIN_FAMILY, "--subset", "100000"], "--subset"),
    # the server is asked before the data is read: the storage is what the sentence names
    ("search-storage-unreachable-before-data", "nas",
     [*SEARCH, "--dataset", "{d}/no-such-data", "--storage", "postgresql+psycopg://u@127.0.0.1:1/db"], "--storage"),
    # ---------------------------------------------------------------- nas best / pick / report / eval / export
    ("best-not-a-study-run", "nas", ["best", "--study", "s", "--out", "{d}/notrun"], "no study database"),
    ("pick-not-a-study-run", "nas", ["pick", "--study", "s", "--knee", "--out", "{d}/notrun"], "no study database"),
    ("report-not-a-study-run", "nas", ["report", "--study", "s", "--out", "{d}/notrun"], "no study database"),
    ("report-storage-not-a-database", "nas", ["report", "--study", "s", "--storage", "sqlite:///{d}/file.txt",
                                              "--out", "{out}"], "--storage"),
    ("pick-two-rules", "nas", ["pick", "--study", "s", "--knee", "--trial", "2", "--out", "{d}/notrun"], "one rule"),
    ("eval-checkpoint-is-text", "nas", ["eval", "--checkpoint", "{d}/notes.pt", "--out", "{out}"],
     "cannot be read as a checkpoint"),
    ("eval-checkpoint-truncated", "nas", ["eval", "--checkpoint", "{d}/truncated.pt", "--out", "{out}"],
     "cannot be read as a checkpoint"),
    ("eval-checkpoint-is-a-folder", "nas", ["eval", "--checkpoint", "{d}/notrun", "--out", "{out}"], "folder"),
    ("export-format-unknown", "nas", ["export", "--arch", TINY, "--format", "tflite", "--out", "{out}/m.onnx"],
     "--format 'tflite'"),
    ("export-out-under-a-file", "nas", ["export", "--arch", TINY, "--format", "torchscript",
                                        "--out", "{d}/file.txt/m.pt"], "--out"),
    ("calibrate-device-missing-gpu", "nas", [*CALIBRATE, "--device", NO_CUDA_INDEX], "--device"),
    ("calibrate-fidelity-garbage", "nas", [*CALIBRATE, "--low", "quick"], "--low"),
    ("calibrate-fidelity-unknown-key", "nas", [*CALIBRATE, "--high", "epoch=2"], "'epoch'"),
    # ---------------------------------------------------------------- space
    ("space-typo-command", "space", ["infoo", "efficientnet_b0"], "did you mean 'info'"),
    ("space-sample-n-text", "space", ["sample", "{d}/tiny.yaml", "-n", "five"], "-n"),
    ("space-sample-num-classes-0", "space", ["sample", "{d}/tiny.yaml", "--num-classes", "0"], "--num-classes"),
    ("space-sample-seed-negative", "space", ["sample", "{d}/tiny.yaml", "--seed", "-1"], "--seed"),
    ("space-sample-empty-name", "space", ["sample", ""], "a shipped name or a file path"),
    ("space-sample-a-folder", "space", ["sample", "{d}/notrun"], "notrun"),
    ("space-sample-unknown-key", "space", ["sample", "{d}/unknown_key.yaml"], "'colour'"),
    ("space-sample-duplicate-choice", "space", ["sample", "{d}/duplicate.yaml"], "listed twice"),
    ("space-sample-yaml-syntax", "space", ["sample", "{d}/syntax.yaml"], "not valid YAML"),
    ("space-sample-binary", "space", ["sample", "{d}/binary.yaml"], "not UTF-8"),
    ("space-info-resolution-0", "space", ["info", "efficientnet_b0", "--resolution", "0"], "--resolution"),
    ("space-info-empty-json", "space", ["info", "{d}/empty.json"], "empty.json"),
    # ---------------------------------------------------------------- scaling
    ("scaling-typo-command", "scaling", ["scal", "efficientnet_b0"], "did you mean 'scale'"),
    ("scaling-unknown-flag", "scaling", [*FAMILY, "--phi", "1", "--phy", "2"], "--phy"),
    ("target-garbage-units", "scaling", ["target", "--arch", "efficientnet_b0", *COEFFS, "--macs", "2X"], "--macs"),
    ("target-nan", "scaling", ["target", "--arch", "efficientnet_b0", *COEFFS, "--macs", "nanG"], "--macs"),
    ("family-phi-open-range", "scaling", [*FAMILY, "--phi", "1.."], "--phi"),
    ("family-phi-no-start", "scaling", [*FAMILY, "--phi", "..3"], "--phi"),
    ("family-phi-zero-step", "scaling", [*FAMILY, "--phi", "1..3:0"], "step"),
    ("family-phi-divide-by-zero", "scaling", [*FAMILY, "--phi", "1/0"], "--phi"),
    ("family-phi-word", "scaling", [*FAMILY, "--phi", "one"], "--phi"),
    ("family-coefficients-empty", "scaling", ["family", "--arch", "efficientnet_b0", "--coefficients",
                                              "{d}/empty.json", "--phi", "1"], "not valid JSON"),
    ("family-coefficients-yaml", "scaling", ["family", "--arch", "efficientnet_b0", "--coefficients",
                                             "{d}/coefficients.yaml", "--phi", "1"], "not valid JSON"),
    ("family-coefficients-folder", "scaling", ["family", "--arch", "efficientnet_b0", "--coefficients",
                                               "{d}/notrun", "--phi", "1"], "folder"),
    ("family-out-under-a-file", "scaling", [*FAMILY, "--phi", "1", "--out", "{d}/file.txt/fam"], "--out"),
    ("family-train-without-dataset", "scaling", [t for t in TRAIN_FAMILY if t not in ("--dataset", DATA)],
     "--dataset"),
    ("family-train-seeds-0", "scaling", [*TRAIN_FAMILY, "--seeds", "0"], "--seeds"),
    ("family-train-device-missing-gpu", "scaling", [*TRAIN_FAMILY, "--device", NO_CUDA_INDEX], "--device"),
    ("family-train-storage-no-such-dir", "scaling", [*TRAIN_FAMILY, "--storage", "sqlite:////no/such/dir/x.db"],
     "--storage"),
    ("family-train-unknown-dataset", "scaling", [*TRAIN_FAMILY, "--dataset", "imagenet"], "imagenet"),
    ("grid-epochs-negative", "scaling", [*GRID, "--epochs", "-1"], "--epochs"),
    ("grid-workers-0", "scaling", [*GRID, "--workers", "0"], "--workers"),
    ("grid-device-tpu", "scaling", [*GRID, "--device", "tpu"], "--device"),
    ("grid-storage-no-such-dir", "scaling", [*GRID, "--storage", "sqlite:////no/such/dir/x.db"], "--storage"),
    ("grid-empty-dataset-folder", "scaling", [*GRID, "--dataset", "{d}/empty"], "train does not exist"),
    ("compare-shrinking-factor", "scaling", ["compare", "--arch", TINY, "--dataset", DATA, "--macs-factor", "0.5",
                                             "--out", "{out}"], "--macs-factor"),
    ("compare-steps-0", "scaling", ["compare", "--arch", TINY, "--dataset", DATA, "--macs-factor", "2",
                                    "--steps", "0", "--out", "{out}"], "--steps"),
]


@pytest.mark.parametrize("prog, argv, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(prog, argv, needle, files, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setenv("EFFNAS_DATA", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a default output folder would land here
    out = tmp_path / "out"
    argv = [a.replace("{d}", str(files)).replace("{out}", str(out)) for a in argv]
    before = _snapshot(files)
    code = MAINS[prog](argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists(), sorted(os.listdir(out))
    assert sorted(os.listdir(tmp_path)) in ([], ["cache"])  # no runs/ or other output in the working folder
    assert _snapshot(files) == before
    assert not Path("/no/such").exists()


def test_a_folder_of_corrupt_images_is_refused_after_its_decode_notice(files, tmp_path, capsys):
    """The one case with a second line: the decoding notice (progress, printed before the
    images are known to be unreadable) precedes the refusal."""
    out = tmp_path / "out"
    code = nas_main([*TRAIN[:-2], "--out", str(out), "--dataset", str(files / "corrupt"),
                     "--data-root", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: ") and "no readable image" in lines[-1]
    assert [line for line in lines if not line.startswith("decoding ")] == [lines[-1]]
    assert not out.exists()


# ---------------------------------------------------------------- an existing study, other settings

STUDY = ["--space", "{d}/tiny.yaml", "--dataset", DATA, "--subset", "0", "--epochs", "5", "--threads", "1",
         "--quiet", "--study", "s", "--mode", "pareto", "--objectives", "acc,macs", "--trials", "1",
         "--early-stop", "none"]


@pytest.fixture(scope="module")
def study_run(files, tmp_path_factory):
    """One finished one-trial Pareto study ``s`` (acc, MACs) on the tiny space."""
    base = tmp_path_factory.mktemp("study")
    argv = ["search", *[a.replace("{d}", str(files)) for a in STUDY], "--out", str(base)]
    assert nas_main(argv) == 0
    return base


def _trials(base: Path) -> int:
    import optuna

    url = f"sqlite:///{base / 'runs' / 's' / 'study.db'}"
    return len(optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False))


@pytest.mark.parametrize("change, needle", [
    (["--objectives", "acc,params"], "--objectives"),
    (["--space", "{d}/other.yaml"], "--space"),
    (["--mode", "reward", "--objectives", None], "--mode"),
], ids=["other-objectives", "other-space", "other-mode"])
def test_an_existing_study_with_other_settings_is_refused_not_mixed(change, needle, files, study_run, capsys):
    (files / "other.yaml").write_text(f"base: {TINY}\ndefaults: {{kernel: [3, 5, 7]}}\n")
    argv = ["search", *[a.replace("{d}", str(files)) for a in STUDY], "--out", str(study_run)]
    for flag, value in zip(change[::2], change[1::2]):
        i = argv.index(flag)
        if value is None:
            del argv[i:i + 2]
        else:
            argv[i + 1] = value.replace("{d}", str(files))
    run_dir = study_run / "runs" / "s"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.startswith("study.db")}
    capsys.readouterr()
    assert nas_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: study s was made with other settings")
    assert needle in err and "Traceback" not in err
    assert _trials(study_run) == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.startswith("study.db")} == before


def test_a_refused_study_is_the_only_line_even_when_the_settings_warn(files, tmp_path, capsys):
    # 1 epoch of a small dataset warns that candidates train too few steps; a refusal that
    # comes after that check (a study made with other settings) must still be the one line.
    small = ["search", "--space", str(files / "tiny.yaml"), "--dataset", "synthetic:240:4:16", "--epochs", "1",
             "--threads", "1", "--quiet", "--study", "w", "--trials", "1", "--early-stop", "none",
             "--mode", "pareto", "--objectives", "acc,macs", "--out", str(tmp_path)]
    assert nas_main(small) == 0
    assert "trains only" in capsys.readouterr().err
    small[small.index("acc,macs")] = "acc,params"
    assert nas_main(small) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: study w was made with other settings")


# ---------------------------------------------------------------- no traceback, as real processes

@pytest.mark.parametrize("argv, needle", [
    (["nas", "train", "--arch", TINY, "--dataset", "synthetic:64:4:8", "--device", "tpu", "--out", "{out}"],
     "--device 'tpu'"),
    (["nas", "train", "--arch", TINY, "--dataset", "synthetic:64:4:8", "--out", "/proc/no-such/run"], "--out"),
    (["nas", "export", "--arch", TINY, "--format", "torchscript", "--out", "{d}/file.txt/m.pt"], "--out"),
    (["space", "sample", "mnasnet_cifar", "--seed", "-1"], "--seed"),
    (["scaling", "grid", "--arch", TINY, "--dataset", DATA, "--storage", "sqlite:////no/such/dir/x.db",
      "--out", "{out}"], "--storage"),
], ids=["device-tpu", "out-uncreatable", "export-out-under-file", "sample-negative-seed", "grid-storage-no-dir"])
def test_former_tracebacks_as_processes(argv, needle, files, tmp_path):
    if argv[-2:] == ["--out", "/proc/no-such/run"] and not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    out = tmp_path / "out"
    argv = [a.replace("{d}", str(files)).replace("{out}", str(out)) for a in argv]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "EFFNAS_DATA": str(tmp_path / "cache"), "PYTHONPATH": path})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ") and needle in proc.stderr and proc.stdout == ""
    assert not out.exists() and not Path("/no/such").exists()
