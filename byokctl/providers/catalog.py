"""The model catalog shipped with the package: pinned ids, aliases and prices per provider, and
each provider's default model and base URL (what else byokctl knows of a provider: registry)."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from byokctl.errors import NotFound
from byokctl.providers.registry import PROVIDERS  # noqa: F401 - the catalog's providers, by id

if TYPE_CHECKING:
    from datetime import datetime

    from byokctl.domain.lifecycle import Lifecycle


class Model(NamedTuple):
    provider: str
    id: str
    aliases: tuple[str, ...]
    input_per_mtok: float
    output_per_mtok: float
    deprecated: str | None = None  # the provider's end-of-life date (YYYY-MM-DD), when announced
    successor: str | None = None  # the pinned id that replaces it, when the catalog names one

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6

    def to_json(self) -> dict:
        return {
            "provider": self.provider,
            "id": self.id,
            "aliases": list(self.aliases),
            "input_per_mtok": self.input_per_mtok,
            "output_per_mtok": self.output_per_mtok,
            "deprecated": self.deprecated,
            "successor": self.successor,
        }

    def lifecycle(self, now: datetime) -> Lifecycle:
        """Active, retiring or retired at `now` (byokctl.domain.lifecycle)."""
        from byokctl.domain.lifecycle import lifecycle

        return lifecycle(self.provider, self.id, self.deprecated, self.successor, now)


class Catalog(NamedTuple):
    version: str
    models: tuple[Model, ...]
    info: dict  # per provider: default_model, default_base_url

    def for_provider(self, provider: str) -> list[Model]:
        return [m for m in self.models if m.provider == provider]

    def find(self, provider: str, name: str) -> Model:
        """A pinned id or an alias of `provider`'s models; NotFound otherwise."""
        for m in self.for_provider(provider):
            if name == m.id or name in m.aliases:
                return m
        known = ", ".join(a for m in self.for_provider(provider) for a in (m.aliases[0],))
        raise NotFound(
            f"Unknown {provider} model '{name}'", f"choose one of {known} (see `byokctl models list`)"
        )

    def pinned(self, provider: str, name: str | None) -> Model:
        """The model for `name`, or the provider's default when `name` is None."""
        return self.find(provider, name or self.info[provider]["default_model"])

    def is_known(self, provider: str, model_id: str | None) -> bool:
        return any(m.id == model_id for m in self.for_provider(provider))

    def lifecycle(self, provider: str, model_id: str | None, now: datetime) -> Lifecycle | None:
        """Where a stored pinned id stands at `now`; None for a model the catalog lacks."""
        for m in self.for_provider(provider):
            if m.id == model_id:
                return m.lifecycle(now)
        return None

    def named(self, name: str) -> list[Model]:
        """Every provider's model with this pinned id or alias (an alias may be shared)."""
        return [m for m in self.models if name == m.id or name in m.aliases]


@cache
def load() -> Catalog:
    # Read through the package's loader (a plain file, or a member of a zip), not
    # importlib.resources, whose import (zipfile, tempfile...) costs ~3 ms of every start.
    path = os.path.join(os.path.dirname(__file__), "catalog.json")
    data = json.loads(__spec__.loader.get_data(path).decode("utf-8"))
    models = tuple(
        Model(p, m["id"], tuple(m["aliases"]), m["input_per_mtok"], m["output_per_mtok"],
              m.get("deprecated"), m.get("successor"))
        for p, spec in data["providers"].items()
        for m in spec["models"]
    )
    info = {p: {k: v for k, v in spec.items() if k != "models"} for p, spec in data["providers"].items()}
    return Catalog(data["version"], models, info)
