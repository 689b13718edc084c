"""The applications of a finished search: export, the final run, the report, predict.

The top layer under the command line: each reads a study or a run folder through the layers
below and never the other way round.
"""
