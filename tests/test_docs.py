"""The documentation cannot rot silently: README.md and docs/*.md are checked against the code.

- every `uniseg3d …` command line (in fenced code blocks, and inline code that is a whole
  command) parses with the real argument parser of `uniseg3d.cli` (nothing is run), and every
  option named in a synopsis (`uniseg3d train [--epochs N …]`) is one the verb takes;
- every params.yaml key named in dotted form (`train.epochs`, `model.switches.our_postprocess`:
  a dotted name whose first part is a top-level section of params.yaml) exists in params.yaml;
- every relative link and image resolves, and a `#anchor` into a Markdown file names one of
  its headings (GitHub's heading ids);
- the documented keys, shapes and dtypes of `predictions.npz` are what `uniseg3d predict`
  writes on a small scan.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from uniseg3d.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))

FENCE = re.compile(r"^ *(```|~~~)[^\n]*\n(.*?)^ *\1 *$", re.S | re.M)
INLINE = re.compile(r"(?<!`)`((?:[^`\n]|\n(?!\n))+)`(?!`)")  # may wrap, not span paragraphs
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.M)
DOTTED = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?![\w/(-])")
FILE_SUFFIXES = {"py", "pt", "pth", "json", "yaml", "yml", "md", "csv", "ply", "npz", "npy",
                 "txt", "tsv", "html", "tex", "png", "pkl", "toml", "lock"}
# inline code that names a command's shape rather than a whole command: an ellipsis,
# <placeholder>, [optional part] or an upper-case placeholder (VERB, TARGET, DIR)
PLACEHOLDER = re.compile(r"…|\.\.\.|<[^>]*>|\[|\b[A-Z][A-Z_]+\b")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def fenced_blocks(text: str) -> list[str]:
    return [match.group(2) for match in FENCE.finditer(text)]


def inline_code(text: str) -> list[str]:
    # a table cell writes `a\|b` so that the pipe does not end the cell
    return [" ".join(code.replace("\\|", "|").split()) for code in INLINE.findall(prose(text))]


def is_uniseg3d(word: str) -> bool:
    return word == "uniseg3d" or word.endswith("/uniseg3d")


def block_commands(block: str) -> list[str]:
    """The `uniseg3d …` command lines of a shell block: continuation lines joined, comments
    and prompts dropped, one entry per command of a `&&` / `;` chain."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        try:
            words = shlex.split(line, comments=True)
        except ValueError as error:  # not shell (a file tree), unless it starts a command
            if is_uniseg3d(line.split(" ", 1)[0]):
                raise AssertionError(f"unparsable command line {line!r}: {error}") from None
            continue
        for is_separator, group in itertools.groupby(words, lambda w: w in ("&&", ";", "||")):
            group = list(group)
            if not is_separator and group and is_uniseg3d(group[0]):
                commands.append(shlex.join(group))
    return commands


def is_whole_command(code: str) -> bool:
    """`uniseg3d train --epochs 2`, `uniseg3d --help`: a command to parse as it stands; not a
    synopsis with placeholders, nor `uniseg3d predict` naming a verb in a sentence."""
    words = code.split()
    return (len(words) > 1 and is_uniseg3d(words[0]) and not PLACEHOLDER.search(code)
            and (len(words) > 2 or words[1].startswith("-")))


def inline_commands(text: str) -> list[str]:
    """Inline code that is a whole command."""
    return [code for code in inline_code(text) if is_whole_command(code)]


def synopses(text: str) -> list[str]:
    """Inline code that names a verb (`uniseg3d predict`) or shows a command's shape
    (`uniseg3d train [--epochs N …]`): its verb and options are checked, not its values."""
    return [code for code in inline_code(text) if len(code.split()) > 1
            and is_uniseg3d(code.split()[0]) and not is_whole_command(code)]


def unknown_options(synopsis: str) -> list[str]:
    """The verb or --options of a synopsis that the real parser does not know."""
    verbs = build_parser()._subparsers._group_actions[0].choices
    verb = synopsis.split()[1]
    if verb.startswith("-") or PLACEHOLDER.search(verb):
        return []
    if verb not in verbs:
        return [f"no verb {verb!r}"]
    known = verbs[verb]._option_string_actions
    return [option for option in re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", synopsis)
            if option not in known]


def alternatives(words: list[str]) -> list[list[str]]:
    """`--config tiny|paper` in a command stands for each choice: one argument list each."""
    options = [word.split("|") if "|" in word else [word] for word in words]
    return [list(choice) for choice in itertools.product(*options)]


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = read(path)
        for block in fenced_blocks(text):
            found += [(path.name, command) for command in block_commands(block)]
        found += [(path.name, command) for command in inline_commands(text)]
    return found


def parse_error(command: str) -> str | None:
    """Why the real parser refuses `command` (None: it parses)."""
    words = shlex.split(command)[1:]
    for argv in alternatives(words):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(argv)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                return f"uniseg3d {shlex.join(argv)}: {stderr.getvalue().strip()}"
    return None


def dotted_names(text: str) -> list[str]:
    """Dotted names in inline code and code blocks whose first part is a params.yaml section
    (file names such as `train.py` are not keys)."""
    spans = inline_code(text) + fenced_blocks(text)
    return [name for span in spans for name in DOTTED.findall(span)
            if name.split(".")[0] in PARAMS and name.rsplit(".", 1)[1] not in FILE_SUFFIXES]


