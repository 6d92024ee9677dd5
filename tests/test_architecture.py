"""Which code may import which (STYLE.md, "Assembly and import direction"), checked on the
source: every import, at top level or inside a function (a hidden cycle is still a cycle).

- `ingest/` is a library (parsers, chunking, embedding, thread priority): it imports nothing
  from `app`. What it is configured with comes in through its own protocols, satisfied by the
  settings sections `app/kit` defines.
- `app/kit` is the plumbing every domain builds on: it imports no domain and not `ingest`.
- Nothing below the web app imports `app.main`; the job system and `ingest` load without it.
- The index has one owner: shard files are written, erased and locked in `app/search/index/`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, at top level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] != "__init__" else ".".join(parts[:-1])


def _offending(folder: Path, forbidden: list[str]) -> set[str]:
    return {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted(folder.rglob("*.py"))
        for module in imported_modules(path, _package_of(path))
        if any(under(module, f) for f in forbidden)
    }


def test_ingest_is_a_library_that_imports_nothing_from_app() -> None:
    assert (ROOT / "ingest" / "parsers").is_dir()
    assert _offending(ROOT / "ingest", ["app"]) == set()


def test_kit_imports_no_domain_and_not_ingest() -> None:
    domains = sorted(
        f"app.{p.name}"
        for p in (ROOT / "app").iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in ("kit", "models")
    )
    assert {"app.documents", "app.chat", "app.search", "app.jobs"} <= set(domains)
    assert _offending(ROOT / "app" / "kit", [*domains, "ingest", "app.main"]) == set()
    # `import app` alone would reach everything through the package.
    for path in sorted((ROOT / "app" / "kit").glob("*.py")):
        assert "app" not in imported_modules(path, "app.kit"), path


def test_no_module_below_the_web_app_imports_it() -> None:
    below = [ROOT / "app" / name for name in ("jobs", "kit", "search", "documents", "crypto")]
    for folder in [*below, ROOT / "ingest"]:
        assert _offending(folder, ["app.main"]) == set(), folder


def test_shard_files_are_written_and_erased_only_by_the_index_package() -> None:
    # The primitives that write or delete shard files, and who may call them.
    writers = {"save_shard", "save_bm25_shard", "remove_vector_ids", "remove_bm25_ids"}
    allowed = {ROOT / "app" / "search" / "index", ROOT / "app" / "crypto"}
    offending: set[str] = set()
    for path in sorted((ROOT / "app").rglob("*.py")) + sorted((ROOT / "ingest").rglob("*.py")):
        if any(folder in path.parents for folder in allowed):
            continue
        names = {m.rsplit(".", 1)[-1] for m in imported_modules(path, _package_of(path))}
        if names & writers:
            offending.add(f"{path.relative_to(ROOT)}: {sorted(names & writers)}")
    assert offending == set()


def test_job_and_ingest_modules_import_without_the_web_app() -> None:
    """A Celery worker or the CLI loads the job system without the FastAPI app (an import of
    app.main from below it was a cycle)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import app.jobs, app.search.index, ingest\n"
        "names = [m.name for p in (app.jobs, app.search.index, ingest)\n"
        "         for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "assert 'app.jobs.runtime' in names and 'ingest.chunking' in names, names\n"
        "assert 'app.search.index.writer' in names, names\n"
        "for name in names + ['app.documents.ingestion']:\n"
        "    importlib.import_module(name)\n"
        "assert 'app.main' not in sys.modules, 'app.main was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def _status_writes(path: Path) -> list[str]:
    """Where a file sets a document's status: `x.status = ...` on a document, `status=` in a
    `Document(...)` or in `.values(...)` of an `update(Document)`."""
    source = path.read_text()
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and "document" in ast.unparse(target.value).lower()
                ):
                    found.append(f"line {node.lineno}: {ast.unparse(target)} = ...")
        elif isinstance(node, ast.Call) and any(k.arg == "status" for k in node.keywords):
            call = ast.unparse(node.func)
            if call == "Document" or (
                call.endswith(".values") and "update(Document)" in ast.unparse(node)
            ):
                found.append(f"line {node.lineno}: {call}(status=...)")
    return found


def test_one_writer_of_document_status() -> None:
    owner = ROOT / "app" / "documents" / "status.py"
    assert _status_writes(owner), "the owner's own writes are found (the check works)"
    writes = {
        f"{path.relative_to(ROOT)} {write}"
        for path in sorted((ROOT / "app").rglob("*.py"))
        if path != owner
        for write in _status_writes(path)
    }
    # A new upload starts queued: the constructor's argument (the column's default anyway).
    assert writes == {"app/documents/service.py line 112: Document(status=...)"} or all(
        w.startswith("app/documents/service.py line ") and w.endswith("Document(status=...)")
        for w in writes
    ), writes


def _calls(path: Path) -> list[tuple[int, str]]:
    return [
        (node.lineno, ast.unparse(node.func))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Call)
    ]


def test_main_installs_one_container_on_app_state() -> None:
    """app/main.py assembles nothing itself: the only app.state attribute it sets is the
    container (app/container.py); the older names are aliases onto it."""
    tree = ast.parse((ROOT / "app" / "main.py").read_text())
    assigned: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and ast.unparse(target.value).endswith(".state"):
                assigned.add(target.attr)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr":
            assigned.add(f"setattr({ast.unparse(node.args[0])}, ...)")
    assert assigned == {"container"}


def test_request_code_reaches_the_parts_through_the_container() -> None:
    """No `request.app.state.database` and the like below the app: `app.state.container`."""
    offending: set[str] = set()
    for path in sorted((ROOT / "app").rglob("*.py")):
        if path in (ROOT / "app" / "container.py", ROOT / "app" / "main.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Attribute)
                and ast.unparse(node.value).endswith("app.state")
                and node.attr != "container"
            ):
                offending.add(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offending == set()


def test_only_the_container_builds_the_database_and_the_retriever() -> None:
    """CLIs, benchmarks and evaluations take their database and retriever from a Container;
    only a Celery worker process builds the bare Runtime (the container imports the Celery
    dispatcher, which imports the worker)."""
    builders = {
        "database_for": {"app/jobs/runtime.py"},
        "Retriever.create": {"app/container.py"},
        "Runtime": {"app/jobs/celery_app.py"},
    }
    found: dict[str, set[str]] = {name: set() for name in builders}
    for path in sorted((ROOT / "app").rglob("*.py")):
        for _, call in _calls(path):
            name = call.rsplit(".", 1)[-1] if call.endswith(".database_for") else call
            if name in found:
                found[name].add(str(path.relative_to(ROOT)))
    assert found == builders
