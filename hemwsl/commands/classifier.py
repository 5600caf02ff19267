"""``hemwsl train-cv``: train and evaluate the classifier bundle on every fold, then summarise.

Each fold runs ``bundles/ich_classifier`` train then evaluate (a fold whose ``report_test.json``
exists is skipped, so an interrupted run resumes); the summary table goes to ``cv_summary.md``.

``--set eval_checkpoint=last`` evaluates each fold's ``models/model_last.pt`` (the weights at the end of
training, EMA weights when trained with ``ema_decay > 0``) instead of the best-validation ``model.pt``:
folds already trained are only evaluated, the reports are ``report_test_last.json`` and the summary
``cv_summary_last.md``, beside those of the best checkpoint.
"""

from __future__ import annotations

import argparse

from hemwsl.engines.cv import (  # noqa: F401  (re-exported for existing callers)
    CV_RUN,
    check_cache_dir,
    check_cv_run,
    check_override_keys,
    parse_overrides,
    run_cv_fold,
    train_cv,
)

__all__ = ["run_train_cv", "run_cv_fold", "parse_overrides", "check_override_keys", "check_cache_dir"]


def run_train_cv(args: argparse.Namespace) -> int:
    """``hemwsl train-cv``: :func:`hemwsl.engines.cv.train_cv` with the command's arguments."""
    return train_cv(args.dataset_dir, args.out, args.folds, parse_overrides(args.set), bundle=args.bundle,
                    only=args.only, cache_dir=getattr(args, "cache_dir", None),
                    cache_procs=getattr(args, "cache_procs", 2))
