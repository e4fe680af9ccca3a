"""Every file the documentation cites is in the repository.

Reads README.md, docs/*.md, results/**/*.md and the docstrings of the package's modules (keras_expander/**/*.py:
module, class and function docstrings, read with `ast`, nothing imported) and resolves:

- markdown links and images, `[text](target)`: http(s), mailto and pure `#anchor` targets are skipped, `#anchor`
  is stripped, the rest resolves against the citing file's folder and must exist inside the repository;
- repository paths written as text (in backticks, in code blocks or in prose): tokens that start with one of the
  repository's top-level folders (keras_expander/, examples/, benchmarks/, tests/, docs/, results/, export/, .ci/)
  and end in a file extension or `/`. They resolve against the repository root and must exist; `*` and `<name>`
  are wildcards that must match at least one file. `tests/<file>.py::<test>` must also name a test of that file;
- files outside the repository (`../shared/docs/...`, any `../`-file such as `../shared/tflm/README.md`): always a
  failure, whether or not the file happens to exist on this machine. Folders beside the checkout that a command
  reads (`../shared/data`, `../shared/tflm`) are fine to name.

A second test checks that `#anchor`s of links between markdown files name a heading of the target file.

Pure file reading: no TensorFlow, no package import. One case per citing file, so a failure names the file and
lists each broken citation with its line.
"""

import ast
import os
import re
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_FOLDERS = ("keras_expander", "examples", "benchmarks", "tests", "docs", "results", "export", ".ci")


def _markdown_files():
    files = [REPO / "README.md"]
    files += sorted((REPO / "docs").glob("**/*.md"))
    files += sorted((REPO / "results").glob("**/*.md"))
    return [path for path in files if path.is_file()]


def _python_files():
    return sorted(path for path in (REPO / "keras_expander").glob("**/*.py") if path.is_file())


def _rel(path):
    return path.relative_to(REPO).as_posix()


# ---------------------------------------------------------------------------------------------------------------
# what a file cites: (line, target, kind). kind "link": a markdown link, resolved against the citing folder; "path":
# a repository path written as text, resolved against the repository root; "test": `tests/<file>.py::<test>`;
# "outside": a path that starts with ../

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one level of nested brackets
                  r"\(\s*<?([^()\s<>]+(?:\([^()\s]*\)[^()\s<>]*)*)>?"  # (target), balanced parentheses inside
                  r"(?:\s+[\"'][^\"']*[\"'])?\s*\)")  # an optional "title"
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+[\"'(].*)?$")
PATH_CHARS = r"[A-Za-z0-9_.*<>/+-]"
REPO_PATH = re.compile(r"(?<![A-Za-z0-9_./<>-])((?:" + "|".join(re.escape(top) for top in TOP_FOLDERS) + r")/"
                       + PATH_CHARS + r"*)(?:::([A-Za-z_]\w*))?")
