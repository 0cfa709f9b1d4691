"""Studies: study files and their grids, cell evaluation, resumable sweeps, the paper grid."""

from experiments.studies.cell import TIMING_COLUMNS, CellResult, evaluate_cell
from experiments.studies.merge import load_results
from experiments.studies.runner import SweepOutcome, run_study
from experiments.studies.spec import Cell, Study, build_study, load_study_file

__all__ = [
    "TIMING_COLUMNS",
    "Cell",
    "CellResult",
    "Study",
    "SweepOutcome",
    "build_study",
    "evaluate_cell",
    "load_results",
    "load_study_file",
    "run_study",
]
