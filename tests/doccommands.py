"""The commands of the README and docs/*.md, read from their Markdown, and the checks that keep them true.

A fenced ```bash / ```sh / ```console block holds shell commands, a ```python block Python. The line
before a block may set how it is tested (docs/extending.md, "The docs' commands"):

    <!-- doc-test: run -->            run it for real (cheap commands only), exit status 0
    <!-- doc-test: check (reason) --> check without running: the default for every block
    <!-- doc-test: skip (reason) -->  neither (output shown as an example, pseudo-code)

Checking a shell command: `talkflow` commands and options exist in the CLI (synopsis lines such as
`[--seed N]` or `(--audio F | --text "...")` included); `make` targets exist in the Makefile; a
`python -m MODULE` is importable and a `python SCRIPT.py` exists, and each `--option` is one of
its argparse options; `prefect` subcommands and options show in Prefect's `--help`; every path into the
repository (docker/..., scripts/...) exists. Checking Python: it compiles, its imports resolve,
calls of imported functions and of Talkflow's methods bind to their signatures, and
`run_deployment("flow/deployment")` names a deployment of prefect.yaml.
Inline code that starts like a command (`talkflow ...`, `make ...`, `python bench/...`) is checked too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "console", "shell"}
MARKER = re.compile(r"<!--\s*doc-test:\s*(run|check|skip)\b\s*(?:\((.*?)\))?\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
OPTION = re.compile(r"^--[a-zA-Z][\w-]*")
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
REPO_DIRS = ("bench", "docker", "docs", "flows", "models", "pools", "scripts", "talkflow", "tasks", "tests")
INLINE = re.compile(r"`((?:talkflow|make|python(?:3)? (?:-m |bench/|scripts/)|bash scripts/)[^`]*)`")


@dataclass(frozen=True)
class Block:
    path: Path  # the Markdown file
    line: int  # of the opening fence, 1-based
    lang: str
    mode: str  # run, check or skip
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "docker" / "README.md"]


def blocks(path: Path) -> list[Block]:
    """The fenced shell and Python blocks of a Markdown file, with their test mode."""
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        lang, start = m.group(1).lower(), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{path.name}:{i + 1}: a fenced block is not closed")
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(prev)
        mode = marker.group(1) if marker else "check"
        if mode == "skip" and not (marker.group(2) or "").strip():
            raise AssertionError(f"{path.name}:{start}: `doc-test: skip` needs a reason in parentheses")
        if lang in SHELL or lang == "python":
            text = "\n".join(lines[start + 1:end])
            out.append(Block(path, start + 1, "python" if lang == "python" else "shell", mode, text))
        elif marker:
            raise AssertionError(f"{path.name}:{start + 1}: a doc-test marker before a ```{lang} block "
                                 "(only bash, sh, console and python blocks are tested)")
        i = end + 1
    return out


def inline_commands(path: Path) -> list[tuple[int, str]]:
    """Inline code spans outside fenced blocks that start like a command: (line, command)."""
    out, fenced = [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line.strip()) or line.strip() == "```":
            fenced = not fenced
            continue
        if not fenced:
            out += [(n, m.group(1)) for m in INLINE.finditer(line)]
    return out


def commands(block_text: str) -> list[str]:
    """Shell command lines: continuations joined, `$ ` prompts and comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block_text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if line and not line.startswith("#"):
            out.append(line)
    return out


def words(line: str) -> list[str]:
    """The words of one command line, its comment dropped, leading VAR=value and sudo skipped."""
    try:
        toks = shlex.split(line, comments=True)
    except ValueError as e:
        raise AssertionError(f"cannot parse {line!r}: {e}") from None
    while toks and (ENV_ASSIGN.match(toks[0]) or toks[0] in ("sudo", "exec")):
        toks = toks[1:]
    cut = next((i for i, t in enumerate(toks) if t in ("&&", "||", ";", "&", ">", "2>&1")), len(toks))
    return toks[:cut]


# -- shell checks ----------------------------------------------------------------------------------
def check_line(line: str) -> None:
    """Raise AssertionError naming what in `line` does not exist."""
    toks = words(line)
    if not toks:
        return
    prog, args = toks[0], toks[1:]
    name = Path(prog).name
    check_repo_paths(toks if name != "cp" else toks[:2])
    if name == "talkflow":
        check_talkflow(args, line)
    elif name == "make":
        targets = makefile_targets()
        for t in args:
            if not t.startswith("-") and "=" not in t:
                assert t in targets, f"{line!r}: the Makefile has no target {t!r} (targets: {sorted(targets)})"
    elif name in ("python", "python3"):
        check_python_command(args, line)
    elif name == "prefect":
        check_prefect(args, line)
    elif name in ("bash", "sh") and args and not args[0].startswith("-"):
        assert (ROOT / args[0]).is_file(), f"{line!r}: no file {args[0]}"
    elif prog.endswith(".sh"):
        assert (ROOT / prog).is_file(), f"{line!r}: no file {prog}"


def check_repo_paths(toks: list[str]) -> None:
    """Every word that names a path into the repository (docker/..., scripts/...) names one that exists."""
    for t in toks:
        for part in re.split(r"[=:,]", t):
            part = part.rstrip("/")
            if "/" not in part or part.split("/", 1)[0] not in REPO_DIRS or any(c in part for c in "<>*$"):
                continue
            if Path(part).name == ".env":
                continue  # the user makes it from docker/.env.example
            assert (ROOT / part).exists(), f"{' '.join(toks)!r}: no {part} in the repository"


@cache
def makefile_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*):", text, re.M))


@cache
def cli_root():
    import typer

    from talkflow.cli import app

    return typer.main.get_command(app)


