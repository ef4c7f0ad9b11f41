"""How close compound scaling comes to the official EfficientNet family.

    python benchmarks/family_fidelity.py [--json]

(``--json``: one object with ``b_series``, ``table3_baselines`` and ``table3_families``.)

Grows EfficientNet-B0 by `scaling.compound` with the paper's coefficients (alpha 1.2,
beta 1.1, gamma 1.15) at phi = 1..7 and sets each member beside the official B1..B7
(`space.presets`, B0 scaled by the reference multipliers of the official code), printing
resolution, MACs and params side by side with the relative difference (compound over
official, minus 1). Costs are analytic (`space.cost.cost`, 1000 classes, MACs per image).

Why they differ: the official B1..B7 were not made by the formula. Their multipliers
(width 1.0..2.0, depth 1.1..3.1, 240..600 px) were picked by hand around it; e.g. B2 is
width 1.1, depth 1.2 at 260 px where phi = 2 gives width 1.21, depth 1.44, 296 px. Read the
table as "how far the published family is from its own rule", not as an error of either.

The paper's Table 3 baselines (`table3_baselines`): MobileNetV1, MobileNetV2 and ResNet-50
as the presets build them, their params and MACs beside the reference figures in the
presets' metadata (``reference_params``: the reference implementation's trainable parameter
count at 1000 classes; ``reference_macs``: the published multiply-adds at 224 px), and
(`table3_families`) a compound family of each at phi = 1..3 with the paper's coefficients,
its real MACs ratio beside the ideal (alpha * beta^2 * gamma^2)^phi = 1.92^phi.

Sections are functions returning rows (`b_series`, `table3_baselines`, `table3_families`).
"""

from __future__ import annotations

import argparse
import json
import sys

from space.cost import cost
from space.presets import get_preset
from scaling import compound
from scaling.family import PAPER_COEFFICIENTS, short_count


def b_series() -> list[dict]:
    """B0 grown by `compound` at phi = 1..7 beside the official B1..B7."""
    base = get_preset("efficientnet_b0").arch()
    alpha, beta, gamma = PAPER_COEFFICIENTS
    base_cost = cost(base)
    rows = [{"family": "efficientnet_b0", "phi": 0, "official": "efficientnet_b0",
             "resolution": base.resolution, "official_resolution": base.resolution,
             "macs": base_cost.macs, "official_macs": base_cost.macs,
             "params": base_cost.params, "official_params": base_cost.params,
             "ideal_macs_ratio": 1.0, "macs_ratio": 1.0, "official_macs_ratio": 1.0}]
    for phi in range(1, 8):
        member = compound(base, phi, alpha, beta, gamma)
        name = f"efficientnet_b{phi}"
        official = get_preset(name).arch()
        c = cost(official)
        rows.append({"family": "efficientnet_b0", "phi": phi, "official": name,
                     "resolution": member.resolution, "official_resolution": official.resolution,
                     "macs": member.macs, "official_macs": c.macs,
                     "params": member.params, "official_params": c.params,
                     "ideal_macs_ratio": member.ideal_macs_ratio,
                     "macs_ratio": member.macs_ratio,
                     "official_macs_ratio": c.macs / base_cost.macs})
    for row in rows:
        row["macs_difference"] = row["macs"] / row["official_macs"] - 1
        row["params_difference"] = row["params"] / row["official_params"] - 1
    return rows


TABLE3 = ("mobilenet_v1", "mobilenet_v2", "resnet50")


def table3_baselines() -> list[dict]:
    """Each Table 3 baseline's params and MACs (1000 classes, 224 px) beside its reference."""
    rows = []
    for name in TABLE3:
        preset = get_preset(name)
        c = cost(preset.arch())
        ref_params, ref_macs = preset.meta["reference_params"], preset.meta["reference_macs"]
        rows.append({"preset": name, "resolution": preset.arch().resolution,
                     "params": c.params, "reference_params": ref_params,
                     "params_difference": c.params / ref_params - 1,
                     "macs": c.macs, "reference_macs": ref_macs, "macs_difference": c.macs / ref_macs - 1})
    return rows


def table3_families(phis=(1, 2, 3)) -> list[dict]:
    """A compound family (paper coefficients) of each Table 3 baseline at ``phis``."""
    alpha, beta, gamma = PAPER_COEFFICIENTS
    rows = []
    for name in TABLE3:
        base = get_preset(name).arch()
        for phi in (0, *phis):
            m = compound(base, phi, alpha, beta, gamma)
            layers = sum(s.layers for s in m.arch.stages)
            rows.append({"family": name, "phi": phi, "resolution": m.resolution, "layers": layers,
                         "last_channels": m.arch.stages[-1].channels, "params": m.params, "macs": m.macs,
                         "macs_ratio": m.macs_ratio, "ideal_macs_ratio": m.ideal_macs_ratio,
                         "ratio_gap": m.macs_ratio / m.ideal_macs_ratio - 1})
    return rows


def baselines_table(rows: list[dict]) -> str:
    lines = ["| baseline | px | params | reference params | params diff | MACs | reference MACs | MACs diff |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['resolution']} | {r['params']:,} | {r['reference_params']:,} | "
                     f"{r['params_difference']:+.2%} | {short_count(r['macs'])} ({r['macs']:,}) | "
                     f"{short_count(r['reference_macs'])} | {r['macs_difference']:+.2%} |")
    return "\n".join(lines)


def families_table(rows: list[dict]) -> str:
    lines = ["| family | phi | px | layers | last stage channels | params | MACs | MACs ratio (real / ideal) | "
             "real / ideal - 1 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['phi']} | {r['resolution']} | {r['layers']} | {r['last_channels']} | "
                     f"{short_count(r['params'])} | {short_count(r['macs'])} | {r['macs_ratio']:.2f} / "
                     f"{r['ideal_macs_ratio']:.2f} | {r['ratio_gap']:+.1%} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    header = ("| phi | official | px (compound / official) | MACs compound | MACs official | "
              "MACs diff | params compound | params official | params diff | MACs ratio "
              "(ideal / compound / official) |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['phi']} | {r['official']} | {r['resolution']} / {r['official_resolution']} | "
            f"{short_count(r['macs'])} | {short_count(r['official_macs'])} | "
            f"{r['macs_difference']:+.1%} | {short_count(r['params'])} | "
            f"{short_count(r['official_params'])} | {r['params_difference']:+.1%} | "
            f"{r['ideal_macs_ratio']:.2f} / {r['macs_ratio']:.2f} / {r['official_macs_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = b_series()
    baselines, families = table3_baselines(), table3_families()
    if args.json:
        print(json.dumps({"b_series": rows, "table3_baselines": baselines, "table3_families": families},
                         indent=2))
        return 0
    alpha, beta, gamma = PAPER_COEFFICIENTS
    print(f"EfficientNet-B0 grown by compound scaling (alpha {alpha}, beta {beta}, gamma {gamma}; "
          f"resolution rounded to 8 px) vs the official B1..B7; diff = compound / official - 1; "
          f"costs at 1000 classes\n")
    print(table(rows))
    print("\nThe paper's Table 3 baselines as the presets build them (1000 classes, 224 px) vs their "
          "references (params: the reference implementation's exact count; MACs: the published figure)\n")
    print(baselines_table(baselines))
    print(f"\nA compound family of each (alpha {alpha}, beta {beta}, gamma {gamma}; resolution rounded to "
          f"8 px): real MACs ratio over the base beside the ideal (alpha * beta^2 * gamma^2)^phi\n")
    print(families_table(families))
    return 0


if __name__ == "__main__":
    sys.exit(main())
