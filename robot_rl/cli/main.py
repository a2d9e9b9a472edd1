"""`robot-rl VERB [POSITIONAL ...] [key=value ...] [--json]`: parse, compose the Hydra config, call a workflow.

The CLI only parses and dispatches; the work lives in `robot_rl.workflows`. Each verb composes
`configs/<verb>.yaml` (plus its groups) with the user's Hydra overrides, then calls `run(cfg)` of its workflow.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from robot_rl.errors import UserError, is_user_error

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Verb:
    workflow: str  # "module:function": under robot_rl.workflows, or a full module path (hw.*: only the CLI imports hw)
    config: str  # configs/<config>.yaml; "{name}" is filled from the positional argument of that name
    positionals: tuple[str, ...] = ()  # config keys filled from positional arguments, in order
    help: str = ""
    selector: tuple[str, str] | None = None  # (key, default): `key=VALUE` picks configs/<verb>/VALUE.yaml


VERBS: dict[str, Verb] = {
    "collect": Verb("collect:run", "collect", help="roll out a scripted expert or a policy into an episode store"),
    "evaluate": Verb("evaluate:run", "evaluate", help="roll out a policy in a sim mirror; success and return"),
    "train-base": Verb("train_base:run", "train_base", help="train a base policy from an episode store"),
    "train-residual": Verb("train_residual:run", "train_residual",
                           help="residual RL on a base policy in a sim mirror, with demos from a store"),
    "rank": Verb("rank:run", "rank/{method}", help="rank candidate policies offline; score against true values",
                 selector=("method", "offline")),
    "data": Verb("data_tools:run", "data", ("action", "root"), help="info | validate | export an episode store"),
    "data export": Verb("hw.export_mcap:run", "data", ("action", "root"), help="episodes as ROS 2 messages (MCAP)"),
    "hw": Verb("hw.verb:run", "hw", ("action", "node"), help="up | node NAME: the ROS 2 node graph"),
    "bench": Verb("bench:run", "bench/{name}", ("name",), help="run one benchmark; last stdout line is JSON"),
    "demo": Verb("demo:run", "demo", help="the end-to-end pipeline behind `make demo`"),
}


OPTIONS_WITH_VALUE = ("--format",)


def usage() -> str:
    lines = ["usage: robot-rl VERB [ARGS ...] [key=value ...] [--json]", "", "verbs:"]
    lines += [f"  {name:<15} {verb.help}" for name, verb in VERBS.items() if " " not in name]
    return "\n".join(lines)


def split_args(argv: list[str]) -> tuple[list[str], list[str], dict[str, bool]]:
    """Split argv into positionals, Hydra overrides (`key=value`, `+key=value`, `~key`) and `--flags`."""
    positionals, overrides, flags = [], [], {}
    argv = list(argv)
    for i, arg in enumerate(argv):  # `--key value` for options that take a value
        if arg in OPTIONS_WITH_VALUE and i + 1 < len(argv):
            argv[i], argv[i + 1] = f"{arg[2:]}={argv[i + 1]}", ""
    for arg in filter(None, argv):
        if arg.startswith("--"):
            flags[arg[2:].replace("-", "_")] = True
        elif "=" in arg or arg.startswith("~"):
            overrides.append(arg)
        else:
            positionals.append(arg)
    return positionals, overrides, flags


def take_selector(verb: Verb, overrides: list[str]) -> dict[str, str]:
    """`rank method=sim2real` selects `configs/rank/sim2real.yaml`: the selector override names a config file, so it
    is taken out of the Hydra overrides (and set again as a plain key once that file is composed)."""
    if verb.selector is None:
        return {}
    key, value = verb.selector
    for override in list(overrides):
        if override.startswith(f"{key}="):
            overrides.remove(override)
            value = override.split("=", 1)[1]
    return {key: value}


def config_name(verb: Verb, positionals: list[str], selected: dict[str, str] | None = None) -> str:
    """The config a verb composes; `bench NAME` composes `configs/bench/NAME.yaml` (dashes as underscores)."""
    values = {key: value.replace("-", "_") for key, value in zip(verb.positionals, positionals)}
    values.update(selected or {})
    try:
        name = verb.config.format(**values)
    except KeyError as exc:
        raise UserError(f"missing argument {exc.args[0].upper()}; see `robot-rl --help`") from exc
    if not (CONFIG_DIR / f"{name}.yaml").is_file():
        choices = sorted(p.stem.replace("_", "-") for p in (CONFIG_DIR / Path(name).parent).glob("*.yaml"))
        raise UserError(f"unknown {Path(name).parent} {Path(name).name!r}; choose one of: {', '.join(choices)}")
    return name


def config_keys(config_name: str) -> tuple[set[str], set[str]]:
    """(top-level keys, config groups it picks) of `configs/<config_name>.yaml`, with those of the configs it
    inherits from its own folder (`defaults: [residual]` in `bench/residual_ceiling.yaml`)."""
    import yaml

    text = yaml.safe_load((CONFIG_DIR / f"{config_name}.yaml").read_text()) or {}
    keys, groups = set(text), set()
    for entry in text.get("defaults", []):
        if isinstance(entry, dict):
            groups.add(str(next(iter(entry))).lstrip("/").split("@")[0])
        elif (CONFIG_DIR / Path(config_name).parent / f"{entry}.yaml").is_file():
            inherited_keys, inherited_groups = config_keys(str(Path(config_name).parent / str(entry)))
            keys, groups = keys | inherited_keys, groups | inherited_groups
        else:
            groups.add(str(entry))
    return keys, groups


def take_plain_keys(config_name: str, overrides: list[str]) -> dict[str, object]:
    """`task=PushCube` on a config whose `task` is a plain key (bench configs) would be read by Hydra as picking
    the config group `configs/task/`, which that config does not use: such overrides are taken out of the Hydra
    overrides and set on the composed config instead."""
    import yaml

    keys, groups = config_keys(config_name)
    plain = {}
    for override in list(overrides):
        key, _, value = override.partition("=")
        if value and key.isidentifier() and key in keys and key not in groups and (CONFIG_DIR / key).is_dir():
            overrides.remove(override)
            plain[key] = yaml.safe_load(value)
    return plain


def compose(config_name: str, overrides: list[str]):
    """Compose `configs/<config_name>.yaml` with overrides using Hydra's compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return hydra_compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing = re.search(r"Could not find '([\w/]+)/([^']+)'", first)
        if missing and (CONFIG_DIR / missing.group(1)).is_dir():
            group = missing.group(1)
            choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
            raise UserError(f"unknown {group} {missing.group(2)!r}; choose one of: {', '.join(choices)}") from exc
        raise UserError(f"bad configuration override: {first}") from exc


def load_config(verb: Verb, positionals: list[str], overrides: list[str], flags: dict[str, bool]):
    """The composed config of one command line: the verb's file (picked by positionals and its selector), the
    user's overrides, positionals and flags as keys."""
    overrides = list(overrides)
    pos_overrides = [f"++{key}={value}" for key, value in zip(verb.positionals, positionals)]
    flag_overrides = [f"++flags.{key}=true" for key in flags]
    selected = take_selector(verb, overrides)
    pos_overrides += [f"++{key}={value}" for key, value in selected.items()]
    name = config_name(verb, positionals, selected)
    plain = take_plain_keys(name, overrides)
    cfg = compose(name, overrides + pos_overrides + flag_overrides)
    for key, value in plain.items():
        cfg[key] = value
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if rest and f"{name} {rest[0]}" in VERBS:  # a sub-verb served by another part (e.g. `data export` by hw)
        verb = VERBS[f"{name} {rest[0]}"]
    else:
        verb = VERBS.get(name)
    if verb is None:
        verbs = ", ".join(v for v in VERBS if " " not in v)
        print(f"robot-rl: error: unknown verb {name!r}; choose one of: {verbs}", file=sys.stderr)
        return 2
    positionals, overrides, flags = split_args(rest)
    if len(positionals) > len(verb.positionals):
        extra = " ".join(positionals[len(verb.positionals):])
        print(f"robot-rl: error: unexpected argument(s) {extra!r} for `{name}`; use key=value overrides",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(verb, positionals, overrides, flags)
        module_name, func_name = verb.workflow.split(":")
        module = importlib.import_module(module_name if "." in module_name else f"robot_rl.workflows.{module_name}")
        result = getattr(module, func_name)(cfg)
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("ROBOT_RL_DEBUG"):
            raise
        print(f"robot-rl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robot-rl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    if result is not None:
        from robot_rl.files import json_text

        print(json_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
