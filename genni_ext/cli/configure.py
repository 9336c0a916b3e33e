"""A command's config, home and threads: the config file over a base, the flags over both."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from genni_ext.errors import InputError
from genni_ext.store.config import load_config_file, parse_assignment, set_key
from genni_ext.store.home import genni_home

# flag dest -> dotted config key
OVERRIDES: dict[str, str] = {
    "experiment": "experiment",
    "seed": "seed",
    "num_probes": "probes.num_probes",
    "probe_seed": "probes.seed",
    "search_name": "search.name",
    "starts": "search.starts",
    "steps": "search.steps",
    "lr": "search.lr",
    "batch_size": "search.batch_size",
    "optimizer": "search.optimizer",
    "momentum": "search.momentum",
    "tol": "search.tol",
    "search_seed": "search.seed",
    "record_every": "search.record_every",
    "eps": "subspace.eps",
    "eps_relative": "subspace.eps_relative",
    "m": "subspace.m",
    "center": "subspace.center",
    "backend": "backend",
    "device": "device",
    "precision": "precision",
    "num_threads": "num_threads",
    "chunk_points": "chunk_points",
}


EPS_KEYS = ("eps", "eps_relative")
"""The two ways of giving ε in a config's subspace section."""


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it (mappings merged, everything else replaced)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def raw_config(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> dict:
    """The config file over ``base``, then the flags over both (not yet validated).

    ε is given one of two ways, ``subspace.eps`` or ``subspace.eps_relative``; a layer that
    gives one of them (the file over ``base``, the flags over both) replaces the ε of the
    layers below, whichever way they gave it. Flags that give both are refused (ε would be
    ambiguous); a file that gives both takes eps_relative (the schema says so, and a saved
    config.yml records both).
    """
    raw: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if args.config is not None:
        layer = load_config_file(args.config)
        subspace = layer.get("subspace")
        _replace_eps(raw, _eps_keys(subspace.items() if isinstance(subspace, Mapping) else ()))
        raw = merge(raw, layer)
    model = getattr(args, "model", None)
    if model is not None and args.command != "demo":
        current = raw.get("model")
        if not (isinstance(current, Mapping) and current.get("name") == model):
            raw["model"] = {"name": model}
    flags = [(key, getattr(args, dest, None)) for dest, key in OVERRIDES.items()]
    flags = [(key, value) for key, value in flags if value is not None]
    flags += [parse_assignment(assignment) for assignment in args.assignments]
    given = _eps_keys(
        (key.removeprefix("subspace."), value)
        for key, value in flags
        if key.startswith("subspace.")
    )
    if len(given) > 1:
        raise InputError(
            "ε is given twice, as subspace.eps and as subspace.eps_relative (by --eps, "
            "--eps-relative or --set): give one of them"
        )
    _replace_eps(raw, given)
    for key, value in flags:
        set_key(raw, key, value)
    return raw


def _eps_keys(items: Iterable[tuple[str, object]]) -> set[str]:
    """Which of eps and eps_relative the (key, value) pairs of a subspace set (not to null)."""
    return {key for key, value in items if key in EPS_KEYS and value is not None}


def _replace_eps(raw: dict[str, Any], given: set[str]) -> None:
    """Drop from ``raw`` the way of giving ε that a layer over it does not use, when that
    layer gives exactly one."""
    subspace = raw.get("subspace")
    if len(given) == 1 and isinstance(subspace, dict):
        for key in EPS_KEYS:
            if key not in given:
                subspace.pop(key, None)


def experiments_home(args: argparse.Namespace) -> Path:
    """``--home``, else the default home (GENNI_HOME, genni.yml, ./genni_home)."""
    return Path(args.home).absolute() if args.home else genni_home()


def set_threads(config: Mapping[str, Any]) -> None:
    """Limit torch to the config's ``num_threads`` (all cores when it is null)."""
    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))
