"""The package's shape (../shared/DESIGN.md, CONTRIBUTING.md): imports point only down the layers, no import cycle.

Every module of ``src/hf_vtok`` is parsed with ``ast``; every ``import`` counts, inside functions too. A module
belongs to the group of ``LAYERS`` its name starts with; it may import its own group, any group of a lower
layer of its stack, and (the side stack) the main stack's layers up to ``SIDE_STACK_REACH``. A model family may
import only the family it declares as its base (``FAMILY_BASES``). ``LAZY_EXCEPTIONS`` are the calls that reach
the application layer on purpose, inside a function.
"""

import ast
import itertools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "hf_vtok"

# (layer, stack, group, module-name prefixes); the main stack goes up 0..6, the side stack sits beside it.
# Groups of one layer may not import each other.
LAYERS = [
    (0, "main", "registry", ("hf_vtok.registry",)),
    (0, "main", "utils", ("hf_vtok.utils",)),
    (1, "main", "conversion", ("hf_vtok.conversion",)),
    (1, "main", "modules", ("hf_vtok.modules",)),
    (1, "main", "quantizers", ("hf_vtok.quantizers",)),
    (1, "main", "flow", ("hf_vtok.flow",)),
    (1, "main", "schedulers", ("hf_vtok.schedulers",)),
    (1, "main", "outputs", ("hf_vtok.modeling_outputs",)),
    (1, "main", "remote_code", ("hf_vtok.remote_code",)),
    (2, "main", "base classes", ("hf_vtok.modeling_utils", "hf_vtok.image_processing_utils", "hf_vtok.publishing")),
    (3, "main", "models", ("hf_vtok.models",)),
    (4, "main", "pipelines", ("hf_vtok.pipelines",)),
    (5, "main", "package", ("hf_vtok.__init__",)),  # the package itself (``hf_vtok``)
    (6, "main", "application", ("hf_vtok.hub", "hf_vtok.commands", "hf_vtok.cli", "hf_vtok.pretrained")),
    (1, "side", "data", ("hf_vtok.data",)),
    (2, "side", "losses", ("hf_vtok.losses",)),
    (3, "side", "metrics", ("hf_vtok.metrics",)),
    (4, "side", "training", ("hf_vtok.training",)),
]
SIDE_STACK_REACH = 1  # the side stack may import the main stack's layers 0..1 (utils, conversion, modules, ...)
FAMILY_BASES = {
    "softvq": {"latent_token_vit"},
    "maetok": {"latent_token_vit"},
    "sit": {"dit_1d"},
    "vitok_dit": {"vitok"},
}
# (importing module, imported module): lazy imports of the application layer that the library makes on purpose
LAZY_EXCEPTIONS = {
    ("hf_vtok.publishing", "hf_vtok.hub.push"),  # HubMixin.push_to_hub: cards and upload
    ("hf_vtok", "hf_vtok.hub.presets"),  # hf_vtok.from_preset: download and convert a release
}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, bool]]:
    """``(imported hf_vtok module, at module level?)`` for every import statement of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    top_level = set(map(id, tree.body))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.add((target, id(node) in top_level))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: {target for target, _ in imports_of(name, path, modules)} for name, path in modules.items()}


def layer_of(module: str) -> tuple[int, str, str]:
    key = "hf_vtok.__init__" if module == PACKAGE else module
    for layer, stack, group, prefixes in LAYERS:
        for prefix in prefixes:
            if key == prefix or key.startswith(prefix + "."):
                return layer, stack, group
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def family_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "models" else None


def violation(source: str, target: str) -> str | None:
    """Why ``source`` may not import ``target`` (None: it may)."""
    if (source, target) in LAZY_EXCEPTIONS:
        return None
    source_layer, source_stack, source_group = layer_of(source)
    target_layer, target_stack, target_group = layer_of(target)
    if source_group == target_group:
        source_family, target_family = family_of(source), family_of(target)
        if source_family and target_family and source_family != target_family:
            if target_family not in FAMILY_BASES.get(source_family, set()):
                return f"model family {source_family} imports family {target_family} (not its declared base)"
        return None
    if source_stack == "main" and source_layer == 6:
        return None  # the application layer may use everything
    if source_stack == target_stack:
        return None if target_layer < source_layer else f"points up or sideways ({source_group} -> {target_group})"
    if source_stack == "side" and target_layer <= SIDE_STACK_REACH:
        return None
    return f"crosses stacks ({source_stack} {source_group} -> {target_stack} {target_group})"


def test_every_module_has_a_layer():
    for module in module_files():
        layer_of(module)


def test_imports_point_down():
    graph = import_graph()
    wrong = [
        f"{source} -> {target}: {reason}"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if (reason := violation(source, target))
    ]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], itertools.count()

    def visit(node):
        index[node] = low[node] = next(counter)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            components.append(component)

    for node in list(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycle():
    cycles = [sorted(component) for component in strongly_connected_components(import_graph()) if len(component) > 1]
    assert not cycles, f"import cycles (module or function level): {cycles}"


@pytest.mark.parametrize(
    "source, target, allowed",
    [
        ("hf_vtok.models.vitok.modeling_vitok", "hf_vtok.modules.attention", True),
        ("hf_vtok.models.vitok.modeling_vitok", "hf_vtok.hub.cards", False),
        ("hf_vtok.models.softvq.modeling_softvq", "hf_vtok.models.latent_token_vit.modeling_latent_token_vit", True),
        ("hf_vtok.models.softvq.modeling_softvq", "hf_vtok.models.maetok.modeling_maetok", False),
        ("hf_vtok.modules.attention", "hf_vtok.quantizers.soft_vq", False),
        ("hf_vtok.pipelines.sit.pipeline_sit", "hf_vtok.models.sit.modeling_sit", True),
        ("hf_vtok.models.sit.convert_sit_original_to_hf", "hf_vtok.pipelines.sit", False),
        ("hf_vtok.training.trainer", "hf_vtok.data.datasets", True),
        ("hf_vtok.data.latent_cache", "hf_vtok.training.data", False),
        ("hf_vtok.losses.lpips", "hf_vtok.utils.weights", True),
        ("hf_vtok.models.maetok.modeling_maetok", "hf_vtok.losses.lpips", False),
        ("hf_vtok.commands.reconstruct", "hf_vtok.models.vitok", True),
    ],
)
def test_the_rule_itself(source, target, allowed):
    assert (violation(source, target) is None) == allowed
