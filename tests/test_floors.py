"""The layout's rule, read off the imports: no lower floor imports a higher one.

    scratchnet.runtime  <-  scratchnet.kernels  <-  scratchnet.layers and the modules beside it
    <-  experiments  <-  benchmarks;      dsp and scratchnet never import each other.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, root=ROOT):
    """The absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.append(name)
            found += [f"{name}.{alias.name}" for alias in node.names]  # `from . import x`
    return found


def floor(name):
    """The floor of a module name, or None for a module outside the project."""
    parts = name.split(".")
    if parts[0] == "scratchnet":
        if len(parts) > 1 and parts[1] in ("runtime", "kernels"):
            return parts[1]
        return "layers" if len(parts) > 1 else None  # the package itself: the top floor
    return parts[0] if parts[0] in ("dsp", "experiments", "benchmarks") else None


# What each floor may import, besides modules outside the project.
ALLOWED = {
    "runtime": {"runtime"},
    "kernels": {"runtime", "kernels"},
    "layers": {"runtime", "kernels", "layers"},
    "dsp": {"dsp"},
    "experiments": {"runtime", "kernels", "layers", "dsp", "experiments"},
    "benchmarks": {"runtime", "kernels", "layers", "dsp", "experiments", "benchmarks"},
}


def project_files():
    for package in ("scratchnet", "dsp", "experiments", "benchmarks"):
        yield from sorted((ROOT / package).rglob("*.py"))


def violations(path, root=ROOT):
    mine = floor(module_name(path, root)) or "layers"  # scratchnet/__init__.py: the top floor
    return [name for name in imports(path, root)
            if floor(name) is not None and floor(name) not in ALLOWED[mine]]


@pytest.mark.parametrize("path", list(project_files()), ids=lambda p: module_name(p))
def test_no_lower_floor_imports_a_higher_one(path):
    assert not violations(path), f"{module_name(path)} imports {violations(path)}"


@pytest.mark.parametrize("where, text, bad", [
    ("scratchnet/kernels/probe.py", "from ..layers.base import Layer\n", "scratchnet.layers.base"),
    ("scratchnet/runtime/probe.py", "from ..kernels import im2col\n", "scratchnet.kernels"),
    ("scratchnet/kernels/probe.py", "import scratchnet.optim\n", "scratchnet.optim"),
    ("dsp/probe.py", "from scratchnet.runtime.backend import to_numpy\n",
     "scratchnet.runtime.backend"),
    ("experiments/probe.py", "from benchmarks.bench import networks\n", "benchmarks.bench"),
])
def test_the_rule_catches_an_import_upward(tmp_path, where, text, bad):
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert bad in violations(path, tmp_path)
