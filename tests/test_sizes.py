"""House rule (docs/architecture.md, ../shared/STYLE.md): modules under 600 lines, functions
under 80, so each can be read whole. Generated code (`*_pb2*.py`) is exempt; what is still
too long is named in ALLOWED, with why, and the list may only shrink: an entry that is no
longer too long fails too, so it is struck off when its split lands."""

from __future__ import annotations

import ast
from pathlib import Path

import commonsky

ROOT = Path(commonsky.__file__).parent
MODULE_LINES = 600
FUNCTION_LINES = 80  # from `def` to the last line of the body, decorators not counted

# path relative to commonsky/ (a module), or "path:function" (dotted for a nested one).
ALLOWED: set[str] = set()  # empty: every module and function is within the limits


def too_long(path: Path, source: str) -> dict[str, int]:
    """Everything in one module over the limits: {name: lines}, the module as its path and
    each function as `path:qualified.name` (a nested function under its parents)."""
    found: dict[str, int] = {}
    lines = len(source.splitlines())
    if lines > MODULE_LINES:
        found[str(path)] = lines

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}.{child.name}" if prefix else child.name
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                assert child.end_lineno is not None
                span = child.end_lineno - child.lineno + 1
                if span > FUNCTION_LINES:
                    found[f"{path}:{name}"] = span
            visit(child, name)

    visit(ast.parse(source), "")
    return found


def package_too_long() -> dict[str, int]:
    found: dict[str, int] = {}
    for file in sorted(ROOT.rglob("*.py")):
        if "_pb2" in file.name:  # protoc's output
            continue
        found.update(too_long(file.relative_to(ROOT), file.read_text(encoding="utf-8")))
    return found


def test_no_module_or_function_is_too_long_but_the_allowed() -> None:
    over = {name: n for name, n in package_too_long().items() if name not in ALLOWED}
    assert not over, (
        f"over {MODULE_LINES} lines a module or {FUNCTION_LINES} a function "
        f"(split along a real seam): {over}"
    )


def test_the_allow_list_names_only_what_is_still_too_long() -> None:
    stale = ALLOWED - set(package_too_long())
    assert not stale, f"no longer too long (or gone): strike off ALLOWED: {sorted(stale)}"


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}():\n{body}"


def test_the_measure_finds_a_long_function_a_nested_one_and_a_long_module() -> None:
    at_limit = _function("fits", FUNCTION_LINES - 1)
    assert too_long(Path("m.py"), at_limit) == {}, "exactly the limit is allowed"
    over = _function("over", FUNCTION_LINES)
    assert too_long(Path("m.py"), over) == {"m.py:over": FUNCTION_LINES + 1}
    # class C / def outer / def inner (at the limit) / return inner: outer is 2 lines over.
    nested = (
        "class C:\n    def outer(self):\n"
        + _function("inner", FUNCTION_LINES - 1, "        ")
        + "        return inner\n"
    )
    assert too_long(Path("m.py"), nested) == {"m.py:C.outer": FUNCTION_LINES + 2}
    assert too_long(Path("m.py"), "x = 1\n" * MODULE_LINES) == {}
    assert too_long(Path("m.py"), "x = 1\n" * (MODULE_LINES + 1)) == {"m.py": MODULE_LINES + 1}
