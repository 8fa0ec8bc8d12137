"""The README and the pages in docs/ are a specification too: every command they show parses with the
parser of the program it names, every link and repository path they cite exists, every Python snippet
compiles.

A command is parsed, never run: `lastvit-*` commands (and `python -m`, `accelerate launch -m`, `torchrun
-m` of a command-line module) go through that CLI's own `build_parser()`, with every flag spelled out in
full and every value a flag's `choices` allow. Inline `lastvit-*` spans in the prose are often syntax
summaries (`--mode clip|dino`, `[--top-k K | --top-k-ratio R]`, `--variants ... vit_max`), so for them
only the flags and the named choices are checked.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
# hand-written pages (the reports under docs/study*/ are written by the studies and not checked here)
PAGES = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "docs" / "study_pretraining_pilots" / "README.md",
]
PAGE_IDS = [str(page.relative_to(ROOT)) for page in PAGES]
# programs that docs may name besides this package's own and Python's; not checked further
EXTERNAL = {"apt-get", "hf", "duplicates", "ruff"}
REPOSITORY_ROOTS = {
    "modeling_lastvit",
    "lastvit",
    "training_scripts",
    "tests",
    "benchmarks",
    "docs",
    "constraints",
    "model_cards",
    ".ci",
}
FILE_SUFFIXES = {"py", "md", "json", "yaml", "txt", "png", "safetensors"}
CODE = "\n".join(
    path.read_text() for root in ("lastvit", "benchmarks", "training_scripts") for path in (ROOT / root).rglob("*.py")
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def fenced_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [body for language, body in FENCE.findall(text) if language in languages]


def prose(text: str) -> str:
    """The page without its fenced blocks."""
    return FENCE.sub("", text)


def inline_spans(text: str) -> list[str]:
    """The page's `code spans` outside fenced blocks, a span broken over lines joined with a space."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(text))]


def shell_commands(block: str) -> list[list[str]]:
    """Each simple command of a shell block as its words (continuations joined, comments dropped,
    `&&`, `||`, `;` and `|` split, leading `NAME=value` assignments dropped)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        current: list[str] = []
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        for word in lexer:
            if word in ("&&", "||", ";", "|"):
                commands.append(current)
                current = []
            elif current or not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word):
                current.append(word)
        commands.append(current)
    return [command for command in commands if command]


def cli_module(name: str):
    assert name in SCRIPTS, f"`{name}` is not a console script in pyproject.toml"
    return importlib.import_module(SCRIPTS[name].partition(":")[0])


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def option_actions(parser) -> dict:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def check_flags_and_choices(parser, words: list[str], where: str) -> None:
    """Every `--flag` in `words` is one of the parser's own (spelled in full); the values that follow a
    flag with `choices` (each alternative of `a|b`, placeholders in capitals and `...` skipped) are allowed."""
    actions = option_actions(parser)
    words = [word.replace("\\|", "|").strip("[]") for word in words]  # `\|` escapes a pipe in a table
    for position, word in enumerate(words):
        if not word.startswith("-") or word in ("-", "|"):
            continue
        flag = word.split("=", 1)[0]
        assert flag in actions, f"{where}: {flag} is not a flag of {parser.prog}"
        action = actions[flag]
        if not action.choices:
            continue
        values = [word.split("=", 1)[1]] if "=" in word else []
        for value in words[position + 1 :] if not values else []:
            if value.startswith("-"):
                break
            values.append(value)
            if action.nargs in (None, 1):
                break
        for value in values:
            for alternative in value.split("|"):
                if alternative in ("", "...") or alternative.isupper():
                    continue
                converted = action.type(alternative) if callable(action.type) else alternative
                assert converted in action.choices, (
                    f"{where}: {flag} {alternative} is not one of {sorted(map(str, action.choices))}"
                )


def parse_cli(module, argv: list[str], where: str) -> None:
    parser = module.build_parser()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{where}: {errors.getvalue().strip().splitlines()[-1]}") from None
    check_flags_and_choices(parser, argv, where)


def check_module_run(module: str, argv: list[str], where: str) -> None:
    """`-m module argv`: the module is this repository's (or pytest); a command-line module parses argv."""
    if module == "pytest":
        return
    assert module_file(module), f"{where}: no module {module} in the repository"
    if module.startswith("training_scripts."):
        parse_cli(importlib.import_module(module), argv, where)


