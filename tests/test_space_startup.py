"""The descriptions, codec, search spaces, cost model and the `space` command need no torch."""

import subprocess
import sys


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_space_command_search_and_cost_do_not_import_torch():
    out = _run("import space.cli, space.search, space.cost, sys; print('torch' in sys.modules)")
    assert out == "False"


def test_info_and_list_run_without_importing_torch():
    code = ("import sys, io, contextlib; from space.cli import main; "
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    codes = [main(['info', 'efficientnet_v2_s', '--json']), main(['list'])]\n"
            "print(codes, 'torch' in sys.modules)")
    assert _run(code) == "[0, 0] False"


def test_build_model_is_still_importable_from_space():
    out = _run("import space, sys; f = space.build_model; print('torch' in sys.modules, f.__name__)")
    assert out == "True build_model"
