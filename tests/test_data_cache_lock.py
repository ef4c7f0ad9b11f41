"""The image-folder decode cache shared by concurrent processes: one decodes, the others
wait for it and read its cache; what they say on stderr."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nas.data.folder as folder_mod
from nas.data import load_dataset

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the decode lock needs fcntl")

CLASSES = ("ant", "bee")


def write_folder(root: Path, per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Random 6x6 PNGs ``root/train/<class>/<i>.png``; returns the expected (images, labels)
    in the documented order (class folders sorted, then file names)."""
    rng = np.random.default_rng(7)
    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(per_class):
            array = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / "train" / cls / f"{i}.png")
            images.append(array.transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


# Each child counts its own decodes (a marker file) and holds the decode for half a second so
# that the others arrive while it runs; all start loading at the same moment ("go").
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    import nas.data.folder as folder_mod
    from nas.data import load_dataset

    folder, cache_root, work, name = sys.argv[1:5]
    work = Path(work)
    real_decode = folder_mod._decode_folder

    def counting_decode(*args, **kwargs):
        (work / f"decoded-{name}").touch()
        time.sleep(0.5)
        return real_decode(*args, **kwargs)

    folder_mod._decode_folder = counting_decode
    (work / f"ready-{name}").touch()
    deadline = time.monotonic() + 120
    while not (work / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    data = load_dataset(folder, root=cache_root)
    np.save(work / f"images-{name}.npy", data.images.numpy())
    np.save(work / f"labels-{name}.npy", data.labels.numpy())
    """
)


def test_concurrent_processes_decode_once_and_share_the_cache(tmp_path):
    images, labels = write_folder(tmp_path / "pics")
    work = tmp_path / "work"
    work.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "pics"), str(tmp_path / "cache"), str(work), str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob("ready-*"))) < 3 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        (work / "go").touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    decoded = sorted(m.name for m in work.glob("decoded-*"))
    assert len(decoded) == 1, f"{len(decoded)} processes decoded the folder: {decoded}"
    for i in range(3):
        assert np.array_equal(np.load(work / f"images-{i}.npy"), images)
        assert np.array_equal(np.load(work / f"labels-{i}.npy"), labels)
    stderr = "".join(err for _, err in outputs)
    assert stderr.count("decoding 6 images") == 1, stderr


def test_decode_says_where_the_cache_goes_and_its_size(tmp_path, capsys):
    write_folder(tmp_path / "pics")
    load_dataset(str(tmp_path / "pics"), root=tmp_path / "cache")
    err = capsys.readouterr().err
    (cache,) = (tmp_path / "cache" / "imagefolder").glob("*.npz")
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("decoding 6 images in ") and str(tmp_path / "pics" / "train") in lines[0]
    assert str(cache) in lines[0]
    assert lines[1].startswith("cached 6 images") and str(cache) in lines[1]
    (mib,) = re.findall(r"\(([0-9.e-]+) MiB\)", lines[1])
    assert float(mib) == pytest.approx(cache.stat().st_size / 2**20, rel=0.01)
    again = load_dataset(str(tmp_path / "pics"), root=tmp_path / "cache")  # a cache hit says nothing
    assert capsys.readouterr().err == "" and len(again) == 6


def test_waiting_for_another_decoder_is_said_once(tmp_path, capsys, monkeypatch):
    images, _ = write_folder(tmp_path / "pics")
    started, release = threading.Event(), threading.Event()
    calls = []
    real_decode = folder_mod._decode_folder

    def held_decode(*args, **kwargs):
        calls.append(threading.current_thread().name)
        started.set()
        assert release.wait(60)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(folder_mod, "_decode_folder", held_decode)
    results = {}

    def load(name):
        results[name] = load_dataset(str(tmp_path / "pics"), root=tmp_path / "cache")

    first = threading.Thread(target=load, args=("first",), name="first")
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=load, args=("second",), name="second")
    second.start()
    # the second load must block on the first one's lock and say so
    seen = ""
    deadline = time.monotonic() + 60
    while "waiting for another process" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
        seen += capsys.readouterr().err
    release.set()
    first.join(60)
    second.join(60)
    seen += capsys.readouterr().err
    assert seen.count(f"waiting for another process decoding {tmp_path / 'pics' / 'train'}") == 1, seen
    assert calls == ["first"]  # the second read the first one's cache
    assert np.array_equal(results["second"].images.numpy(), images)
