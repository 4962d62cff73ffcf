"""SAEs that ship with the package, trained by ``python -m saelab.train`` on the embedded chat model.

Each one lives in ``saelab/assets/sae/<model>/<hook_name>/``:

    cfg.json, sae_weights.safetensors   the SAE, SAELens layout (float16 weights, loaded as float32)
    metrics.json                       L0, FVU, dead fraction, CE loss recovered, the recipe and the command
    feature_store.safetensors          top examples, densities and histograms for the dashboard
    features.json                      features named after checking them (e.g. "golden_gate"), with evidence

    sae = load_sae("smollm2-135m-instruct/blocks.15.hook_resid_post")
    sae.hook_name   # -> "blocks.15.hook_resid_post"
"""

from __future__ import annotations

import json
from pathlib import Path

from saelab.feature_store import FeatureStore
from saelab.sae import CONFIG_FILE, SAE

ROOT = Path(__file__).parent / "assets" / "sae"
DEFAULT = "smollm2-135m-instruct/blocks.15.hook_resid_post"


def list_pretrained() -> list[str]:
    """Ids of the SAEs that ship with this install, e.g. ``["smollm2-135m-instruct/blocks.15.hook_resid_post"]``."""
    if not ROOT.is_dir():
        return []
    return sorted(str(cfg.parent.relative_to(ROOT).as_posix()) for cfg in ROOT.glob(f"*/*/{CONFIG_FILE}"))


def path(sae_id: str = DEFAULT) -> Path:
    """The folder of a shipped SAE."""
    available = list_pretrained()
    if sae_id not in available:
        raise ValueError(f"sae_id={sae_id!r} is not a shipped SAE; available: {available}")
    return ROOT / sae_id


def load_sae(sae_id: str = DEFAULT) -> SAE:
    """The shipped SAE ``sae_id`` (float32, eval mode); its hook is ``sae.hook_name``."""
    return SAE.load(path(sae_id)).eval()


def load_feature_store(sae_id: str = DEFAULT) -> FeatureStore:
    """The shipped SAE's feature store: top examples, densities, maxima and histograms of every feature."""
    return FeatureStore.load(path(sae_id) / "feature_store.safetensors")


def metrics(sae_id: str = DEFAULT) -> dict:
    """What the shipped SAE reached on held-out text, with the recipe and command that made it."""
    return json.loads((path(sae_id) / "metrics.json").read_text())


def named_features(sae_id: str = DEFAULT) -> dict[str, dict]:
    """Features named after checking them (``python -m saelab.detection``): for each concept its best feature,
    the group of features that detect it, their scores on the concept's slice and the held-out check."""
    file = path(sae_id) / "features.json"
    return json.loads(file.read_text()) if file.is_file() else {}


ROLES = ("detect", "steer")


def _named(name: str, sae_id: str) -> dict:
    named = named_features(sae_id)
    if name not in named:
        raise ValueError(f"name={name!r} is not a named feature of {sae_id}; named: {sorted(named)}")
    return named[name]


def feature(name: str, sae_id: str = DEFAULT, role: str = "detect") -> int:
    """The id of a named feature: ``role="detect"`` the one that fires on the concept
    (``saelab.detection``), ``role="steer"`` the one whose clamp makes the model talk as the concept
    (``saelab.steering_search``; its setting and evidence in :func:`steering`). They need not be the same."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if role == "steer":
        return int(steering(name, sae_id)["feature"])
    entry = _named(name, sae_id)
    if "feature" not in entry:
        raise ValueError(f"{name!r} has no detection feature recorded for {sae_id}")
    return int(entry["feature"])


def steering(name: str, sae_id: str = DEFAULT) -> dict:
    """The recorded steering setting of a named concept: ``feature``, ``push_fraction`` (push length over the
    median residual norm at the hook), ``multiple_of_max``, ``value``, and the evidence (scan and replies)."""
    entry = _named(name, sae_id)
    if "steer" not in entry:
        raise ValueError(f"{name!r} has no steering feature recorded for {sae_id} (features.json holds no 'steer' "
                         "entry for it)")
    return entry["steer"]


def feature_group(name: str, sae_id: str = DEFAULT) -> list[int]:
    """All the features that detect a named concept, best first (see ``saelab.detection.name_concept_features``)."""
    return [int(f) for f in _named(name, sae_id)["group"]]
