"""The package's layer order (`cascade.LAYERS`): no module imports a layer above its own."""

import ast
from pathlib import Path

import cascade

PACKAGE = Path(cascade.__file__).parent


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix of `module` (a dotted name) listed there."""
    best, best_len = None, -1
    for index, names in enumerate(cascade.LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_len:
                best, best_len = index, len(name)
    if best is None:
        raise AssertionError(f"{module} is in no layer of cascade.LAYERS: add it there")
    return best


def imported_modules(path: Path, module: str) -> set[str]:
    """Every cascade module `path` imports, at the top or inside functions."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return {m for m in found if m.startswith("cascade.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == "cascade":
            continue
        own = layer_of(module)
        for target in imported_modules(path, module):
            # "from cascade.data import views" names cascade.data.views: judge the module.
            if layer_of(target) > own:
                violations.append(
                    f"{module} (layer {own}) imports {target} (layer {layer_of(target)})"
                )
    assert not violations, "\n".join(violations)


def test_layer_lookup_catches_an_upward_import(tmp_path):
    """The check itself: a stage importing the trainer is reported."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from cascade.training.trainer import Trainer\n")
    targets = imported_modules(module, "cascade.stages.bad")
    assert "cascade.training.trainer" in targets
    assert layer_of("cascade.training.trainer") > layer_of("cascade.stages.bad")


def test_config_files_are_data_and_load_from_any_directory(tmp_path, monkeypatch):
    """Config files import only `cascade.configs` and model dataclasses, and load by name
    whatever the current directory is."""
    from cascade import configs

    monkeypatch.chdir(tmp_path)
    for path in sorted(configs.CONFIG_DIR.glob("*.py")):
        imports = imported_modules(path, f"configs.{path.stem}")
        allowed = {"cascade.configs"} | {m for m in imports if m.startswith("cascade.models.")}
        assert imports <= allowed, (path.name, sorted(imports - allowed))
        assert configs.load(f"{path.stem}:tiny").stage
