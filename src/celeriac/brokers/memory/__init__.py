"""The in-memory engine (``memory://``): broker, result store and schedule store in one process.

For tests and ``task_always_eager``-free local runs; nothing survives the process.
"""
