"""The floor beneath the stages: devices, precision, distributed helpers and the one inference path.

Nothing here imports the data, network, method, training, evaluation or report code (types only, for checking).
"""
