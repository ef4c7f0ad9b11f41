"""Entry point of a search worker process: ``python -m nas.search.worker '<json>'``, or
``python -m nas.search.worker -`` with the JSON on stdin (how `run_search` starts them, so a
password in the storage URL never appears in the process list).

`nas.search.runner.run_search` starts one per ``--workers``; the JSON holds the worker's
settings (a `SearchSettings` as a dict: its thread count, device, study and storage already
set), its index (which offsets the sampler's seed) and the wall-clock deadline (Unix
seconds, or null). A separate module, so that running it as ``__main__`` never loads the
runner twice.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    from space.command_line import cli_entry

    from .runner import _worker

    arg = (sys.argv[1:] if argv is None else argv)[0]
    job = json.loads(sys.stdin.read() if arg == "-" else arg)
    return cli_entry(lambda: _worker(job["settings"], job["index"], job["deadline"]))()


if __name__ == "__main__":
    sys.exit(main())
