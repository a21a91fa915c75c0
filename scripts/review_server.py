#!/usr/bin/env python3
"""Review the fields of processed forms in a browser, lowest confidence first, and correct them.

    python scripts/review_server.py outputs/batch                 # a directory-mode output, or
    python scripts/review_server.py outputs/form_a outputs/form_b # single-scan result folders
    # then open http://127.0.0.1:8765/ ; afterwards, fine-tune on what was reviewed:
    python scripts/mlx_trainer.py train --init models/mlx/default --manifest outputs/batch/corrections.csv \\
        --out runs/reviewed --steps 200

The page lists every field (crop, text, confidence, form and box), the flagged ones (score below the
model's calibrated threshold, scripts/confidence.py) marked. Keyboard first: the current field's text is
selected, so typing replaces it; Enter saves (unchanged = accepted, changed = corrected) and moves on;
Up/Down move without saving; Esc restores the saved text. Filters: flagged only, one form, one box.

Every verdict is written at once (atomically) into the form's results.json and results.csv (and the
folder's combined_results.csv) as `reviewed_text` / `reviewed` beside the model's `text`, so a reload, a
restart or a crash loses nothing; the corrections manifest (--corrections, default
RESULTS_DIR/corrections.csv: image,text for every reviewed field, as mlx_trainer.py reads it) is rewritten
after each verdict. --export writes the manifest and exits without serving.
The server listens on 127.0.0.1 only unless --host says otherwise: it serves your scans.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from flask import Flask, jsonify, request, send_file

from scripts.review import Reviewer, ReviewError, crop_path, find_forms, read_record, write_corrections

PAGE = Path(__file__).with_name("review_page.html")
DEFAULT_PORT = 8765


def create_app(reviewer: Reviewer) -> Flask:
    """The review page and its JSON API over `reviewer`'s forms.

    GET  /                               the page
    GET  /api/fields?flagged=1&form=NAME&box=N  fields (filtered), lowest confidence first, with counts
    GET  /api/fields/<form>/<box>        one field
    POST /api/fields/<form>/<box>        {"text": "..."} records a verdict; {"text": null} undoes it
    GET  /crops/<form>/<box>             the field's crop image
    POST /api/export                     (re)writes the corrections manifest
    """
    app = Flask(__name__)
    app.json.ensure_ascii = False

    @app.errorhandler(ReviewError)
    def review_error(e):
        return jsonify(error=str(e)), 404 if "no region" in str(e) or "no form" in str(e) else 400

    @app.get("/")
    def page():
        return send_file(PAGE, mimetype="text/html", max_age=0)

    @app.get("/api/fields")
    def fields():
        every = reviewer.fields()
        shown = every
        if request.args.get("flagged") in ("1", "true", "yes"):
            shown = [f for f in shown if f["flagged"]]
        if request.args.get("form"):
            shown = [f for f in shown if f["form"] == request.args["form"]]
        if request.args.get("box"):
            try:
                box = int(request.args["box"])
            except ValueError:
                raise ReviewError(f"box must be a number, got {request.args['box']!r}") from None
            shown = [f for f in shown if f["region"] == box]
        flagging = {}
        for index, form in enumerate(reviewer.forms):
            flagging[form.name] = read_record(form).get("flagging")
        return jsonify(fields=shown, shown=len(shown), shown_reviewed=sum(f["reviewed"] for f in shown),
                       total=len(every), reviewed=sum(f["reviewed"] for f in every),
                       flagged=sum(bool(f["flagged"]) for f in every),
                       forms=[f.name for f in reviewer.forms], boxes=sorted({f["region"] for f in every}),
                       flagging=flagging, threshold=reviewer.threshold,
                       manifest=str(reviewer.manifest) if reviewer.manifest else None)

    @app.get("/api/fields/<int:form>/<int:region>")
    def one(form: int, region: int):
        return jsonify(reviewer.field(form, region))

    @app.post("/api/fields/<int:form>/<int:region>")
    def review(form: int, region: int):
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "text" not in body:
            raise ReviewError('send JSON {"text": "the right text"} (or {"text": null} to undo a review)')
        return jsonify(reviewer.review(form, region, body["text"]))

    @app.get("/crops/<int:form>/<int:region>")
    def crop(form: int, region: int):
        path = crop_path(reviewer.form(form), reviewer.field(form, region))
        if not path.is_file():
            raise ReviewError(f"{path}: crop image missing")
        return send_file(path, max_age=0)

    @app.post("/api/export")
    def export():
        if reviewer.manifest is None:
            raise ReviewError("no corrections manifest path (start the server with --corrections FILE)")
        rows = write_corrections(reviewer.forms, reviewer.manifest)
        return jsonify(path=str(reviewer.manifest), rows=rows)

    return app


def make_server(reviewer: Reviewer, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
    """A threaded WSGI server for the app (port 0: any free port; `server.server_port` tells which)."""
    from werkzeug.serving import make_server as werkzeug_server

    return werkzeug_server(host, port, create_app(reviewer), threaded=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="review_server.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", metavar="RESULTS_DIR",
                    help="a handler's output folder (results.json), or a folder of them (directory mode)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0 = any free one)")
    ap.add_argument("--corrections", metavar="FILE",
                    help="corrections manifest, rewritten after every verdict (default: FIRST_RESULTS_DIR/corrections.csv)")
    ap.add_argument("--threshold", type=float,
                    help="flag fields with confidence below this when their results have no `flagged` field "
                         "(results written before flags existed)")
    ap.add_argument("--export", action="store_true", help="write the corrections manifest and exit (no server)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        forms = find_forms(args.results)
        manifest = Path(args.corrections) if args.corrections else Path(args.results[0]) / "corrections.csv"
        reviewer = Reviewer(forms, manifest, args.threshold)
        fields = reviewer.fields()
        if args.export:
            rows = write_corrections(forms, manifest)
            print(f"{rows} reviewed fields of {len(fields)} -> {manifest}")
            return 0
        server = make_server(reviewer, args.host, args.port)
    except ReviewError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the port is taken, or the address cannot be bound
        print(f"error: cannot listen on {args.host}:{args.port} ({e}); pass another --port", file=sys.stderr)
        return 2
    flagged = sum(bool(f["flagged"]) for f in fields)
    reviewed = sum(f["reviewed"] for f in fields)
    print(f"{len(forms)} forms, {len(fields)} fields ({flagged} flagged, {reviewed} reviewed so far)")
    print(f"corrections manifest: {manifest}")
    print(f"review page: http://{args.host}:{server.server_port}/   (Ctrl+C stops; every verdict is already saved)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
