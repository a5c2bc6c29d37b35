"""Which models are served, who may use each, and whether each can answer now.

One owner for the registry a reload swaps, its revision, the models file and the
models whose provider could not be reached: ``GET models``, ``POST models/reload`` and
every send read them here.
"""

from __future__ import annotations

import logging
from typing import Any

from r3nb.errors import Conflict, Forbidden
from r3nb.protocol import MessageDict

from . import images, provider
from .caller import Caller
from .model_file import ModelsFile
from .models import ModelConfig, ModelRegistry
from .settings import Settings

log = logging.getLogger("r3nb")


class ModelAccess:
    """The served models and who may use them."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        models_file: ModelsFile | None = None,
    ) -> None:
        self.settings = settings
        #: Swapped whole by a reload (``use``); a reply holds its own ModelConfig.
        self.registry = registry
        self.models_file = models_file
        self.revision = 0  # +1 at each reload that changes the models
        #: Models whose provider was unreachable on their last call (GET models says so).
        self.unreachable: dict[str, str] = {}
        if registry.wants_litellm():
            provider.need_litellm()

    def may_use(self, caller: Caller, name: str) -> bool:
        """Whether ``caller`` may send to model ``name`` (``settings.model_groups``)."""
        groups = self.settings.model_groups.get(name)
        return groups is None or caller.is_admin or not caller.groups.isdisjoint(groups)

    def model_for(self, caller: Caller, name: str | None) -> ModelConfig:
        """The model a reply for ``caller`` uses: 400 if unknown, 403 if not theirs."""
        model = self.registry.resolve(name)
        if not self.may_use(caller, model.name):
            groups = ", ".join(self.settings.model_groups[model.name])
            raise Forbidden(
                f"the model {model.name!r} is for the groups {groups} only "
                "(c.R3nbApp.model_groups): pick another model, or ask an admin"
            )
        return model

    def known(self, name: str | None) -> str | None:
        """``name`` if it is still configured, else None (the default model)."""
        return name if name in self.registry.names() else None

    def report(self, caller: Caller | None = None) -> dict[str, Any]:
        """``GET models``: each model ``caller`` may use, with whether it can answer now
        and, if not, why (so the picker can say so instead of failing on Send)."""
        models = self.registry  # one registry for the whole report, whatever a reload does
        report = models.public() | {"revision": self.revision}
        if caller is not None:
            report["models"] = [m for m in report["models"] if self.may_use(caller, m["name"])]
        for entry in report["models"]:
            model = models.resolve(entry["name"])
            reason = model.missing_key_reason()
            if reason is None:
                reason = provider.not_ready(model)
            if reason is None:
                reason = self.unreachable.get(model.name)
            entry["ready"] = reason is None
            entry["reason"] = reason
            entry["images"] = images.supports_images(model)
        return report

    def use(self, registry: ModelRegistry) -> bool:
        """Serve ``registry`` from now on (one assignment: a send resolves its model in
        one registry or the other, never a mix); whether anything changed."""
        old, self.registry = self.registry, registry
        if old.same_as(registry):
            return False
        if registry.wants_litellm():
            provider.need_litellm()
        self.revision += 1
        for name in list(self.unreachable):  # a changed entry deserves a fresh try
            if old.get(name) != registry.get(name):
                self.unreachable.pop(name, None)
        log.info(
            "r3nb: models reloaded (revision %d): %s (default %s)",
            self.revision, ", ".join(registry.names()), registry.default,
        )  # fmt: skip
        return True

    async def reload(self, caller: Caller | None = None) -> dict[str, Any]:
        """``POST models/reload``: read the models file now and apply it. 409 without a
        file; ``ModelsFileInvalid`` (422) when it cannot be used (nothing changes)."""
        if self.models_file is None:
            raise Conflict(
                "no models file is configured; set c.R3nbApp.models_file to a JSON file "
                "the server can reload"
            )
        changed = self.use(await self.models_file.reload())
        return self.report(caller) | {
            "changed": changed,
            "models_file": self.models_file.state(),
        }

    def note_outcome(self, model_name: str, message: MessageDict) -> None:
        """Remember a model whose provider could not be reached (until it answers)."""
        error = message.get("error") or ""
        if message["status"] == "error" and error.startswith("cannot reach"):
            self.unreachable[model_name] = f"on the last try: {error}"
        elif message["status"] == "complete":
            self.unreachable.pop(model_name, None)
