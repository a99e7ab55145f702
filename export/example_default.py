"""A model trained outside the repository's recipes, the way users train theirs: the docs' and
tests' bring-your-own example.

ISLR's ``Default`` data (will a card holder default?), generated with the same columns and
roughly the same relationships: ``student`` ("Yes"/"No"), ``balance``, ``income``, and the label
``default`` ("Yes"/"No", about 3% "Yes"). The model is the pipeline a user writes with a
DataFrame: a ColumnTransformer that selects columns by name, a OneHotEncoder on the string
column and a LogisticRegression fitted on the string labels. It is saved with joblib next to a
CSV of held-out rows, ready for ``tabserve export convert``::

    python -m export.example_default --out /tmp/default
    tabserve export convert --model /tmp/default/default.joblib \
        --holdout /tmp/default/default.csv --label default --name default
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def default_frame(n_rows: int = 10_000, seed: int = 0) -> Any:
    """The generated Default data as a pandas DataFrame (deterministic by seed)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    student = rng.random(n_rows) < 0.3
    income = np.where(student, rng.normal(17_500, 4_500, n_rows), rng.normal(40_000, 9_000, n_rows))
    balance = np.clip(rng.normal(820, 480, n_rows) + 250 * student, 0, None)
    logit = -11.5 + 0.0057 * balance - 0.65 * student + 0.000003 * income
    default = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "student": np.where(student, "Yes", "No"),
            "balance": balance.round(2),
            "income": income.clip(800, None).round(2),
            "default": np.where(default, "Yes", "No"),
        }
    )


def train(out: Path, n_rows: int = 10_000, seed: int = 0) -> tuple[Path, Path]:
    """Fit the pipeline on 70% of the rows; write ``default.joblib`` and the other 30% as
    ``default.csv``. Returns both paths."""
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = default_frame(n_rows, seed)
    train_rows, holdout = train_test_split(
        frame, test_size=0.3, random_state=seed, stratify=frame["default"]
    )
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["student"]),
                        ("num", StandardScaler(), ["balance", "income"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    )
    model.fit(train_rows.drop(columns="default"), train_rows["default"])
    out.mkdir(parents=True, exist_ok=True)
    model_path, csv_path = out / "default.joblib", out / "default.csv"
    joblib.dump(model, model_path)
    holdout.to_csv(csv_path, index=False)
    return model_path, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.example_default",
        description="Train the bring-your-own example (a scikit-learn pipeline over a string "
        "column with Yes/No labels) and write default.joblib and default.csv to a folder.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--rows", type=int, default=10_000, help="rows to generate (default 10000)")
    args = parser.parse_args(argv)
    model_path, csv_path = train(args.out, args.rows)
    print(f"wrote {model_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
