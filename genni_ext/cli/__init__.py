"""The ``genni`` command: search, sweep, list, plot, analyse and demo, from a YAML config.

    genni search --config run.yml          Problem + batched search, saved in the experiment
    genni sweep  --config run.yml          the config's grids on the searched plane (resumable)
    genni ls                               experiments, searches and grids in the home
    genni plot EXPERIMENT                  every figure that fits its grids, and report.md
    genni analyse EXPERIMENT               what the ε-set is, in analysis.json and report.md
    genni demo                             the paper's 4-parameter experiment, end to end
    genni demo --model lenet               a LeNet-5 experiment sized for a laptop

Every command takes ``--config FILE`` and flags that override it (``--lr 0.01``, or any key
with ``--set search.lr=0.01``); ``genni <command> --help`` lists them and the config
schema (:data:`genni_ext.store.config.CONFIG_SCHEMA`). Results go to the experiments home:
``GENNI_HOME``, else ``genni_home:`` in ``./genni.yml``, else ``./genni_home`` (``--home``
overrides all three). ``genni sweep`` writes each grid in chunks; after an interruption
the same command computes only the missing chunks.

The modules: :mod:`.parser` (flags and help), :mod:`.presets` (what ``genni demo`` runs,
the one source of its settings and of its help), :mod:`.configure` (config file and flags
into one config), :mod:`.compute` (search and sweep), :mod:`.results` (ls, plot, analyse),
:mod:`.demo`, :mod:`.output` (printing) and :mod:`.entry` (``main``: errors to exit
statuses).
"""

from __future__ import annotations

from genni_ext.cli.entry import main

__all__ = ["main"]
