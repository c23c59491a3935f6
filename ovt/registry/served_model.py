"""The served model as MLflow "models from code": MLflow executes this file to get the model, nothing is unpickled.

Logged by `ovt.registry.packaging.log_model` with the artifacts `model/` (safetensors weights + model.json),
optionally `base/` (the embedded base), and `serving.json` (the default prompt template); the `ovt` package
travels with it as a code path. `mlflow.pyfunc.load_model("models:/<name>@champion")` imports this file, calls
`load_context` (which reads only JSON and safetensors) and then `predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

# Keys of PythonModelContext.artifacts.
ART_MODEL = "model"
ART_BASE = "base"
ART_CONFIG = "config"


class OVTServedModel(PythonModel):
    """Images and/or texts in, normalised embeddings (and zero-shot probabilities) out; see ovt.registry.predict."""

    def __init__(self) -> None:
        self.model = None
        self.prompt_template = "{}"

    def load_context(self, context) -> None:
        from ovt.registry.predict import load_ovt_model

        config = json.loads(Path(context.artifacts[ART_CONFIG]).read_text(encoding="utf-8"))
        self.prompt_template = config["prompt_template"]
        base = context.artifacts.get(ART_BASE)
        self.model = load_ovt_model(Path(context.artifacts[ART_MODEL]), Path(base) if base else None)

    # No type hints on predict: MLflow 3 would derive (and enforce) a schema from them instead of the signature.
    def predict(self, context, model_input, params=None):
        import pandas as pd

        from ovt.registry.inputs import to_rows
        from ovt.registry.predict import predict_rows

        if self.model is None:
            raise RuntimeError("predict called before load_context")
        return pd.DataFrame(predict_rows(self.model, to_rows(model_input), params or {}, self.prompt_template))


mlflow.models.set_model(OVTServedModel())
