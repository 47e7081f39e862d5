"""Method results of an experiment: loading, row names for hyperparameter variants, and table filters."""

import json
from dataclasses import dataclass, replace
from pathlib import Path


from mixbench.engine import effective_params, params_digest, setting_label
from mixbench.errors import ConfigError, unknown_name_error


def load_results(experiment_dir: Path) -> list[dict]:
    """Read every method result of an experiment, named as in `name_variants`, sorted by name, setting and seed."""
    paths = sorted((Path(experiment_dir) / "methods").glob("*.json"))
    if not paths:
        listed = (load_experiment(experiment_dir) or {}).get("methods")
        hint = f" experiment.json lists {', '.join(listed)}, but none has a result yet." if listed else ""
        raise ConfigError(
            f"no method results under {experiment_dir}/methods.{hint} Run `mixbench benchmark` for this experiment first."
        )
    results, origins = [], {}
    for path in paths:
        try:
            result = json.loads(path.read_text())
        except ValueError as error:
            raise ConfigError(f"method result {path} is not valid JSON ({error}); delete it and run the method again.") from None
        key = (result["method"], params_digest(effective_params(result)), setting_label(result.get("setting")),
               int(result["seed"]))
        if key in origins:
            raise ConfigError(
                f"{origins[key].name} and {path.name} under {path.parent} are both {key[0]} at seed {key[3]} in setting "
                f"{key[2]} with the same hyperparameters; delete the outdated one."
            )
        origins[key] = path
        result["file"] = path.name
        results.append(result)
    name_variants(results)
    return sorted(results, key=lambda result: (result["name"], setting_label(result.get("setting")), result["seed"]))


def name_variants(results: list[dict]) -> list[dict]:
    """Give each result its row name and return the list.

    The name is the method's name when all its results ran with one set of settings (nulls filled,
    see `effective_params`), and otherwise the method followed by the settings in which its sets
    differ, in alphabetical order: `aioli[ema=0.1,eta=0.5]`.
    """
    variants: dict[str, dict[str, dict]] = {}
    for result in results:
        params = effective_params(result)
        variants.setdefault(result["method"], {}).setdefault(params_digest(params), params)
    names = {}
    for method, sets in variants.items():
        keys = sorted({key for params in sets.values() for key in params})
        differing = [key for key in keys if len({params_digest({key: params.get(key)}) for params in sets.values()}) > 1]
        for digest, params in sets.items():
            values = ",".join(f"{key}={_printed(params.get(key))}" for key in differing)
            names[method, digest] = f"{method}[{values}]" if len(sets) > 1 else method
        if len(set(names[method, digest] for digest in sets)) < len(sets):
            # Sets that differ only in a key one of them lacks print alike, so the digest names them instead.
            names.update({(method, digest): f"{method}[{digest}]" for digest in sets})
    for result in results:
        result["name"] = names[result["method"], params_digest(effective_params(result))]
    return results


def _printed(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def load_experiment(experiment_dir: Path) -> dict | None:
    """Return the experiment's `experiment.json` (methods, seeds, setting kind), or None without one."""
    path = Path(experiment_dir) / "experiment.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Filters:
    """The methods, settings and seeds a table keeps; None keeps all.

    A setting is named by its data config name (`default`) or its full label (`default-1a2b3c4d`).
    Stratified stays the baseline of every comparison even when `methods` leaves it out.
    """

    methods: tuple[str, ...] | None = None
    settings: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, node) -> "Filters":
        """Build filters from the `table` config block (a dict or DictConfig); None gives no filter."""
        if node is None:
            return cls()
        values = dict(node.items())
        unknown = sorted(set(values) - {"methods", "settings", "seeds"})
        if unknown:
            raise ConfigError(f"table.{unknown[0]} is not a table setting; use table.methods, table.settings or table.seeds.")
        return cls(
            methods=_names("methods", values.get("methods")),
            settings=_names("settings", values.get("settings")),
            seeds=_seeds(values.get("seeds")),
        )

    def describe(self) -> str:
        parts = [f"{key}=[{', '.join(str(v) for v in value)}]" for key, value in
                 (("methods", self.methods), ("settings", self.settings), ("seeds", self.seeds)) if value is not None]
        return "; ".join(parts)


