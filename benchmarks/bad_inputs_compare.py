"""Side by side: the bad-input harness (``benchmarks/bad_inputs.py``) run on two checkouts.

    python benchmarks/bad_inputs_compare.py benchmarks/results/bad_inputs_before.json \
        benchmarks/results/bad_inputs_after.json --markdown benchmarks/results/bad_inputs_compare.md

One row per case: exit code, whether a traceback was printed, and what the user saw (the last
line of stderr, or what was silently accepted), before and after.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _outcome(case: dict | None, width: int) -> str:
    if case is None:
        return "(not run)"
    shown = case["summary"] or case["last_line"] or ""
    if case["summary"] and case["exit_code"] not in (0, None) and case["last_line"] not in shown:
        shown = f"{case['summary']} - {case['last_line']}"
    shown = " ".join(str(shown).split()).replace("|", "\\|")
    shown = shown if len(shown) <= width else shown[:width - 3] + "..."
    exit_code = "timeout" if case["timed_out"] else case["exit_code"]
    traceback = ", traceback" if case["traceback"] else ""
    return f"exit {exit_code}{traceback}, {case['wall_s']:.1f} s: {shown}"


def compare(before: dict, after: dict, width: int = 260) -> str:
    old = {c["id"]: c for c in before["cases"]}
    new = {c["id"]: c for c in after["cases"]}
    ids = list(new) + [i for i in old if i not in new]
    tracebacks = [sum(c["traceback"] for c in run["cases"]) for run in (before, after)]
    lines = [
        "# Bad inputs of issue 9, before and after",
        "",
        f"Before: {before['code'].get('git_commit', before['code']['path'])} "
        f"({before['total_wall_s']:.0f} s, {tracebacks[0]} tracebacks in {len(old)} cases). "
        f"After: {after['code'].get('git_commit', after['code']['path'])} "
        f"({after['total_wall_s']:.0f} s, {tracebacks[1]} tracebacks in {len(new)} cases). "
        "Commands, scratch inputs and full messages: the two JSON files. Exit 2 is a handled "
        "`asa-deploy CMD: error: ...`; 1 an uncaught exception; 0 accepted.",
        "",
        "| id | case | before | after |",
        "|---|---|---|---|",
    ]
    for case_id in ids:
        title = (new.get(case_id) or old[case_id])["title"].replace("|", "\\|")
        lines.append(f"| {case_id} | {title} | {_outcome(old.get(case_id), width)} | "
                     f"{_outcome(new.get(case_id), width)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="bad_inputs.py JSON of the older code")
    parser.add_argument("after", type=Path, help="bad_inputs.py JSON of the newer code")
    parser.add_argument("--markdown", type=Path, required=True, help="table to write")
    args = parser.parse_args(argv)
    text = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    args.markdown.write_text(text)
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
