"""The report as a list of blocks (headings, text, tables, figures, links, notes of missing
inputs), rendered to Markdown and to one self-contained HTML page.

Figures and links hold paths relative to the report's folder, so `report.md` and `index.html`,
written side by side, open from disk with their images beside them. Text may use two inline
Markdown forms, `code` and **bold**, which the HTML renderer translates.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pandas as pd

MISSING = "Missing:"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .caption { color: #555; font-size: 0.9em; }
.missing { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.4em 0.8em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""
    floatfmt: str = ".1f"


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the report's folder, '/'-separated
    caption: str


@dataclass(frozen=True)
class Links:
    label: str
    targets: tuple[tuple[str, str], ...]  # (text, relative path)


@dataclass(frozen=True)
class Missing:
    """An input a section needs is absent: what it is and the command that produces it."""

    what: str
    command: str

    @property
    def text(self) -> str:
        return f"**{MISSING}** {self.what}; produce it with `{self.command}`."


Block = Heading | Text | Table | Figure | Links | Missing


def slug(text: str) -> str:
    """An HTML id from a heading."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None, so tabulate writes its `missingval`."""
    return frame.astype(object).where(frame.notna(), None)


def to_markdown(blocks: list[Block], title: str) -> str:
    """The blocks as GitHub-flavoured Markdown under a first-level `title`."""
    parts = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, (Text, Missing)):
            parts.append(block.text)
        elif isinstance(block, Table):
            body = _cells(block.frame).to_markdown(index=False, floatfmt=block.floatfmt,
                                                   missingval="–")
            parts.append(f"{body}\n\n*{block.caption}*" if block.caption else body)
        elif isinstance(block, Figure):
            parts.append(f"![{block.caption}]({block.path})\n\n*{block.caption}*")
        else:
            parts.append(f"{block.label}: " + ", ".join(f"[{text}]({path})"
                                                          for text, path in block.targets))
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escaped text with `code` and **bold** as HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{slug(block.text)}">{html.escape(block.text)}' \
               f"</h{block.level}>"
    if isinstance(block, Missing):
        return f'<p class="missing">{_inline(block.text)}</p>'
    if isinstance(block, Text):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        table = block.frame.to_html(index=False, na_rep="–", border=0,
                                    float_format=lambda value: format(value, block.floatfmt))
        caption = f'<p class="caption">{_inline(block.caption)}</p>' if block.caption else ""
        return table + caption
    if isinstance(block, Figure):
        source = html.escape(block.path, quote=True)
        return (f'<figure><a href="{source}"><img src="{source}" alt="'
                f'{html.escape(block.caption, quote=True)}"></a>'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    links = ", ".join(f'<a href="{html.escape(path, quote=True)}">{html.escape(text)}</a>'
                      for text, path in block.targets)
    return f"<p>{html.escape(block.label)}: {links}</p>"


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page: the blocks with a table of contents of the second-level headings."""
    contents = "".join(f'<li><a href="#{slug(b.text)}">{html.escape(b.text)}</a></li>'
                       for b in blocks if isinstance(b, Heading) and b.level == 2)
    body = "\n".join(_html_block(block) for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<nav><ul>{contents}</ul></nav>\n{body}\n"
            "</body>\n</html>\n")