def _as_list(key: str, value) -> list | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (str, int)) else list(value)
    if not items:
        raise ConfigError(f"table.{key}=[] selects nothing; list at least one value, or use table.{key}=null to keep all.")
    return items


def _names(key: str, value) -> tuple[str, ...] | None:
    items = _as_list(key, value)
    return None if items is None else tuple(dict.fromkeys(str(item) for item in items))


def _seeds(value) -> tuple[int, ...] | None:
    items = _as_list("seeds", value)
    if items is None:
        return None
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"table.seeds contains {item!r}; seeds are whole numbers, for example table.seeds=[0,1].")
    return tuple(sorted(set(items)))


def apply_filters(results: list[dict], filters: Filters, expected_methods=()) -> tuple[list[dict], list[str]]:
    """Keep the results of the filtered settings and seeds; return them and the methods to list.

    Results of other methods stay, because stratified is the baseline even when it is not listed.
    Raises ConfigError for a method, setting or seed that the experiment does not have.
    """
    known_methods = sorted({result["method"] for result in results} | set(expected_methods))
    variant_names = sorted({result["name"] for result in results} - set(known_methods))
    if filters.methods is not None:
        filters = replace(filters, methods=tuple(_row_name(name, variant_names) for name in filters.methods))
    for name in filters.methods or ():
        if name not in known_methods and name not in variant_names:
            raise unknown_name_error("method", name, known_methods + variant_names,
                                     fix="table.methods may only name methods of this experiment, or their rows.")
    if filters.settings is not None:
        labels = {setting_label(result.get("setting")) for result in results}
        names = {_setting_name(result) for result in results}
        for name in filters.settings:
            if name not in labels | names:
                raise unknown_name_error("setting", name, labels | names, fix="table.settings takes a data config name or a full setting label.")
        chosen = set(filters.settings)
        results = [r for r in results if setting_label(r.get("setting")) in chosen or _setting_name(r) in chosen]
    if filters.seeds is not None:
        known_seeds = sorted({int(result["seed"]) for result in results})
        for seed in filters.seeds:
            if seed not in known_seeds:
                raise ConfigError(f"table.seeds contains seed {seed}, which has no result here; known seeds: {known_seeds}.")
    chosen = list(filters.methods) if filters.methods is not None else known_methods
    # A method's name lists every row it has here; a row's own name lists that row alone.
    listed = set()
    for name in chosen:
        rows = {result["name"] for result in results if result["method"] == name}
        listed |= (rows or {name}) if name in known_methods else {name}
    return results, sorted(listed)


def _row_name(name: str, variant_names: list[str]) -> str:
    """Return the row that `name` means: `doremi[eta=0.50]` is the row `doremi[eta=0.5]`, as values are compared parsed."""
    requested = _parse_row_name(name)
    if requested is None or name in variant_names:
        return name
    matches = [row for row in variant_names if _parse_row_name(row) == requested]
    return matches[0] if len(matches) == 1 else name


def _parse_row_name(name: str) -> tuple[str, dict] | None:
    """Split `method[key=value,...]` into the method and its settings, the values parsed as YAML; None if not of that form."""
    import yaml

    method, bracket, rest = name.partition("[")
    if not bracket or not rest.endswith("]"):
        return None
    items, depth, start, body = [], 0, 0, rest[:-1]
    for index, char in enumerate(body + ","):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(body[start:index])
            start = index + 1
    settings = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            return None
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        # 1 and 1.0 name one setting value, as in the row names.
        settings[key.strip()] = float(parsed) if isinstance(parsed, int) and not isinstance(parsed, bool) else parsed
    return method, settings


def _setting_name(result: dict) -> str:
    return (result.get("setting") or {}).get("name", "unnamed")
