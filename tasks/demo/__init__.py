"""The bundled demo: its data and its fleet of real adapters on SmolLM2-135M."""
