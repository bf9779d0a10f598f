"""The pipelines: the only code that wires the stages (data, method, training, evaluation, report) together."""