def check_command(words: list[str], where: str) -> None:
    program, *args = words
    if program.startswith("lastvit-"):
        parse_cli(cli_module(program), args, where)
    elif program in ("python", "python3"):
        if args[0] == "-m":
            check_module_run(args[1], args[2:], where)
        else:
            assert args[0] == "-c", f"{where}: python {args[0]}"
            compile(args[1], where, "exec")
    elif program in ("accelerate", "torchrun"):
        if program == "accelerate":
            assert args[0] == "launch", f"{where}: accelerate {args[0]}"
        if "--config_file" in args:
            config = args[args.index("--config_file") + 1]
            assert (ROOT / config).is_file(), f"{where}: no accelerate config {config}"
        assert "-m" in args, f"{where}: {program} without -m module"
        start = args.index("-m")
        check_module_run(args[start + 1], args[start + 2 :], where)
    elif program == "pip":
        assert args[0] == "install", f"{where}: pip {args[0]}"
        for flag, value in itertools.pairwise(args):
            if flag == "-c":
                assert (ROOT / value).is_file(), f"{where}: no constraints file {value}"
            if flag == "-e":
                extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", value)
                assert extras, f"{where}: pip install -e {value} is not this repository"
                missing = set((extras.group(1) or "").split(",")) - EXTRAS - {""}
                assert not missing, f"{where}: pyproject.toml has no extra {sorted(missing)}"
    else:
        assert program in EXTERNAL, f"{where}: unknown program {program!r} (add it to EXTERNAL if it is one)"


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_shell_command_parses(page):
    blocks = fenced_blocks(page.read_text(), ("bash", "sh", "shell"))
    for block in blocks:
        for words in shell_commands(block):
            check_command(words, f"{page.name}: {shlex.join(words)[:80]}")


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_inline_command_has_real_flags_and_choices(page):
    for span in inline_spans(page.read_text()):
        if re.match(r"lastvit-[a-z-]+( |$)", span):
            program, *words = span.split()
            check_flags_and_choices(cli_module(program).build_parser(), words, f"{page.name}: `{span}`")
        elif span.startswith("python -m "):
            module = span.split()[2]
            assert module == "pytest" or module_file(module), f"{page.name}: `{span}`: no module {module}"


def test_every_named_command_is_a_console_script_and_the_readme_names_the_main_job():
    """A green CI once hid a missing entry point (`lastvit-study: command not found` after a fresh install)."""
    pattern = re.compile(r"(?<![\w./-])(lastvit-[a-z][a-z-]*[a-z])(?![\w./-])")
    assert "lastvit-study" in pattern.findall((ROOT / "README.md").read_text())
    named = {name for page in PAGES for name in pattern.findall(page.read_text())}
    missing = sorted(named - set(SCRIPTS))
    assert not missing, f"the docs name commands that pyproject.toml does not install: {missing}"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "pytest" in line and line.startswith("apt-get")]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("apt-get")]
    assert len(commands) == 1 and ci == commands


def test_the_readme_set_up_block_opens_with_the_main_job():
    """Scripts and `.ci/run` find the two commands by the block that starts with `# 1. `."""
    blocks = [
        block for block in fenced_blocks((ROOT / "README.md").read_text(), ("bash",)) if block.startswith("# 1. ")
    ]
    assert len(blocks) == 1
    main_job, tests = [words for words in shell_commands(blocks[0]) if words[0] not in ("apt-get", "pip")]
    assert main_job[0] == "lastvit-study" and tests[:3] == ["python", "-m", "pytest"]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_python_snippet_compiles(page):
    for number, block in enumerate(fenced_blocks(page.read_text(), ("python",))):
        compile(block, f"{page.name}, python block {number}", "exec")


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_points_to_a_file_and_heading(page):
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target} names no heading of {path or page.name}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_repository_path_in_code_spans_exists(page):
    text = page.read_text()
    words = inline_spans(text) + [w for block in fenced_blocks(text, ("bash", "sh", "shell")) for w in block.split()]
    for word in words:
        if not re.fullmatch(r"[\w.*-]+(/[\w.*-]*)+", word) or word.split("/")[0] not in REPOSITORY_ROOTS:
            continue
        if not list(ROOT.glob(word.rstrip("/"))):  # else a file the code writes, e.g. a GPU benchmark's report
            assert word in CODE, f"{page.name}: {word} is not in the repository, nor a file its code writes"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_dotted_name_of_this_package_exists(page):
    """`lastvit.training.peft.load_adapter` names a module, and the name after it is defined there."""
    for span in inline_spans(page.read_text()):
        match = re.match(r"((?:lastvit|modeling_lastvit|training_scripts|benchmarks)(?:\.\w+)+)", span)
        if not match or match.group(1).rsplit(".", 1)[1] in FILE_SUFFIXES:
            continue
        parts = match.group(1).split(".")
        modules = [(k, module_file(".".join(parts[:k]))) for k in range(len(parts), 0, -1)]
        k, found = next((k, path) for k, path in modules if path)
        rest = parts[k:]
        assert len(rest) <= 2, f"{page.name}: `{match.group(1)}`: no module {'.'.join(parts[: k + 1])}"
        if rest:
            assert re.search(rf"\b{rest[0]}\b", found.read_text()), (
                f"{page.name}: `{match.group(1)}`: {found.relative_to(ROOT)} defines no {rest[0]}"
            )
