"""The training layer: data to batches, the loop, callbacks, checkpoints, devices and clean
stops. It knows PyTorch and nothing of Optuna (a test checks that importing it never imports
optuna); pruning enters from the search side as a callback.
"""
