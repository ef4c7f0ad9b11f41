"""How an architecture grows: compound scaling of a baseline into a family.

`scale` is the single-step rule (`Arch.scale`); `compound` grows a baseline by one
coefficient phi (depth alpha^phi, width beta^phi, resolution gamma^phi), `solve_phi` finds
the phi meeting a MACs or parameter target, `grid_points` lists the coefficients meeting
alpha * beta^2 * gamma^2 ~ 2, `run_grid` trains each point's phi = 1 member as a resumable
study (through nas's search runner) and picks the coefficients, and `family` with its table
writers lays out the members; `train_family` trains them (the same runner, one study per
training seed), and `run_compare` trains depth-, width-, resolution-only and compound
scaling to the same MACs (the paper's Figure 8).
"""

from .compound import (GridPoint, Member, ScalingError, Solution, check_coefficients, compound,
                       compound_dropout, grid_points, later_stage_layers, solve_phi)
from .family import (OfficialRow, TrainedFamily, family, family_columns, family_rows,
                     official_comparison, to_csv, to_json, to_markdown, train_family, train_listed,
                     write_family)
from .compare import CompareResult, compare_points, run_compare
from .grid import GridResult, GridRow, run_grid
from .scale import scale

__all__ = [
    "scale",
    "compound", "compound_dropout", "check_coefficients", "later_stage_layers", "solve_phi",
    "grid_points", "GridPoint", "Member", "Solution", "ScalingError",
    "run_grid", "GridResult", "GridRow",
    "family", "family_columns", "family_rows", "official_comparison", "OfficialRow",
    "to_csv", "to_json", "to_markdown", "write_family",
    "train_family", "train_listed", "TrainedFamily",
    "compare_points", "run_compare", "CompareResult",
]
