"""``load(path) -> Config``: read a TOML or INI file and its includes, validate once.

The format follows the extension: ``.toml`` is TOML; ``.ini``, ``.conf`` and ``.cf``
are INI. ``include`` (a glob or list of globs, relative to the including file) pulls
more files in, of either format; each included file adds services (a name defined
twice is an error) and may set ``[daemon]``/``[defaults]`` keys the others leave
unset. Problems are collected over every file and raised together as one
:class:`~lvsd.errors.ConfigError`.
"""

from __future__ import annotations

import gc
import glob
import grp
import os
import stat

from lvsd.config.document import Document, Tree
from lvsd.config.ini import parse_ini
from lvsd.config.locate import KeyPath, render_path
from lvsd.config.model import Config
from lvsd.config.schema import Locate, build
from lvsd.config.toml import parse_toml
from lvsd.config.values import show
from lvsd.config.web import load_web
from lvsd.errors import ConfigError, Problem

TOML_SUFFIXES = (".toml",)
INI_SUFFIXES = (".ini", ".conf", ".cf")
#: Bounds on what one load reads: far above any real config, low enough that a
#: hostile or mistaken file can't exhaust memory, the stack or the file table.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILES = 1024
MAX_DEPTH = 32


def load(path: str) -> Config:
    """Load the config at ``path``; raise :class:`ConfigError` listing every problem."""
    # Loading allocates many objects and frees few, so the cyclic collector would scan
    # them again and again for nothing. It is paused instead, and one young-generation
    # pass at the end frees the cycles left behind (configparser's section proxies),
    # scanning only what the load allocated.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(path)
    finally:
        if collecting:
            gc.enable()
            gc.collect(0)


def _load(path: str) -> Config:
    loader = _Loader()
    root = loader.read(path)
    if root is None:
        raise ConfigError(loader.problems)
    loader.origins[()] = root
    loader.seen.add(os.path.realpath(path))
    tree: Tree = {}
    loader.merge_document(root, tree, stack=(os.path.realpath(path),))
    config, problems = build(tree, path, loader.locate)
    problems = loader.problems + problems + _host_problems(config, loader.locate)
    if problems or config is None:
        raise ConfigError(_in_file_order(problems))
    return config


def read_tree(path: str) -> Tree | None:
    """``path`` and its includes merged into one tree, not validated, whatever problems
    they have; None when ``path`` itself cannot be read or parsed. For readers that
    need one key of a config that may be broken (the client commands' socket path)."""
    loader = _Loader()
    root = loader.read(path)
    if root is None:
        return None
    loader.origins[()] = root
    tree: Tree = {}
    loader.merge_document(root, tree, stack=(os.path.realpath(path),))
    return tree


