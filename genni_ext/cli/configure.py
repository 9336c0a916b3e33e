"""A command's config, home and threads: the config file over a base, the flags over both."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import load_config_file, parse_assignment, set_key
from ..store import genni_home

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
    """The config file over ``base``, then the flags over both (not yet validated)."""
    raw: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if args.config is not None:
        raw = merge(raw, load_config_file(args.config))
    model = getattr(args, "model", None)
    if model is not None and args.command != "demo":
        current = raw.get("model")
        if not (isinstance(current, Mapping) and current.get("name") == model):
            raw["model"] = {"name": model}
    for dest, key in OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is not None:
            set_key(raw, key, value)
    for assignment in args.assignments:
        key, value = parse_assignment(assignment)
        set_key(raw, key, value)
    return raw


def experiments_home(args: argparse.Namespace) -> Path:
    """``--home``, else the default home (GENNI_HOME, genni.yml, ./genni_home)."""
    return Path(args.home).absolute() if args.home else genni_home()


def set_threads(config: Mapping[str, Any]) -> None:
    """Limit torch to the config's ``num_threads`` (all cores when it is null)."""
    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))
