#!/usr/bin/env python3
"""Measure the review-and-learn loop on forms with known texts (dev/make_review_forms.py writes them).

    python dev/review_demo.py score outputs/review_A --truth data/review_demo/A/truth
    python dev/review_demo.py review outputs/review_A --truth data/review_demo/A/truth   # plays the reviewer

`score`: field accuracy and CER of every processed form against its truth file (truth/<form>.json,
{region: text}, matched by the results folder's name), and how the flag did: wrong fields flagged, fields
flagged. `review`: what a person does on the review page, scripted so it can be measured: every flagged
field gets its true text as the verdict (accepted when the model was right, corrected otherwise), through
scripts/review.py (the code the page's server runs), which also writes the corrections manifest. Fields that
are not flagged stay unreviewed, as they would.
"""

from __future__ import annotations

if not __package__:  # run as `python dev/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from scripts.metrics import cer
from scripts.review import Reviewer, find_forms, list_fields


def truths(forms, truth_dir) -> dict:
    """{form name: {region: text}}; a form without a truth file is an error naming it."""
    out = {}
    for form in forms:
        path = Path(truth_dir) / f"{form.dir.name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no truth for the form in {form.dir}")
        out[form.name] = {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    return out


def score(results: Sequence, truth_dir) -> dict:
    forms = find_forms(results)
    truth = truths(forms, truth_dir)
    fields = [f for f in list_fields(forms) if f["region"] in truth[f["form"]]]
    refs = [truth[f["form"]][f["region"]] for f in fields]
    hyps = [f["text"] for f in fields]
    wrong = [r != h for r, h in zip(refs, hyps)]
    flagged = [bool(f["flagged"]) for f in fields]
    n_wrong = sum(wrong)
    return {"forms": len(forms), "fields": len(fields), "exact": len(fields) - n_wrong,
            "exact_share": (len(fields) - n_wrong) / len(fields), "cer": cer(refs, hyps),
            "flagged": sum(flagged), "flagged_share": sum(flagged) / len(fields),
            "wrong_caught": sum(w and g for w, g in zip(wrong, flagged)),
            "wrong_caught_share": sum(w and g for w, g in zip(wrong, flagged)) / n_wrong if n_wrong else None}


def play_reviewer(results: Sequence, truth_dir, manifest: Optional[Path] = None) -> dict:
    forms = find_forms(results)
    truth = truths(forms, truth_dir)
    manifest = manifest or Path(results[0]) / "corrections.csv"
    reviewer = Reviewer(forms, manifest)
    accepted = corrected = 0
    for f in reviewer.fields():
        if f["flagged"] and f["region"] in truth[f["form"]]:
            text = truth[f["form"]][f["region"]]
            reviewer.review(f["form_index"], f["region"], text)
            accepted += text == f["text"]
            corrected += text != f["text"]
    return {"reviewed": accepted + corrected, "accepted": accepted, "corrected": corrected, "manifest": str(manifest)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("score", "review"))
    ap.add_argument("results", nargs="+", help="results folders (as for scripts/review_server.py)")
    ap.add_argument("--truth", required=True, help="folder of <form>.json truth files")
    ap.add_argument("--corrections", type=Path, help="review: manifest path (default: FIRST_RESULTS/corrections.csv)")
    args = ap.parse_args(argv)
    out = score(args.results, args.truth) if args.command == "score" else \
        play_reviewer(args.results, args.truth, args.corrections)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
