"""The run report: `runs/<name>/report.md`, one section per stage, with tables and PNG plots beside it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on robots, CI or servers
import matplotlib.pyplot as plt  # noqa: E402

from robot_rl.files import write_json  # noqa: E402


@dataclass
class Section:
    title: str
    text: str = ""
    table: list[dict] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # paths relative to the run directory


@dataclass
class Report:
    run_dir: Path
    title: str
    sections: list[Section] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, title: str, text: str = "", table: list[dict] | None = None,
            images: list[str] | None = None) -> Section:
        section = Section(title, text, table or [], images or [])
        self.sections.append(section)
        return section

    def figure(self, name: str) -> tuple[plt.Figure, str]:
        """A new figure and the relative path it will be saved to by `save_figure`."""
        fig = plt.figure(figsize=(6, 3.5), dpi=100)
        return fig, f"{name}.png"

    def save_figure(self, fig: plt.Figure, relative: str) -> str:
        fig.tight_layout()
        fig.savefig(self.run_dir / relative)
        plt.close(fig)
        return relative

    def write(self) -> Path:
        lines = [f"# {self.title}", "", f"Run directory: `{self.run_dir}`  ",
                 f"Started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}, "
                 f"took {time.time() - self.started:.0f} s.", ""]
        for section in self.sections:
            lines += [f"## {section.title}", ""]
            if section.text:
                lines += [section.text, ""]
            if section.table:
                lines += markdown_table(section.table) + [""]
            lines += [f"![{Path(image).stem}]({image})" for image in section.images]
            if section.images:
                lines.append("")
        path = self.run_dir / "report.md"
        path.write_text("\n".join(lines))
        write_json(self.run_dir / "summary.json", {s.title: s.table for s in self.sections})
        return path


def markdown_table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return out


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
