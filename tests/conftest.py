import os
import sys

import pytest
import torch

# Tests run on 2 CPU cores; more threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))
sys.path.insert(0, os.path.dirname(__file__))

TINY = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l2-head_c32"
# The search tests' space: 8 architectures around a two-stage base, trained in about a second.
TINY_SPACE_BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
TINY_SPACE_YAML = f"""\
name: tiny
base: {TINY_SPACE_BASE}
defaults:
  kernel: [3, 5]
  expand: [1, 2]
  width: [0.5, 1.0]
"""


@pytest.fixture
def tiny_arch():
    from space import Arch

    return Arch.from_string(TINY)


@pytest.fixture
def space_file(tmp_path):
    """``TINY_SPACE_YAML`` written to a file (a test module may define its own space_file)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE_YAML)
    return path


def spy_train(monkeypatch):
    """Record the arch string of every `nas.train.train` call (training still happens)."""
    import nas.train

    calls = []
    real = nas.train.train

    def spy(arch, *args, **kwargs):
        calls.append(arch.to_string())
        return real(arch, *args, **kwargs)

    monkeypatch.setattr(nas.train, "train", spy)
    return calls
