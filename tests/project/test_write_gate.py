"""One gate for every write: outside ``dsgan_cli/plumbing/writes.py`` no module of the package creates, replaces,
truncates or removes a file or folder itself. The check reads the package's syntax tree, so a new write anywhere fails
here until it goes through the gate (which refuses symlinks and special files, and writes atomically)."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO, package_modules

GATE = REPO / "dsgan_cli" / "plumbing" / "writes.py"

#: module.function calls that write, create or remove paths.
WRITING_FUNCTIONS = {
    "os": {
        "replace",
        "rename",
        "renames",
        "remove",
        "unlink",
        "rmdir",
        "removedirs",
        "truncate",
        "ftruncate",
        "pwrite",
        "makedirs",
        "mkdir",
        "symlink",
        "link",
        "mkfifo",
        "mknod",
        "chmod",
        "chown",
    },
    "shutil": {"copy", "copy2", "copyfile", "copyfileobj", "copytree", "move", "rmtree", "make_archive"},
    "tempfile": {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory", "TemporaryFile", "SpooledTemporaryFile"},
    "torch": {"save"},
    "np": {"save", "savez", "savez_compressed", "savetxt"},
    "numpy": {"save", "savez", "savez_compressed", "savetxt"},
}
#: Method names that only ever write paths (Path, accelerate, torch.hub, safetensors).
WRITING_METHODS = {
    "write_text",
    "write_bytes",
    "touch",
    "mkdir",
    "symlink_to",
    "hardlink_to",
    "unlink",
    "rmdir",
    "save_state",
    "save_model",
    "download_url_to_file",
    "save_file",
    "to_csv",
}
#: Methods that write to their first argument unless it is an in-memory buffer (named ``buf``).
SAVING_METHODS = {"save", "savefig", "imsave"}
#: filelock's classes: each creates its lock file.
LOCK_CLASSES = {"FileLock", "SoftFileLock", "UnixFileLock"}
#: os.open flags that create or write.
WRITE_FLAGS = {"O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"}


def _mode(call: ast.Call, position: int) -> str | None:
    """The constant mode argument of an open-like call, if any."""
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return call.args[position].value
    for kw in call.keywords:
        if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def _names(node: ast.AST) -> set[str]:
    """Every attribute and name mentioned in an expression (to spot os.O_* flags)."""
    return {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(node) if isinstance(n, (ast.Attribute, ast.Name))}


def writes_in(source: str) -> list[tuple[int, str]]:
    """(line, call) of every call in ``source`` that writes to the file system by itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        text = ast.unparse(node)[:100]
        if isinstance(fn, ast.Name):
            if fn.id == "open" and any(c in (_mode(node, 1) or "r") for c in "wax+"):
                found.append((node.lineno, text))
            elif fn.id in LOCK_CLASSES:  # creates its lock file
                found.append((node.lineno, text))
            continue
        if not isinstance(fn, ast.Attribute):
            continue
        owner = fn.value.id if isinstance(fn.value, ast.Name) else None
        if owner == "os" and fn.attr == "open":
            if len(node.args) > 1 and _names(node.args[1]) & WRITE_FLAGS:
                found.append((node.lineno, text))
        elif owner == "os" and fn.attr == "fdopen":
            if any(c in (_mode(node, 1) or "r") for c in "wax+"):
                found.append((node.lineno, text))
        elif owner in WRITING_FUNCTIONS and fn.attr in WRITING_FUNCTIONS[owner] or fn.attr in LOCK_CLASSES:
            found.append((node.lineno, text))
        elif fn.attr in WRITING_METHODS:
            found.append((node.lineno, text))
        elif fn.attr == "open" and any(c in (_mode(node, 0) or "r") for c in "wax+"):
            found.append((node.lineno, text))  # Path.open("w")
        elif fn.attr == "memmap" and (_mode(node, 1) or "r+") != "r":
            found.append((node.lineno, text))
        elif fn.attr in SAVING_METHODS:
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Name) and first.id == "buf"):
                found.append((node.lineno, text))
    return found


def test_every_write_of_the_package_goes_through_the_gate():
    offenders = []
    paths = package_modules().values()
    assert GATE in paths, f"the gate {GATE} is not a module of the package"
    for path in paths:
        if path == GATE:
            continue
        for line, call in writes_in(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(REPO)}:{line}: {call}")
    assert not offenders, "writes outside dsgan_cli/plumbing/writes.py:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "code",
    [
        "open(p, 'w')",
        "open(p, mode='a')",
        "open(p, 'rb+')",
        "Path(p).open('w')",
        "p.write_text('x')",
        "p.write_bytes(b'')",
        "p.touch()",
        "p.mkdir(parents=True)",
        "p.unlink()",
        "os.open(p, os.O_RDWR | os.O_CREAT)",
        "os.open(p, flags | os.O_WRONLY)",
        "os.fdopen(fd, 'w')",
        "os.replace(a, b)",
        "os.rename(a, b)",
        "os.remove(p)",
        "os.truncate(p, 0)",
        "os.makedirs(p)",
        "shutil.rmtree(p)",
        "shutil.copy(a, b)",
        "shutil.move(a, b)",
        "tempfile.mkstemp(dir=d)",
        "torch.save(x, p)",
        "np.save(p, a)",
        "np.memmap(p, dtype=np.uint8, mode='w+', shape=(1,))",
        "img.save(p)",
        "fig.savefig(path)",
        "accelerator.save_state(d)",
        "torch.hub.download_url_to_file(u, p)",
        "safetensors.torch.save_file(t, p)",
        "FileLock(str(p))",
        "filelock.FileLock(p)",
        "os.ftruncate(fd, 0)",
        "os.pwrite(fd, b'x', 0)",
    ],
)
def test_the_gate_check_sees_each_kind_of_write(code):
    """The checker itself: every kind of write it looks for is found (else the test above proves nothing)."""
    assert writes_in(code), f"{code!r} was not seen as a write"


@pytest.mark.parametrize(
    "code",
    [
        "open(p)",
        "open(p, 'rb')",
        "os.open(p, os.O_RDONLY | os.O_NONBLOCK)",
        "os.fdopen(fd, 'rb')",
        "img.save(buf, format='PNG')",
        "fig.savefig(buf, format='png')",
        "np.memmap(p, dtype=np.uint8, mode='r', shape=(1,))",
        "text.replace('a', 'b')",
        "writes.write_bytes_atomic(p, b'')",
    ],
)
def test_the_gate_check_lets_reads_and_in_memory_writes_pass(code):
    assert not writes_in(code), f"{code!r} was taken for a write"
