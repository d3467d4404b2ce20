"""Static scans of the product packages and the sockets a process listens on, for tests/test_security.py.

The scans read the source with `ast` (not regular expressions), so comments and
docstrings never count, and a string built from parts is recognised wherever it is
passed to a SQL entry point. `listening_sockets` reads the kernel's own view
(/proc/net) of the sockets a process holds, so a listener is found whatever library
opened it.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("controller", "forecasting", "db", "simulator")

#: Modules that unpickle (or exist to): never imported by product code.
PICKLE_MODULES = frozenset({"pickle", "_pickle", "cPickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"})
#: Call names through which SQL text reaches the database.
SQL_SINKS = frozenset({"text", "exec_driver_sql", "execute", "executemany", "copy"})
#: Call names that open a listening socket.
LISTEN_CALLS = frozenset({"bind", "listen", "start_http_server", "start_wsgi_server", "make_server", "HTTPServer",
                          "ThreadingHTTPServer", "TCPServer", "UDPServer", "start_server", "create_server"})


@dataclass(frozen=True)
class Finding:
    """One place in the product code: ``path::function:line`` and what was found there."""

    path: str
    function: str
    line: int
    what: str

    @property
    def where(self) -> str:
        return f"{self.path}::{self.function}"

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.function}): {self.what}"


def product_files() -> Iterator[tuple[str, ast.Module]]:
    """(path relative to the repository, parsed module) of every product source file."""
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


class _Scopes(ast.NodeVisitor):
    """Walks a module remembering the enclosing function of each node."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stack: list[str] = []
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.path, ".".join(self.stack) or "<module>", getattr(node, "lineno", 0), what))

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped


class _PickleScan(_Scopes):
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in PICKLE_MODULES:
                self.add(node, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.module.split(".")[0] in PICKLE_MODULES:
            self.add(node, f"from {node.module} import ...")
        if node.module in ("torch", "numpy") and any(a.name == "load" for a in node.names):
            self.add(node, f"from {node.module} import load (its pickle options escape this scan)")

    def visit_Call(self, node: ast.Call) -> None:
        dotted = _dotted(node.func)
        if dotted == "torch.load" and not _keyword_is(node, "weights_only", True):
            self.add(node, "torch.load without weights_only=True")
        if dotted in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False) and any(
                k.arg == "allow_pickle" for k in node.keywords):
            self.add(node, f"{dotted} with allow_pickle other than False")
        if _call_name(node) in ("read_pickle", "to_pickle", "load_state_dict_from_url"):
            self.add(node, f"{_call_name(node)}()")
        self.generic_visit(node)


def _dynamic_parts(node: ast.expr) -> list[str] | None:
    """None for a plain string literal; else the source of each interpolated or concatenated piece."""
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.JoinedStr):
        return [ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        parts = [p for side in (node.left, node.right) for p in (_dynamic_parts(side) or [])]
        for side in (node.left, node.right):
            if not isinstance(side, ast.Constant | ast.JoinedStr | ast.BinOp):
                parts.append(ast.unparse(side))
        return parts or None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return [ast.unparse(node)]
    return None


class _SqlScan(_Scopes):
    """SQL entry points whose statement is built from pieces (directly, or through a local name)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.assigned: dict[tuple[str, str], list[ast.expr]] = {}

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.assigned.setdefault((".".join(self.stack), target.id), []).append(node.value)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if _call_name(node) in SQL_SINKS and node.args:
            first = node.args[0]
            values = [first]
            if isinstance(first, ast.Name):
                scope = ".".join(self.stack)
                values = self.assigned.get((scope, first.id)) or self.assigned.get(("", first.id), [])
            for value in values:
                parts = _dynamic_parts(value)
                if parts is not None:
                    self.add(node, f"{_call_name(node)}() of a built string; pieces: {', '.join(sorted(set(parts)))}")
        self.generic_visit(node)


class _ListenScan(_Scopes):
    def visit_Call(self, node: ast.Call) -> None:
        if _call_name(node) in LISTEN_CALLS and not _dotted(node.func).endswith("event.listen"):  # SQLAlchemy events
            self.add(node, f"{_call_name(node)}()")
        self.generic_visit(node)


_SCANNERS: dict[str, type[_Scopes]] = {"pickle": _PickleScan, "sql": _SqlScan, "listen": _ListenScan}


def scan_source(kind: str, source: str, path: str = "<source>") -> list[Finding]:
    """Findings of one scanner (``pickle``, ``sql``, ``listen``) in a piece of source text."""
    scan = _SCANNERS[kind](path)
    scan.visit(ast.parse(source))
    return scan.findings


def scan_product(kind: str) -> list[Finding]:
    """Findings of one scanner in every product source file."""
    out: list[Finding] = []
    for path, module in product_files():
        scan = _SCANNERS[kind](path)
        scan.visit(module)  # assignments precede their use within a function, so one pass sees them
        out.extend(scan.findings)
    return out


# -- the kernel's view of listening sockets ---------------------------------------------

def _decode(address: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp: 32-bit words in host byte order) as ('127.0.0.1', 8080)."""
    ip_hex, port_hex = address.split(":")
    raw = bytes.fromhex(ip_hex)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(port_hex, 16)


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def listening_sockets(pid: int | None = None) -> set[tuple[str, str, int]]:
    """(protocol, address, port) of TCP sockets in LISTEN and unconnected bound UDP sockets.

    With ``pid``: only those the process holds; without: all in this network namespace.
    """
    inodes = None if pid is None else _socket_inodes(pid)
    found: set[tuple[str, str, int]] = set()
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        table = Path("/proc/net") / proto
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != state or (inodes is not None and fields[9] not in inodes):
                continue
            found.add((proto, *_decode(fields[1])))
    return found