def option_names(command) -> set[str]:
    names = {"--help"}
    for p in command.params:
        names.update(o for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("--"))
    return names


def check_talkflow(args: list[str], line: str) -> None:
    """The subcommand path exists and every --option belongs to its last command."""
    def is_group(c) -> bool:
        return hasattr(c, "commands")

    cmd, path = cli_root(), ["talkflow"]
    rest = list(args)
    while is_group(cmd) and rest and not rest[0].startswith("-") and not rest[0].isupper():
        word = rest.pop(0)  # an upper-case word is a placeholder: `talkflow COMMAND --help`
        sub = cmd.commands.get(word)
        assert sub is not None, f"{line!r}: `{' '.join(path)}` has no command {word!r} " \
                                f"(it has {sorted(cmd.commands)})"
        cmd, path = sub, [*path, word]
    if is_group(cmd) and path != ["talkflow"] and not {"--help"} & set(rest):
        raise AssertionError(f"{line!r}: `{' '.join(path)}` needs a command ({sorted(cmd.commands)})")
    known = option_names(cmd)
    for t in rest:
        for opt in re.findall(r"(?<![\w-])--[a-zA-Z][\w-]*", t):
            assert opt in known, f"{line!r}: `{' '.join(path)}` has no option {opt} (it has {sorted(known)})"


def check_python_command(args: list[str], line: str) -> None:
    """`python -m MODULE` or `python SCRIPT.py`: it exists, and each --option is one its source declares."""
    if not args or args[0] == "-c":
        return
    if args[0] == "-m":
        spec = importlib.util.find_spec(args[1])
        assert spec is not None and spec.origin, f"{line!r}: no module {args[1]}"
        source, rest = Path(spec.origin), args[2:]
    else:
        source, rest = ROOT / args[0], args[1:]
        assert source.is_file(), f"{line!r}: no script {args[0]}"
    declared = declared_options(source)
    for t in rest:
        for opt in re.findall(r"(?<![\w-])--[a-zA-Z][\w-]*", t):
            assert opt in declared, f"{line!r}: {source.name} declares no option {opt} ({sorted(declared)})"


@cache
def declared_options(source: Path) -> frozenset[str]:
    """The --options a script declares (argparse's add_argument strings), read from its source."""
    found = {"--help"}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            found.update(a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--"))
    return frozenset(found)


def check_prefect(args: list[str], line: str) -> None:
    sub = tuple(t for t in args if not t.startswith("-"))[:2]
    text = prefect_help(()) + prefect_help(sub[:1]) + (prefect_help(sub) if len(sub) > 1 else "")
    for t in args:
        if t.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(t.split('=')[0])}(?![\w-])", text), \
                f"{line!r}: `prefect {' '.join(sub)}` has no option {t}"


@cache
def prefect_help(sub: tuple[str, ...]) -> str:
    exe = Path(sys.executable).with_name("prefect")
    proc = subprocess.run([str(exe), *sub, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    if proc.returncode != 0 and sub:
        raise AssertionError(f"`prefect {' '.join(sub)}` is not a Prefect command: {proc.stdout[-300:]}")
    return proc.stdout


# -- Python checks ---------------------------------------------------------------------------------
@cache
def deployment_names() -> frozenset[str]:
    """"flow name/deployment name" for every deployment of prefect.yaml."""
    import yaml

    flow_names = {}
    for f in (ROOT / "flows").glob("*.py"):
        for node in ast.parse(f.read_text()).body:
            for d in getattr(node, "decorator_list", ()):
                if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "flow":
                    name = next((k.value.value for k in d.keywords if k.arg == "name"), node.name)
                    flow_names[f"flows.{f.stem}:{node.name}"] = name
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                    getattr(node.value.func, "attr", None) == "with_options":  # a flow under another name
                name = next((k.value.value for k in node.value.keywords if k.arg == "name"), None)
                for target in node.targets:
                    if name and isinstance(target, ast.Name):
                        flow_names[f"flows.{f.stem}:{target.id}"] = name
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return frozenset(f"{flow_names.get(d['entrypoint'], '?')}/{d['name']}" for d in spec["deployments"])


def check_python(code: str, where: str) -> None:
    tree = ast.parse(code, filename=where)
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for a in node.names:
                assert hasattr(module, a.name), f"{where}: {node.module} has no {a.name}"
                names[a.asname or a.name] = getattr(module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = importlib.import_module(a.name.split(".")[0])
    instances: dict[str, type] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                isinstance(node.value.func, ast.Name) and inspect.isclass(names.get(node.value.func.id)):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    instances[t.id] = names[node.value.func.id]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn, label = None, None
        if isinstance(node.func, ast.Name) and callable(names.get(node.func.id)):
            fn, label = names[node.func.id], node.func.id
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id in instances:
            cls = instances[node.func.value.id]
            assert hasattr(cls, node.func.attr), f"{where}: {cls.__name__} has no method {node.func.attr}"
            fn, label = getattr(cls, node.func.attr), f"{cls.__name__}.{node.func.attr}"
        if fn is None:
            continue
        bind(fn, node, f"{where}: {label}")
        if label == "run_deployment" and node.args and isinstance(node.args[0], ast.Constant):
            assert node.args[0].value in deployment_names(), \
                f"{where}: no deployment {node.args[0].value!r} in prefect.yaml ({sorted(deployment_names())})"


def bind(fn, call: ast.Call, where: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return
    args = [None] * len(call.args)
    if inspect.isfunction(fn) and "." in fn.__qualname__ and list(sig.parameters)[:1] == ["self"]:
        args = [None, *args]  # a method looked up on its class
    try:
        sig.bind(*args, **{k.arg: None for k in call.keywords})
    except TypeError as e:
        raise AssertionError(f"{where}{sig}: {e}") from None
