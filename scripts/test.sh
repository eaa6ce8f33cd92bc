#!/usr/bin/env bash
# Install celeriac with its test dependencies into .venv and run the whole test suite:
# lint (ruff), types (mypy), then every test tier (unit, contract, integration, acceptance).
# Tests that need Redis or PostgreSQL skip when they are unreachable, and fail instead
# when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test,redis,fast,django,postgres,pyramid,dashboard,security]'
.venv/bin/ruff check src tests bench examples
.venv/bin/mypy
# Tests spend most of their time waiting on workers and services, so four test processes
# share two cores well; a file's tests stay together (module-scoped workers start once).
exec .venv/bin/pytest -n "${CELERIAC_TEST_PROCESSES:-4}" --dist loadfile "$@"
