"""The ``report`` stage: one or more run directories in, ``report.json`` / ``report.md`` /
``report.html`` out (vanilla and ASA side by side when several runs are given).

``build_report`` collects and computes (``build.py``); ``write_report`` renders (``render.py``) and
writes the three files atomically, plus the report's own plots as PNGs in ``report_figures/`` for
the Markdown to link (the HTML embeds everything and needs no other file).
"""

from __future__ import annotations

import json
from pathlib import Path

from asa_deploy.io import atomic_output, results_kept, write_json, write_text
from asa_deploy.report.build import build_report, jsonable
from asa_deploy.report.render import document, render_html, render_markdown
from asa_deploy.rundir import REPORT_FIGURES, REPORT_HTML, REPORT_JSON, REPORT_MD

__all__ = ["build_report", "write_report", "REPORT_JSON", "REPORT_MD", "REPORT_HTML"]


def write_report(run_dirs: list[Path], out_dir: Path | None = None, *,
                 engine: str | None = None) -> dict[str, Path]:
    """Build the report of ``run_dirs`` and write it into ``out_dir`` (default: the first run).

    Returns {"json", "md", "html", "figure:<name>"...: path}. ``engine`` as in ``build_report``.
    A write that fails raises ``WriteFailedError`` with the report's Markdown as its ``result``.
    """
    run_dirs = [Path(r) for r in run_dirs]
    report = build_report(run_dirs, engine=engine)
    out = Path(out_dir) if out_dir is not None else run_dirs[0]
    blocks = document(report)
    figures = [block for block in blocks if getattr(block, "png", None) is not None]
    links = {block.name: f"{REPORT_FIGURES}/{block.name}.png" for block in figures}
    json.dumps(report, allow_nan=False)  # strict JSON, or fail before writing anything
    markdown = render_markdown(blocks, out_dir=out, image_links=links)
    paths: dict[str, Path] = {}
    with results_kept(markdown):
        for block in figures:
            path = out / links[block.name]
            with atomic_output(path) as tmp:
                tmp.write_bytes(block.png)
            paths[f"figure:{block.name}"] = path
        paths["json"] = write_json(out / REPORT_JSON, jsonable(report))
        paths["md"] = write_text(out / REPORT_MD, markdown)
        paths["html"] = write_text(out / REPORT_HTML, render_html(blocks))
    return paths
