"""fedlada: federated reasoning distillation (LaDa) between one server LLM and many client SLMs."""

__version__ = "0.1.0"