OUTSIDE_PATH = re.compile(r"(?<![A-Za-z0-9_./-])((?:\.\./)+" + PATH_CHARS + r"*)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _markdown_citations(text):
    """(line number, target, kind) for every link and path token of a markdown text."""
    citations = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            citations += _path_tokens(line, number)
            continue
        if not in_fence:  # links in code are code, not links
            prose = INLINE_CODE.sub(lambda match: " " * len(match.group(0)), line)
            for match in LINK.finditer(prose):
                citations.append((number, match.group(1), "link"))
            match = REFERENCE_LINK.match(prose)
            if match:
                citations.append((number, match.group(1), "link"))
        citations += _path_tokens(line, number)
    return citations


def _strip_urls(text):
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", " ", text)


def _is_local(target):
    return not SCHEME.match(target) and not target.startswith("#")


def _path_tokens(text, number):
    text = _strip_urls(text)
    citations = []
    for match in REPO_PATH.finditer(text):
        token = match.group(1).rstrip(".")
        if match.group(2):
            citations.append((number, f"{token}::{match.group(2)}", "test"))
        elif token.endswith("/") or re.search(r"\.[A-Za-z0-9]+$", token):
            citations.append((number, token, "path"))
    for match in OUTSIDE_PATH.finditer(text):
        token = match.group(1).rstrip(".")
        citations.append((number, token, "outside"))
    return citations


def _docstring_citations(path):
    """(line number, target, kind) for the path tokens and links in a module's docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    citations = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not (node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
                and isinstance(node.body[0].value.value, str)):
            continue
        docstring = node.body[0].value
        first_line = docstring.lineno
        for offset, line in enumerate(docstring.value.splitlines()):
            number = first_line + offset
            for match in LINK.finditer(line):
                citations.append((number, match.group(1), "link"))
            citations += _path_tokens(line, number)
    return citations


# ---------------------------------------------------------------------------------------------------------------
# resolving


def _exists_exactly(path):
    """Case-sensitive existence inside the repository (a case-insensitive file system would hide docs/STACK.md)."""
    try:
        parts = path.resolve().relative_to(REPO).parts
    except ValueError:
        return False
    folder = REPO
    for part in parts:
        try:
            names = os.listdir(folder)
        except (NotADirectoryError, FileNotFoundError):
            return False
        if part not in names:
            return False
        folder = folder / part
    return True


def _inside_repo(path):
    try:
        path.resolve().relative_to(REPO)
        return True
    except ValueError:
        return False


def _glob_matches(pattern):
    pattern = re.sub(r"<[^<>/]*>", "*", pattern).rstrip("/")
    return any(REPO.glob(pattern))


def _test_exists(test_file, name):
    if not _exists_exactly(REPO / test_file):
        return False
    source = (REPO / test_file).read_text(encoding="utf-8")
    return re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", source, re.MULTILINE) is not None


OUTSIDE = "cites a file outside the repository"


def _problem(citing, target, kind):
    """None when the citation resolves, else why it does not."""
    if kind == "outside":
        # a path that leaves the checkout: a file (or anything under ../shared/docs) is a citation of a file that is
        # not in the repository; a folder beside the checkout that commands read (../shared/data) is fine
        if "shared/docs" in target:
            return OUTSIDE
        if not re.search(r"\.[A-Za-z0-9]+$", target.rstrip("/").rsplit("/", 1)[-1]):
            return None
        inside = citing.suffix == ".md" and _inside_repo(citing.parent / target)
        if inside and not target.startswith("../shared/"):  # docs/x.md citing ../README.md
            return None if _exists_exactly(citing.parent / target) else "does not exist"
        return OUTSIDE
    if kind == "test":
        test_file, name = target.split("::")
        if not _exists_exactly(REPO / test_file):
            return "does not exist"
        return None if _test_exists(test_file, name) else f"names no test {name} in {test_file}"
    if kind == "link":
        if not _is_local(target):
            return None
        target = urllib.parse.unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not target:
            return None
        base = REPO if target.startswith("/") or citing.suffix == ".py" else citing.parent
        resolved = base / target.lstrip("/")
        if "shared/docs" in target or not _inside_repo(resolved):
            return OUTSIDE
        return None if _exists_exactly(resolved) else "does not exist"
    # a repository path written as text
    if "*" in target or "<" in target:
        return None if _glob_matches(target) else "matches no file"
    return None if _exists_exactly(REPO / target) else "does not exist"


def _broken(citing, citations):
    lines = []
    for number, target, kind in citations:
        problem = _problem(citing, target, kind)
        line = f"{_rel(citing)}:{number}: {target} {problem}"
        if problem and line not in lines:  # a link's target is also a path token of its line: report it once
            lines.append(line)
    return lines


def _report(citing, broken):
    return f"{len(broken)} broken citation(s) in {_rel(citing)}:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("citing", _markdown_files(), ids=_rel)
def test_markdown_cites_only_files_that_exist_in_the_repository(citing):
    broken = _broken(citing, _markdown_citations(citing.read_text(encoding="utf-8")))
    assert not broken, _report(citing, broken)


@pytest.mark.parametrize("citing", _python_files(), ids=_rel)
def test_docstrings_cite_only_files_that_exist_in_the_repository(citing):
    broken = _broken(citing, _docstring_citations(citing))
    assert not broken, _report(citing, broken)


# ---------------------------------------------------------------------------------------------------------------
# anchors of links between markdown files


def _slugs(path):
    """GitHub's heading anchors of a markdown file."""
    slugs, seen, in_fence = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


@pytest.mark.parametrize("citing", _markdown_files(), ids=_rel)
def test_markdown_anchors_name_a_heading_of_their_file(citing):
    broken = []
    for number, target, kind in _markdown_citations(citing.read_text(encoding="utf-8")):
        if kind != "link" or SCHEME.match(target) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        resolved = (citing.parent / urllib.parse.unquote(path)) if path else citing
        if resolved.suffix != ".md" or not _exists_exactly(resolved):
            continue  # a missing file is reported by the test above
        if urllib.parse.unquote(anchor).lower() not in _slugs(resolved):
            broken.append(f"{_rel(citing)}:{number}: {target} names no heading of {_rel(resolved)}")
    assert not broken, _report(citing, broken)


# ---------------------------------------------------------------------------------------------------------------
# the checker itself


def test_the_checker_flags_files_outside_the_repository_and_missing_ones_and_passes_real_ones():
    text = "\n".join([
        "See [the method](../shared/docs/METHOD.md) and `../shared/docs/STACK.md`.",  # outside, twice
        "Traps: docs/STACK.md; the tree's ../shared/tflm/README.md.",  # missing (docs/stack.md is no match); outside
        "[gone](docs/no_such_guide.md), `results/no_such_table.md`, `tests/test_doc_links.py::test_no_such`.",
        "Data: `../shared/data`, `--data-dir ../shared/data`, the trees in ../shared/tflm/.",  # fine: folders
        "[ok](tests/test_doc_links.py), `keras_expander/__init__.py`, [web](https://example.com/docs/x.md).",
        "`tests/test_doc_links.py::test_the_checker_flags_files_outside_the_repository_and_missing_ones_and_passes"
        "_real_ones`, output `runs/demo/export/int8.tflite`, `--out results`, [top](#the-checker).",
        "```bash",
        "python benchmarks/no_such_benchmark.py --out results",  # a path in a code block is checked too
        "x[0](1)  # code, not a link",
        "```",
    ])
    broken = _broken(REPO / "README.md", _markdown_citations(text))
    assert [line.split(": ", 1)[1] for line in broken] == [
        f"../shared/docs/METHOD.md {OUTSIDE}",
        f"../shared/docs/STACK.md {OUTSIDE}",
        "docs/STACK.md does not exist",
        f"../shared/tflm/README.md {OUTSIDE}",
        "docs/no_such_guide.md does not exist",
        "results/no_such_table.md does not exist",
        "tests/test_doc_links.py::test_no_such names no test test_no_such in tests/test_doc_links.py",
        "benchmarks/no_such_benchmark.py does not exist",
    ], broken
    in_docs = "\n".join([
        "[back](../README.md), [guide](user_guide.md#installation), `../README.md`, `docs/METHOD.md`.",  # fine
        "[gone](../results/no_such_table.md); see ../shared/tflm/README.md.",
    ])
    broken = _broken(REPO / "docs" / "user_guide.md", _markdown_citations(in_docs))
    assert [line.split(": ", 1)[1] for line in broken] == [
        "../results/no_such_table.md does not exist",
        f"../shared/tflm/README.md {OUTSIDE}",
    ], broken


def test_readme_fits_and_shows_the_two_set_up_commands_first():
    """README.md is a front page: at most 200 lines, and the two set-up commands (`make demo`, `make test`) on its
    first screen (40 lines); the guides in docs/ hold the rest."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    first_screen = "\n".join(lines[:40])
    assert re.search(r"^make demo\b", first_screen, re.M) and re.search(r"^make test\b", first_screen, re.M)
    assert all(len(line) <= 120 for line in lines), "README.md lines are at most 120 characters"
