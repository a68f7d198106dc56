"""Documents for the Snakemake report: the environment page and HTML views of Markdown.

Snakemake's report shows images and HTML inline and offers every other file as a
download, so the Markdown outputs (summary table, observations, environment) get an
HTML rendering beside them that the report can show.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from inferbench.io import atomic_write_text
from inferbench.results import load_records

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px;
       line-height: 1.45; margin: 1.2em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.4em; }
"""


def markdown_to_html(markdown: str, title: str) -> str:
    """A self-contained HTML page of ``markdown`` (tables included)."""
    try:
        from markdown_it import MarkdownIt

        body = MarkdownIt("commonmark").enable("table").render(markdown)
    except ImportError:  # markdown-it-py comes with rich; without it, show the source
        body = f"<pre>{html.escape(markdown)}</pre>"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")


def render_file(markdown_path: Path, html_path: Path, title: str) -> None:
    atomic_write_text(html_path, markdown_to_html(Path(markdown_path).read_text(), title))


# -- environment -------------------------------------------------------------------------

def _machine(fp: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a fingerprint that identify a machine and its software."""
    gpus = fp.get("gpus") or []
    return {
        "CPU": fp.get("cpu_model"),
        "CPU instruction sets": ", ".join(fp.get("cpu_isa") or []) or "–",
        "cores (logical / physical)": f"{fp.get('cpu_count_logical')} / "
                                      f"{fp.get('cpu_count_physical')}",
        "memory (GiB)": fp.get("memory_total_gib"),
        "GPU": ", ".join(f"{g.get('name')} ({g.get('memory_total_mib')} MiB, driver "
                         f"{g.get('driver')})" for g in gpus) or "none",
        "CUDA (torch)": (fp.get("cuda") or {}).get("torch_cuda") or "–",
        "OS": fp.get("os"),
        "Python": fp.get("python"),
        "packages": ", ".join(f"{k} {v}" for k, v in sorted((fp.get("packages") or {}).items())),
        "threads (intra-op / inter-op)": f"{(fp.get('threads') or {}).get('intra_op')} / "
                                         f"{(fp.get('threads') or {}).get('inter_op')}",
        "torch quantized engine": fp.get("torch_quantized_engine") or "–",
        "git revision": fp.get("git_revision"),
        "hostname": fp.get("hostname"),
    }


def environment_markdown(results: Sequence[Mapping[str, Any]], config: Mapping[str, Any]
                         ) -> str:
    """Machine and software fingerprints per target (as recorded by each benchmark job),
    followed by the effective config (defaults filled in) of this run."""
    lines = ["# Environment", "",
             "Recorded by every benchmark job in its own process (result JSON `fingerprint`)."
             " Rows of one target that share a fingerprint are listed together.", ""]
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    facts: dict[str, dict[str, Any]] = {}
    for result in results:
        fp = result.get("fingerprint")
        if not fp:
            continue
        machine = _machine(fp)
        key = json.dumps(machine, sort_keys=True, default=str)
        facts[key] = machine
        groups[str(result["target"])][key].append(
            f"{result['backend']} bs{result['batch_size']}")
    if not groups:
        lines += ["No result carries a fingerprint.", ""]
    for target, by_key in sorted(groups.items()):
        lines += [f"## Target `{target}`", ""]
        for index, (key, rows) in enumerate(sorted(by_key.items())):
            if len(by_key) > 1:
                lines += [f"Fingerprint {index + 1} of {len(by_key)} ({len(rows)} rows: "
                          f"{', '.join(sorted(rows))})", ""]
            lines += ["| fact | value |", "|:--|:--|"]
            lines += [f"| {name} | {str(value).replace('|', '/')} |"
                      for name, value in facts[key].items()]
            lines.append("")
    lines += ["## Config", "",
              "The effective config of this run (config files, `--config` overrides and "
              "schema defaults merged; see workflow/schemas/config.schema.yaml).", "",
              "```yaml", yaml.safe_dump(json.loads(json.dumps(config, default=str)),
                                        sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def write_environment(result_paths: Sequence[Path], config: Mapping[str, Any], out: Path
                      ) -> None:
    results = load_records(result_paths)
    atomic_write_text(out, environment_markdown(results, config))
