"""The Flower run config as this app reads it: the profile (with overrides), the dataset and how to run.

No torch here: the launcher (`python -m fedvit_flower`) reads the settings to start its processes and
should not load torch for that; only `Settings.num_classes` (the server's) imports the data module.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedvit_utils import paths
from fedvit_utils.federated.strategies import FedAvgStrategy, strategy_class
from fedvit_utils.profiles import Profile, ProfileError, load_profile

# The run config's defaults, as in flower/pyproject.toml [tool.flwr.app.config] (Flower's Python simulation
# API hands the ServerApp an empty run config, so the server falls back on these).
DEFAULTS: dict[str, object] = {
    "profile": "smoke", "overrides": "", "dataset": "", "run-dir": "", "restart": False, "key-seed": -1,
    "torch-threads": 0, "round-timeout": 3600.0, "wait-nodes-timeout": 300.0, "poll-interval": 0.1,
}


@dataclass
class Settings:
    """The server's reading of the run config: the profile (with overrides) and how to run it."""

    profile: Profile
    dataset: str
    run_dir: Path
    restart: bool
    key_seed: int | None
    torch_threads: int
    round_timeout: float
    wait_nodes_timeout: float
    poll_interval: float

    @property
    def num_classes(self) -> int:
        """Classes of the dataset (the server builds the initial model without seeing any data)."""
        from fedvit_utils.data import NUM_CLASSES

        return NUM_CLASSES[self.dataset]

    @property
    def key_source(self) -> str:
        """Where the clients' keys come from, as the encryption record names it."""
        return "OS entropy" if self.key_seed is None else f"demo seed {self.key_seed}"


def parse_overrides(text: str) -> dict:
    """'num_clients=3 rounds=2' -> {'num_clients': 3, 'rounds': 2}; values are read as YAML scalars."""
    out = {}
    for item in shlex.split(text or ""):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ProfileError(f"override {item!r} is not name=value (e.g. overrides='num_clients=3 rounds=2').")
        out[name.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def read_settings(run_config: dict) -> Settings:
    """Settings from Flower's run config (missing keys take DEFAULTS); refuses what this app cannot run."""
    cfg = {**DEFAULTS, **dict(run_config)}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown run-config keys {sorted(unknown)}; the app knows {sorted(DEFAULTS)}.")
    profile = load_profile(str(cfg["profile"]), **parse_overrides(str(cfg["overrides"])))
    if strategy_class(profile.aggregation) is not FedAvgStrategy:  # the app integrates with FedAvg only
        raise ProfileError(f"profile {profile.name!r}: aggregation={profile.aggregation!r}; the Flower app runs "
                           f"FedAvg (the paper's integration). Run FedSGD with the in-process engine.")
    dataset = str(cfg["dataset"]) or profile.datasets[0]
    if dataset not in profile.datasets:
        raise ProfileError(f"dataset {dataset!r} is not one of profile {profile.name!r}'s {profile.datasets}.")
    key_seed = int(cfg["key-seed"])
    run_dir = paths.run_dir(f"flower-{profile.name}", str(cfg["run-dir"]) or None).resolve()
    return Settings(profile, dataset, run_dir, bool(cfg["restart"]), None if key_seed < 0 else key_seed,
                    int(cfg["torch-threads"]), float(cfg["round-timeout"]), float(cfg["wait-nodes-timeout"]),
                    float(cfg["poll-interval"]))


def profile_json(profile: Profile) -> str:
    """The whole profile as JSON: the server sends it, so every client trains with exactly its settings."""
    return json.dumps(profile.to_dict(), sort_keys=True)


def profile_from_json(text: str) -> Profile:
    """The profile a server sent; pretrained weights are not loaded on a client (the server sends the weights)."""
    doc = json.loads(text)
    return dataclasses.replace(Profile(**doc), pretrained=False, checkpoint_path=None, download=False)
