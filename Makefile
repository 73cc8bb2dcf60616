# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: setup demo test check deb

setup:
	bash scripts/setup

demo: setup
	.venv/bin/python -m lab demo

test: setup
	bash scripts/check

check: test

# dist/lvsd_<version>_<arch>.deb for Debian 12 (docs/operations.md, "Installing").
deb:
	bash scripts/build-deb
