"""The embedded SQLite engine (``sqlite:///path``), the default: broker, result store and
schedule store in one database file, safe for many processes on one host.

:mod:`.db` owns connections (one per thread, reopened after fork) and locking.
"""
