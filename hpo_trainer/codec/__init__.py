"""The params codec: a trial's flat Optuna params to and from the values a run is built with.

Above the search spaces, below the search engine (warm starts read exported params with it).
"""
