"""Promote the recipe's newest bundle unless it is worse than the current one; ``make promote RECIPE=<name>``.

The candidate is ``--bundle`` or the newest bundle in ``<fuse.models_dir>/<recipe>/``. Its test
metrics are compared with those of the bundle ``current`` points to (``prefrank.bundles.promote``).
When any metric is worse by more than ``fuse.promote_tolerance`` (absolute, and ECE is better
when lower), nothing changes, every regression is printed and the exit code is 1. The same
happens when the two bundles' test metrics come from different test data (their
``test_pairs`` or ``test_evaluation`` hashes differ). Otherwise
``current`` is switched atomically, and a running service picks the bundle up on
``Models.Reload`` or SIGHUP.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from training.fusion_loop import configure_logging, recipe_models_dir, step_parser

EXIT_REJECTED = 1
EXIT_ERROR = 2
# data_hashes entries that must match for two bundles' test metrics to be comparable.
COMPARED_HASHES = ("test_pairs", "test_evaluation")


def comparability_problem(candidate: Any, current: Any) -> str | None:
    """Describe why two bundles' test metrics were measured on different data, or return None."""
    for key in COMPARED_HASHES:
        theirs, ours = current.manifest.data_hashes.get(key), candidate.manifest.data_hashes.get(key)
        if theirs and ours and theirs != ours:
            return (f"their {key} hashes differ ({ours[:19]} vs {theirs[:19]}), so the test metrics were measured "
                    "on different data (split, test limits, corpus cut or evaluation settings changed). Re-run "
                    "`make eval` for both with the same settings, or point current at the candidate with "
                    "prefrank.bundles.set_current after comparing the reports yourself")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Promote a bundle, or reject it and print the regressions."""
    from prefrank.bundles import PROMOTION_SPLIT, current_version, list_versions, promote, read_bundle
    from prefrank.errors import PrefrankError, PromotionRejectedError
    from training.recipe import load_recipe, overrides_from_args

    parser = step_parser("python -m training.promote", __doc__.split("\n")[0])
    parser.add_argument("--bundle", default="", help="bundle version to promote (default: the newest of the recipe)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        recipe = load_recipe(args.recipe, overrides_from_args(args))
        models_dir = recipe_models_dir(recipe)
        versions = [v for v in list_versions(models_dir) if v.startswith(f"{recipe.name}-")]
        candidate = args.bundle or (versions[-1] if versions else "")
        if not candidate:
            print(f"error: no bundle in {models_dir}; run `make eval RECIPE={recipe.name}` first", file=sys.stderr)
            return EXIT_ERROR
        previous = current_version(models_dir)
        if previous == candidate:
            print(f"{candidate} is already current in {models_dir}; nothing changed")
            return 0
        if previous:
            problem = comparability_problem(read_bundle(models_dir / candidate), read_bundle(models_dir / previous))
            if problem:
                raise PromotionRejectedError(f"bundle {candidate} cannot be compared with current bundle {previous}: "
                                             f"{problem}; current is unchanged")
        bundle = promote(models_dir, candidate, tolerance=recipe.fuse.promote_tolerance)
    except PromotionRejectedError as err:
        print(f"rejected: {err.message}", file=sys.stderr)
        return EXIT_REJECTED
    except PrefrankError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return EXIT_ERROR
    metrics = bundle.manifest.metrics.get(PROMOTION_SPLIT, {})
    print(f"promoted {bundle.version} (was {previous or 'none'}); {PROMOTION_SPLIT} metrics: "
          + ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())))
    print(f"serve it: PREFRANK_MODELS_DIR={models_dir} make run   (a running server: Models.Reload or SIGHUP)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
