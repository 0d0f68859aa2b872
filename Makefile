# The two commands of a fresh machine:
#   make demo   set up, then stream the demo pipeline (millstream demo)
#   make test   set up, then run the C++ (ctest) and Python (pytest) tests
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/millstream demo

test:
	bash scripts/test.sh

bench: setup
	.venv/bin/python bench/run.py --quick
