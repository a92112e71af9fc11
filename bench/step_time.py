"""Time per step and estimated epoch time of a spec (the paper's Table 1): ``crmlab bench`` as a script.

    python bench/step_time.py studies/graphs/crmnet.yaml --batch-sizes 32 64 128 --backends tensorflow jax
    python bench/step_time.py studies/graphs/crmnet_small.yaml --quick --no-mlflow

Writes the table as CSV (and markdown beside it), logs it as an MLflow run and prints it last.
See ``crmlab bench --help`` for every option.
"""

from __future__ import annotations

import sys

from crmlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
