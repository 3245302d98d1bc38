"""Talking to systems outside the project: MLflow (:mod:`~flows.integrations.mlflow_client`) and Prefect events
(:mod:`~flows.integrations.events`). Not flows: the flows and the command line call them."""
