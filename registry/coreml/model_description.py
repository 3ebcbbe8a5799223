"""What inspection says about an accepted model: its format, type, features, labels and warnings.

These are plain values, stored with each model version as JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MLMODEL = "mlmodel"
MLPACKAGE = "mlpackage"


@dataclass(frozen=True)
class FeatureDescription:
    name: str
    type: str
    optional: bool
    shape: tuple[int, ...] | None = None
    data_type: str | None = None
    key_type: str | None = None
    description: str = ""

    def to_dict(self) -> dict:
        result: dict[str, Any] = {"name": self.name, "type": self.type, "optional": self.optional}
        if self.shape is not None:
            result["shape"] = list(self.shape)
        if self.data_type is not None:
            result["data_type"] = self.data_type
        if self.key_type is not None:
            result["key_type"] = self.key_type
        result["description"] = self.description
        return result

    @classmethod
    def from_dict(cls, data: dict) -> FeatureDescription:
        shape = data.get("shape")
        return cls(
            name=data["name"],
            type=data["type"],
            optional=bool(data.get("optional", False)),
            shape=tuple(shape) if shape is not None else None,
            data_type=data.get("data_type"),
            key_type=data.get("key_type"),
            description=data.get("description", ""),
        )


@dataclass(frozen=True)
class ModelDescription:
    format: str
    spec_version: int
    model_type: str
    sub_models: tuple[str, ...]
    inputs: tuple[FeatureDescription, ...]
    outputs: tuple[FeatureDescription, ...]
    class_labels: tuple[str, ...]
    predicted_feature_name: str
    predicted_probabilities_name: str
    metadata: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def is_classifier(self) -> bool:
        return bool(self.class_labels) or self.model_type.endswith("Classifier")

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "spec_version": self.spec_version,
            "model_type": self.model_type,
            "sub_models": list(self.sub_models),
            "inputs": [feature.to_dict() for feature in self.inputs],
            "outputs": [feature.to_dict() for feature in self.outputs],
            "class_labels": list(self.class_labels),
            "predicted_feature_name": self.predicted_feature_name,
            "predicted_probabilities_name": self.predicted_probabilities_name,
            "metadata": json.loads(json.dumps(self.metadata)),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelDescription:
        return cls(
            format=data["format"],
            spec_version=data["spec_version"],
            model_type=data["model_type"],
            sub_models=tuple(data.get("sub_models", ())),
            inputs=tuple(FeatureDescription.from_dict(f) for f in data.get("inputs", ())),
            outputs=tuple(FeatureDescription.from_dict(f) for f in data.get("outputs", ())),
            class_labels=tuple(data.get("class_labels", ())),
            predicted_feature_name=data.get("predicted_feature_name", ""),
            predicted_probabilities_name=data.get("predicted_probabilities_name", ""),
            metadata=data.get("metadata", {}),
            warnings=tuple(data.get("warnings", ())),
        )

    def output(self, name: str) -> FeatureDescription | None:
        return next((feature for feature in self.outputs if feature.name == name), None)
