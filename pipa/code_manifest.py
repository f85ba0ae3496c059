"""Which source files each stage script runs, hashed: the code dependency of every stage.

A stage's numbers depend on its script and on every repository module the script imports,
directly or through other modules. Listing those modules by hand in each stage of
``dvc.yaml`` was both incomplete (a module reached only through another one, such as
``pipa/world.py`` through the stages' shared workflow module, was missing, so editing it re-ran nothing)
and slow: 96 stages x ~12 module files is ~1,100 hash checks and ~4,500 lines of
``dvc.lock`` that every ``dvc repro``, even a no-op, reads and checks.

Instead the ``preflight`` stage (``stages/preflight.py``) depends on the ``pipa/`` and
``stages/`` folders and writes one manifest per stage script, ``data/code/<script>.json``:
the script's import closure within the repository, each file with its SHA-256. Every other
stage depends on its script's manifest alone. A manifest's bytes change exactly when one of
the files it lists changes, so DVC re-runs every stage whose code changed, and an edit to a
module a stage never imports leaves its manifest, and the stage, untouched.

The closure is per file, not per function: a stage depends on all of a module it imports
even if it calls one function of it. Modules are therefore split where a long stage would
otherwise depend on code it never runs: ``pipa/examples.py`` keeps the label rules out of
the training loop that pretraining uses, and ``pipa.config.validate`` takes the
``ALGORITHMS`` table as an argument instead of importing ``pipa/losses.py``.

The closure is static (``ast``): every ``import`` / ``from ... import`` statement in the
file, at any depth (imports inside functions count; those under ``if TYPE_CHECKING:`` do
not, they never run), absolute or relative, that resolves to a file under the repository.
Third-party packages are not followed (their versions are pinned in ``pyproject.toml``). A
module imported by a computed name (``importlib.import_module(name)``) is not seen; the
package has none.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from pipa.io import atomic_path


def _module_file(name: str, roots: list[Path]) -> list[Path]:
    """Files that importing module ``name`` (``a.b.c``) runs, from the first root that has
    it: every package ``__init__.py`` on the way and the module itself. [] if no root
    holds it (the standard library, a third-party package)."""
    parts = name.split(".")
    for root in roots:
        files: list[Path] = []
        here = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            package_init = here / part / "__init__.py"
            module = here / f"{part}.py"
            if package_init.is_file():
                files.append(package_init)
                here = here / part
            elif last and module.is_file():
                files.append(module)
            else:
                break
        else:
            return files
    return []


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_of(path: Path, roots: list[Path]) -> list[Path]:
    """Repository files that the import statements of ``path`` run."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as err:
        raise ValueError(f"{path}: cannot parse to find its imports ({err.msg}, line "
                         f"{err.lineno}); fix the syntax error") from err
    found: list[Path] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _module_file(alias.name, roots)
        elif isinstance(node, ast.ImportFrom):
            prefix = node.module or ""
            search = roots
            if node.level:  # relative: from the package that holds ``path``
                base = path.parents[node.level - 1]
                search = [base]
                if not prefix and (base / "__init__.py").is_file():
                    found.append(base / "__init__.py")
            if prefix:
                found += _module_file(prefix, search)
            # ``from pkg import name``: name may be a submodule (runs its file) or an
            # attribute of pkg (already counted with pkg).
            for alias in node.names:
                sub = f"{prefix}.{alias.name}" if prefix else alias.name
                found += _module_file(sub, search)
    return found


def import_closure(script: Path, repo_root: Path,
                   parsed: dict[tuple, list[Path]] | None = None) -> list[Path]:
    """``script`` and every repository file it imports, transitively, sorted.

    Imports resolve as they do when the script runs: first beside the script (its
    directory is ``sys.path[0]``: ``import _boot`` in ``stages/``), then at the repository
    root (``pipa``). ``parsed``: a memo of each file's imports, shared by the scripts of
    one ``write_manifests`` call so that every module is parsed once, not once a script."""
    script = script.resolve()
    repo_root = repo_root.resolve()
    roots = [script.parent, repo_root]
    parsed = {} if parsed is None else parsed
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        key = (path, script.parent)
        if key not in parsed:
            parsed[key] = [p.resolve() for p in _imports_of(path, roots)]
        todo += parsed[key]
    return sorted(seen, key=lambda p: p.relative_to(repo_root).as_posix())


def manifest(script: Path, repo_root: Path,
             parsed: dict[tuple, list[Path]] | None = None) -> dict:
    """``{"script": ..., "files": {relative path: sha256}}`` for ``script``'s closure."""
    repo_root = repo_root.resolve()
    files = {p.relative_to(repo_root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in import_closure(script, repo_root, parsed)}
    return {"script": script.resolve().relative_to(repo_root).as_posix(), "files": files}


def stage_scripts(stage_dir: Path) -> list[Path]:
    """The stage scripts of ``stage_dir``: every ``*.py`` not starting with ``_`` (those
    are shared helpers such as ``_boot.py``, part of the scripts' closures)."""
    return sorted(p for p in stage_dir.glob("*.py") if not p.name.startswith("_"))


def write_manifests(stage_dir: Path, repo_root: Path, out_dir: Path) -> dict[str, int]:
    """Write ``out_dir/<script stem>.json`` for every stage script, the folder whole (a
    failure leaves the previous folder as it was). Returns script name -> file count."""
    scripts = stage_scripts(stage_dir)
    if not scripts:
        raise ValueError(f"{stage_dir}: no stage scripts (*.py) found; pass the folder "
                         "that holds them (--stages)")
    parsed: dict[tuple, list[Path]] = {}
    manifests = {p.stem: manifest(p, repo_root, parsed) for p in scripts}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for stem, content in manifests.items():
            (tmp / f"{stem}.json").write_text(json.dumps(content, indent=1, sort_keys=True)
                                              + "\n")
    return {stem: len(m["files"]) for stem, m in manifests.items()}
