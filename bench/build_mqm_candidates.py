"""Build a candidate file (one row per source segment and MT system) from the WMT21 TED MQM data.

The file is the kind of MT n-best list `prefrank score` is for: each segment's source sentence is
the query, and every system's translation is a candidate. Rows are sorted by segment, so every
segment's candidates are adjacent. The human MQM score of each (system, segment) is passed
through, so scores can be compared with it. Write it outside the repository (e.g. under /tmp).

    python bench/build_mqm_candidates.py --out /tmp/mqm/zhen_candidates.tsv
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = pathlib.Path(os.environ.get("PREFRANK_DATA_DIR", REPO.parent / "shared" / "data"))
SPAN_MARKS = re.compile(r"</?v>")


def read_mqm_scores(path: pathlib.Path) -> dict[tuple[str, str], str]:
    """Return (system, seg_id) -> average MQM score; the header is space-separated, rows tab+space."""
    scores = {}
    with path.open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            system, rest = line.rstrip("\n").split("\t", 1)
            score, seg_id = rest.rsplit(" ", 1)
            scores[(system, seg_id)] = "" if score == "None" else score
    return scores


def build(data_dir: pathlib.Path, pair: str, out: pathlib.Path) -> int:
    """Write the candidate TSV and return its row count."""
    source_dir = data_dir / "wmt-mqm-ted" / pair
    scores = read_mqm_scores(source_dir / f"mqm_ted_{pair}.avg_seg_scores.tsv")
    candidates: dict[tuple[str, str], dict[str, str]] = {}
    with (source_dir / f"mqm_ted_{pair}.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            key = (row["seg_id"], row["system"])
            if key in candidates:
                continue
            candidates[key] = {
                "seg_id": row["seg_id"], "system": row["system"],
                "source": SPAN_MARKS.sub("", row["source"]).strip(),
                "target": SPAN_MARKS.sub("", row["target"]).strip(),
                "mqm_score": scores.get((row["system"], row["seg_id"]), ""),
            }
    # The source file is unquoted TSV, so no value contains a tab or newline, and writing the values
    # as they are keeps quote characters unescaped, as they were.
    columns = ["seg_id", "system", "source", "target", "mqm_score"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(columns) + "\n")
        for key in sorted(candidates, key=lambda k: (int(k[0]), k[1])):
            handle.write("\t".join(candidates[key][c] for c in columns) + "\n")
    return len(candidates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output .tsv path (outside the repository)")
    parser.add_argument("--pair", choices=["zhen", "ende"], default="zhen", help="language pair (default: zhen)")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DEFAULT_DATA,
                        help="shared data directory [env PREFRANK_DATA_DIR]")
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(REPO):
        parser.error(f"--out {args.out}: write the file outside the repository")
    rows = build(args.data_dir, args.pair, args.out)
    print(f"wrote {rows} candidate rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