def parse(file: str, text: str) -> Document:
    """Parse ``text`` as the format ``file``'s extension names."""
    lowered = file.lower()
    if lowered.endswith(TOML_SUFFIXES):
        return parse_toml(file, text)
    if lowered.endswith(INI_SUFFIXES):
        return parse_ini(file, text)
    suffixes = ", ".join(TOML_SUFFIXES + INI_SUFFIXES)
    raise ConfigError([Problem(file, "", f"unknown config format (expected one of {suffixes})")])


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems grouped by file (in the order files were read), then by line; problems
    without a line come after those with one in their file, in the order found."""
    order = {p.file: i for i, p in reversed(list(enumerate(problems)))}
    return sorted(problems, key=lambda p: (order[p.file], p.line is None, p.line or 0))


class _Loader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        #: which document each subtree of the merged tree came from
        self.origins: dict[KeyPath, Document] = {}
        self.files = 0  # files read (or tried), for MAX_FILES
        self.seen: set[str] = set()  # real paths read: each file is read once

    def locate(self, path: KeyPath) -> tuple[str, int | None]:
        for end in range(len(path), -1, -1):
            document = self.origins.get(path[:end])
            if document is not None:
                return document.file, document.line(path)
        raise AssertionError("the root document has no origin")  # set by load()

    def read(self, file: str) -> Document | None:
        self.files += 1
        if self.files > MAX_FILES:
            self.problems.append(Problem(file, "", f"more than {MAX_FILES} config files"))
            return None
        try:
            text = _read_text(file)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problems.append(Problem(file, "", f"cannot read the file: {reason}"))
            return None
        try:
            document = parse(file, text)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None
        except RecursionError:
            document = None
        if document is None or _deeper_than(document.tree, MAX_DEPTH):
            message = f"values nested more than {MAX_DEPTH} deep"
            self.problems.append(Problem(file, "", message))
            return None
        self.problems.extend(document.problems)
        return document

    def merge_document(self, document: Document, tree: Tree, stack: tuple[str, ...]) -> None:
        """Merge ``document`` into ``tree``, then its includes in order."""
        own = dict(document.tree)
        include = own.pop("include", None)
        self.merge(own, tree, (), document)
        if include is not None:
            self.include(document, include, tree, stack)

    def include(
        self, document: Document, value: object, tree: Tree, stack: tuple[str, ...]
    ) -> None:
        patterns: list[object]
        if isinstance(value, str):
            patterns = [w for w in value.replace(",", " ").split() if w]
        elif isinstance(value, list):
            patterns = value
        else:
            self._problem(document, ("include",), f"expected a list of globs, got {show(value)}")
            return
        base = os.path.dirname(document.file)
        for index, pattern in enumerate(patterns):
            where: KeyPath = ("include", index) if isinstance(value, list) else ("include",)
            if not isinstance(pattern, str):
                self._problem(document, where, f"expected a glob, got {show(pattern)}")
                continue
            full = os.path.join(base, os.path.expanduser(pattern))
            matches = sorted(glob.glob(full))
            if not matches:
                self._problem(document, where, f"include {show(pattern)} matches no file")
                continue
            for match in matches:
                real = os.path.realpath(match)
                if real in stack:
                    self._problem(document, where, f"include {show(match)} includes itself")
                    continue
                if real in self.seen:
                    message = f"include {show(match)}: the file is already included"
                    self._problem(document, where, message)
                    continue
                self.seen.add(real)
                included = self.read(match)
                if included is not None:
                    self.merge_document(included, tree, (*stack, real))

    def merge(self, source: Tree, target: Tree, path: KeyPath, document: Document) -> None:
        for key, value in source.items():
            here = (*path, key)
            if key not in target:
                target[key] = value
                self.origins[here] = document
                continue
            existing = target[key]
            if here[:1] == ("services",) and len(here) == 2:
                file, _ = self.locate(here)
                self._problem(document, here, f"service {show(key)} is already defined in {file}")
            elif isinstance(existing, dict) and isinstance(value, dict):
                self.merge(value, existing, here, document)
            else:
                file, _ = self.locate(here)
                self._problem(document, here, f"{render_path(here)} is already set in {file}")

    def _problem(self, document: Document, path: KeyPath, message: str) -> None:
        self.problems.append(
            Problem(document.file, render_path(path), message, document.line(path))
        )


def _read_text(file: str) -> str:
    """The text of ``file``, a regular file of at most :data:`MAX_FILE_BYTES` (opened
    without blocking, so a FIFO or device is refused rather than waited on)."""
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError("not a regular file")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data.decode("utf-8")


def _deeper_than(tree: Tree, limit: int) -> bool:
    """Whether tables and arrays in ``tree`` nest more than ``limit`` deep (walked
    without recursion: the check must hold for any input)."""
    stack: list[tuple[object, int]] = [(tree, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def _host_problems(config: Config | None, locate: Locate) -> list[Problem]:
    """What the daemon would refuse on this host: a control socket group that does not
    exist, a web config file with problems (``check`` runs as the unit's
    ExecStartPre, on the same host as ``run``)."""
    web = config.daemon.web_config_file if config is not None else ""
    problems = _web_problems(web, locate) if web else []
    group = config.daemon.control_group if config is not None else None
    if group is None:
        return problems
    try:
        grp.getgrnam(group)
    except KeyError:
        path: KeyPath = ("daemon", "control_group")
        file, line = locate(path)
        problems.append(
            Problem(file, render_path(path), f"group {show(group)} does not exist", line)
        )
    return problems


def _web_problems(web: str, locate: Locate) -> list[Problem]:
    """The web config file's own problems (with its lines), or that it cannot be read."""
    try:
        load_web(web)
    except ConfigError as exc:
        path: KeyPath = ("daemon", "web_config_file")
        file, line = locate(path)
        if not os.path.exists(web):
            return [Problem(file, render_path(path), f"{web} does not exist", line)]
        return exc.problems
    return []
