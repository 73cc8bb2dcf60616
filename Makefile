# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: setup demo test check

setup:
	bash scripts/setup

demo: setup
	.venv/bin/python -m lab demo

test: setup
	bash scripts/check

check: test