def params_key_exists(name: str) -> bool:
    node = PARAMS
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def heading_ids(text: str) -> set[str]:
    """GitHub's ids of a Markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens; a repeated heading gets -1, -2, …"""
    ids, seen = set(), {}
    for heading in HEADING.findall(prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def broken_links(path: Path) -> list[str]:
    text = prose(read(path))
    text = INLINE.sub("", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_ids(read(resolved)):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken


def test_docs_exist():
    assert (REPO / "README.md").is_file()
    assert len(DOCS) > 1, "docs/*.md holds the topics"


def test_documented_commands_parse():
    commands = documented_commands()
    assert len(commands) >= 10, "the extraction found too few commands to be working"
    errors = [f"{name}: {error}" for name, command in commands
              if (error := parse_error(command))]
    assert not errors, "documented commands the parser refuses:\n" + "\n".join(errors)


def test_documented_options_exist():
    synopses_found = [(path.name, code) for path in DOCS for code in synopses(read(path))]
    assert len(synopses_found) >= 5, "the extraction found too few synopses to be working"
    errors = [f"{name}: {code}: {', '.join(unknown)}" for name, code in synopses_found
              if (unknown := unknown_options(code))]
    assert not errors, "options the parser does not know:\n" + "\n".join(errors)
    assert unknown_options("uniseg3d train [--device cuda --epochs N]") == ["--device"]
    assert unknown_options("uniseg3d VERB --help") == []
    assert unknown_options("uniseg3d serve") == [] and unknown_options("uniseg3d fit") != []


def test_command_extraction():
    block = ("# a comment\n.venv/bin/uniseg3d serve --checkpoint x.pt   # prints a URL\n"
             "uniseg3d predict a.ply --checkpoint c.pt \\\n    --text \"the chair # 2\" "
             "--out o && uniseg3d report\nmake repro\n")
    assert block_commands(block) == [
        ".venv/bin/uniseg3d serve --checkpoint x.pt",
        "uniseg3d predict a.ply --checkpoint c.pt --text 'the chair # 2' --out o",
        "uniseg3d report"]
    text = ("`uniseg3d train --epochs 2`, `uniseg3d bench …`, `uniseg3d VERB --help`, "
            "`uniseg3d bench latency --config tiny\\|paper`, `train.epochs`, `uniseg3d\n"
            "predict`, `uniseg3d --help`, `uniseg3d bench prepare --raw DIR`")
    assert inline_commands(text) == ["uniseg3d train --epochs 2",
                                     "uniseg3d bench latency --config tiny|paper",
                                     "uniseg3d --help"]
    assert synopses(text) == ["uniseg3d bench …", "uniseg3d VERB --help", "uniseg3d predict",
                              "uniseg3d bench prepare --raw DIR"]
    assert parse_error("uniseg3d train --device cuda") is not None
    assert parse_error("uniseg3d bench latency --config tiny|huge") is not None
    assert parse_error("uniseg3d bench latency --config tiny|paper") is None


def test_params_keys_exist():
    missing = [f"{path.name}: {name}" for path in DOCS for name in dotted_names(read(path))
               if not params_key_exists(name)]
    assert not missing, "dotted names that are not params.yaml keys:\n" + "\n".join(missing)
    assert dotted_names("`model.switches.our_postprocess: false`, `train.py`, "
                        "`uniseg3d.cli`") == ["model.switches.our_postprocess"]
    assert not params_key_exists("train.device")


def test_links_and_images_resolve():
    broken = [f"{path.name}: {link}" for path in DOCS for link in broken_links(path)]
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert heading_ids("## The browser app (`uniseg3d serve`)\n## A\n## A\n") == {
        "the-browser-app-uniseg3d-serve", "a", "a-1"}


NPZ_ROW = re.compile(r"^\| *`(\w+)` *\| *`?\(([^)]*)\)`? *\| *`?(\w+)`? *\|", re.M)


def documented_npz() -> dict[str, tuple[list[str], str]]:
    """key -> (shape symbols, dtype) from the table under the heading that names
    `predictions.npz`."""
    for path in DOCS:
        text = read(path)
        for match in re.finditer(r"^#{2,6} [^\n]*predictions\.npz[^\n]*\n", text, re.M):
            section = re.split(r"^#{1,6} ", text[match.end():], maxsplit=1, flags=re.M)[0]
            rows = NPZ_ROW.findall(section)
            if rows:
                return {key: ([s.strip() for s in shape.split(",") if s.strip()], dtype)
                        for key, shape, dtype in rows}
    raise AssertionError("no section about predictions.npz with a | `key` | (shape) | dtype | "
                         "table in README.md or docs/")


def test_predictions_npz_matches_the_documentation(tmp_path, trained_scan):
    mesh, checkpoint = trained_scan
    out = tmp_path / "out"
    assert main(["predict", str(mesh), "--checkpoint", str(checkpoint), "--click",
                 "0.75,0.75,0.9", "--text", "the chair", "--text", "the table", "--classes",
                 "chair,table,lamp", "--out", str(out)]) == 0
    with np.load(out / "predictions.npz") as npz:
        written = {key: npz[key] for key in npz.files}
    documented = documented_npz()
    assert set(documented) == set(written), (
        f"documented but not written: {sorted(set(documented) - set(written))}; "
        f"written but not documented: {sorted(set(written) - set(documented))}")
    sizes = {"N": len(written["semantic"])}
    for key, (symbols, dtype) in documented.items():
        array = written[key]
        assert array.ndim == len(symbols), f"{key}: documented ({', '.join(symbols)}), " \
                                           f"written shape {array.shape}"
        for symbol, size in zip(symbols, array.shape):
            assert sizes.setdefault(symbol, size) == size, \
                f"{key}: {symbol} = {size}, elsewhere {sizes[symbol]}"
        assert np.dtype(dtype) == array.dtype, f"{key}: documented {dtype}, written {array.dtype}"
    assert written["click_masks"].shape[0] == 1 and written["text_masks"].shape[0] == 2
