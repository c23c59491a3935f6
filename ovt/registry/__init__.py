"""MLflow model registry for OVT adapters: the served model (from code, no pickle), lineage, registration, gate.

    from ovt.registry.register import register      # log + register models/<variant>, alias `challenger`
    from ovt.registry.promote import promote        # the gate: move `champion` when the challenger is better
    mlflow.pyfunc.load_model("models:/<name>@champion").predict({"text": [...], "image": [...]})

Nothing heavy is imported here: `ovt.config` imports `ovt.registry.config`, and loading params must not pull in
MLflow or torch.
"""
