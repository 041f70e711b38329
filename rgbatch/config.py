"""Configs that a file can carry: frozen dataclasses written and read as JSON.

    @dataclass(frozen=True)
    class MyConfig(JsonConfig):
        width: float = 0.25

    MyConfig.from_json(MyConfig().to_json()) == MyConfig()

Weight files store a model's config this way (rgbatch.weights), and the model id hashes
`to_json()`, so its form (keys sorted, json.dumps defaults) must not change.
"""

from __future__ import annotations

import json
from dataclasses import asdict


class JsonConfig:
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls(**json.loads(text))


__all__ = ["JsonConfig"]
