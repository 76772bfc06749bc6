"""Figures of prompts and results, shared by the TensorBoard callbacks and the notebooks.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global figure
manager, nothing to close, no backend switch in a notebook); save it with `save_figure` or log it
with `SummaryWriter.add_figure`.

| function | figure |
|---|---|
| `denoising_figure` | the reverse denoising chain of one prompt (state dimensions against the step) |
| `prompt_states_figure` | generated vs expert prompt states, one panel per task |
| `returns_figure` | return per task of several prompt sets |
| `prompt_points`, `project_2d`, `prompt_space_figure` | a 2-D map (t-SNE or PCA) of many prompts |
| `find_benchmark_table`, `read_benchmark_table`, `benchmark_figure` | a `promptdiff benchmark` table as bars |
"""

from promptdiff.viz.prompts import denoising_figure, prompt_states_figure, returns_figure, save_figure
from promptdiff.viz.space import project_2d, prompt_points, prompt_space_figure
from promptdiff.viz.tables import benchmark_figure, find_benchmark_table, read_benchmark_table

__all__ = ["benchmark_figure", "denoising_figure", "find_benchmark_table", "project_2d", "prompt_points",
           "prompt_space_figure", "prompt_states_figure", "read_benchmark_table", "returns_figure", "save_figure"]
